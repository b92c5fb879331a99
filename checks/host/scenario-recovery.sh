#!/bin/bash
# Twin of checks/recovery.nix: the one-shot recovery merged the legacy tree before the
# web and watcher units started, and is skipped once its marker exists.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 20 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
d=/var/lib/lxgate/data
check "lxgate-data-recovery succeeded" "lxgate-data-recovery" test "$(systemctl show -P Result lxgate-data-recovery.service)" = success
r=$(systemctl show -P ExecMainExitTimestampMonotonic lxgate-data-recovery.service)
for u in lxgate lxgate-watcher; do
  s=$(systemctl show -P ExecMainStartTimestampMonotonic $u.service)
  check "recovery finished before $u.service started ($r < $s)" "lxgate-data-recovery $u" test "$r" -gt 0 -a "$r" -lt "$s"
done
check "legacy report copied" "lxgate-data-recovery" grep -qx "old report" $d/reports/2023/r1.txt
check "mtime preserved" "lxgate-data-recovery" test "$(stat -c %Y $d/reports/2023/r1.txt)" = "$(stat -c %Y /var/lib/lx-annotate/data/reports/2023/r1.txt)"
check "symlink copied as a link" "lxgate-data-recovery" test "$(readlink $d/reports/2023/latest)" = r1.txt
check "a legacy file inside the existing import/ was copied (per-file merge)" "lxgate-data-recovery" sh -c "journalctl -u lxgate-data-recovery --no-pager | grep -q 'copying /var/lib/lx-annotate/data/import/video_import/old.mp4 -> $d/import/video_import/old.mp4'"
check "the existing import/ was merged, not skipped" "lxgate-data-recovery" sh -c "! journalctl -u lxgate-data-recovery --no-pager | grep -q 'skipping: $d/import\$'"
check "copy logged per new entry" "lxgate-data-recovery" sh -c "journalctl -u lxgate-data-recovery --no-pager | grep -q 'copying /var/lib/lx-annotate/data/reports -> $d/reports'"
check "completion marker written, key=value" "lxgate-data-recovery" grep -q '^completed_at=' $d/logs/data_recovery_complete
systemctl restart lxgate-data-recovery.service
check "a second start is skipped by ConditionPathExists" "lxgate-data-recovery" test "$(systemctl show -P ConditionResult lxgate-data-recovery.service)" = no
check "lxgate.service active" "lxgate" systemctl is-active --quiet lxgate.service
echo done >> "$out"
