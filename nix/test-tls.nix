# Test certificates built for a VM test only (never a real secret): a server
# certificate with SANs for `names`, and a CA for client certificates.
{ pkgs, names ? [ "localhost" ] }:
pkgs.runCommand "lxgate-test-tls" { nativeBuildInputs = [ pkgs.openssl ]; } ''
  mkdir $out
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj /CN=${builtins.head names} -addext subjectAltName=${pkgs.lib.concatMapStringsSep "," (n: "DNS:${n}") names},IP:127.0.0.1 \
    -keyout $out/server.key -out $out/server.crt
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj /CN=sites-ca -keyout $out/ca.key -out $out/ca.crt
''
