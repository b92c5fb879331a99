#!/bin/bash
# Twin of checks/backup.nix: a host with over 1,000 jobs (videos, reports, pairs) backs up
# with the rendered lxgate-backup.service into a local restic repository; the restore
# rehearsal passes; then the host is made fresh (database dropped, data root moved away,
# only the master key kept, as an operator keeps it apart) and restored from the snapshot:
# the job table equals the source's, every job's media is served byte-identical through
# nginx, the audit is clean and the units start.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 20 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
poll() { local n=$1; shift; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }
d=/var/lib/lxgate/data
psql_lx() { runuser -u postgres -- psql -tA lxgate -c "$1"; }
as_lxgate() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate "$@"; }
# lxgate as the service user with the repository password as a credential, the way an
# operator runs verify and restore by hand (the password file stays root-only).
with_password() {
  systemd-run --quiet --pipe --wait --collect -p User=lxgate -p Group=lxgate -p SupplementaryGroups=lxgate-keys \
    -p EnvironmentFile=/var/lib/lxgate/.env.systemd -p Environment=LXGATE_CONFIG=/etc/lxgate/config.toml -p CacheDirectory=lxgate-backup \
    -p LoadCredential=restic-password:/etc/lxgate/credentials/restic-password /usr/local/bin/lxgate "$@"
}

for u in lxgate-migrate lxgate lxgate-watcher nginx; do
  check "$u.service active" "$u" poll 100 systemctl is-active --quiet "$u.service"
done
as_lxgate center add dev --name Dev >/dev/null 2>&1
token=$(as_lxgate token create --role super_admin --name backup-twin)

# 1. Over a thousand drops of every kind, taken by the watcher.
stage=$d/import/.twin-stage; mkdir -p "$stage"
for i in $(seq 1 1050); do
  if [ $((i % 10)) = 0 ]; then
    printf 'note %s %s\n' "$i" "$RANDOM$RANDOM" > "$stage/n$i.txt"; printf '{"external_id":"%s"}' "$i" > "$stage/n$i.json"
    chown lxgate:lxgate "$stage/n$i.txt" "$stage/n$i.json"
    mv "$stage/n$i.txt" $d/import/preanonymized_import/; mv "$stage/n$i.json" $d/import/preanonymized_import/
  else
    head -c $((1000 + (RANDOM % 40000))) /dev/urandom > "$stage/f$i"; chown lxgate:lxgate "$stage/f$i"
    if [ $((i % 3)) = 0 ]; then mv "$stage/f$i" "$d/import/report_import/f$i.pdf"; else mv "$stage/f$i" "$d/import/video_import/f$i.mp4"; fi
  fi
done
rmdir "$stage"
jobs_at_least() { test "$(psql_lx "SELECT count(*) FROM upload_jobs WHERE status <> 'error'")" -ge 1050; }
check "1,050 drops became jobs (videos, reports, pairs)" "lxgate-watcher" poll 900 jobs_at_least
check "three kinds of jobs" "lxgate-watcher" test "$(psql_lx "SELECT count(DISTINCT kind) FROM upload_jobs")" = 3

# 2. The repository and the credentials, as the README tells a Debian operator.
install -d -m 0700 /etc/lxgate/credentials
head -c 24 /dev/urandom | base64 > /etc/lxgate/credentials/restic-password
: > /etc/lxgate/credentials/restic-env
chmod 0600 /etc/lxgate/credentials/restic-*
install -d -o lxgate -g lxgate -m 0700 /var/backups/lxgate
RESTIC_PASSWORD_FILE=/etc/lxgate/credentials/restic-password restic init --repo /var/backups/lxgate/repo >/dev/null
chown -R lxgate:lxgate /var/backups/lxgate/repo
check "lxgate-backup.service succeeds" "lxgate-backup" systemctl start lxgate-backup.service
check "its summary line is in the journal" "lxgate-backup" sh -c "journalctl -u lxgate-backup --no-pager | grep -q 'backup done: snapshot .* 1[0-9][0-9][0-9] jobs'"
check "the password never reaches the journal" "lxgate-backup" sh -c "! journalctl --no-pager | grep -qF '$(cat /etc/lxgate/credentials/restic-password)'"
check "no plaintext dump on disk" "lxgate-backup" sh -c "! ls /var/lib/lxgate/backup | grep -v -e '^lxgate.dump.age$' -e '^manifest.json$'"
ls_latest() { RESTIC_PASSWORD_FILE=/etc/lxgate/credentials/restic-password restic --repo /var/backups/lxgate/repo ls latest; }
check "the dump is in the snapshot" "lxgate-backup" sh -c "$(declare -f ls_latest); ls_latest | grep -q /var/lib/lxgate/backup/lxgate.dump.age"
check "the master key is not in the snapshot" "lxgate-backup" sh -c "$(declare -f ls_latest); ! ls_latest | grep -q /var/lib/lxgate/keys"

