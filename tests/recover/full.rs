//! `recover --mode full`: an empty target only, a completion mark, the source backed
//! up; a failed run sets its partial target aside; preflight checks the space.
use super::*;

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
