//! `recover --mode merge`: into empty, partly filled and tmpfiles-made targets, the
//! legacy env file, dry runs, and sources with entries it cannot copy.
use super::*;

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
