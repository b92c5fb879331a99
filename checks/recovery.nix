# VM test scaffolding for the recovery issue: a legacy data tree merged by the
# lxgate-data-recovery one-shot before the web and watcher units start.
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
    systemd.tmpfiles.rules = [ "d /var/lib/lx-annotate/data/legacy 0750 root root -" ];
  };
  testScript = ''
    machine.wait_for_unit("lxgate.service")
    with subtest("the recovery unit ran before the web unit (or was skipped)"):
        machine.succeed("systemctl show -p ActiveState lxgate-data-recovery.service | grep -E 'active|inactive'")
  '';
}
