//! Migrations against real PostgreSQL: applied once under concurrency, edits refused.
mod common;
use common::*;

#[test]
fn concurrent_migrators_apply_each_migration_once() {
    let site = Site::new("standalone");
    let env = site.env();
    let children: Vec<_> = (0..8)
        .map(|_| {
            command(&["migrate"], &env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_by = 0;
    for ch in children {
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        if !stdout(&o).starts_with("0 migration") {
            applied_by += 1;
        }
    }
    let n = lxgate::db::migrate::embedded().len() as i64;
    assert_eq!(site.count("SELECT count(*) FROM lxgate_migrations"), n);
    assert_eq!(applied_by, 1, "exactly one process applied the migrations");
    assert!(site
        .ok(&["migrate", "--status"])
        .lines()
        .all(|l| l.starts_with("applied ")));
}

#[test]
fn an_edited_applied_migration_is_refused_naming_the_file() {
    use lxgate::db::migrate::{plan, run};
    let db = fresh_db();
    rt().block_on(async {
        let mut c = lxgate::db::connect(&db).await.unwrap();
        let v1 = plan(&[
            (
                "0001_a.sql",
                "-- previous release: compatible\nCREATE TABLE a (x int);",
            ),
            (
                "0002_b.sql",
                "-- previous release: compatible\nCREATE TABLE b (x int);",
            ),
        ])
        .unwrap();
        assert_eq!(run(&mut c, &v1).await.unwrap().len(), 2);
        assert_eq!(
            run(&mut c, &v1).await.unwrap().len(),
            0,
            "second run applies nothing"
        );
        let edited = plan(&[
            (
                "0001_a.sql",
                "-- previous release: compatible\nCREATE TABLE a (x bigint);",
            ),
            (
                "0002_b.sql",
                "-- previous release: compatible\nCREATE TABLE b (x int);",
            ),
        ])
        .unwrap();
        let e = run(&mut c, &edited).await.unwrap_err().to_string();
        assert!(e.contains("0001_a.sql") && e.contains("edited"), "{e}");
        // A failing migration rolls back alone, recording nothing.
        let bad = plan(&[
            (
                "0001_a.sql",
                "-- previous release: compatible\nCREATE TABLE a (x int);",
            ),
            (
                "0002_b.sql",
                "-- previous release: compatible\nCREATE TABLE b (x int);",
            ),
            (
                "0003_c.sql",
                "-- previous release: compatible\nCREATE TABLE c (x int); SELECT nope;",
            ),
        ])
        .unwrap();
        let e = run(&mut c, &bad).await.unwrap_err().to_string();
        assert!(e.contains("0003_c.sql"), "{e}");
        let n: i64 = c
            .query_one("SELECT count(*) FROM lxgate_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2);
        let c_exists: bool = c
            .query_one("SELECT to_regclass('c') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!c_exists, "the failed migration's table was rolled back");
    });
}
