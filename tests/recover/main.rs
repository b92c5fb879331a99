//! `lxgate recover` on real trees, including SIGKILL trials.
#[path = "../common/mod.rs"]
mod common;
mod full;
mod merge;
mod sigkill;

use common::*;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Everything that must survive a copy: kind, mode, mtime, content or link target.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {}",
                    m.mode() & 0o7777,
                    hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
                )
            };
            out.insert(
                rel,
                format!("{what} mtime {}.{}", m.mtime(), m.mtime_nsec()),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn set_mtime(p: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    std::fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// A legacy tree: nested dirs, odd modes, old mtimes, links inside and outside.
fn legacy_tree(root: &Path, files: usize, size: usize) -> PathBuf {
    let src = root.join("legacy-data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for d in [
        "import/video_import",
        "storage/objects/ab",
        "reports/2023",
        "empty",
    ] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for i in 0..files {
        let dir = [
            "storage/objects/ab",
            "reports/2023",
            "import/video_import",
            "",
        ][i % 4];
        let p = src.join(dir).join(format!("f{i}.bin"));
        let mut c = vec![0u8; rng.gen_range(1..=size)];
        rng.fill(&mut c[..]);
        std::fs::write(&p, c).unwrap();
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode([0o640, 0o600, 0o644, 0o755][i % 4]),
        )
        .unwrap();
        set_mtime(&p, 86_400 * (i as u64 % 400 + 1));
    }
    std::os::unix::fs::symlink("f0.bin", src.join("inside-link")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("reports/outside-link")).unwrap();
    std::fs::set_permissions(
        src.join("reports/2023"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    for d in ["reports/2023", "reports", "empty", "storage/objects/ab"] {
        set_mtime(&src.join(d), 99_999);
    }
    src
}

/// `lxgate recover MODE --from SRC --to TARGET EXTRA...`
fn recover_into(mode: &str, src: &Path, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        mode,
        "--from",
        src.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    recover(&a)
}

fn recover(args: &[&str]) -> std::process::Output {
    let mut a = vec!["recover"];
    a.extend_from_slice(args);
    lxgate(&a, &[])
}

fn files_only(snap: BTreeMap<String, String>) -> BTreeMap<String, String> {
    snap.into_iter()
        .filter(|(_, v)| !v.starts_with("dir "))
        .collect()
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux(PathBuf);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let o = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)");
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn a_terminal_shows_progress_and_a_pipe_gets_none() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 120, 256 * 1024);
    let files = snapshot(&src)
        .values()
        .filter(|v| v.starts_with("file "))
        .count();
    let piped = t.path().join("piped.out");
    let path = std::env::var("PATH").unwrap_or_default();
    let run = |to: &str| {
        format!(
            // The terminal's own TERM (tmux sets it): without one, nothing is drawn.
            "env -i PATH={path} TERM=\"$TERM\" {} recover --merge --from {} --to {}",
            bin(),
            src.display(),
            t.path().join(to).display()
        )
    };
    // One shell in a real terminal: first on the terminal, then into a pipe.
    let script = format!(
        "{}; echo tty-exit-$?; {} 2>&1 | cat > {}; echo pipe-exit-$?; sleep 600",
        run("on-tty"),
        run("on-pipe"),
        piped.display()
    );
    let tmux = Tmux(t.path().join("tmux.sock"));
    tmux.cmd(&[
        "new-session",
        "-d",
        "-x",
        "220",
        "-y",
        "60",
        "sh",
        "-c",
        &script,
    ]);
    let mut pane = String::new();
    wait_for("both recover runs", Duration::from_secs(120), || {
        pane = stdout(&tmux.cmd(&["capture-pane", "-p", "-J", "-S", "-500"]));
        pane.contains("pipe-exit-")
    });
    assert!(
        pane.contains("tty-exit-0") && pane.contains("pipe-exit-0"),
        "{pane}"
    );
    // The bar in its final state: all bytes and files, with the counts.
    let bar = pane
        .lines()
        .find(|l| l.starts_with("recover [") && l.contains("] "))
        .unwrap_or_else(|| panic!("no progress bar on the terminal:\n{pane}"));
    assert!(bar.contains(&format!("{files}/{files} files")), "{bar}");
    assert!(bar.contains("[====="), "{bar}");
    // The pipe: the same lines a log would get, no bar, no cursor control.
    let text = std::fs::read_to_string(&piped).unwrap();
    assert!(text.contains("recovery summary: copied"), "{text}");
    assert!(
        !text.contains("recover [") && !text.contains('\r') && !text.contains('\x1b'),
        "{text:?}"
    );
    assert!(
        text.contains(&format!("recover: {files} files")),
        "the summary line: {text}"
    );
}
