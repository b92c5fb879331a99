# VM test: services.lxgate.backup on a host with over 1,000 jobs backs up through
# services.restic.backups.lxgate (prepare first) into a local repository; the restore
# rehearsal passes; a second, fresh host gets the repository and the master key and
# restores it: the job table equals the source's, every job's media is served
# byte-identical through nginx, the audit is clean, the units start.
# Twin: checks/host/boot.sh with scenario-backup.sh (the rendered lxgate-backup units).
# Options used: services.lxgate.backup (modules/lxgate.nix, which sets
# services.restic.backups.lxgate: nixos/modules/services/backup/restic.nix),
# systemd.tmpfiles.rules (nixos/modules/system/boot/systemd/tmpfiles.nix),
# virtualisation.diskSize (nixos/modules/virtualisation/qemu-vm.nix).
{ pkgs, self }:
let
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "localhost" ]; };
  host = { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      nginx = { hostName = "localhost"; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
      settings.server.default_center = "dev";
      settings.watcher.settle_ms = 200;
      # The test fetches every job's media twice from one address: no token rate limit.
      settings.server.token_auth_per_second = 0;
      backup = {
        enable = true;
        repository = "/var/backups/lxgate/repo";
        passwordFile = "/etc/lxgate/credentials/restic-password";
        initialize = true;
      };
    };
    systemd.tmpfiles.rules = [ "d /var/backups/lxgate 0700 lxgate lxgate -" ];
    environment.systemPackages = [ pkgs.curl pkgs.postgresql pkgs.restic ];
    virtualisation.diskSize = 4096;
  };
