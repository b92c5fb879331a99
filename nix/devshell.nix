{ pkgs, nixpkgs }:
pkgs.mkShell {
  packages = with pkgs; [
    cargo rustc clippy rustfmt rust-analyzer
    postgresql nginx openssl nix
    systemd debootstrap curl ffmpeg-headless poppler-utils python3
    age restic wrk prometheus.cli
  ];
  RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
  # tests/module_eval.rs evaluates the module with the flake's own nixpkgs lib.
  LXGATE_FLAKE_NIXPKGS_LIB = "${nixpkgs}/lib";
}
