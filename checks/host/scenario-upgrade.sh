#!/bin/bash
# Issue 18 on real systemd (Debian 12 twin), tests 1-4: `lxgate deploy` rolls back a
# release whose migration fails and one whose smoke fails after an incompatible
# migration (snapshot restored), with nothing accepted in the window lost; a compatible
# migration survives a manual rollback; SIGKILL of the deploy at random points.
# Releases: /twin/releases/{a,b,c,d} (checks/host/upgrade-releases.sh). Runs as root
# inside the guest as lxgate-twin-test.service.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 20 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
R=/twin/releases
cur=/opt/lxgate/current/bin/lxgate
deploy() { /twin/releases/a --config /etc/lxgate/config.toml deploy --release "$1" --smoke-ca /etc/lxgate/tls/hub-ca.crt; }
as_lxgate() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml "$cur" "$@"; }
id_of() { echo "$("$1" --version | awk '{print $2}')-$(sha256sum "$1" | cut -c1-12)"; }
current() { basename "$(readlink /opt/lxgate/current)"; }
ready() { curl -sf http://127.0.0.1:8080/readyz >/dev/null; }
# Everything but upload_jobs' rows, and the job ids: equal before and after a rollback.
dump() { runuser -u postgres -- pg_dump --no-owner --exclude-table-data=upload_jobs lxgate | grep -v '^\\\(un\)\?restrict'; }
jobs() { runuser -u postgres -- psql -tA lxgate -c "SELECT id FROM upload_jobs ORDER BY id"; }
# Sends one upload every 0.2 s from when the deploy window opens until one is accepted;
# logs each status with whether the window was open when the answer came.
uploader() {
  local log=$1 body=$2 code
  until [ -e /var/lib/lxgate/deploy/ingest-paused ] || [ -e "$log.stop" ]; do sleep 0.05; done
  while true; do
    code=$(curl -s -o "$log.body" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
      -H "X-Filename: window-$body.pdf" -H 'X-Kind: report' --data-binary "%PDF $body" http://127.0.0.1:8080/api/upload/)
    if [ -e /var/lib/lxgate/deploy/ingest-paused ]; then echo "$code open" >> "$log"; else echo "$code closed" >> "$log"; fi
    case $code in 201) return 0 ;; esac
    sleep 0.2
  done
}

A=$(id_of $R/a); C=$(id_of $R/c); D=$(id_of $R/d)
check "first deploy of a" "lxgate lxgate-migrate" deploy $R/a
check "a is current and ready" "lxgate" sh -c "[ $(current) = $A ] && curl -sf http://127.0.0.1:8080/readyz"
as_lxgate center add dev --name Dev >/dev/null
token=$(as_lxgate token create --role uploader --center dev --name twin | tail -1)
check "an upload before the deploys" "lxgate" sh -c "curl -sf -o /dev/null -X POST -H 'Authorization: Bearer $token' -H 'X-Filename: before.pdf' -H 'X-Kind: report' --data-binary '%PDF before' http://127.0.0.1:8080/api/upload/"

# Test 1 and 2: a failing migration (b), a failing smoke after an incompatible one (c).
same_but_one() {
  cmp -s "/tmp/before-$1.sql" "/tmp/after-$1.sql" \
    && [ "$(comm -13 "/tmp/before-$1.jobs" "/tmp/after-$1.jobs" | wc -l)" = 1 ] \
    && [ "$(comm -23 "/tmp/before-$1.jobs" "/tmp/after-$1.jobs" | wc -l)" = 0 ]
}
status_line() { "$cur" --config /etc/lxgate/config.toml deploy status | grep rolled_back | sed -n "$1"; }
b_no_restore() { status_line 1p | grep -v 'restored snapshot' | grep -q .; }
c_restored() { status_line 2p | grep 'restored snapshot' | grep -q 'smoke'; }
ahead() { as_lxgate migrate --status | grep -q '^ahead 9001_twin_expand'; }
for v in b c; do
  dump > "/tmp/before-$v.sql"; jobs > "/tmp/before-$v.jobs"
  log=/tmp/uploads-$v; rm -f "$log" "$log.stop"
  uploader "$log" "$v" & up=$!
  deploy $R/$v > /tmp/deploy-$v.out 2>&1; rc=$?
  touch "$log.stop"
  check "deploy of $v exits 1 after rolling back" "lxgate lxgate-migrate" test "$rc" = 1
  check "$v: a is current again and ready" "lxgate" sh -c "[ $(current) = $A ] && curl -sf http://127.0.0.1:8080/readyz"
  check "$v: no deploy in progress, ingest not paused" "" sh -c "[ ! -e /var/lib/lxgate/deploy/in-progress.json ] && [ ! -e /var/lib/lxgate/deploy/ingest-paused ]"
  timeout 60 tail --pid=$up -f /dev/null
  check "$v: the upload sent during the window was accepted after the rollback" "lxgate" grep -qx '201 closed' "$log"
  check "$v: nothing was accepted while the window was open" "lxgate" sh -c "! grep -q '^201 open' $log"
  dump > "/tmp/after-$v.sql"; jobs > "/tmp/after-$v.jobs"
  check "$v: the database equals the one before (full dump), but for that upload" "" same_but_one "$v"
done
check "b's rollback restored no snapshot (its migration left nothing)" "" b_no_restore
check "c's rollback restored the snapshot, and says smoke failed" "" c_restored
check "c's contract migration is gone" "" sh -c "runuser -u postgres -- psql -tA lxgate -c \"SELECT count(*) FROM information_schema.columns WHERE table_name='centers' AND column_name='name'\" | grep -qx 1"

# Test 3: a compatible migration (d), then a manual rollback to a: ready.
# The write-unavailability window of a deploy with one compatible migration: how long
# the ingest-paused marker exists (the benchmark number of issue 18, not an assertion).
( while [ ! -e /var/lib/lxgate/deploy/ingest-paused ]; do sleep 0.02; done; t0=$(date +%s.%N)
  while [ -e /var/lib/lxgate/deploy/ingest-paused ]; do sleep 0.02; done; t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }' > /tmp/window-d ) & watcher=$!
check "deploy of d" "lxgate lxgate-migrate" deploy $R/d
timeout 10 tail --pid=$watcher -f /dev/null
ok "write-unavailability window of the deploy of d (one compatible migration): $(cat /tmp/window-d 2>/dev/null || echo '?') s"
check "rollback by hand to a" "lxgate lxgate-migrate" deploy $R/a
check "a ready on d's schema" "lxgate" sh -c "[ $(current) = $A ] && curl -sf http://127.0.0.1:8080/readyz"
check "a lists d's migration as ahead" "" ahead
check "a's metric counts it" "lxgate" sh -c "curl -sf http://127.0.0.1:8080/metrics | grep -qx 'lxgate_schema_migrations_ahead 1'"

# Test 4: SIGKILL of the deploy at random points, 24 trials between a, d and c; the
# rerun finishes the job. c always ends rolled back to the release before it.
targets=(d a c a d c)
for i in $(seq 1 24); do
  t=${targets[$((i % ${#targets[@]}))]}
  # The binary itself in the background (not the shell function), so $! is its pid.
  /twin/releases/a --config /etc/lxgate/config.toml deploy --release "$R/$t" --smoke-ca /etc/lxgate/tls/hub-ca.crt > /tmp/kill-$i.out 2>&1 & pid=$!
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", (r % 900) / 100 }')"
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  deploy $R/$t > /tmp/rerun-$i.out 2>&1; rc=$?
  now=$(current)
  if [ "$t" = c ]; then want_rc=1; else want_rc=0; fi
  if [ "$rc" = "$want_rc" ] && [ "$now" != "$C" ] && ready \
     && as_lxgate migrate --status >/dev/null 2>&1 \
     && [ ! -e /var/lib/lxgate/deploy/in-progress.json ] && [ ! -e /var/lib/lxgate/deploy/ingest-paused ]; then
    ok "kill trial $i ($t): one release ($now), ready, its schema"
  else
    fail "kill trial $i ($t)" "rc=$rc want $want_rc, current=$now, $(tail -3 /tmp/rerun-$i.out | tr '\n' ' ')" "lxgate lxgate-migrate"
  fi
done
check "at most 5 releases kept" "" sh -c "[ \$(ls /opt/lxgate/releases | wc -l) -le 5 ]"
