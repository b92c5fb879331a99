{
  description = "lxgate: the runtime boundary for clinic patient media, and its NixOS module";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
        lxgate = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        # Sample SAP IS-H bundles for VM tests (examples/sap_sample.rs).
        sapSample = (pkgs.callPackage ./nix/package.nix { }).overrideAttrs (old: {
          pname = "lxgate-sap-sample";
          cargoBuildFlags = [ "--example" "sap_sample" ];
          postInstall = "install -Dm755 target/*/release/examples/sap_sample $out/bin/sap_sample";
        });
      });

      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./modules/lxgate.nix ];
        services.lxgate.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = forAll (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      devShells = forAll (pkgs: { default = import ./nix/devshell.nix { inherit pkgs nixpkgs; }; });

      formatter = forAll (pkgs: pkgs.nixpkgs-fmt);
    };
}
