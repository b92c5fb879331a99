//! A Python venv with the pinned packages of one requirements file, built once per
//! target dir and requirements content (under a file lock, so parallel test binaries
//! share it).
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's `bin/` for `requirements` (a path under tests/).
pub fn bin_dir(requirements: &str) -> PathBuf {
    let req = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(requirements);
    let text = std::fs::read_to_string(&req).unwrap_or_else(|e| panic!("{}: {e}", req.display()));
    use sha2::Digest;
    let stamp = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8]);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-{stamp}"));
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let script = r#"set -e; d="$1"; [ -f "$d/.ready" ] && exit 0; rm -rf "$d"
python3 -m venv "$d" || { echo "python3 -m venv failed: apt-get install python3-venv" >&2; exit 1; }
"$d/bin/pip" install -q -r "$2"; touch "$d/.ready""#;
    let st = Command::new("flock")
        .arg(dir.with_extension("lock"))
        .args(["bash", "-c", script, "venv"])
        .arg(&dir)
        .arg(&req)
        .status()
        .expect("run flock and bash");
    assert!(
        st.success(),
        "building the venv for tests/{requirements} failed (needs PyPI access and python3-venv)"
    );
    dir.join("bin")
}
