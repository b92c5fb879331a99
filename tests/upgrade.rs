//! Upgrades and rollbacks against real PostgreSQL, age and the real binary (issue 18):
//! an older release runs on a schema that a newer one migrated when the newer one
//! declared its migrations compatible and refuses it otherwise, naming the snapshot to
//! restore; `lxgate migrate` seals a snapshot first and pauses ingest meanwhile.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lxgate::config::Config;
use lxgate::db::migrate::{embedded, plan, run, Migration};
use lxgate::ops::migrate::{Options, Outcome};

/// The embedded set plus `extra`: the migrations of the next release.
fn next_set(extra: &[(&'static str, &'static str)]) -> Vec<Migration> {
    let mut files: Vec<(&'static str, &'static str)> =
        embedded().iter().map(|m| (m.file, m.sql)).collect();
    files.extend_from_slice(extra);
    plan(&files).unwrap()
}

/// The next release's migrations applied through the bare library (no snapshot).
fn next_release(db: &str, extra: &[(&'static str, &'static str)]) {
    let set = next_set(extra);
    rt().block_on(async {
        let mut c = lxgate::db::connect(db).await.unwrap();
        assert_eq!(run(&mut c, &set).await.unwrap().len(), extra.len());
    });
}

/// The next release's `lxgate migrate`, as a host runs it: snapshot, pause, migrate.
fn next_release_migrate(
    site: &Site,
    extra: &[(&'static str, &'static str)],
) -> anyhow::Result<Outcome> {
    let set = next_set(extra);
    let cfg = config(site);
    rt().block_on(lxgate::ops::migrate::run(&cfg, &set, &Options::default()))
}

const EXPAND: (&str, &str) = (
    "9001_expand_notes.sql",
    "-- previous release: compatible (a new table)\nCREATE TABLE upgrade_notes (x int);",
);

/// A migrated standalone site laid out as a host: a state root with the master
/// identity, settings naming both, center A.
fn host_site(settings: &str) -> (Site, PathBuf) {
    let mut site = Site::new("standalone");
    let state = site.dir.path().join("state");
    let key = state.join("keys/master.age");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate = \"{}\"\n[host]\nmaster_key = \"{}\"\nnginx = false\n{settings}",
            state.display(),
            key.display()
        ),
    )
    .unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    // The environment wins over [host] master_key: it names the host's key too.
    site.set("LXGATE_MASTER_KEY", key.to_str().unwrap());
    site.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
    site.ensure_master_key(&key);
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "Center A"]);
    (site, state)
}

fn config(site: &Site) -> Config {
    let env: lxgate::config::Env = site.env.iter().cloned().collect();
    let path = env["LXGATE_CONFIG"].clone();
    Config::resolve(Some(Path::new(&path)), &env).unwrap()
}

fn ready(srv: &Server) -> (u16, serde_json::Value) {
    call(http().get(&srv.url("/readyz")).call())
}

#[test]
fn the_previous_release_runs_on_a_compatible_migration() {
    let site = Site::new("standalone");
    site.migrate();
    next_release(&site.db, &[EXPAND]);
    // This binary is the previous release: it does not know 9001.
    let out = site.ok(&["migrate"]);
    assert!(out.starts_with("0 migration(s) applied"), "{out}");
    let status = site.ok(&["migrate", "--status"]);
    assert!(status.contains("ahead 9001_expand_notes"), "{status}");
    let srv = Server::start(&site);
    wait_for("/readyz 200", Duration::from_secs(10), || {
        ready(&srv).0 == 200
    });
    let metrics = call(http().get(&srv.url("/metrics")).call()).1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("lxgate_schema_migrations_ahead 1"),
        "{metrics}"
    );
    wait_for(
        "the warning in the journal",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&srv.log)
                .unwrap_or_default()
                .contains("running on a schema a newer release migrated")
        },
    );
}