in
pkgs.testers.runNixOSTest {
  name = "lxgate-backup";
  nodes.source = host;
  nodes.fresh = host;
  testScript = { nodes, ... }:
    let lxgate = "${nodes.source.services.lxgate.package}/bin/lxgate"; in ''
    import hashlib
    start_all()
    for m in [source, fresh]:
        m.wait_for_unit("lxgate.service")
        m.succeed("install -d -m 0700 /etc/lxgate/credentials && echo 'twin password' > /etc/lxgate/credentials/restic-password && chmod 0600 /etc/lxgate/credentials/restic-password")

    as_lx = "su -s /bin/sh lxgate -c"
    psql = "su -s /bin/sh postgres -c \"psql -tA lxgate -c \\\"{}\\\"\""
    def with_password(m, args):
        return m.succeed(
            "systemd-run --quiet --pipe --wait --collect -p User=lxgate -p Group=lxgate -p SupplementaryGroups=lxgate-keys "
            "-p Environment=LXGATE_CONFIG=/etc/lxgate/config.toml -p CacheDirectory=lxgate-backup "
            "-p LoadCredential=restic-password:/etc/lxgate/credentials/restic-password "
            f"${lxgate} {args}"
        )

    with subtest("over 1,000 jobs: videos, reports and pairs"):
        source.succeed(f"{as_lx} '${lxgate} --config /etc/lxgate/config.toml center add dev --name Dev'")
        source.succeed(
            "d=/var/lib/lxgate/data/import; s=$d/.stage; install -d -o lxgate -g lxgate $s; "
            "for i in $(seq 1 1050); do "
            "  if [ $((i % 10)) = 0 ]; then echo \"note $i $RANDOM\" > $s/n$i.txt; echo \"{\\\"external_id\\\":\\\"$i\\\"}\" > $s/n$i.json; chown lxgate:lxgate $s/n$i.*; mv $s/n$i.txt $s/n$i.json $d/preanonymized_import/; "
            "  else head -c $((1000 + RANDOM % 40000)) /dev/urandom > $s/f$i; chown lxgate:lxgate $s/f$i; "
            "    if [ $((i % 3)) = 0 ]; then mv $s/f$i $d/report_import/f$i.pdf; else mv $s/f$i $d/video_import/f$i.mp4; fi; fi; "
            "done; rmdir $s"
        )
        source.wait_until_succeeds(psql.format("SELECT count(*) >= 1050 FROM upload_jobs WHERE status <> 'error'") + " | grep -qx t", timeout=600)

    with subtest("services.restic.backups.lxgate: prepare, then restic"):
        source.succeed("systemctl start restic-backups-lxgate.service")
        source.succeed("journalctl -u restic-backups-lxgate.service | grep -q 'backup prepared: 1[0-9][0-9][0-9] jobs'")
        source.succeed("RESTIC_PASSWORD_FILE=/etc/lxgate/credentials/restic-password restic -r /var/backups/lxgate/repo ls latest | grep -q /var/lib/lxgate/backup/lxgate.dump.age")
        source.fail("RESTIC_PASSWORD_FILE=/etc/lxgate/credentials/restic-password restic -r /var/backups/lxgate/repo ls latest | grep -q /var/lib/lxgate/keys")

    with subtest("backup verify: restic check and the restore rehearsal"):
        source.succeed(psql.format("ALTER ROLE lxgate CREATEDB"))
        out = with_password(source, "backup verify")
        assert out.startswith("restore rehearsal passed:") and " 0 missing, 0 damaged" in out, out

    def table(m):
        return m.succeed(psql.format("SELECT concat_ws('|', id, ingest_mode, center_id, original_name, kind, size_bytes, content_hash, storage_path, status, provenance::text, created_at) FROM upload_jobs ORDER BY id"))
    def served(m):
        token = m.succeed(f"{as_lx} '${lxgate} --config /etc/lxgate/config.toml token create --role super_admin --name check-{m.name}'").strip()
        ids = m.succeed(psql.format("SELECT id FROM upload_jobs WHERE status <> 'error' ORDER BY id")).split()
        urls = "".join(f'url = "https://localhost/api/media/{i}"\noutput = "/tmp/served/{i}"\n' for i in ids)
        m.succeed(f"rm -rf /tmp/served && mkdir /tmp/served && cat > /tmp/curl.cfg <<'EOF'\n{urls}EOF")
        m.succeed(f"curl -sf --cacert ${tls}/hub-ca.crt -H 'Authorization: Bearer {token}' -K /tmp/curl.cfg")
        return m.succeed("cd /tmp/served && sha256sum * | sort -k2")

    with subtest("a fresh host restores the snapshot"):
        source.succeed("tar -C /var/backups/lxgate -cf /tmp/repo.tar repo && cp /var/lib/lxgate/keys/master.age /tmp/master.age")
        source.copy_from_vm("/tmp/repo.tar", "")
        source.copy_from_vm("/tmp/master.age", "")
        fresh.copy_from_host(str(source.out_dir / "repo.tar"), "/tmp/repo.tar")
        fresh.copy_from_host(str(source.out_dir / "master.age"), "/tmp/master.age")
        fresh.succeed("tar -C /var/backups/lxgate -xf /tmp/repo.tar && chown -R lxgate:lxgate /var/backups/lxgate")
        # Not under running units.
        fresh.succeed(
            "systemd-run --quiet --pipe --wait --collect -p User=lxgate -p Group=lxgate -p SupplementaryGroups=lxgate-keys "
            "-p Environment=LXGATE_CONFIG=/etc/lxgate/config.toml "
            "-p LoadCredential=restic-password:/etc/lxgate/credentials/restic-password "
            "${lxgate} restore --snapshot latest 2>&1 | grep -q 'running: stop it first'"
        )
        fresh.succeed("systemctl stop lxgate.service lxgate-watcher.service")
        # The master key, kept apart from the backup, brought to the new host.
        fresh.succeed("install -o root -g lxgate-keys -m 0640 /tmp/master.age /var/lib/lxgate/keys/master.age")
        out = with_password(fresh, "restore --snapshot latest")
        assert out.startswith("restored: snapshot") and " 0 missing, 0 damaged" in out, out
        fresh.succeed("systemctl start lxgate.service lxgate-watcher.service")
        fresh.wait_for_unit("lxgate.service")
        fresh.wait_for_unit("lxgate-watcher.service")

    with subtest("the job table, the audit and every job's media equal the source's"):
        assert table(fresh) == table(source)
        fresh.succeed(f"{as_lx} '${lxgate} --config /etc/lxgate/config.toml storage audit --verify' | grep -q ' 0 orphans, 0 missing, 0 damaged'")
        fresh.wait_until_succeeds("curl -sf http://127.0.0.1:8080/readyz")
        assert served(fresh) == served(source)
  '';
}
