# VM test: a host moved from lx-annotate runs on lxgate with nothing lost. The guest is
# laid out as a LuxNix lx-annotate deployment leaves it (checkout /var/lib/lx-annotate
# with data/storage, data/import, reports and the env file the reference wrote); then
# lxgate's units: lxgate-data-recovery merges the tree per file and carries the env file
# over, and lxgate runs from it. Host twin: checks/host/boot.sh with scenario-migrated.sh.
#
# nixpkgs options used here beyond the module's: systemd.tmpfiles.rules
# (nixos/modules/system/boot/systemd/tmpfiles.nix), environment.etc.<n>.text
# (nixos/modules/system/etc/etc.nix), environment.systemPackages.
{ pkgs, self }:
let
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "localhost" ]; };
  legacy = "/var/lib/lx-annotate";
  # The values lx-annotate's docs and its recovery write: every path key, the META form
  # of the attestation header, the 1.6.4 transfer switch, a role in upper case,
  # WATCHER_* timings.
  legacyEnv = ''
    LX_ANNOTATE_ENCRYPTED_DATA_DIR=${legacy}/data
    DATA_DIR=${legacy}/data
    LX_ANNOTATE_DATA_DIR=${legacy}/data
    STORAGE_DIR=${legacy}/data
    IO_DIR=${legacy}/data
    ENDOREG_DEPLOYMENT_ROLE=Central_Hub
    ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS=true
    ENDOREG_HUB_TRANSFER_REQUIRE_MTLS=1
    ENDOREG_HUB_TRANSFER_MTLS_META_KEY=HTTP_X_CLIENT_CERT_VERIFIED
    ENDOREG_HUB_TRANSFER_MTLS_META_VALUE=SUCCESS
    WATCHER_STABLE_AFTER_SECONDS=0.5
    WATCHER_POLL_INTERVAL_SECONDS=0.5
    WATCHER_LOG_LEVEL=INFO
    DJANGO_SETTINGS_MODULE=lx_annotate.settings.settings_prod
  '';
