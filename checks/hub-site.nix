# VM test scaffolding: a central hub and a site node. Filled by the hub-transfer issue
# (mTLS transfer, forged attestation header rejected). Today it proves both roles boot
# with the module and the hub's nginx demands a client certificate on the transfer path.
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
    with subtest("transfer path without a client certificate is refused by nginx"):
        site.succeed("test \"$(curl -sk -o /dev/null -w '%{http_code}' https://hub/api/media/hub/transfers/)\" = 403")
  '';
}
