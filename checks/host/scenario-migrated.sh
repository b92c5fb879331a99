#!/bin/bash
# Twin of checks/migrated-host.nix: a host moved from lx-annotate (legacy checkout at
# /var/lib/lx-annotate with data/ and the env file the reference wrote, see boot.sh) runs
# on lxgate with nothing lost: every legacy file is in the data root byte-identical, the
# carried-over env file works, the watcher and the upload API take reference-shaped
# drops and requests, and transfers are on.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 20 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
poll() { local n=$1; shift; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; "$@"; }
legacy=/var/lib/lx-annotate/data
d=/var/lib/lxgate/data
envfile=/var/lib/lxgate/.env.systemd
t=/etc/lxgate/tls
# lxgate as the service user, with the env file exactly as the units read it.
lx() { runuser -u lxgate -- bash -c 'set -a; . /var/lib/lxgate/.env.systemd; set +a; LXGATE_CONFIG=/etc/lxgate/config.toml exec lxgate "$@"' lx "$@"; }
sql() { runuser -u postgres -- psql -tA lxgate -c "$1"; }

# 1. Recovery: before the units, every legacy file byte-identical in the data root.
check "lxgate-data-recovery succeeded" "lxgate-data-recovery" test "$(systemctl show -P Result lxgate-data-recovery.service)" = success
r=$(systemctl show -P ExecMainExitTimestampMonotonic lxgate-data-recovery.service)
for u in lxgate lxgate-watcher; do
  s=$(systemctl show -P ExecMainStartTimestampMonotonic $u.service)
  check "recovery finished before $u.service started" "lxgate-data-recovery $u" test "$r" -gt 0 -a "$r" -lt "$s"
done
hashes() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
same_files() {
  local want got
  want=$(hashes $legacy)
  got=$(cd $d && echo "$want" | awk '{print $2}' | tr '\n' '\0' | xargs -0 sha256sum)
  [ -n "$want" ] && [ "$want" = "$got" ] || { diff <(echo "$want") <(echo "$got") | head -5; return 1; }
}
check "every legacy file is in the data root, byte-identical (sha256 of both trees)" "lxgate-data-recovery" same_files
check "storage/ (created by tmpfiles first) was merged per file" "lxgate-data-recovery" sh -c "journalctl -u lxgate-data-recovery --no-pager | grep -q 'copying $legacy/storage/documents -> $d/storage/documents'"
check "mtime preserved" "lxgate-data-recovery" test "$(stat -c %Y $d/reports/2023/r1.pdf)" = "$(stat -c %Y $legacy/reports/2023/r1.pdf)"
check "completion marker, key=value" "lxgate-data-recovery" grep -q '^completed_at=' $d/logs/data_recovery_complete

# 2. The env file: carried over with the five path keys rewritten, the rest kept, and it works.
for k in LX_ANNOTATE_ENCRYPTED_DATA_DIR DATA_DIR LX_ANNOTATE_DATA_DIR STORAGE_DIR IO_DIR; do
  check "env file: $k rewritten to the data root" "lxgate-data-recovery" grep -qx "$k=$d" $envfile
done
check "env file: the reference's other values kept" "lxgate-data-recovery" grep -qx 'ENDOREG_HUB_TRANSFER_MTLS_META_KEY=HTTP_X_CLIENT_CERT_VERIFIED' $envfile
for u in lxgate-keys lxgate-migrate lxgate lxgate-watcher nginx; do
  check "$u.service active with the reference's env file" "$u" systemctl is-active --quiet "$u.service"
done
resolved() { lx config check > /tmp/cfg.json && grep -q '"role": "central_hub"' /tmp/cfg.json && grep -q "\"storage\": \"$d/storage\"" /tmp/cfg.json; }
check "Central_Hub resolves as central_hub, STORAGE_DIR=<data root> as <data>/storage" "lxgate" resolved

