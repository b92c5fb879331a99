# VM test: one standalone host. Twin: checks/host/boot.sh with scenario-single-node.sh (runs here, on a real
# systemd in a Debian 12 nspawn guest). Options used: nixos/modules/testing/test-instrumentation.nix
# (test driver), services.lxgate (modules/lxgate.nix).
{ pkgs, self }:
let
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "localhost" ]; };
  # The sample generator the Rust tests use (examples/sap_sample.rs), run at build time.
  sapSample = pkgs.runCommand "lxgate-sap-sample.zip" { } ''
    ${self.packages.${pkgs.stdenv.hostPlatform.system}.sapSample}/bin/sap_sample $out 3
  '';
in
pkgs.testers.runNixOSTest {
  name = "lxgate-single-node";
  nodes.machine = { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      role = "standalone";
      nginx = { hostName = "localhost"; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
      settings.server.default_center = "dev";
      settings.watcher.settle_ms = 200;
      sapImport.enable = true;
      settings.sap_import.center_key = "dev";
    };
    environment.systemPackages = [ pkgs.curl pkgs.postgresql ];
  };
  testScript = ''
    machine.wait_for_unit("multi-user.target")
    with subtest("all units active"):
        for u in ["lxgate-keys", "lxgate-migrate", "lxgate", "lxgate-watcher", "nginx", "postgresql"]:
            machine.wait_for_unit(f"{u}.service")
    with subtest("every import subtree exists with its mode after boot"):
        for d in ["video_import", "report_import", "preanonymized_import", "sap_import", "sap_import_processed", "sap_import_failed"]:
            machine.succeed(f"test \"$(stat -c '%a %U %G' /var/lib/lxgate/data/import/{d})\" = '770 lxgate lxgate'")
    with subtest("lxgate doctor passes"):
        machine.succeed("su -s /bin/sh lxgate -c 'DATABASE_URL=\"host=/run/postgresql dbname=lxgate user=lxgate\" lxgate --config /etc/lxgate/config.toml doctor'")
    with subtest("a watcher drop becomes a job"):
        machine.succeed("su -s /bin/sh lxgate -c 'lxgate --config /etc/lxgate/config.toml center add dev --name Dev'")
        machine.succeed("echo clip > /tmp/clip.mp4 && install -o lxgate -g lxgate /tmp/clip.mp4 /var/lib/lxgate/data/import/video_import/clip.mp4")
        machine.wait_until_succeeds("su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT count(*) FROM upload_jobs WHERE original_name = 'clip.mp4' AND status = 'stored'\\\"\" | grep -qx 1")
    with subtest("journalctl JOB_ID=<id> returns the watcher's line for that job"):
        jid = machine.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT id FROM upload_jobs WHERE original_name = 'clip.mp4'\\\"\"").strip()
        machine.wait_until_succeeds(f"journalctl --no-pager -o cat JOB_ID={jid} BOUNDARY=watcher OUTCOME=accepted | grep -qx watcher")
    with subtest("the SAP path unit converts a bundle and its pairs become jobs"):
        machine.succeed("install -o lxgate -g lxgate ${sapSample} /var/lib/lxgate/data/import/sap_import/.b.part && mv /var/lib/lxgate/data/import/sap_import/.b.part /var/lib/lxgate/data/import/sap_import/bundle.zip")
        machine.wait_until_succeeds("test -e /var/lib/lxgate/data/import/sap_import_processed/bundle.zip")
        machine.wait_until_succeeds("su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT count(*) FROM upload_jobs WHERE kind = 'preanonymized'\\\"\" | grep -qx 11")
    with subtest("the storage audit unit runs in its sandbox and finds storage consistent"):
        machine.wait_for_unit("lxgate-storage-audit.timer")
        machine.succeed("systemctl start lxgate-storage-audit.service")
        machine.succeed("journalctl -u lxgate-storage-audit.service | grep -q ' 0 orphans, 0 missing, 0 damaged'")
    with subtest("every stored object has its UploadJob row"):
        machine.succeed("su -s /bin/sh lxgate -c 'DATABASE_URL=\"host=/run/postgresql dbname=lxgate user=lxgate\" lxgate --config /etc/lxgate/config.toml storage audit --verify' | grep -q ' 0 orphans, 0 missing, 0 damaged'")
    with subtest("killing the watcher leaves the web unit healthy"):
        machine.succeed("systemctl kill -s KILL lxgate-watcher.service")
        machine.succeed("curl -sf http://127.0.0.1:8080/readyz")
        machine.wait_for_unit("lxgate-watcher.service")
    with subtest("static file through nginx over TLS"):
        machine.succeed("echo hello > /var/lib/lxgate/staticfiles/hello.txt")
        machine.succeed("curl -sf --cacert ${tls}/hub-ca.crt https://localhost/static/hello.txt | grep -qx hello")
    with subtest("lxgate smoke: doctor, a sealed round trip with the master key, TLS through nginx"):
        machine.succeed("su -s /bin/sh lxgate -c 'DATABASE_URL=\"host=/run/postgresql dbname=lxgate user=lxgate\" lxgate --config /etc/lxgate/config.toml smoke --ca ${tls}/hub-ca.crt'")
  '';
}
