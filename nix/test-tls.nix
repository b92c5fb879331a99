# Test certificates built for a VM test only (never a real secret). A hub CA and a
# server certificate it issues with SANs for `names`; the sites' CA and a site client
# certificate; a rogue CA and a certificate it signs, which the hub must refuse. All
# leaves are X.509 v3 (rustls, in the site's sender, refuses v1 and self-signed servers).
{ pkgs, names ? [ "localhost" ] }:
pkgs.runCommand "lxgate-test-tls" { nativeBuildInputs = [ pkgs.openssl ]; } ''
  mkdir $out
  for ca in hub-ca ca rogue-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj /CN=$ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
      -keyout $out/$ca.key -out $out/$ca.crt
  done
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=${pkgs.lib.concatMapStringsSep "," (n: "DNS:${n}") names},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
  for c in server:hub-ca:server site:ca:client rogue:rogue-ca:client; do
    n=''${c%%:*}; rest=''${c#*:}; ca=''${rest%%:*}; ext=''${rest#*:}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=$n \
      -keyout $out/$n.key -out $n.csr
    openssl x509 -req -in $n.csr -CA $out/$ca.crt -CAkey $out/$ca.key -CAcreateserial \
      -days 3650 -extfile $ext.ext -out $out/$n.crt
  done
''
