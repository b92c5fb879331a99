# A central hub and a site node: both roles boot with the module, and the hub's nginx
# lets only certificates from the sites' CA through to the transfer path (a forged
# attestation header is not a certificate). Host twin: checks/host/scenario-hub.sh.
{ pkgs, self }:
let
  tls = import ../nix/test-tls.nix { inherit pkgs; names = [ "hub" "site" ]; };
  base = role: { ... }: {
    imports = [ self.nixosModules.default ];
    services.lxgate = {
      enable = true;
      inherit role;
      nginx = { hostName = role; sslCertificate = "${tls}/server.crt"; sslCertificateKey = "${tls}/server.key"; };
    };
    networking.firewall.allowedTCPPorts = [ 443 ];
  };
in
pkgs.testers.runNixOSTest {
  name = "lxgate-hub-site";
  nodes.hub = { ... }: {
    imports = [ (base "central_hub") ];
    services.lxgate.hub.transferApi = { enable = true; clientCaFile = "${tls}/ca.crt"; };
  };
  nodes.site = base "site_node";
  testScript = ''
    start_all()
    hub.wait_for_unit("lxgate.service")
    site.wait_for_unit("lxgate.service")
    hub.wait_for_unit("nginx.service")
    url = "https://hub/api/media/hub/transfers/"
    def code(args):
        return site.succeed(f"curl -s --cacert ${tls}/server.crt -o /tmp/body -w '%{{http_code}}' {args} {url}").strip()
    with subtest("transfer path without a client certificate is refused by nginx"):
        assert code("") == "403"
    with subtest("a forged attestation header does not replace a certificate"):
        assert code("-H 'X-Client-Cert-Verified: SUCCESS'") == "403"
    with subtest("a certificate from another CA is refused"):
        assert code("--cert ${tls}/rogue.crt --key ${tls}/rogue.key") == "400"
    with subtest("a site certificate passes nginx and reaches lxgate"):
        assert code("--cert ${tls}/site.crt --key ${tls}/site.key") == "404"
        site.succeed("grep -q no_route /tmp/body")
  '';
}
