//! `lxgate recover` on real trees, including SIGKILL trials.
mod common;
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

#[test]
fn merge_into_an_empty_target_gives_an_identical_tree_and_leaves_the_source_alone() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 40, 20_000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    let o = recover_into("--merge", &src, &target, &["--mark-complete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "copying {} -> {}",
            src.join("reports").display(),
            target.join("reports").display()
        )),
        "{out}"
    );
    assert_eq!(snapshot(&src), before, "the source is never modified");
    let mut after = snapshot(&target);
    after.remove("logs");
    after.remove("logs/data_recovery_complete");
    assert_eq!(after, before, "target differs from source");
    assert_eq!(
        std::fs::read_link(target.join("reports/outside-link")).unwrap(),
        PathBuf::from("/etc/hostname"),
        "copied as a link, never followed"
    );
    let env = std::fs::read_to_string(t.path().join("state/.env.systemd")).unwrap();
    assert!(
        env.contains(&format!(
            "LX_ANNOTATE_ENCRYPTED_DATA_DIR={}",
            target.display()
        )),
        "{env}"
    );
    assert!(target.join("logs/data_recovery_complete").exists());
    assert!(out.contains("recovery summary: copied 40 files"), "{out}");
    // A second run copies nothing and keeps the env file it wrote.
    let o = recover_into("--merge", &src, &target, &[]);
    let out = stdout(&o);
    assert!(
        out.contains("copied 0 files")
            && out.contains("target env file already exists, leaving as source of truth"),
        "{out}"
    );
}

/// The snapshot's files and links only: directories created in advance keep their own
/// mode and mtime, which a merge leaves alone.
fn files_only(snap: BTreeMap<String, String>) -> BTreeMap<String, String> {
    snap.into_iter()
        .filter(|(_, v)| !v.starts_with("dir "))
        .collect()
}

#[test]
fn merge_into_a_partly_filled_target_keeps_what_exists_and_warns_for_each() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 12, 1000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    std::fs::create_dir_all(target.join("reports")).unwrap();
    std::fs::create_dir_all(target.join("storage/objects/ab")).unwrap();
    std::fs::write(target.join("reports/mine.txt"), b"operator's own file").unwrap();
    std::fs::write(target.join("f3.bin"), b"newer data, must stay").unwrap();
    std::fs::write(
        target.join("storage/objects/ab/f0.bin"),
        b"newer, must stay",
    )
    .unwrap();
    std::fs::write(
        t.path().join("state/.env.systemd"),
        b"DATA_DIR=/somewhere/else\n",
    )
    .unwrap();
    let o = recover_into("--merge", &src, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for p in ["f3.bin", "storage/objects/ab/f0.bin"] {
        assert!(
            out.contains(&format!(
                "WARNING: destination already exists, skipping: {}",
                target.join(p).display()
            )),
            "{out}"
        );
    }
    for p in ["reports", "storage", "storage/objects/ab"] {
        assert!(
            !out.contains(&format!("skipping: {}\n", target.join(p).display())),
            "an existing directory is merged, not skipped: {out}"
        );
    }
    assert!(
        out.contains(&format!(
            "copying {} -> {}",
            src.join("storage/objects/ab/f4.bin").display(),
            target.join("storage/objects/ab/f4.bin").display()
        )),
        "each file copied into an existing directory is logged: {out}"
    );
    assert!(
        out.contains(&format!(
            "target env file already exists, leaving as source of truth: {}",
            t.path().join("state/.env.systemd").display()
        )),
        "{out}"
    );
    assert_eq!(
        std::fs::read(target.join("f3.bin")).unwrap(),
        b"newer data, must stay"
    );
    assert_eq!(
        std::fs::read(target.join("storage/objects/ab/f0.bin")).unwrap(),
        b"newer, must stay"
    );
    assert_eq!(
        std::fs::read(target.join("reports/mine.txt")).unwrap(),
        b"operator's own file"
    );
    // Everything else arrived, inside the existing directories too.
    let mut want = files_only(before.clone());
    want.remove("f3.bin");
    want.remove("storage/objects/ab/f0.bin");
    let mut got = files_only(snapshot(&target));
    got.remove("f3.bin");
    got.remove("storage/objects/ab/f0.bin");
    got.remove("reports/mine.txt");
    assert_eq!(got, want);
    assert_eq!(
        snapshot(&target)["reports/2023"],
        before["reports/2023"],
        "a directory the merge creates keeps the source's mode and mtime"
    );
    assert_eq!(
        std::fs::read(t.path().join("state/.env.systemd")).unwrap(),
        b"DATA_DIR=/somewhere/else\n"
    );
    assert_eq!(snapshot(&src), before);
}