# 3. The watcher takes a reference-shaped drop: a YAML sidecar with a legacy key and the
#    raw gender letter, and a carrier in upper case that was still being copied.
lx center add A --name "Center A" >/dev/null 2>&1
p=$d/import/preanonymized_import
printf 'center_key: A\ncasenumber: "0042"\npatient_gender: W\nlegacy_flag: true\n' > /tmp/n1.yaml
echo "Befund" > /tmp/n1.txt
install -o lxgate -g lxgate -m 0640 /tmp/n1.yaml $p/N1.yaml
install -o lxgate -g lxgate -m 0640 /tmp/n1.txt $p/N1.TXT.PART
sleep 2
check "an upper-case .PART is left alone" "lxgate-watcher" test -e $p/N1.TXT.PART
mv $p/N1.TXT.PART $p/N1.TXT
# Pairs are sealed at rest by default (issue 19): the provenance names the sidecar's keys,
# its values (the normalised gender among them) live in the sealed sidecar object, which
# the audit opens and checks (tests/watcher.rs checks the normalised value itself).
pair() { sql "SELECT stored_as FROM upload_jobs WHERE original_name='N1.TXT' AND status='stored'" | grep -qx age; }
check "the YAML pair becomes a job, sealed at rest" "lxgate-watcher" poll 150 pair
check "its provenance names the sidecar's keys, patient_gender among them, not their values" "lxgate-watcher" \
  sh -c "runuser -u postgres -- psql -tA lxgate -c \"SELECT provenance->'sidecar' FROM upload_jobs WHERE original_name='N1.TXT'\" | grep -q '\"patient_gender\"' && ! runuser -u postgres -- psql -tA lxgate -c \"SELECT provenance::text FROM upload_jobs WHERE original_name='N1.TXT'\" | grep -qi 'female'"
check "storage audit --verify opens the sealed pair" "" lx storage audit --verify
check "no quarantine" "lxgate-watcher" sh -c "! ls $d/quarantine | grep -q reason"

# 4. The upload API takes the lx-annotate frontend's request through nginx.
tok=$(lx token create --role uploader --center A --name frontend 2>/dev/null | tail -1)
head -c 100 /dev/urandom > /tmp/r.bin; printf '%%PDF-1.7\n' | cat - /tmp/r.bin > /tmp/upload.pdf
api() { curl -s --cacert $t/hub-ca.crt --resolve localhost:443:127.0.0.1 -o /tmp/body -w '%{http_code}' -H "Authorization: Bearer $tok" "$@"; }
up() { [ "$(api -H 'Idempotency-Key: twin-1' -F file=@/tmp/upload.pdf -F center_key=A -F source_system=lx-annotate https://localhost/api/upload/)" = "$1" ] && grep -q '"upload_id"' /tmp/body; }
check "multipart, file first, no kind: 201 with upload_id" "nginx lxgate" up 201
check "the same Idempotency-Key and content: 200, the first job" "nginx lxgate" up 200
status_url=$(sed -n 's/.*"status_url":"\([^"]*\)".*/\1/p' /tmp/body)
status() { [ "$(api "https://localhost$status_url")" = 200 ] && grep -q '"source_center_key":"A"' /tmp/body; }
check "GET /api/upload/<id>/status/ answers as the reference" "nginx lxgate" status

# 5. Transfers are on (ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS) and the META-form header
#    name is the one nginx sets: a pinned site registers through nginx.
fp=$(openssl x509 -in $t/site.crt -noout -fingerprint -sha1 | cut -d= -f2)
secret=$(lx node add site-a --center A --cert-fingerprint "$fp" 2>/dev/null)
raw=$(printf 'raw:x' | sha256sum | cut -c1-64); processed=$(printf x | sha256sum | cut -c1-64)
# A payload schema 7.0 body (src/hub/wire); a blank target_node_key means this hub.
reg='{"transfer_key":"mig-1","source_node_key":"site-a","target_node_key":"","source_center_key":"A","resource_kind":"video","resource_hash":"'$raw'","transfer_mode":"metadata_and_processed_media","processing_policy":"preserve_processing_state","processing_intent":"sender_requests_state_preservation","cleanup_policy":"retain_all","payload_schema_version":"7.0","resource_rows":{"video_file":{"raw_video_hash":"'$raw'","processed_video_hash":"'$processed'","fps":25.0,"duration":2.0,"frame_count":50,"width":64,"height":48,"suffix":".mp4"},"video_state":{"anonymized":true,"sensitive_meta_processed":true,"anonymization_validated":true,"outside_segments_removed":true,"processed_file_sha256":"'$processed'"},"processing_history":{"file_hash":"'$processed'","success":true}},"processing_snapshot":{"sender_processing_success":true},"provenance":{"entrypoint":"lxgate_sender"}}'
registered() { [ "$(curl -s --cacert $t/hub-ca.crt --resolve localhost:443:127.0.0.1 -o /tmp/body -w '%{http_code}' --cert $t/site.crt --key $t/site.key -H 'X-Network-Node-Key: site-a' -H "X-Network-Node-Secret: $secret" -H 'Content-Type: application/json' -d "$reg" https://localhost/api/media/hub/transfers/)" = 201 ]; }
check "a site registers a transfer through nginx (201)" "nginx lxgate" registered
echo done >> "$out"
