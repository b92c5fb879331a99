# Every file in checks/*.nix is a VM test (pkgs.testers.runNixOSTest,
# pkgs/build-support/testers/default.nix); plus the package and the devShell build.
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  dir = ../checks;
  vmTests = pkgs.lib.mapAttrs'
    (file: _: pkgs.lib.nameValuePair (pkgs.lib.removeSuffix ".nix" file)
      (import (dir + "/${file}") { inherit pkgs self; }))
    (pkgs.lib.filterAttrs (n: t: t == "regular" && pkgs.lib.hasSuffix ".nix" n) (builtins.readDir dir));
in
vmTests // {
  package = self.packages.${system}.default;
  devShell = self.devShells.${system}.default;
  # The pure renderers evaluate to the same files the binary renders, for every case.
  render-equals-binary = import ./render-check.nix {
    inherit pkgs;
    lxgate = self.packages.${system}.default;
  };
}
