#!/bin/bash
# Runs inside the twin guest as lxgate-twin-test.service. One line per assertion.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 15 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
poll() { local n=$1; shift; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }
envf() { set -a; . /var/lib/lxgate/.env.systemd; set +a; }

# 1. tmpfiles made every directory of the contract with its mode and owner.
while read -r t path mode user group _; do
  [ "$t" = d ] || continue
  check "tmpfiles $path $mode $user:$group" "systemd-tmpfiles-setup" test "$(stat -c '%a %U %G' "$path" 2>&1)" = "${mode#0} $user $group"
done < /twin/render/tmpfiles.d/lxgate.conf
for d in video_import report_import preanonymized_import sap_import sap_import_processed sap_import_failed; do
  check "import subtree $d exists" "systemd-tmpfiles-setup" test -d "/var/lib/lxgate/data/import/$d"
done
# 2. migrate finished before lxgate.service started.
m=$(systemctl show -P ExecMainExitTimestampMonotonic lxgate-migrate.service)
s=$(systemctl show -P ExecMainStartTimestampMonotonic lxgate.service)
check "lxgate-migrate ran before lxgate.service ($m < $s)" "lxgate-migrate lxgate" test "$m" -gt 0 -a "$m" -lt "$s"
# 3. units active.
for u in lxgate-keys lxgate-migrate lxgate lxgate-watcher nginx; do
  check "$u.service active" "$u" systemctl is-active --quiet "$u.service"
done
# 4. doctor passes inside the guest, as the service user.
check "lxgate doctor passes" "lxgate" runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate doctor
# 5. a drop becomes an UploadJob.
runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) lxgate center add dev --name Dev >/dev/null 2>&1
echo "twin clip $(date +%s%N)" > /tmp/clip.mp4
install -o lxgate -g lxgate -m 0640 /tmp/clip.mp4 /var/lib/lxgate/data/import/video_import/clip.mp4
job() { runuser -u postgres -- psql -tA lxgate -c "SELECT count(*) FROM upload_jobs WHERE original_name='clip.mp4' AND status='stored'" | grep -qx 1; }
check "video drop becomes an UploadJob" "lxgate-watcher" poll 100 job
check "drop left video_import" "lxgate-watcher" test ! -e /var/lib/lxgate/data/import/video_import/clip.mp4
# 5a. the job's story in the journal by its id: the watcher logs to journald with fields.
jid=$(runuser -u postgres -- psql -tA lxgate -c "SELECT id FROM upload_jobs WHERE original_name='clip.mp4'")
story() { journalctl --no-pager -o cat JOB_ID="$jid" BOUNDARY=watcher OUTCOME=accepted | grep -qx watcher; }
check "journalctl JOB_ID=$jid returns the watcher's line for that job" "lxgate-watcher" poll 50 story
# 5b. the SAP path unit converts a dropped bundle; its pairs become jobs.
if [ -s /twin/sample.zip ]; then
  install -o lxgate -g lxgate -m 0640 /twin/sample.zip /var/lib/lxgate/data/import/sap_import/.b.zip.part
  mv /var/lib/lxgate/data/import/sap_import/.b.zip.part /var/lib/lxgate/data/import/sap_import/bundle.zip
  processed() { test -e /var/lib/lxgate/data/import/sap_import_processed/bundle.zip; }
  check "lxgate-sap-import.path converted a dropped bundle" "lxgate-sap-import" poll 100 processed
  pairs() { runuser -u postgres -- psql -tA lxgate -c "SELECT count(*) FROM upload_jobs WHERE kind='preanonymized' AND status='stored'" | grep -qx 11; }
  check "the bundle's 11 pairs became UploadJobs" "lxgate-watcher lxgate-sap-import" poll 100 pairs
else
  fail "sample bundle present" "examples/sap_sample was not built (cargo build --release --examples)"
fi
# 5b2. a report is sealed at rest (issue 19): no plaintext under the data root; the
# audit below (--verify) opens it with the master identity, as the service user.
marker="twin-report-$(date +%s%N)"
printf '%%PDF-1.4 %s\n' "$marker" > /tmp/report.pdf
install -o lxgate -g lxgate -m 0640 /tmp/report.pdf /var/lib/lxgate/data/import/report_import/report.pdf
sealed_job() { runuser -u postgres -- psql -tA lxgate -c "SELECT stored_as FROM upload_jobs WHERE original_name='report.pdf' AND status='stored'" | grep -qx age; }
check "a report drop is stored sealed (stored_as age)" "lxgate-watcher" poll 100 sealed_job
check "no plaintext of the report under the data root" "lxgate-watcher" sh -c "! grep -rqF '$marker' /var/lib/lxgate/data"
# 5c. storage and job rows agree.
audit() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate storage audit --verify | grep ' 0 orphans, 0 missing, 0 damaged'; }
check "lxgate storage audit --verify: every object has its row" "lxgate" audit
check "lxgate-storage-audit.timer is scheduled" "lxgate-storage-audit.timer" systemctl is-active --quiet lxgate-storage-audit.timer
unit_audit() { systemctl start lxgate-storage-audit.service && journalctl -u lxgate-storage-audit.service --no-pager | grep ' 0 orphans, 0 missing, 0 damaged'; }
check "lxgate-storage-audit.service runs in its sandbox and finds storage consistent" "lxgate-storage-audit" unit_audit
# 6. SIGKILL the watcher: the web unit stays ready, the watcher comes back.
pid_before=$(systemctl show -P MainPID lxgate-watcher.service)
systemctl kill -s KILL lxgate-watcher.service
check "lxgate.service answers /readyz after the watcher is killed" "lxgate" curl -sf http://127.0.0.1:8080/readyz
back() { p=$(systemctl show -P MainPID lxgate-watcher.service); [ "$p" != 0 ] && [ "$p" != "$pid_before" ] && systemctl is-active --quiet lxgate-watcher.service; }
check "lxgate-watcher restarted (Restart=)" "lxgate-watcher" poll 50 back
# 7. exposure of each live long-running unit.
for u in lxgate lxgate-watcher; do
  score=$(systemd-analyze security "$u.service" --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  check "systemd-analyze security $u.service = $score <= 2.0" "" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
done
# 8. nginx serves a static file over TLS.
echo hello-static > /var/lib/lxgate/staticfiles/hello.txt
check "nginx serves /static/ over TLS" "nginx" sh -c 'curl -sf --cacert /etc/lxgate/tls/hub-ca.crt --resolve localhost:443:127.0.0.1 https://localhost/static/hello.txt | grep -qx hello-static'
# 9. lxgate smoke, the post-deploy acceptance check, as the service user: doctor, an
# age-sealed round trip through storage with the master key, a static file over TLS.
smoke() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate smoke --ca /etc/lxgate/tls/hub-ca.crt; }
check "lxgate smoke passes" "lxgate nginx" smoke
echo "done" >> "$out"
