#!/usr/bin/env bash
# Host twin of a checks/*.nix VM test: boot Debian 12 with systemd as PID 1 under
# systemd-nspawn, install lxgate the way `lxgate render` tells a Debian operator to,
# run the scenario's assertions inside (scenario-NAME.sh), and report each one.
#   boot.sh BIN RESULTS_DIR SCENARIO [--drop-import-dir NAME]   (the latter: negative control)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need_tools
bin=$(readlink -f "$1"); results=$2; scenario=$3; drop=${5:-}
root=$(rootfs)
work=$(mktemp -d /tmp/lxgate-twin.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$results" "$work/render" "$work/tls"
rm -f "$results/results.txt"

cat > "$work/config.toml" <<TOML
role = "standalone"
[server]
default_center = "dev"
[watcher]
settle_ms = 300
rescan_secs = 2
[sap_import]
enable = true
center_key = "dev"
[host]
tls_certificate = "/etc/lxgate/tls/server.crt"
tls_certificate_key = "/etc/lxgate/tls/server.key"
TOML
extra_binds=()
wants_extra=()
render_env=()
if [ "$scenario" = hub ] || [ "$scenario" = migrated ]; then
  # Twin of checks/hub-site.nix: a central hub whose nginx demands a site certificate
  # on the transfer path. Sites' client certificates come from their own CA.
  sed -i 's/^role = .*/role = "central_hub"/; /^default_center/d' "$work/config.toml"
  if [ "$scenario" = hub ]; then
    printf '[hub]\ntransfer_api = true\nclient_ca_file = "/etc/lxgate/tls/client-ca.crt"\n' >> "$work/config.toml"
  else
    # The migrated host turns transfers on through its lx-annotate env file only.
    printf '[hub]\nclient_ca_file = "/etc/lxgate/tls/client-ca.crt"\n' >> "$work/config.toml"
  fi
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2)
  for ca in client-ca rogue-ca; do
    openssl req -x509 "${ec[@]}" -subj "/CN=$ca" -keyout "$work/tls/$ca.key" -out "$work/tls/$ca.crt" 2>/dev/null
  done
  for c in site:client-ca rogue:rogue-ca; do
    openssl req "${ec[@]}" -subj "/CN=${c%%:*}" -keyout "$work/tls/${c%%:*}.key" -out "$work/tls/${c%%:*}.csr" 2>/dev/null
    # X.509 v3 (extensions), as a real CA issues them: rustls refuses v1 client certificates.
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > "$work/tls/client.ext"
    openssl x509 -req -in "$work/tls/${c%%:*}.csr" -CA "$work/tls/${c#*:}.crt" -CAkey "$work/tls/${c#*:}.key" \
      -CAcreateserial -days 2 -extfile "$work/tls/client.ext" -out "$work/tls/${c%%:*}.crt" 2>/dev/null
  done
  chmod 0644 "$work"/tls/*.key
fi
if [ "$scenario" = recovery ]; then
  # A legacy data tree as lx-annotate left it, merged by lxgate-data-recovery at boot.
  mkdir -p "$work/legacy/reports/2023" "$work/legacy/import/video_import"
  echo "old report" > "$work/legacy/reports/2023/r1.txt"
  echo "old clip" > "$work/legacy/import/video_import/old.mp4"
  ln -s r1.txt "$work/legacy/reports/2023/latest"
  touch -d '2021-03-04 05:06:07' "$work/legacy/reports/2023/r1.txt"
  chmod -R a+rX "$work/legacy"
  printf '[recovery]\nenable = true\nsource = "/var/lib/lx-annotate/data"\n' >> "$work/config.toml"
  extra_binds+=(--bind-ro="$work/legacy:/var/lib/lx-annotate/data")
  wants_extra+=("systemd.wants=lxgate-data-recovery.service")
fi
if [ "$scenario" = backup ]; then
  # Twin of checks/backup.nix: the rendered lxgate-backup units with the guest's restic
  # (TWIN_PACKAGES), into a local repository.
  printf '[backup]\nenable = true\nrepository = "/var/backups/lxgate/repo"\n' >> "$work/config.toml"
  # It fetches every job's media twice in a row from one address: no token rate limit.
  sed -i '/^\[server\]/a token_auth_per_second = 0' "$work/config.toml"
fi
if [ "$scenario" = migrated ]; then
  # Twin of checks/migrated-host.nix: a host laid out as a LuxNix lx-annotate deployment
  # leaves it (checkout /var/lib/lx-annotate with data/ and the env file the reference
  # wrote), recovered by lxgate-data-recovery, then run by lxgate from that env file.
  repo="$work/lx-annotate"
  mkdir -p "$repo/data/storage/documents/2024" "$repo/data/storage/sensitive_videos" \
    "$repo/data/import/sap_import_processed" "$repo/data/import/video_import" "$repo/data/reports/2023" \
    "$repo/data/logs" "$repo/data/quarantine/failed"
  head -c 200000 /dev/urandom > "$repo/data/storage/documents/2024/doc1.bin"
  head -c 3000000 /dev/urandom > "$repo/data/storage/sensitive_videos/v1.mp4"
  echo "legacy report" > "$repo/data/reports/2023/r1.pdf"
  echo "converted" > "$repo/data/import/sap_import_processed/old.zip"
  : > "$repo/data/import/video_import/.keep"
  echo "old log" > "$repo/data/logs/watcher.log"
  touch -d '2021-03-04 05:06:07' "$repo/data/reports/2023/r1.pdf"
  # The values lx-annotate's deployment docs and its recovery write (section 4 of the
  # reference notes): every path key, the META form of the attestation header, the
  # 1.6.4 transfer switch, a role in upper case, a default center by name, WATCHER_*.
  cat > "$repo/.env.systemd" <<'ENV'
LX_ANNOTATE_ENCRYPTED_DATA_DIR=/var/lib/lx-annotate/data
DATA_DIR=/var/lib/lx-annotate/data
LX_ANNOTATE_DATA_DIR=/var/lib/lx-annotate/data
STORAGE_DIR=/var/lib/lx-annotate/data
IO_DIR=/var/lib/lx-annotate/data
ENDOREG_DEPLOYMENT_ROLE=Central_Hub
ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS=true
ENDOREG_HUB_TRANSFER_REQUIRE_MTLS=1
ENDOREG_HUB_TRANSFER_MTLS_META_KEY=HTTP_X_CLIENT_CERT_VERIFIED
ENDOREG_HUB_TRANSFER_MTLS_META_VALUE=SUCCESS
WATCHER_STABLE_AFTER_SECONDS=0.5
WATCHER_POLL_INTERVAL_SECONDS=0.5
WATCHER_LOG_LEVEL=INFO
WATCHER_CELERY_INLINE_FALLBACK_ENABLED=false
DJANGO_SETTINGS_MODULE=lx_annotate.settings.settings_prod
ENV
  chmod -R a+rX "$repo"
  sed -i '/^\[watcher\]/,/^\[/{/^settle_ms/d}' "$work/config.toml"
  printf '[recovery]\nenable = true\nsource = "/var/lib/lx-annotate/data"\n' >> "$work/config.toml"
  extra_binds+=(--bind-ro="$repo:/var/lib/lx-annotate")
  wants_extra+=("systemd.wants=lxgate-data-recovery.service")
  # The operator renders with the env file loaded, as the units run with it.
  while IFS= read -r l; do render_env+=("$l"); done < <(grep -v '^#' "$repo/.env.systemd" | grep -v '_DIR=')
fi
env "${render_env[@]+"${render_env[@]}"}" "$bin" --config "$work/config.toml" render all --bin /usr/local/bin/lxgate --out "$work/render" 2>/dev/null
if [ -n "$drop" ]; then
  sed -i "\#/import/$drop #d" "$work/render/tmpfiles.d/lxgate.conf"
fi
# The server certificate is issued by a CA (hub-ca), as at a real hub: rustls, in the
# site's sender, refuses a self-signed certificate as a server's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=hub-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$work/tls/hub-ca.key" -out "$work/tls/hub-ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout "$work/tls/server.key" -out "$work/tls/server.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$work/tls/server.ext"
openssl x509 -req -in "$work/tls/server.csr" -CA "$work/tls/hub-ca.crt" -CAkey "$work/tls/hub-ca.key" \
  -CAcreateserial -days 2 -extfile "$work/tls/server.ext" -out "$work/tls/server.crt" 2>/dev/null
chmod 0644 "$work/tls/server.key"
if [ "$scenario" = hub ]; then
  # The site side of checks/hub-site.nix, on the same host: a site_node's settings, its
  # data tree and its rendered lxgate-hub-export.service, which sends to this hub's nginx.
  cat > "$work/site.toml" <<'TOML'
role = "site_node"
[paths]
state = "/var/lib/lxgate-site"
[server]
default_center = "A"
listen = "127.0.0.1:8081"
[host]
config = "/etc/lxgate/site.toml"
nginx = false
[hub]
export = true
url = "https://localhost"
node_key = "site-a"
target_node_key = "hub"
ca_file = "/etc/lxgate/tls/hub-ca.crt"
client_certificate = "/etc/lxgate/tls/site.crt"
recipient_public_key_file = "/etc/lxgate/hub-recipient.pub.pem"
[storage]
video = "sealed"
TOML
  "$bin" --config "$work/site.toml" render all --bin /usr/local/bin/lxgate --out "$work/site-render" 2>/dev/null
  extra_binds+=(--bind-ro="$work/site.toml:/etc/lxgate/site.toml"
    --bind-ro="$work/site-render/tmpfiles.d/lxgate.conf:/etc/tmpfiles.d/lxgate-site.conf"
    --bind-ro="$work/site-render/systemd/lxgate-hub-export.service:/etc/systemd/system/lxgate-hub-export.service")
fi

cat > "$work/sysusers.conf" <<'SU'
g lxgate -
g lxgate-keys -
u lxgate -:lxgate "lxgate service" /var/lib/lxgate
m lxgate lxgate-keys
m www-data lxgate
SU

# Database and env file: what a Debian operator does once by hand (appended: on a
# migrated host the recovery has carried the lx-annotate env file over first).
cat > "$work/lxgate-twin-db.service" <<'U'
[Unit]
Description=twin: create the lxgate role and database, write the env file
After=postgresql@15-main.service systemd-tmpfiles-setup.service lxgate-data-recovery.service
Wants=postgresql@15-main.service
Before=lxgate-migrate.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'until runuser -u postgres -- pg_isready -q; do sleep 0.1; done; install -d -o lxgate -g lxgate -m 0750 /var/lib/lxgate; runuser -u postgres -- psql -qc "CREATE ROLE lxgate LOGIN" || true; runuser -u postgres -- createdb -O lxgate lxgate || true; printf "DATABASE_URL=host=/run/postgresql dbname=lxgate user=lxgate\\n" >> /var/lib/lxgate/.env.systemd; chown lxgate:lxgate /var/lib/lxgate/.env.systemd; chmod 0640 /var/lib/lxgate/.env.systemd'
U

cat > "$work/lxgate-twin-test.service" <<'U'
[Unit]
Description=twin: run the scenario's assertions
After=lxgate.service lxgate-watcher.service nginx.service lxgate-twin-db.service
[Service]
Type=oneshot
ExecStart=/bin/bash /twin/scenario.sh
ExecStopPost=/bin/systemctl --no-block poweroff
U
cp "$here/scenario-$scenario.sh" "$work/scenario.sh"
"$(dirname "$bin")/examples/sap_sample" "$work/sample.zip" 3 2>/dev/null || true

binds=(--bind-ro="$bin:/usr/local/bin/lxgate" --bind-ro="$work:/twin" --bind="$results:/twin-results"
  --bind-ro="$work/config.toml:/etc/lxgate/config.toml" --bind-ro="$work/tls:/etc/lxgate/tls"
  --bind-ro="$work/sysusers.conf:/etc/sysusers.d/lxgate.conf"
  --bind-ro="$work/lxgate-twin-db.service:/etc/systemd/system/lxgate-twin-db.service"
  --bind-ro="$work/lxgate-twin-test.service:/etc/systemd/system/lxgate-twin-test.service"
  ${extra_binds[@]+"${extra_binds[@]}"})
wants=()
if [ "$scenario" = upgrade ]; then
  # `lxgate deploy` installs units, tmpfiles and nginx itself, from the releases that
  # checks/host/upgrade-releases.sh built (LXGATE_TWIN_RELEASES).
  cp -a "${LXGATE_TWIN_RELEASES:?build them with checks/host/upgrade-releases.sh}" "$work/releases"
  units=(lxgate-twin-db.service lxgate-twin-test.service nginx.service)
else
  binds+=(--bind-ro="$work/render/tmpfiles.d/lxgate.conf:/etc/tmpfiles.d/lxgate.conf"
    --bind-ro="$work/render/nginx/lxgate.conf:/etc/nginx/sites-enabled/lxgate.conf")
  for u in "$work"/render/systemd/*; do
    binds+=(--bind-ro="$u:/etc/systemd/system/$(basename "$u")")
  done
  units=(lxgate-keys.service lxgate-migrate.service lxgate.service lxgate-watcher.service lxgate-sap-import.path lxgate-storage-audit.timer lxgate-twin-db.service lxgate-twin-test.service nginx.service)
fi
for u in "${units[@]}"; do
  wants+=("systemd.wants=$u")
done
wants+=(${wants_extra[@]+"${wants_extra[@]}"})
t0=$SECONDS
limit=${LXGATE_TWIN_TIMEOUT:-120}
# The backup twin ingests, backs up, rehearses and restores over a thousand jobs.
[ "$scenario" = backup ] && limit=${LXGATE_TWIN_TIMEOUT:-480}
timeout --kill-after=5 "$limit" systemd-nspawn -q -D "$root" -b --register=no --keep-unit \
  --private-network --volatile=overlay --console=pipe "${binds[@]}" \
  -- systemd.mask=systemd-remount-fs.service systemd.mask=getty.target "${wants[@]}" >"$results/console.log" 2>&1 || true
echo "boot-to-result: $((SECONDS - t0)) s" >&2
if [ ! -s "$results/results.txt" ]; then
  echo "FAIL twin produced no results (timeout or boot failure); console tail:" >&2
  tail -30 "$results/console.log" >&2
  exit 2
fi
cat "$results/results.txt"
! grep -q '^FAIL' "$results/results.txt"
