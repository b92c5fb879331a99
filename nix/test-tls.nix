# Test certificates built for a VM test only (never a real secret): a server
# certificate with SANs for `names`, and a CA for client certificates.
{ pkgs, names ? [ "localhost" ] }:
pkgs.runCommand "lxgate-test-tls" { nativeBuildInputs = [ pkgs.openssl ]; } ''
  mkdir $out
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj /CN=${builtins.head names} -addext subjectAltName=${pkgs.lib.concatMapStringsSep "," (n: "DNS:${n}") names},IP:127.0.0.1 \
    -keyout $out/server.key -out $out/server.crt
  # The sites' CA and a site certificate it signs; a rogue CA and a certificate it
  # signs, which the hub must refuse.
  for ca in ca rogue-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj /CN=$ca -keyout $out/$ca.key -out $out/$ca.crt
  done
  for c in site:ca rogue:rogue-ca; do
    n=''${c%%:*}; ca=''${c#*:}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=$n \
      -keyout $out/$n.key -out $n.csr
    openssl x509 -req -in $n.csr -CA $out/$ca.crt -CAkey $out/$ca.key -CAcreateserial \
      -days 3650 -out $out/$n.crt
  done
''