# 3. The restore rehearsal (the lxgate role may create its scratch database).
runuser -u postgres -- psql -qc "ALTER ROLE lxgate CREATEDB"
check "backup verify: restic check and the restore rehearsal pass" "" sh -c "$(declare -f with_password); with_password backup verify | grep -q '^restore rehearsal passed: .* 0 missing, 0 damaged'"

# 4. What the source serves and holds.
serve_all() {  # id sha256 of every job's media as nginx serves it
  local cfg; cfg=$(mktemp)
  psql_lx "SELECT id FROM upload_jobs WHERE status <> 'error' ORDER BY id" | while read -r id; do
    printf 'url = "https://localhost/api/media/%s"\noutput = "/var/tmp/served/%s"\n' "$id" "$id"
  done > "$cfg"
  rm -rf /var/tmp/served; mkdir -p /var/tmp/served
  curl -sf --cacert /etc/lxgate/tls/hub-ca.crt -H "Authorization: Bearer $token" -K "$cfg" || return 1
  (cd /var/tmp/served && sha256sum * | sort -k2)
}
table() { psql_lx "SELECT concat_ws('|', id, ingest_mode, center_id, original_name, kind, size_bytes, content_hash, storage_path, status, provenance::text, created_at) FROM upload_jobs ORDER BY id"; }
serve_all > /var/tmp/served-before
table > /var/tmp/jobs-before
check "the source served every job's media" "lxgate nginx" test "$(wc -l < /var/tmp/served-before)" -ge 1050

# 5. Restore refuses to run under the running units.
check "restore refuses while lxgate.service runs" "" sh -c "$(declare -f with_password); with_password restore --snapshot latest 2>&1 | grep -q 'running: stop it first'"

# 6. A fresh host: units stopped, database recreated and migrated, data root and backup
#    directory empty; only the master key is brought back.
systemctl stop lxgate.service lxgate-watcher.service
runuser -u postgres -- dropdb lxgate && runuser -u postgres -- createdb -O lxgate lxgate
mv $d /var/tmp/source-data
rm -f /var/lib/lxgate/backup/*
systemd-tmpfiles --create /etc/tmpfiles.d/lxgate.conf
systemctl restart lxgate-migrate.service
check "restore onto the fresh host" "" sh -c "$(declare -f with_password); with_password restore --snapshot latest > /var/tmp/restore.out 2>&1 || { cat /var/tmp/restore.out; exit 1; }"
check "restore said what it restored" "" grep -q '^restored: snapshot .* 0 missing, 0 damaged' /var/tmp/restore.out
check "a second restore is refused (data root not empty)" "" sh -c "$(declare -f with_password); with_password restore --snapshot latest 2>&1 | grep -q 'is not empty'"
check "restored files belong to the service user" "" test -z "$(find $d -not -user lxgate | head -1)"
systemctl start lxgate.service lxgate-watcher.service
for u in lxgate lxgate-watcher; do
  check "$u.service starts after the restore" "$u" poll 100 systemctl is-active --quiet "$u.service"
done
check "storage audit --verify is clean" "" sh -c "$(declare -f as_lxgate); as_lxgate storage audit --verify | grep -q ' 0 orphans, 0 missing, 0 damaged'"
table > /var/tmp/jobs-after
check "the job table equals the source's" "" cmp /var/tmp/jobs-before /var/tmp/jobs-after
ready() { curl -sf http://127.0.0.1:8080/readyz; }
poll 100 ready >/dev/null
serve_all > /var/tmp/served-after
check "every job's media is served byte-identical" "lxgate nginx" cmp /var/tmp/served-before /var/tmp/served-after
echo done >> "$out"
