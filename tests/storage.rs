//! `lxgate storage audit` / `quarantine-orphans` on real storage and real PostgreSQL,
//! and the storage lock that keeps quarantining from racing an ingest.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn site() -> (Site, PathBuf) {
    Site::with_center_a("[watcher]\nsettle_ms = 0\n")
}

fn ingest(s: &Site, import: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        drop_file(&import.join("video_import"), name, bytes);
    }
    s.ok(&["watch", "--once"]);
}

fn object_of(s: &Site, name: &str) -> PathBuf {
    let rows = s.sql(&format!(
        "SELECT storage_path FROM upload_jobs WHERE original_name = '{name}' AND status = 'stored'"
    ));
    assert_eq!(rows.len(), 1, "one job for {name}");
    s.data().join("storage").join(rows[0].get::<_, String>(0))
}

/// An object with no row, as a crash between placing it and recording it leaves.
fn orphan(s: &Site, bytes: &[u8], secs_ago: u64) -> PathBuf {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(bytes));
    let p = s.data().join("storage/objects").join(&h[..2]).join(&h[2..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    std::fs::File::open(&p).unwrap().set_modified(t).unwrap();
    p
}

fn audit(s: &Site, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["storage", "audit"];
    args.extend(extra);
    let o = s.run(&args);
    (o.status.code(), stdout(&o))
}

#[test]
fn audit_finds_orphans_missing_and_damaged_objects() {
    let (s, import) = site();
    ingest(
        &s,
        &import,
        &[("a.mp4", b"clip a"), ("b.mp4", b"clip b bytes")],
    );
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2 objects (18 bytes), 2 job rows: 0 orphans, 0 missing, 0 damaged"),
        "{out}"
    );

    let o = orphan(&s, b"nobody's clip", 7200);
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(0), "orphans alone are a warning: {out}");
    assert!(
        out.contains(&format!(
            "WARNING: orphan object (no UploadJob row): {}",
            o.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("1 orphans") && out.contains("quarantine-orphans"),
        "{out}"
    );

    // A truncated object is damaged; a vanished one is missing: both exit 1.
    let a = object_of(&s, "a.mp4");
    std::fs::write(&a, b"clip").unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("is damaged: 4 bytes on disk, 6 recorded"),
        "{out}"
    );
    std::fs::remove_file(&a).unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "{} is missing; restore it from backup",
            a.display()
        )),
        "{out}"
    );

    // Same size, other bytes: only --verify sees it.
    std::fs::write(&a, b"clip A").unwrap();
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = audit(&s, &["--verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("content sha256"), "{out}");

    let (_, json) = audit(&s, &["--json", "--verify"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["orphans"].as_array().unwrap().len(), 1);
    assert_eq!(v["mismatched"].as_array().unwrap().len(), 1);
}

#[test]
fn quarantine_moves_old_orphans_with_a_reason_and_nothing_else() {
    let (s, import) = site();
    ingest(&s, &import, &[("a.mp4", b"clip a")]);
    let kept = object_of(&s, "a.mp4");
    let old = orphan(&s, b"old orphan", 7200);
    let young = orphan(&s, b"young orphan", 10);

    let out = s.ok(&["storage", "quarantine-orphans", "--dry-run"]);
    assert!(out.contains("would move") && old.exists(), "{out}");

    let out = s.ok(&["storage", "quarantine-orphans"]);
    assert!(
        out.contains("1 orphan(s) younger than 3600 s left in place"),
        "{out}"
    );
    let q = s.data().join("quarantine/orphaned-objects");
    let name: String = old
        .strip_prefix(s.data().join("storage/objects"))
        .unwrap()
        .to_string_lossy()
        .replace('/', "");
    assert_eq!(std::fs::read(q.join(&name)).unwrap(), b"old orphan");
    let reason = std::fs::read_to_string(q.join(format!("{name}.reason"))).unwrap();
    assert!(
        reason.contains("had no UploadJob row") && reason.contains(&old.display().to_string()),
        "{reason}"
    );
    assert!(!old.exists() && young.exists());
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        b"clip a",
        "referenced objects stay"
    );
    let (code, out) = audit(&s, &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("1 orphans"), "{out}");
}

#[test]
fn an_ingest_waits_while_orphans_are_being_quarantined() {
    let (s, import) = site();
    // Hold the storage lock as quarantining does; an ingest must not place or record
    // anything until it is released.
    let rt = rt();
    let lock = rt.block_on(async {
        let c = lxgate::db::connect(&s.db).await.unwrap();
        c.execute(
            "SELECT pg_advisory_lock($1)",
            &[&lxgate::ingest::STORAGE_LOCK],
        )
        .await
        .unwrap();
        c
    });
    let v = import.join("video_import");
    drop_file(&v, "c.mp4", b"clip c");
    let log = s.dir.path().join("watch.log");
    let mut w = Proc::spawn(&["watch", "--once"], &s.env(), &log);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w.alive(), "the ingest waits for the lock");
    assert_eq!(s.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(v.join("c.mp4").exists(), "the drop stays until recorded");
    rt.block_on(lock.execute(
        "SELECT pg_advisory_unlock($1)",
        &[&lxgate::ingest::STORAGE_LOCK],
    ))
    .unwrap();
    wait_for("the ingest to finish", Duration::from_secs(20), || {
        !w.alive()
    });
    assert_eq!(
        s.count(
            "SELECT count(*) FROM upload_jobs WHERE original_name = 'c.mp4' AND status = 'stored'"
        ),
        1
    );
    assert!(!v.join("c.mp4").exists());
}
