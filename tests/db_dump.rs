//! Sealed database dumps against real PostgreSQL, pg_dump/pg_restore and the age CLI:
//! never plaintext on disk, open with the identity they were sealed to, restore equal.
mod common;
use common::*;

use lxgate::crypto::age::{ExposeSecret, Identity};
use lxgate::db::dump::{dump_sealed, restore_sealed, sha256_file, DumpError, RestoreInto};

/// A database with lxgate's schema and a marker row whose text must not appear on disk.
fn seeded(marker: &str) -> String {
    let db = fresh_db();
    rt().block_on(async {
        let c = lxgate::db::connect(&db).await.unwrap();
        c.batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, note text);
             INSERT INTO t SELECT g, '{marker}-' || g FROM generate_series(1, 500) g;"
        ))
        .await
        .unwrap();
    });
    db
}

#[test]
fn a_sealed_dump_holds_no_plaintext_and_restores_equal() {
    let marker = "PATIENT-MARKER-7c1f";
    let src = seeded(marker);
    let dir = tempdir();
    let key = Identity::generate();
    let out = dir.path().join("db.dump.age");
    let sealed = dump_sealed(&src, &key.recipient(), &out).unwrap();

    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(sealed.bytes, bytes.len() as u64);
    assert_eq!(sealed.sha256, sha256_file(&out).unwrap());
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    let hay = String::from_utf8_lossy(&bytes);
    for needle in [marker, "PGDMP", "CREATE TABLE"] {
        assert!(
            !hay.contains(needle),
            "{needle} readable in the sealed dump"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Nothing but the dump is left in the directory (no plaintext temp file).
    assert_eq!(names(dir.path()), vec!["db.dump.age".to_string()]);

    // The age CLI opens it with the identity: a pg_dump custom-format archive.
    let keyfile = dir.path().join("key");
    std::fs::write(&keyfile, key.to_secret_string().expose_secret()).unwrap();
    let o = run_ok(
        std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&keyfile)
            .arg(&out),
        "age -d",
    );
    assert!(o.stdout.starts_with(b"PGDMP"));

    let dst = fresh_db();
    restore_sealed(&out, &key, &dst, RestoreInto::Empty).unwrap();
    assert_eq!(plain_sql(&src), plain_sql(&dst));

    // Replace: the source changed since the dump; restoring brings it back.
    rt().block_on(async {
        let c = lxgate::db::connect(&src).await.unwrap();
        c.batch_execute("DELETE FROM t WHERE id > 10; INSERT INTO t VALUES (9999, 'new')")
            .await
            .unwrap();
    });
    restore_sealed(&out, &key, &src, RestoreInto::Replace).unwrap();
    assert_eq!(plain_sql(&src), plain_sql(&dst));
}

#[test]
fn a_failed_dump_leaves_nothing_and_says_why() {
    let dir = tempdir();
    let key = Identity::generate();
    let out = dir.path().join("db.dump.age");
    let url = cluster().url("no_such_database");
    let e = dump_sealed(&url, &key.recipient(), &out).unwrap_err();
    assert!(
        matches!(&e, DumpError::Failed { tool: "pg_dump", stderr, .. } if stderr.contains("no_such_database")),
        "{e}"
    );
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn a_dump_for_another_identity_or_damaged_is_refused_and_the_target_untouched() {
    let src = seeded("x");
    let dir = tempdir();
    let key = Identity::generate();
    let out = dir.path().join("db.dump.age");
    dump_sealed(&src, &key.recipient(), &out).unwrap();
    let dst = fresh_db();

    let other = Identity::generate();
    let e = restore_sealed(&out, &other, &dst, RestoreInto::Empty).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not open with this host's master identity"),
        "{e}"
    );

    // Flip one byte in the last payload chunk: pg_restore may already have read most of
    // the archive, and the single transaction must leave the database empty anyway.
    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    let bad = dir.path().join("bad.age");
    std::fs::write(&bad, &bytes).unwrap();
    let e = restore_sealed(&bad, &key, &dst, RestoreInto::Empty).unwrap_err();
    assert!(
        matches!(e, DumpError::Open { .. } | DumpError::Failed { .. }),
        "{e}"
    );
    let tables = rt().block_on(async {
        let c = lxgate::db::connect(&dst).await.unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    });
    assert_eq!(tables, 0, "a refused restore left tables behind");
}
