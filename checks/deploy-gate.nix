# VM test (issue 18): services.lxgate.deployGate. A good generation, then a switch to
# a generation whose lxgate applies an incompatible migration and fails smoke: the gate
# restores the snapshot, sets the system profile back and activates the previous
# generation, which passes smoke and resumes ingest; an upload sent in the window is
# accepted after. Twin: checks/host/scenario-upgrade.sh covers the same on Debian with
# `lxgate deploy`. Options used: services.lxgate (modules/lxgate.nix),
# virtualisation.additionalPaths (nixos/modules/virtualisation/qemu-vm.nix).
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "localhost" ]; };
  good = self.packages.${system}.default;
  # A broken release: an incompatible migration, and a smoke that always fails.
  broken = good.overrideAttrs (o: {
    postPatch = (o.postPatch or "") + ''
      printf -- '-- previous release: incompatible (test: drops a column)\nALTER TABLE centers DROP COLUMN name;\n' \
        > migrations/9001_gate_contract.sql
      sed -i 's|^    checks.push(sealed_round_trip(|    checks.push(Check::fail("broken release", "fails smoke on purpose", "roll back"));\n    checks.push(sealed_round_trip(|' src/ops/smoke.rs
      grep -q 'broken release' src/ops/smoke.rs
    '';
  });
  host = package: { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      inherit package;
      nginx = { hostName = "localhost"; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
      settings.server.default_center = "dev";
      deployGate = { enable = true; smokeCa = "${tls}/hub-ca.crt"; };
    };
    environment.systemPackages = [ pkgs.curl pkgs.postgresql ];
  };
  brokenSystem = (pkgs.nixos [ (host broken) { system.stateVersion = "24.11"; boot.loader.grub.enable = false; fileSystems."/".device = "/dev/vda"; } ]).config.system.build.toplevel;
in
pkgs.testers.runNixOSTest {
  name = "lxgate-deploy-gate";
  nodes.machine = { ... }: {
    imports = [ (host good) ];
    virtualisation.additionalPaths = [ brokenSystem ];
  };
  testScript = ''
    machine.wait_for_unit("lxgate-deploy-gate.service")
    lx = "su -s /bin/sh lxgate -c 'lxgate --config /etc/lxgate/config.toml {}'"
    machine.succeed(lx.format("center add dev --name Dev"))
    token = machine.succeed(lx.format("token create --role uploader --center dev --name gate")).strip().splitlines()[-1]
    machine.succeed("nix-env -p /nix/var/nix/profiles/system --set /run/current-system")
    good = machine.succeed("readlink -f /run/current-system").strip()

    with subtest("a broken generation is rolled back by the gate, its snapshot restored"):
        machine.succeed("nix-env -p /nix/var/nix/profiles/system --set ${brokenSystem}")
        machine.execute("${brokenSystem}/bin/switch-to-configuration switch")
        machine.wait_until_succeeds(f"test \"$(readlink -f /run/current-system)\" = {good}", timeout=300)
        machine.wait_until_succeeds("systemctl is-active lxgate-deploy-gate.service", timeout=300)
        machine.wait_until_succeeds("test ! -e /var/lib/lxgate/deploy/ingest-paused", timeout=120)
        machine.succeed("curl -sf http://127.0.0.1:8080/readyz")
        machine.succeed("grep -q rolling_back /var/lib/lxgate/deploy/history.jsonl")
        machine.succeed("grep rolling_back /var/lib/lxgate/deploy/history.jsonl | grep -q '\"restored\":\"'")
        machine.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT count(*) FROM information_schema.columns WHERE table_name = 'centers' AND column_name = 'name'\\\"\" | grep -qx 1")

    with subtest("an upload after the rollback is accepted"):
        machine.succeed(f"curl -sf -X POST -H 'Authorization: Bearer {token}' -H 'X-Filename: after.pdf' -H 'X-Kind: report' --data-binary '%PDF after' http://127.0.0.1:8080/api/upload/")
  '';
}
