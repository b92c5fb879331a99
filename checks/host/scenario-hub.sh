#!/bin/bash
# Twin of checks/hub-site.nix, hub side: the transfer path is behind nginx mTLS, and no
# client can talk its way past it with a header.
out=/twin-results/results.txt
: > "$out"
ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" >> "$out"; for u in ${3:-}; do journalctl -u "$u" --no-pager -n 15 | sed 's/^/    /' >> "$out"; done; }
check() { local name=$1 units=$2; shift 2; local o; if o=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$o" | tail -5 | tr '\n' ' ')" "$units"; fi; }
t=/etc/lxgate/tls
url=https://localhost/api/media/hub/transfers/
hub() { curl -s --cacert $t/server.crt --resolve localhost:443:127.0.0.1 -o /tmp/body -w '%{http_code}' "$@" "$url"; }
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
reaches() { is 404 --cert $t/site.crt --key $t/site.key && grep -q '"no_route"' /tmp/body; }
check "a site certificate passes nginx and reaches lxgate" "nginx lxgate" reaches
# Off the transfer path a client certificate changes nothing and the attestation
# header a client sends never reaches the app.
check "other paths work without a client certificate" "nginx lxgate" sh -c "curl -sf --cacert $t/server.crt --resolve localhost:443:127.0.0.1 https://localhost/readyz"
echo done >> "$out"