in
pkgs.testers.runNixOSTest {
  name = "lxgate-migrated-host";
  nodes.machine = { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      role = "central_hub";
      nginx = { hostName = "localhost"; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
      hub.transferApi = { enable = true; clientCaFile = "${tls}/ca.crt"; };
      recovery = { enable = true; source = "${legacy}/data"; };
    };
    environment.etc."lx-annotate-legacy.env".text = legacyEnv;
    systemd.tmpfiles.rules = [
      "d ${legacy}/data/storage/documents/2024 0755 root root -"
      "f ${legacy}/data/storage/documents/2024/doc1.bin 0644 root root - legacy document"
      "d ${legacy}/data/storage/sensitive_videos 0755 root root -"
      "f ${legacy}/data/storage/sensitive_videos/v1.mp4 0644 root root - legacy video bytes"
      "d ${legacy}/data/import/sap_import_processed 0755 root root -"
      "f ${legacy}/data/import/sap_import_processed/old.zip 0644 root root - converted"
      "d ${legacy}/data/reports/2023 0755 root root -"
      "f ${legacy}/data/reports/2023/r1.pdf 0644 root root - legacy report"
      "d ${legacy}/data/logs 0755 root root -"
      "f ${legacy}/data/logs/watcher.log 0644 root root - old log"
      "C ${legacy}/.env.systemd 0644 root root - /etc/lx-annotate-legacy.env"
    ];
    environment.systemPackages = [ pkgs.curl pkgs.openssl pkgs.postgresql ];
  };
  testScript = ''
    machine.wait_for_unit("lxgate.service")
    machine.wait_for_unit("lxgate-watcher.service")
    machine.wait_for_unit("nginx.service")
    d = "/var/lib/lxgate/data"
    legacy = "${legacy}/data"
    env = "/var/lib/lxgate/.env.systemd"
    lx = "su -s /bin/sh lxgate -c 'set -a; . /var/lib/lxgate/.env.systemd; set +a; DATABASE_URL=\"host=/run/postgresql dbname=lxgate user=lxgate\" lxgate --config /etc/lxgate/config.toml {}'"
    sql = "su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"{}\\\"\""
    with subtest("every legacy file is in the data root, byte-identical"):
        machine.succeed("test \"$(systemctl show -P Result lxgate-data-recovery.service)\" = success")
        want = machine.succeed(f"cd {legacy} && find . -type f | sort | xargs sha256sum")
        got = machine.succeed(f"cd {d} && find {legacy} -type f | sed 's|^{legacy}|.|' | sort | xargs sha256sum")
        assert want.strip() and want == got, f"{want}\n!=\n{got}"
        # storage/ existed (tmpfiles) before recovery ran: merged per file, not skipped.
        machine.succeed(f"journalctl -u lxgate-data-recovery | grep -q 'copying {legacy}/storage/documents -> {d}/storage/documents'")
        machine.succeed(f"grep -q '^completed_at=' {d}/logs/data_recovery_complete")
    with subtest("the reference's env file was carried over and works"):
        for k in ["LX_ANNOTATE_ENCRYPTED_DATA_DIR", "DATA_DIR", "LX_ANNOTATE_DATA_DIR", "STORAGE_DIR", "IO_DIR"]:
            machine.succeed(f"grep -qx '{k}={d}' {env}")
        machine.succeed(f"grep -qx 'ENDOREG_HUB_TRANSFER_MTLS_META_KEY=HTTP_X_CLIENT_CERT_VERIFIED' {env}")
        machine.succeed(lx.format("config check") + " | grep -q '\"role\": \"central_hub\"'")
    with subtest("the watcher takes a reference-shaped drop"):
        machine.succeed(lx.format("center add A --name CenterA"))
        p = f"{d}/import/preanonymized_import"
        machine.succeed(f"printf 'center_key: A\\npatient_gender: W\\nlegacy_flag: true\\n' > /tmp/n1.yaml && install -o lxgate -g lxgate -m 0640 /tmp/n1.yaml {p}/N1.yaml")
        machine.succeed(f"echo Befund > /tmp/n1.txt && install -o lxgate -g lxgate -m 0640 /tmp/n1.txt {p}/N1.TXT.PART")
        machine.sleep(2)
        machine.succeed(f"test -e {p}/N1.TXT.PART")
        machine.succeed(f"mv {p}/N1.TXT.PART {p}/N1.TXT")
        machine.wait_until_succeeds(sql.format("SELECT provenance->'sidecar'->>'patient_gender' FROM upload_jobs WHERE original_name = 'N1.TXT'") + " | grep -qx female")
    with subtest("the upload API takes the lx-annotate frontend's request"):
        tok = machine.succeed(lx.format("token create --role uploader --center A --name frontend") + " 2>/dev/null").strip()
        machine.succeed("printf '%%PDF-1.7 a report' > /tmp/upload.pdf")
        curl = f"curl -s --cacert ${tls}/hub-ca.crt -o /tmp/body -w '%{{http_code}}' -H 'Authorization: Bearer {tok}'"
        up = f"{curl} -H 'Idempotency-Key: vm-1' -F file=@/tmp/upload.pdf -F center_key=A -F source_system=lx-annotate https://localhost/api/upload/"
        assert machine.succeed(up).strip() == "201"
        machine.succeed("grep -q upload_id /tmp/body")
        assert machine.succeed(up).strip() == "200"
        url = machine.succeed("sed -n 's/.*\"status_url\":\"\\([^\"]*\\)\".*/\\1/p' /tmp/body").strip()
        assert machine.succeed(f"{curl} https://localhost{url}").strip() == "200"
        machine.succeed("grep -q source_center_key /tmp/body")
    with subtest("transfers are on"):
        fp = machine.succeed("openssl x509 -in ${tls}/site.crt -noout -fingerprint -sha1 | cut -d= -f2").strip()
        secret = machine.succeed(lx.format(f"node add site-a --center A --cert-fingerprint {fp}")).strip()
        reg = '{"transfer_key":"vm-mig","source_node_key":"site-a","target_node_key":"hub","source_center_key":"A","resource_kind":"video","resource_hash":"' + "0" * 64 + '","payload_schema_version":1,"metadata":[]}'
        machine.succeed(f"echo '{reg}' > /tmp/reg.json")
        code = machine.succeed(f"curl -s --cacert ${tls}/hub-ca.crt -o /tmp/body -w '%{{http_code}}' --cert ${tls}/site.crt --key ${tls}/site.key -H 'X-Network-Node-Key: site-a' -H 'X-Network-Node-Secret: {secret}' -H 'Content-Type: application/json' -d @/tmp/reg.json https://localhost/api/media/hub/transfers/").strip()
        assert code == "201", code
  '';
}
