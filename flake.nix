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
      });

      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./modules/lxgate.nix ];
        services.lxgate.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = forAll (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      devShells = forAll (pkgs: { default = import ./nix/devshell.nix { inherit pkgs; }; });

      formatter = forAll (pkgs: pkgs.nixpkgs-fmt);
    };
}