#[test]
fn the_previous_release_refuses_an_incompatible_migration() {
    let site = Site::new("standalone");
    site.migrate();
    next_release(
        &site.db,
        &[
            EXPAND,
            (
                "9002_contract_jobs.sql",
                "-- previous release: incompatible (drops a column it reads)\nALTER TABLE upload_jobs DROP COLUMN metadata_hash;",
            ),
        ],
    );
    let o = site.run(&["migrate"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("9002") && e.contains("incompatible") && e.contains("snapshot"),
        "{e}"
    );
    let srv = Server::start(&site);
    let (status, body) = ready(&srv);
    assert_eq!(status, 503);
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("lxgate snapshot"), "{msg}");
    assert!(!msg.contains("9002"), "database detail in the body: {msg}");
}

/// Test 5 of issue 18: the snapshot holds no plaintext, opens with the master identity
/// (the age tool), and restores equal to the database it was taken from, into a scratch
/// database and into the same one after a contract migration; the previous release is
/// then ready again.
#[test]
fn a_snapshot_is_sealed_and_restores_the_database_it_was_taken_from() {
    let (site, state) = host_site("");
    let marker = "PATIENT-MARKER-5d1e";
    site.ok(&["center", "add", "M", "--name", marker]);
    let before = plain_sql(&site.db);
    let contract = (
        "9002_contract_centers.sql",
        "-- previous release: incompatible (drops a column it reads)\nALTER TABLE centers DROP COLUMN name;",
    );
    let out = next_release_migrate(&site, &[EXPAND, contract]).unwrap();
    assert_eq!(out.applied.len(), 2);
    let snap = out.snapshot.expect("a snapshot before migrating");
    let newest = embedded().last().unwrap().version;
    assert_eq!((snap.from, snap.to), (newest, 9002));
    assert!(
        !lxgate::ingest::pause::is_paused(&state),
        "migrate lifts the pause it opened"
    );

    let file = state.join(format!("snapshots/{}.dump.age", snap.id));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, snap.bytes);
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    let hay = String::from_utf8_lossy(&bytes);
    for needle in [
        marker,
        "PGDMP",
        "CREATE TABLE",
        "lxgate_migrations",
        "COPY ",
    ] {
        assert!(!hay.contains(needle), "{needle} readable in the snapshot");
    }
    let key = state.join("keys/master.age");
    let opened = run_ok(
        std::process::Command::new("age").args([
            "-d",
            "-i",
            key.to_str().unwrap(),
            file.to_str().unwrap(),
        ]),
        "age -d with the master identity",
    );
    assert!(
        opened.stdout.starts_with(b"PGDMP"),
        "a pg_dump custom archive"
    );

    let list = site.ok(&["snapshot", "list"]);
    assert!(
        list.contains(&snap.id) && list.contains(&snap.sha256),
        "{list}"
    );

    let scratch = fresh_db();
    let scratch_name = scratch
        .rsplit("dbname=")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    site.ok(&[
        "snapshot",
        "restore",
        &snap.id,
        "--into-scratch",
        &scratch_name,
    ]);
    assert_eq!(
        plain_sql(&scratch),
        before,
        "the scratch restore equals the source"
    );
    let o = site.run(&[
        "snapshot",
        "restore",
        &snap.id,
        "--into-scratch",
        &scratch_name,
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("not empty"),
        "{}",
        stderr(&o)
    );

    // The previous release refuses the contracted schema and names the way back.
    let srv = Server::start(&site);
    let (status, body) = call(http().get(&srv.url("/readyz")).call());
    assert_eq!(status, 503);
    assert!(
        body["message"].as_str().unwrap().contains(&snap.id),
        "{body}"
    );
    let o = site.run(&["snapshot", "restore", &snap.id]);
    assert!(
        !o.status.success() && stderr(&o).contains("stop lxgate"),
        "{}",
        stderr(&o)
    );
    drop(srv);

    site.ok(&["snapshot", "restore", &snap.id]);
    assert_eq!(plain_sql(&site.db), before, "the restore equals the source");
    site.migrate();
    let srv = Server::start(&site);
    wait_for("/readyz 200", Duration::from_secs(10), || {
        call(http().get(&srv.url("/readyz")).call()).0 == 200
    });
}

