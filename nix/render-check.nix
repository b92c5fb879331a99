# Flake check: the pure-Nix render (nix/render.nix) equals `lxgate render` byte for byte,
# for every file of every settings case in tests/render-cases/ — the comparison
# tests/contract.rs makes with nix-instantiate, here inside the Nix sandbox.
# pkgs.runCommand, pkgs.writeText: pkgs/build-support/trivial-builders/default.nix.
{ pkgs, lxgate, cases ? ../tests/render-cases }:
let
  inherit (pkgs) lib;
  bin = "/nix/store/0000000000000000000000000000000-lxgate/bin/lxgate";
  names = lib.attrNames (lib.filterAttrs (n: t: t == "regular" && lib.hasSuffix ".toml" n)
    (builtins.readDir cases));
  one = file:
    let
      case = lib.removeSuffix ".toml" file;
      settingsFile = "${cases}/${file}";
      nix = (import ./render.nix {
        settings = builtins.fromTOML (builtins.readFile settingsFile);
        inherit bin;
      }).files;
    in
    ''
      ${lxgate}/bin/lxgate render --config ${settingsFile} all --bin ${bin} --out rust/${case}
    '' + lib.concatStrings (lib.mapAttrsToList
      (path: text: ''
        install -D -m 0644 ${pkgs.writeText "lxgate-${case}-${baseNameOf path}" text} nix/${case}/${path}
      '')
      nix);
in
pkgs.runCommand "lxgate-render-equals-binary" { } (lib.concatStrings (map one names) + ''
  diff -ru nix rust
  test "$(ls nix | wc -l)" = ${toString (builtins.length names)}
  touch $out
'')
