//! `lxgate serve` coming up and going down: /readyz gates on migrations and never
//! leaks database text; SIGTERM stops it cleanly.
mod common;
use common::*;
use std::time::Duration;

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