#[test]
fn migrate_refuses_to_run_without_its_snapshot_and_keeps_the_newest() {
    let (site, state) = host_site("[database]\nkeep_snapshots = 2\n");
    let newer: [(&str, &str); 3] = [
        EXPAND,
        (
            "9002_b.sql",
            "-- previous release: compatible\nCREATE TABLE b (x int);",
        ),
        (
            "9003_c.sql",
            "-- previous release: compatible\nCREATE TABLE c (x int);",
        ),
    ];
    let mut ids = Vec::new();
    for n in 1..=3 {
        let out = next_release_migrate(&site, &newer[..n]).unwrap();
        assert_eq!(out.applied.len(), 1);
        ids.push(out.snapshot.unwrap().id);
    }
    let kept: Vec<String> = lxgate::db::snapshot::list(&state)
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept, ids[1..].to_vec());
    assert_eq!(
        names(&state.join("snapshots")).len(),
        4,
        "two sealed files and their manifests"
    );

    // No master identity, no snapshot, no migration.
    std::fs::rename(state.join("keys/master.age"), state.join("keys/moved")).unwrap();
    let e = next_release_migrate(
        &site,
        &[
            newer[0],
            newer[1],
            newer[2],
            (
                "9004_d.sql",
                "-- previous release: compatible\nCREATE TABLE d (x int);",
            ),
        ],
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("no migration ran") && e.contains("master identity"),
        "{e}"
    );
    assert_eq!(
        site.count("SELECT count(*) FROM lxgate_migrations WHERE version = 9004"),
        0
    );
    assert!(!lxgate::ingest::pause::is_paused(&state));
}

/// While a deploy window is open the upload API answers 503 with Retry-After and the
/// watcher leaves drops where they are; both take files again once it closes.
#[test]
fn ingest_waits_while_a_deploy_window_is_open() {
    let (site, state) = host_site("[watcher]\nsettle_ms = 0\nrescan_secs = 1\n");
    let token = site.token("uploader", Some("A"), "up");
    assert!(lxgate::ingest::pause::open(&state, "deploy", "test").unwrap());
    let srv = Server::start(&site);
    let post = || {
        let r = http()
            .post(&srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {token}"))
            .set("X-Filename", "a.pdf")
            .set("X-Kind", "report")
            .send_bytes(b"%PDF during the window");
        match r {
            Ok(r) => (r.status(), None),
            Err(ureq::Error::Status(s, r)) => (s, r.header("Retry-After").map(str::to_string)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(post(), (503, Some("30".to_string())));

    let drops = site.data().join("import/report_import");
    drop_file(&drops, "r.pdf", b"%PDF dropped during the window");
    let o = site.run(&["watch", "--once"]);
    assert!(
        !o.status.success() && stderr(&o).contains("paused"),
        "{}",
        stderr(&o)
    );
    let log = site.dir.path().join("watch.log");
    let _watcher = Proc::spawn(&["watch"], &site.env(), &log);
    wait_for(
        "the watcher to say it is paused",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ingest paused for a deploy")
        },
    );
    assert!(drops.join("r.pdf").exists(), "the drop stays in place");
    assert_eq!(site.count("SELECT count(*) FROM upload_jobs"), 0);

    lxgate::ingest::pause::close(&state).unwrap();
    assert_eq!(post().0, 201);
    wait_for("the drop to be ingested", Duration::from_secs(20), || {
        !drops.join("r.pdf").exists()
    });
    assert_eq!(
        site.count("SELECT count(*) FROM upload_jobs WHERE status = 'stored'"),
        2
    );
}
