{ pkgs }:
pkgs.mkShell {
  packages = with pkgs; [
    cargo rustc clippy rustfmt rust-analyzer
    postgresql nginx openssl nix
    systemd debootstrap curl
  ];
  RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
}
