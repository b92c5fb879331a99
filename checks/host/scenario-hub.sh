#!/bin/bash
# Twin of checks/hub-site.nix, hub side: the transfer path is behind nginx mTLS, and no
# client can talk its way past it with a header.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 15 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
t=/etc/lxgate/tls
base=https://localhost/api/media/hub/transfers/
hub() { curl -s --cacert $t/hub-ca.crt --resolve localhost:443:127.0.0.1 -o /tmp/body -w '%{http_code}' "$@" "${url:-$base}"; }
is() { local want=$1; shift; local got; got=$(hub "$@"); [ "$got" = "$want" ] || { echo "HTTP $got, expected $want: $(head -c 200 /tmp/body)"; return 1; }; }

for u in lxgate-keys lxgate-migrate lxgate nginx; do
  check "$u.service active" "$u" systemctl is-active --quiet "$u.service"
done
role() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate config check | grep -q '"role": "central_hub"'; }
check "lxgate resolves its role as central_hub" "lxgate" role
check "lxgate doctor passes on the hub" "lxgate" runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate doctor
check "nginx asks for a client certificate signed by the sites' CA" "nginx" grep -q "ssl_client_certificate $t/client-ca.crt" /etc/nginx/sites-enabled/lxgate.conf
check "no client certificate: 403 from nginx" "nginx" is 403
check "forged X-Client-Cert-Verified: SUCCESS without a certificate: 403" "nginx" is 403 -H 'X-Client-Cert-Verified: SUCCESS'
check "a certificate from another CA is refused (400)" "nginx" is 400 --cert $t/rogue.crt --key $t/rogue.key
# 400 comes from lxgate's validation of the 7.0 body (before its node check, as
# endoreg-db orders it), which runs only after nginx's attestation passed.
reaches() { is 400 -X POST -H 'Content-Type: application/json' -d '{}' --cert $t/site.crt --key $t/site.key && grep -q '"transfer_key"' /tmp/body; }
check "a site certificate passes nginx and reaches lxgate's body validation" "nginx lxgate" reaches
lx() { runuser -u lxgate -- env $(cat /var/lib/lxgate/.env.systemd) LXGATE_CONFIG=/etc/lxgate/config.toml lxgate "$@"; }
lx center add A --name A >/dev/null 2>&1
fp=$(openssl x509 -in $t/site.crt -noout -fingerprint -sha1 | cut -d= -f2)
secret=$(lx node add site-a --center A --cert-fingerprint "$fp" 2>/dev/null)
# The hub's envelope key: as an operator makes it, readable by the service only (the
# NixOS module passes it as a systemd credential instead), named by the reference's variable.
lxgate keys hub-recipient --out /etc/lxgate/hub-recipient.pem > /etc/lxgate/hub-recipient.pub.pem 2>/dev/null
chown lxgate /etc/lxgate/hub-recipient.pem
printf 'ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES=/etc/lxgate/hub-recipient.pem\n' >> /var/lib/lxgate/.env.systemd
systemctl restart lxgate.service
check "lxgate restarts with its recipient keyring" "lxgate" systemctl is-active --quiet lxgate.service
unknown() { is 404 --cert $t/site.crt --key $t/site.key -H "X-Network-Node-Key: site-a" -H "X-Network-Node-Secret: $secret" && grep -q '"Not found."' /tmp/body; }
url=https://localhost/api/media/hub/transfers/nope/status/ check "an unknown transfer key answers 404 before the node gates" "lxgate" unknown
# Off the transfer path a client certificate changes nothing and the attestation
# header a client sends never reaches the app.
other() { url=https://localhost/api/upload-jobs/ is 401 && grep -q '"unauthenticated"' /tmp/body; }
check "other paths reach lxgate without a client certificate (401 from its token check)" "nginx lxgate" other
# Health and metrics are for the host itself, on lxgate's own listener.
local_only() { for p in healthz readyz metrics; do url=https://localhost/$p is 404 || return 1; done; }
check "/healthz, /readyz and /metrics are not served through nginx (404)" "nginx" local_only

# The site's sender, as its unit runs it (rendered from a site_node's settings, with the
# node secret and client key as systemd credentials), through the same nginx.
site_lx() { runuser -u lxgate -- env DATABASE_URL="host=/run/postgresql dbname=lxgate_site user=lxgate" LXGATE_CONFIG=/etc/lxgate/site.toml lxgate "$@"; }
install -d -m 0700 /etc/lxgate/credentials
printf '%s\n' "$secret" > /etc/lxgate/credentials/hub-node-secret
install -m 0600 $t/site.key /etc/lxgate/credentials/hub-client-key
chmod 0600 /etc/lxgate/credentials/hub-node-secret
runuser -u postgres -- createdb -O lxgate lxgate_site
printf 'DATABASE_URL=host=/run/postgresql dbname=lxgate_site user=lxgate\n' > /var/lib/lxgate-site/.env.systemd
chown lxgate:lxgate /var/lib/lxgate-site/.env.systemd
site_lx migrate >/dev/null 2>&1; site_lx center add A --name A >/dev/null 2>&1
# The site keeps videos sealed at rest ([storage] video = "sealed"): its master identity
# as `lxgate-keys.service` makes it, readable by the service account through its group.
env DATABASE_URL="host=/run/postgresql dbname=lxgate_site user=lxgate" LXGATE_CONFIG=/etc/lxgate/site.toml \
  lxgate keys ensure --key /var/lib/lxgate-site/keys/master.age --group lxgate-keys >/dev/null 2>&1
# A real video whose index (moov) is at the end, as ffmpeg writes it by default: ffprobe
# can read its facts only by seeking, which the sealed object allows through hub export's
# loopback feed alone.
ffmpeg -loglevel error -y -f lavfi -i testsrc=duration=4:size=320x240:rate=25 -f mp4 /var/lib/lxgate-site/data/import/video_import/.s.tmp
mv /var/lib/lxgate-site/data/import/video_import/.s.tmp /var/lib/lxgate-site/data/import/video_import/Patient_Name.mp4
chown lxgate:lxgate /var/lib/lxgate-site/data/import/video_import/Patient_Name.mp4
site_lx watch --once >/dev/null 2>&1
sealed_at_site() { runuser -u postgres -- psql -tA lxgate_site -c "SELECT stored_as FROM upload_jobs WHERE original_name = 'Patient_Name.mp4'" | grep -qx age; }
check "the site stored the video sealed (stored_as age)" "" sealed_at_site
sjob=$(runuser -u postgres -- psql -tA lxgate_site -c "SELECT id FROM upload_jobs WHERE original_name = 'Patient_Name.mp4'")
ssum=$(runuser -u postgres -- psql -tA lxgate_site -c "SELECT content_hash FROM upload_jobs WHERE original_name = 'Patient_Name.mp4'")
check "the site ingested a video to export" "" test -n "$sjob"
site_lx hub-export mark "$sjob" >/dev/null 2>&1
check "lxgate-hub-export.service sends the marked job (exit 0)" "lxgate-hub-export nginx lxgate" systemctl start lxgate-hub-export.service
at_hub() { runuser -u postgres -- psql -tA lxgate -c "SELECT count(*) FROM upload_jobs j JOIN transfers t ON t.upload_job_id = j.id WHERE j.ingest_mode='hub_transfer' AND j.content_hash='$ssum' AND j.original_name = '$ssum.mp4' AND j.provenance->>'client_cert_fingerprint' IS NOT NULL AND t.payload_schema_version = '7.0' AND t.envelope_receipt IS NOT NULL" | grep -qx 1; }
check "the hub has one job for it (7.0, envelope receipt kept, the client certificate in its provenance), named by its hash, not the file name" "lxgate" at_hub
applied() { runuser -u postgres -- psql -tA lxgate_site -c "SELECT state FROM hub_exports WHERE upload_job_id = '$sjob'" | grep -qx applied; }
check "the site records the export as applied" "lxgate-hub-export" applied
facts() { runuser -u postgres -- psql -tA lxgate -c "SELECT resource_rows->'video_file'->>'width', resource_rows->'video_file'->>'height', resource_rows->'video_file'->>'frame_count', resource_rows->'video_file'->>'fps' FROM transfers" | grep -Eqx '320\|240\|100\|25(\.0)?'; }
check "the hub has the sealed video's facts as ffprobe reads them (320x240, 100 frames, 25 fps) through the unit's feed" "lxgate-hub-export" facts
check "a second run sends nothing and succeeds" "lxgate-hub-export" systemctl start lxgate-hub-export.service
check "still one job at the hub" "lxgate" at_hub
no_secret() { ! journalctl --no-pager | grep -qF "$secret"; }
check "the node secret appears nowhere in the journal" "" no_secret
journalctl -u lxgate-hub-export --no-pager -o cat > /twin-results/hub-export.log 2>&1
echo done >> "$out"
