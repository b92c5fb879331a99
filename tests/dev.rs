//! `lxgate dev`, the README's first command: up from nothing, usable, stopped cleanly,
//! and up again on the same state directory.
mod common;
use common::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;

#[test]
fn dev_starts_from_nothing_serves_ranges_and_restarts_on_its_state() {
    let t = tempdir();
    // As root the dev cluster runs as postgres, which must reach the state directory.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = t.path().join("dev");
    let mut dev = Dev::start(&state, &t.path().join("dev1.out"));
    let body = b"%PDF-1.4 dev report".repeat(100);
    let r = http()
        .post(&format!("{}/api/upload/", dev.base))
        .set("Authorization", &format!("Bearer {}", dev.token))
        .set("X-Filename", "a.pdf")
        .set("X-Kind", "report")
        .send_bytes(&body);
    let (s, job) = call(r);
    assert_eq!(s, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // dev has no nginx: it serves media itself, with ranges.
    let r = http()
        .get(&format!("{}/api/media/{id}", dev.base))
        .set("Authorization", &format!("Bearer {}", dev.token))
        .set("Range", "bytes=0-7")
        .call()
        .unwrap();
    assert_eq!(r.status(), 206);
    let mut got = Vec::new();
    r.into_reader().read_to_end(&mut got).unwrap();
    assert_eq!(got, b"%PDF-1.4");
    let pid = state.join("pg/pgdata/postmaster.pid");
    assert!(
        pid.exists(),
        "the dev cluster runs under the state directory"
    );
    assert_eq!(dev.proc.terminate(), Some(0), "stops cleanly on SIGTERM");
    assert!(!pid.exists(), "the dev cluster stopped with it");

    // Second start on the same state: same database, the earlier job still there.
    let dev2 = Dev::start(&state, &t.path().join("dev2.out"));
    let (s, again) = call(
        http()
            .get(&format!("{}/api/upload-jobs/{id}", dev2.base))
            .set("Authorization", &format!("Bearer {}", dev2.token))
            .call(),
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], job["id"]);
}
