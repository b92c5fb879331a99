//! The layering of src/ (see src/lib.rs), checked by reading the sources: a boundary
//! never imports another boundary, the ingest core knows nothing of HTTP or inotify,
//! and nothing below the boundaries reaches up into them or into the operator commands.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `crate::a::b` paths named in code lines (comments skipped), as "a::b".
fn crate_paths(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push((n + 1, path));
        }
    }
    out
}

/// Every violation of `forbidden(path) -> Some(reason)` in the files under `dir`.
fn violations(dir: &Path, forbidden: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for f in sources(dir) {
        for (line, path) in crate_paths(&f) {
            if let Some(why) = forbidden(&path) {
                out.push(format!("{}:{line}: crate::{path} ({why})", f.display()));
            }
        }
    }
    out
}

fn boundaries() -> Vec<String> {
    std::fs::read_dir(src().join("boundary"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n != "mod.rs").then(|| n.trim_end_matches(".rs").to_string())
        })
        .collect()
}

#[test]
fn no_boundary_imports_another_boundary() {
    let all = boundaries();
    assert!(all.len() >= 4, "boundaries found: {all:?}");
    let mut bad = Vec::new();
    for b in &all {
        let dir = src().join("boundary");
        let files: Vec<PathBuf> = sources(&dir)
            .into_iter()
            .filter(|f| {
                let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                rel == format!("{b}.rs") || rel.starts_with(&format!("{b}/"))
            })
            .collect();
        for f in files {
            for (line, path) in crate_paths(&f) {
                if let Some(other) = path.strip_prefix("boundary::") {
                    let other = other.split("::").next().unwrap_or("");
                    if other != b {
                        bad.push(format!(
                            "{}:{line}: {b} imports boundary {other}",
                            f.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "boundaries importing each other:\n{}",
        bad.join("\n")
    );
}

#[test]
fn lower_layers_do_not_reach_up() {
    let mut bad = Vec::new();
    for layer in ["ingest", "hub", "access", "crypto", "db", "contract"] {
        bad.extend(violations(&src().join(layer), |p| {
            (p.starts_with("boundary") || p.starts_with("ops"))
                .then(|| format!("{layer} is below boundaries and operator commands"))
        }));
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn the_ingest_core_knows_nothing_of_http_or_inotify() {
    let mut bad = Vec::new();
    for f in sources(&src().join("ingest")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for krate in ["axum", "notify", "hyper", "tower"] {
                if code.contains(&format!("{krate}::")) {
                    bad.push(format!("{}:{}: uses {krate}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Both ends of a transfer speak `hub`: it may use no HTTP library (either side's), no
/// database and no storage, or one side's needs would leak into the other's protocol.
#[test]
fn the_hub_protocol_is_free_of_either_side() {
    let mut bad = Vec::new();
    for f in sources(&src().join("hub")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for krate in [
                "axum",
                "hyper",
                "tower",
                "ureq",
                "tokio_postgres",
                "deadpool",
            ] {
                if code.contains(&format!("{krate}::")) {
                    bad.push(format!("{}:{}: uses {krate}", f.display(), n + 1));
                }
            }
        }
    }
    bad.extend(violations(&src().join("hub"), |p| {
        (p.starts_with("db") || p.starts_with("access") || p.starts_with("config"))
            .then(|| "hub is protocol only".to_string())
    }));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.rs"),
        "use crate::boundary::http::AppState; // crate::ops in a comment is fine\n",
    )
    .unwrap();
    let v = violations(dir.path(), |p| {
        p.starts_with("boundary").then(|| "up".into())
    });
    assert_eq!(v.len(), 1, "{v:?}");
}

#[test]
fn config_is_a_leaf() {
    // The settings read the contract's defaults and check an age recipient's syntax;
    // everything else reads the settings, never the other way round.
    let bad = violations(&src().join("config"), |p| {
        (!(p.starts_with("contract") || p.starts_with("crypto::age")))
            .then(|| "config is a leaf".to_string())
    });
    assert!(bad.is_empty(), "config imports:\n{}", bad.join("\n"));
}
