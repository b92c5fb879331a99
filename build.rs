//! Embeds migrations/*.sql in file-name order; the order check lives in the crate so a
//! bad prefix fails `cargo test` with a message naming both files.
//!
//! No absolute path may end up in the script or its output: the script binary and
//! OUT_DIR survive a moved or copied checkout (target/ moves with it), so a baked-in
//! path would keep pointing at the old place. The script reads the manifest directory at
//! run time, and the generated code names each file relative to the crate's own
//! `CARGO_MANIFEST_DIR`, which the compiler resolves where the crate is built.
use std::fmt::Write;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest).join("migrations");
    // Relative to the package root, so the check follows the checkout.
    println!("cargo:rerun-if-changed=migrations");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    let mut out = String::from("&[\n");
    for n in &names {
        println!("cargo:rerun-if-changed=migrations/{n}");
        let rel = format!("/migrations/{n}");
        writeln!(
            out,
            "    ({n:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {rel:?}))),"
        )
        .unwrap();
    }
    out.push(']');
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
