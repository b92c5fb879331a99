//! `lxgate deploy`'s release handling on a real filesystem, with the real binary as the
//! release: its id, a repeat install, the atomic `current` flip, and pruning. Units,
//! nginx and the rollback run on real systemd in checks/host/scenario-upgrade.sh.
mod common;
use common::*;

use lxgate::ops::deploy::{current, flip, install, prune, release_id, Layout};

#[test]
fn releases_install_once_flip_atomically_and_the_newest_are_kept() {
    let dir = tempdir();
    let layout = Layout {
        prefix: dir.path().join("opt"),
        ..Layout::default()
    };
    let bin = std::path::Path::new(bin());
    let id = install(&layout, bin).unwrap();
    assert_eq!(id, release_id(bin).unwrap());
    let (version, sha) = id.split_once('-').unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(sha.len(), 12);
    assert_eq!(
        install(&layout, bin).unwrap(),
        id,
        "a repeat finds it installed"
    );
    assert_eq!(current(&layout), None);
    flip(&layout, &id).unwrap();
    assert_eq!(current(&layout).as_deref(), Some(id.as_str()));
    let o = run_ok(
        std::process::Command::new(layout.current_bin()).arg("--version"),
        "the current release runs",
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("lxgate "));

    // Not an lxgate binary: refused by name.
    let e = install(&layout, std::path::Path::new("/bin/true")).unwrap_err();
    assert!(format!("{e:#}").contains("not an lxgate binary"), "{e:#}");

    for n in 0..6 {
        let d = dir
            .path()
            .join(format!("opt/releases/0.0.{n}-000000000000"));
        std::fs::create_dir_all(&d).unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + n);
        std::fs::File::open(&d).unwrap().set_modified(t).unwrap();
    }
    let removed = prune(&layout, 3, &[&id, "0.0.0-000000000000"]);
    assert_eq!(removed.len(), 3, "{removed:?}");
    let left = names(&dir.path().join("opt/releases"));
    assert!(
        left.contains(&id) && left.contains(&"0.0.0-000000000000".to_string()),
        "{left:?}"
    );
    assert_eq!(left.len(), 4, "{left:?}");
}