#[test]
fn merge_fills_the_skeleton_tmpfiles_created_before_recovery_ran() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 60, 5000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    // What systemd-tmpfiles creates before lxgate-data-recovery starts.
    for d in ["storage", "import/video_import", "logs", "reports"] {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    let o = recover_into("--merge", &src, &target, &["--mark-complete"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("recovery summary: copied 60 files"),
        "{}",
        stdout(&o)
    );
    let mut got = files_only(snapshot(&target));
    got.remove("logs/data_recovery_complete");
    assert_eq!(
        got,
        files_only(before.clone()),
        "every legacy file, byte-identical"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("logs/data_recovery_complete"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("completed_at="))
            .count(),
        1,
        "key=value, as lx-annotate's recover_runtime_data reads it"
    );
    // A rerun copies nothing and logs each file it keeps.
    let o = recover_into("--merge", &src, &target, &[]);
    let out = stdout(&o);
    assert!(out.contains("copied 0 files"), "{out}");
    assert_eq!(
        out.matches("WARNING: destination already exists, skipping: ")
            .count(),
        before.values().filter(|v| !v.starts_with("dir ")).count(),
        "{out}"
    );
}

#[test]
fn a_legacy_env_file_is_carried_over_with_its_five_path_keys_rewritten() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 2, 10);
    // The legacy checkout is the source's parent: <repo>/data and <repo>/.env.systemd.
    std::fs::write(
        t.path().join(".env.systemd"),
        "DJANGO_DB_PASSWORD=s3cret\nLX_ANNOTATE_ENCRYPTED_DATA_DIR=/old/data\nSTORAGE_DIR=/old/data/storage\nENDOREG_DEPLOYMENT_ROLE=site_node\nIO_DIR=/old/io\n# a comment\n",
    )
    .unwrap();
    let target = t.path().join("state/data");
    let o = recover_into("--merge", &src, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let env_path = t.path().join("state/.env.systemd");
    assert!(
        stdout(&o).contains(&format!(
            "copied env file {} -> {}",
            t.path().join(".env.systemd").display(),
            env_path.display()
        )),
        "{}",
        stdout(&o)
    );
    let d = target.display();
    assert_eq!(
        std::fs::read_to_string(&env_path).unwrap(),
        format!("DJANGO_DB_PASSWORD=s3cret\nLX_ANNOTATE_ENCRYPTED_DATA_DIR={d}\nSTORAGE_DIR={d}\nENDOREG_DEPLOYMENT_ROLE=site_node\nIO_DIR={d}\n# a comment\nDATA_DIR={d}\nLX_ANNOTATE_DATA_DIR={d}\n")
    );
    assert_eq!(
        std::fs::metadata(&env_path).unwrap().mode() & 0o777,
        0o640,
        "it may hold the database password"
    );
    // Without a legacy env file: the five keys alone, as the reference writes them.
    let t2 = tempdir();
    let src2 = legacy_tree(t2.path(), 2, 10);
    let target2 = t2.path().join("state/data");
    let o = recover_into("--merge", &src2, &target2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("created minimal env file at: "),
        "{}",
        stdout(&o)
    );
    let d = target2.display();
    assert_eq!(
        std::fs::read_to_string(t2.path().join("state/.env.systemd")).unwrap(),
        format!("LX_ANNOTATE_ENCRYPTED_DATA_DIR={d}\nDATA_DIR={d}\nLX_ANNOTATE_DATA_DIR={d}\nSTORAGE_DIR={d}\nIO_DIR={d}\n")
    );
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 8, 100);
    let target = t.path().join("state/data");
    std::fs::create_dir_all(target.join("empty")).unwrap();
    std::fs::write(target.join("f3.bin"), b"kept").unwrap();
    let o = recover_into("--merge", &src, &target, &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "would copy {} -> {}",
            src.join("reports").display(),
            target.join("reports").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "WARNING: destination already exists, skipping: {}",
            target.join("f3.bin").display()
        )),
        "{out}"
    );
    assert!(out.contains("would write env file"), "{out}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        2,
        "only the pre-existing entries"
    );
    assert!(!t.path().join("state/.env.systemd").exists());
}

#[test]
fn sigkill_trials_then_rerun_give_the_same_tree_and_no_temp_files() {
    sigkill_trials(&[]);
}

#[test]
fn sigkill_trials_into_an_existing_skeleton_then_rerun_give_every_file() {
    sigkill_trials(&["storage/objects/ab", "reports/2023", "import/video_import"]);
}

/// 20 runs killed at random points, then one run to the end: the same tree as the
/// source (only the files, where `skeleton` directories existed in advance).
fn sigkill_trials(skeleton: &[&str]) {
    let t = tempdir();
    let src = legacy_tree(t.path(), 400, 400_000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    for d in skeleton {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for trial in 0..20 {
        let log = t.path().join(format!("trial{trial}.log"));
        let mut p = Proc::spawn(
            &[
                "recover",
                "--merge",
                "--from",
                src.to_str().unwrap(),
                "--to",
                target.to_str().unwrap(),
            ],
            &[],
            &log,
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..120)));
        p.kill9();
    }
    let o = recover_into("--merge", &src, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = snapshot(&target);
    let temps: Vec<_> = after
        .keys()
        .filter(|k| k.contains(".lxgate-recover-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    if skeleton.is_empty() {
        assert_eq!(after, before);
    } else {
        assert_eq!(files_only(after), files_only(before.clone()));
    }
    assert_eq!(snapshot(&src), before);
}

#[test]
fn an_unsupported_source_entry_is_reported_the_rest_copied_exit_1() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 4, 100);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        src.join("reports/pipe"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let target = t.path().join("state/data");
    let o = recover_into("--merge", &src, &target, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("ERROR: {}", src.join("reports/pipe").display())),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("1 errors"), "{}", stdout(&o));
    assert!(target.join("reports/2023").is_dir() && target.join("f3.bin").is_file());
    assert!(!target.join("reports/pipe").exists());
}

