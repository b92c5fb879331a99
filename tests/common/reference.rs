//! The reference implementations (endoreg-db, lx-annotate, lx-dtypes; pinned in
//! tests/reference/requirements.txt) as a test peer: a venv on Debian's python3 with the
//! pinned wheels unpacked beside it, built once per target dir (under a file lock, so
//! parallel test binaries share it). Tests load modules through tests/reference/refload.py.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reference");
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
        let lock = dir.with_extension("lock");
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let st = Command::new("flock")
            .arg(&lock)
            .arg("bash")
            .arg(here.join("setup.sh"))
            .arg(&dir)
            .status()
            .expect("run tests/reference/setup.sh");
        assert!(
            st.success(),
            "building the reference environment failed (needs PyPI access and python3-venv)"
        );
        dir
    })
}

/// The venv's python with the reference wheels and refload.py importable.
pub fn python() -> Command {
    let dir = root();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let mut c = Command::new(dir.join("venv/bin/python"));
    c.env(
        "PYTHONPATH",
        format!("{}:{}", dir.join("site").display(), here.display()),
    )
    .env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// tests/reference/hub_envelope.py (the reference's hub envelope and rule code): its JSON
/// answer. What it stubbed and shimmed is printed with the test's output.
pub fn hub_envelope(args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hub_envelope.py");
    let o = python().arg(script).args(args).output().unwrap();
    eprintln!(
        "reference {}: {}",
        args[0],
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "the reference's {} failed", args[0]);
    serde_json::from_slice(&o.stdout).unwrap()
}
