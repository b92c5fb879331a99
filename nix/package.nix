# rustPlatform.buildRustPackage (pkgs/build-support/rust/build-rust-package) with the
# source limited by lib.fileset (lib/fileset) to what the build reads; wrapProgram
# (pkgs/build-support/setup-hooks/make-wrapper.sh) puts ffprobe, which the hub sender
# reads video facts with, on lxgate's PATH.
{ lib, rustPlatform, makeWrapper, ffmpeg-headless }:
rustPlatform.buildRustPackage {
  pname = "lxgate";
  version = (lib.importTOML ../Cargo.toml).package.version;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../build.rs
      ../src
      ../examples
      ../docs
      ../migrations
      ../nix/contract.toml
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;
  nativeBuildInputs = [ makeWrapper ];
  postInstall = ''
    wrapProgram $out/bin/lxgate --prefix PATH : ${lib.makeBinPath [ ffmpeg-headless ]}
  '';
  # Integration tests need PostgreSQL, nginx and root; they run in `nix flake check`
  # VM tests and in the host twins, not in the sandbox.
  cargoTestFlags = [ "--lib" ];
  meta = {
    description = "Runtime boundary for clinic patient media";
    mainProgram = "lxgate";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
