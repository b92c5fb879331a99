//! Issue 3: config + env contract, migrations, readiness — against real PostgreSQL.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn config_errors_name_the_problem_and_exit_nonzero() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/a"), ("DATA_DIR", "/b")],
            &[
                "LX_ANNOTATE_ENCRYPTED_DATA_DIR=/a",
                "DATA_DIR=/b",
                "LX_ANNOTATE_DATA_DIR=(unset)",
            ],
        ),
        (
            &[("DATA_DIR", "/srv/d"), ("STORAGE_DIR", "/srv/elsewhere")],
            &["STORAGE_DIR /srv/elsewhere", "outside the data root /srv/d"],
        ),
        (
            &[("ENDOREG_DEPLOYMENT_ROLE", "hub")],
            &["\"hub\"", "standalone, site_node, central_hub"],
        ),
        (&[("UPLOAD_MAX_SIZE", "lots")], &["UPLOAD_MAX_SIZE"]),
    ];
    for (env, needles) in cases {
        let o = lxgate(&["config", "check"], env);
        assert!(!o.status.success(), "{env:?} should fail");
        let e = stderr(&o);
        for n in *needles {
            assert!(e.contains(n), "{env:?}: {e:?} lacks {n:?}");
        }
    }
}

#[test]
fn unknown_config_key_and_missing_file_are_errors() {
    let d = tempdir();
    let f = d.path().join("c.toml");
    std::fs::write(&f, "role = \"standalone\"\n[server]\nlisten_addr = \"x\"\n").unwrap();
    let o = lxgate(&["--config", f.to_str().unwrap(), "config", "check"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("listen_addr"), "{}", stderr(&o));
    let o = lxgate(
        &["--config", "/nonexistent/lxgate.toml", "config", "check"],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/lxgate.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_check_redacts_the_database_password() {
    let o = lxgate(
        &["config", "check"],
        &[("DATABASE_URL", "postgres://u:hunter2@localhost/db")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("hunter2") && stdout(&o).contains("u:***@"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_check_redacts_the_database_password_from_the_settings_file() {
    let d = tempdir();
    let f = d.path().join("c.toml");
    std::fs::write(
        &f,
        "[database]\nurl = \"postgres://u:hunter2@localhost/db\"\n",
    )
    .unwrap();
    let o = lxgate(&["--config", f.to_str().unwrap(), "config", "check"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains("hunter2") && out.contains("u:***@"), "{out}");
}

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
            ("0001_a.sql", "CREATE TABLE a (x int);"),
            ("0002_b.sql", "CREATE TABLE b (x int);"),
        ])
        .unwrap();
        assert_eq!(run(&mut c, &v1).await.unwrap().len(), 2);
        assert_eq!(
            run(&mut c, &v1).await.unwrap().len(),
            0,
            "second run applies nothing"
        );
        let edited = plan(&[
            ("0001_a.sql", "CREATE TABLE a (x bigint);"),
            ("0002_b.sql", "CREATE TABLE b (x int);"),
        ])
        .unwrap();
        let e = run(&mut c, &edited).await.unwrap_err().to_string();
        assert!(e.contains("0001_a.sql") && e.contains("edited"), "{e}");
        // A failing migration rolls back alone, recording nothing.
        let bad = plan(&[
            ("0001_a.sql", "CREATE TABLE a (x int);"),
            ("0002_b.sql", "CREATE TABLE b (x int);"),
            ("0003_c.sql", "CREATE TABLE c (x int); SELECT nope;"),
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

#[test]
fn readyz_is_503_before_migrate_and_200_after() {
    let site = Site::new("standalone");
    let srv = Server::start(&site);
    let (status, body) = call(http().get(&srv.url("/readyz")).call());
    assert_eq!(status, 503);
    assert_eq!(body["code"], "unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("lxgate migrate"),
        "{body}"
    );
    site.migrate();
    wait_for("/readyz 200", Duration::from_secs(10), || {
        call(http().get(&srv.url("/readyz")).call()).0 == 200
    });
    let (status, _) = call(http().get(&srv.url("/healthz")).call());
    assert_eq!(status, 200);
}

/// A database error must not reach the /readyz body (it may carry SQL, table names and
/// file names); the body says what to do, the log carries the detail.
#[test]
fn readyz_keeps_database_error_text_out_of_its_body() {
    let site = Site::new("standalone");
    site.migrate();
    site.sql("INSERT INTO lxgate_migrations (version, name, sha256) VALUES (9999, 'zz_foreign_name', 'x')");
    let srv = Server::start(&site);
    let (status, body) = call(http().get(&srv.url("/readyz")).call());
    assert_eq!(status, 503);
    let text = body.to_string();
    assert!(
        !text.contains("zz_foreign_name") && !text.contains("9999"),
        "database detail in the body: {text}"
    );
    assert!(text.contains("lxgate migrate --status"), "{text}");
    wait_for("the detail in the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&srv.log)
            .unwrap_or_default()
            .contains("zz_foreign_name")
    });
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let site = Site::new("standalone");
    site.migrate();
    let mut srv = Server::start(&site);
    assert_eq!(
        srv.proc.terminate(),
        Some(0),
        "{}",
        std::fs::read_to_string(&srv.log).unwrap()
    );
}
