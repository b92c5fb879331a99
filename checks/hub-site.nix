# A central hub and a site node: both roles boot with the module, and the hub's nginx
# lets only certificates from the sites' CA through to the transfer path (a forged
# attestation header is not a certificate); the site's lxgate-hub-export.service sends a
# marked job through it. Host twin: checks/host/scenario-hub.sh.
{ pkgs, self }:
let
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "hub" "site" ]; };
  # The hub's envelope key pair. A test key may sit in the store: systemd copies the
  # credential into the unit's private credentials directory (mode 0400) at start.
  recipient = pkgs.runCommand "lxgate-test-hub-recipient" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir $out
    openssl genpkey -algorithm X25519 -out $out/key.pem
    openssl pkey -in $out/key.pem -pubout -out $out/pub.pem
  '';
  base = role: { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      inherit role;
      nginx = { hostName = role; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
    };
    networking.firewall.allowedTCPPorts = [ 443 ];
    environment.systemPackages = [ pkgs.curl pkgs.openssl pkgs.postgresql ];
  };
  # A real video whose index (moov) follows the media, as ffmpeg writes MP4 by default:
  # its facts can be read only by seeking, which a sealed object allows through hub
  # export's loopback feed alone.
  clip = pkgs.runCommand "lxgate-test-clip.mp4" { nativeBuildInputs = [ pkgs.ffmpeg-headless ]; } ''
    ffmpeg -loglevel error -f lavfi -i testsrc=duration=4:size=320x240:rate=25 -f mp4 $out
  '';
in
pkgs.testers.runNixOSTest {
  name = "lxgate-hub-site";
  nodes.hub = { ... }: {
    imports = [ (base "central_hub") ];
    services.lxgate.hub.transferApi = { enable = true; clientCaFile = "${tls}/ca.crt"; recipientKeyFiles = [ "${recipient}/key.pem" ]; };
  };
  nodes.site = { ... }: {
    imports = [ (base "site_node") ];
    services.lxgate.hub.export = {
      enable = true;
      url = "https://hub";
      nodeKey = "site-a";
      targetNodeKey = "hub";
      caFile = "${tls}/hub-ca.crt";
      clientCertificate = "${tls}/site.crt";
      recipientPublicKeyFile = "${recipient}/pub.pem";
    };
    # Videos sealed at rest: hub export must still read their facts.
    services.lxgate.settings.storage.video = "sealed";
  };
  testScript = ''
    start_all()
    hub.wait_for_unit("lxgate.service")
    site.wait_for_unit("lxgate.service")
    hub.wait_for_unit("nginx.service")
    url = "https://hub/api/media/hub/transfers/"
    def code(args):
        return site.succeed(f"curl -s --cacert ${tls}/hub-ca.crt -o /tmp/body -w '%{{http_code}}' {args} {url}").strip()
    with subtest("transfer path without a client certificate is refused by nginx"):
        assert code("") == "403"
    with subtest("a forged attestation header does not replace a certificate"):
        assert code("-H 'X-Client-Cert-Verified: SUCCESS'") == "403"
    with subtest("a certificate from another CA is refused"):
        assert code("--cert ${tls}/rogue.crt --key ${tls}/rogue.key") == "400"
    with subtest("a site certificate passes nginx and reaches lxgate's body validation (400 before the node gates, as endoreg-db)"):
        assert code("-X POST -H 'Content-Type: application/json' -d '{}' --cert ${tls}/site.crt --key ${tls}/site.key") == "400"
        site.succeed("grep -q transfer_key /tmp/body")
    lx = "su -s /bin/sh lxgate -c 'DATABASE_URL=\"host=/run/postgresql dbname=lxgate user=lxgate\" lxgate --config /etc/lxgate/config.toml {}'"
    with subtest("the hub knows the site node, pinned to its certificate"):
        hub.succeed(lx.format("center add A --name A"))
        fp = site.succeed("openssl x509 -in ${tls}/site.crt -noout -fingerprint -sha1 | cut -d= -f2").strip()
        secret = hub.succeed(lx.format(f"node add site-a --center A --cert-fingerprint {fp}")).strip()
    with subtest("the site's lxgate-hub-export.service sends a marked job, once"):
        # The credentials the unit loads: root-only files outside the store.
        site.succeed(f"install -d -m 0700 /etc/lxgate/credentials && printf '%s' '{secret}' > /etc/lxgate/credentials/hub-node-secret")
        site.succeed("install -m 0600 ${tls}/site.key /etc/lxgate/credentials/hub-client-key")
        site.succeed(lx.format("center add A --name A"))
        site.succeed("install -o lxgate -g lxgate -m 0640 ${clip} /var/lib/lxgate/data/import/video_import/.v.tmp && mv /var/lib/lxgate/data/import/video_import/.v.tmp /var/lib/lxgate/data/import/video_import/Patient_Name.mp4")
        site.wait_until_succeeds("su -s /bin/sh postgres -c \"psql -tA lxgate -c 'SELECT id FROM upload_jobs'\" | grep -q .")
        sjob = site.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c 'SELECT id FROM upload_jobs'\"").strip()
        ssum = site.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c 'SELECT content_hash FROM upload_jobs'\"").strip()
        site.succeed(lx.format(f"hub-export mark {sjob}"))
        site.succeed("systemctl start lxgate-hub-export.service")
        site.succeed(f"su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT state FROM hub_exports WHERE upload_job_id = '{sjob}'\\\"\" | grep -qx applied")
        site.succeed("systemctl start lxgate-hub-export.service")
        hub.succeed(f"su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT count(*) FROM upload_jobs j JOIN transfers t ON t.upload_job_id = j.id WHERE j.content_hash = '{ssum}' AND j.original_name = '{ssum}.mp4' AND t.payload_schema_version = '7.0' AND t.envelope_receipt IS NOT NULL\\\"\" | grep -qx 1")
        site.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c 'SELECT stored_as FROM upload_jobs'\" | grep -qx age")
        hub.succeed("su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"SELECT resource_rows->'video_file'->>'width', resource_rows->'video_file'->>'height', resource_rows->'video_file'->>'frame_count' FROM transfers\\\"\" | grep -qx '320|240|100'")
        site.fail(f"journalctl --no-pager | grep -qF '{secret}'")
  '';
}
