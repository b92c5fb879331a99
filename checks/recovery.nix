# VM test: a legacy lx-annotate data tree merged by lxgate-data-recovery before the web
# and watcher units start. Twin: checks/host/boot.sh with scenario-recovery.sh.
{ pkgs, self }:
pkgs.testers.runNixOSTest {
  name = "lxgate-recovery";
  nodes.machine = { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      nginx.enable = false;
      recovery = { enable = true; source = "/var/lib/lx-annotate/data"; };
    };
    # The legacy tree, as lx-annotate left it (systemd.tmpfiles.rules:
    # nixos/modules/system/boot/systemd/tmpfiles.nix).
    systemd.tmpfiles.rules = [
      "d /var/lib/lx-annotate/data/reports/2023 0755 root root -"
      "f /var/lib/lx-annotate/data/reports/2023/r1.txt 0644 root root - old report"
      "L /var/lib/lx-annotate/data/reports/2023/latest - - - - r1.txt"
      "d /var/lib/lx-annotate/data/import/video_import 0755 root root -"
      "f /var/lib/lx-annotate/data/import/video_import/old.mp4 0644 root root - old clip"
    ];
  };
  testScript = ''
    machine.wait_for_unit("lxgate.service")
    d = "/var/lib/lxgate/data"
    with subtest("recovery ran and finished before the web unit started"):
        machine.succeed("test \"$(systemctl show -P Result lxgate-data-recovery.service)\" = success")
        r = int(machine.succeed("systemctl show -P ExecMainExitTimestampMonotonic lxgate-data-recovery.service"))
        s = int(machine.succeed("systemctl show -P ExecMainStartTimestampMonotonic lxgate.service"))
        assert 0 < r < s, f"{r} !< {s}"
    with subtest("merge semantics"):
        machine.succeed(f"grep -qx 'old report' {d}/reports/2023/r1.txt")
        machine.succeed(f"test \"$(readlink {d}/reports/2023/latest)\" = r1.txt")
        # import/ exists before recovery (tmpfiles): merged per file, not skipped.
        machine.succeed(f"journalctl -u lxgate-data-recovery | grep -q 'copying /var/lib/lx-annotate/data/import/video_import/old.mp4 -> {d}/import/video_import/old.mp4'")
        machine.fail(f"journalctl -u lxgate-data-recovery | grep -q 'skipping: {d}/import$'")
        machine.succeed(f"grep -q '^completed_at=' {d}/logs/data_recovery_complete")
    with subtest("skipped once complete"):
        machine.succeed("systemctl restart lxgate-data-recovery.service")
        machine.succeed("test \"$(systemctl show -P ConditionResult lxgate-data-recovery.service)\" = no")
  '';
}