#[test]
fn full_requires_an_empty_target_marks_completion_and_backs_up_the_source() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 10, 1000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("x"), b"x").unwrap();
    let o = recover_into("--full", &src, &target, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not empty") && stderr(&o).contains("--merge"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(target.join("x")).unwrap();
    let o = recover_into("--full", &src, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let marker = std::fs::read_to_string(target.join(".migration-complete")).unwrap();
    assert!(!src.exists(), "source renamed");
    let backup = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy()
                .contains("legacy-data.migration-backup-")
        })
        .expect("backup");
    // The reference's key=value marker: where the source went, which checkout it was.
    assert!(
        marker.starts_with(&format!(
            "source_backup={}\nsource_repo={}\ncompleted_at=",
            backup.display(),
            t.path().display()
        )),
        "{marker}"
    );
    assert_eq!(snapshot(&backup), before);
    let mut after = snapshot(&target);
    after.remove(".migration-complete");
    assert_eq!(after, before);
    let o = recover_into("--full", &backup, &target, &[]);
    assert!(
        o.status.success() && stdout(&o).contains("already completed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failed_full_run_sets_the_partial_target_aside_and_leaves_the_source() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 6, 500);
    // Snapshots read every file, and reading a FIFO blocks: take them without it.
    let before = snapshot(&src);
    let reports_mtime = std::fs::metadata(src.join("reports"))
        .unwrap()
        .modified()
        .unwrap();
    let pipe = src.join("reports/pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &pipe,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let target = t.path().join("state/data");
    let o = recover_into("--full", &src, &target, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("partial target moved to"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::symlink_metadata(&pipe)
        .unwrap()
        .file_type()
        .is_fifo());
    std::fs::remove_file(&pipe).unwrap();
    // Our own mkfifo and removal moved the directory's mtime; put it back.
    std::fs::File::open(src.join("reports"))
        .unwrap()
        .set_modified(reports_mtime)
        .unwrap();
    assert_eq!(snapshot(&src), before, "source untouched and not renamed");
    assert!(!target.exists(), "the partial target is set aside");
    let aside: Vec<_> = std::fs::read_dir(t.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.failed-migration-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let partial = t.path().join("state").join(&aside[0]);
    assert!(!partial.join(".migration-complete").exists());
    assert!(
        partial.join("f3.bin").is_file() && partial.join("reports/2023/f5.bin").is_file(),
        "what did copy is kept for inspection"
    );
}

#[test]
fn preflight_refuses_when_space_is_short_naming_both_numbers() {
    let t = tempdir();
    let src = legacy_tree(t.path(), 4, 100);
    let small = t.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&small),
        "mounting a small tmpfs (run as root)",
    );
    let target = small.join("data");
    let o = recover_into("--merge", &src, &target, &[]);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("bytes free") && e.contains("needed") && e.contains("128 MiB"),
        "{e}"
    );
    assert!(!target.exists(), "nothing copied before refusing");
}

#[test]
fn an_unreadable_source_file_is_logged_with_its_cause_and_the_rest_is_copied() {
    // Root reads everything, so as root the copy runs as nobody; as anyone else mode
    // 000 is already unreadable.
    // SAFETY: geteuid has no preconditions.
    let root = rustix::process::geteuid().is_root();
    let t = tempdir();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("legacy");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("sub/b.txt"), b"b").unwrap();
    std::fs::write(src.join("sub/secret.txt"), b"s").unwrap();
    std::fs::set_permissions(
        src.join("sub/secret.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let target = t.path().join("state/data");
    std::fs::create_dir_all(&target).unwrap();
    let mut args = vec![bin().to_string(), "recover".into(), "--merge".into()];
    args.extend(["--from".into(), src.display().to_string()]);
    args.extend(["--to".into(), target.display().to_string()]);
    let o = if root {
        std::process::Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(t.path().join("state"))
            .status()
            .unwrap();
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .args(&args)
            .output()
            .unwrap()
    } else {
        std::process::Command::new(&args[0])
            .args(&args[1..])
            .output()
            .unwrap()
    };
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("ERROR: {}", src.join("sub/secret.txt").display()))
            && err.contains("Permission denied"),
        "path and cause: {err}"
    );
    assert!(stdout(&o).contains("1 errors"), "{}", stdout(&o));
    assert_eq!(std::fs::read(target.join("a.txt")).unwrap(), b"a");
    assert_eq!(std::fs::read(target.join("sub/b.txt")).unwrap(), b"b");
    assert!(!target.join("sub/secret.txt").exists());
    assert!(files_under(&target)
        .iter()
        .all(|p| !p.to_string_lossy().contains(".lxgate-recover-")));
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
