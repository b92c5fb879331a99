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
    script("hub_envelope.py", args)
}

/// tests/reference/hub_rows.py (endoreg-db's own row schemas and payload rules), as
/// `hub_envelope`.
pub fn hub_rows(args: &[&str]) -> serde_json::Value {
    script("hub_rows.py", args)
}

/// tests/reference/hub_serializer.py: endoreg-db 1.6.5's own register gate
/// (`TransferJobCreateSerializer`, DRF on Django) on each body, one answer per body.
/// `db` is an empty database (`common::fresh_db()`) that gets the hub's rows for
/// `network`, `{"hub": KEY, "site": KEY, "center": KEY, "other_centers": [KEY]}` (the
/// last optional).
pub fn hub_serializer(
    db: &str,
    network: &serde_json::Value,
    bodies: &[PathBuf],
) -> Vec<serde_json::Value> {
    let network = network.to_string();
    let mut args = vec!["check", db, network.as_str()];
    args.extend(bodies.iter().map(|b| b.to_str().unwrap()));
    match script("hub_serializer.py", &args) {
        serde_json::Value::Array(answers) if answers.len() == bodies.len() => answers,
        other => panic!("hub_serializer.py answered {other}"),
    }
}

fn script(name: &str, args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name);
    let o = python().arg(script).args(args).output().unwrap();
    eprintln!(
        "reference {name} {}: {}",
        args[0],
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "the reference's {name} {} failed",
        args[0]
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The fields of a class in the reference's source, read with Python's `ast` (the
/// module itself does not import on Debian's 3.11): annotated names, or for a DRF
/// serializer its `Meta.fields`.
pub fn fields(rel_path: &str, class: &str) -> Vec<String> {
    const SCRIPT: &str = r#"
import ast, os, sys
rel, cls = sys.argv[1], sys.argv[2]
path = next(os.path.join(p, rel) for p in sys.path if os.path.isfile(os.path.join(p, rel)))
tree = ast.parse(open(path, encoding="utf-8").read())
node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
names = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
for s in node.body:
    if isinstance(s, ast.ClassDef) and s.name == "Meta":
        for a in s.body:
            if isinstance(a, ast.Assign) and any(getattr(t, "id", "") == "fields" for t in a.targets):
                names += [e.value for e in a.value.elts]
print("\n".join(names))
"#;
    let o = python()
        .args(["-c", SCRIPT, rel_path, class])
        .output()
        .expect("run the reference python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
