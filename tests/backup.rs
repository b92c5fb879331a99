//! Backups with the real restic into a local repository and the real PostgreSQL: a host
//! with over a thousand jobs backs up and a fresh host restores it byte for byte; a
//! backup taken while uploads and drops go on restores consistent; and each way a
//! backup can be unusable (damaged repository, wrong password, a dump that does not
//! open) is named as such.
mod common;
use common::*;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The rehearsal's scratch databases share the test cluster: one backup test at a time,
/// so "no rehearsal database is left" is a statement about this test's own verify.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const PASSWORD: &str = "correct horse battery staple\n";

/// A host with its own state root (holding the master key and the backup directory)
/// and data root, settings naming the repository, and RESTIC_PASSWORD_FILE set.
struct Host {
    site: Site,
    state: PathBuf,
}

impl Host {
    fn new(repo: &Path, pw: &Path) -> Host {
        let mut site = Site::new("standalone");
        let state = site.dir.path().join("state");
        std::fs::create_dir_all(state.join("backup")).unwrap();
        let cfg = site.dir.path().join("lxgate.toml");
        std::fs::write(
            &cfg,
            format!(
                "[paths]\nstate = \"{}\"\n[server]\nserve_media_directly = true\ntoken_auth_per_second = 0\n[watcher]\nsettle_ms = 20\nconcurrency = 4\n[backup]\nrepository = \"{}\"\n",
                state.display(),
                repo.display()
            ),
        )
        .unwrap();
        site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
        // The master key under this host's own state root, not Site's default.
        let key = state.join("keys/master.age");
        site.set("LXGATE_MASTER_KEY", key.to_str().unwrap());
        site.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
        site.set("RESTIC_PASSWORD_FILE", pw.to_str().unwrap());
        // restic's cache, as CacheDirectory= gives the unit one.
        let cache = site.dir.path().join("cache");
        site.set("CACHE_DIRECTORY", cache.to_str().unwrap());
        site.migrate();
        Host { site, state }
    }

    fn key(&self) -> PathBuf {
        self.state.join("keys/master.age")
    }

    fn storage(&self) -> PathBuf {
        self.site.data().join("storage")
    }

    /// The job table as text rows, ordered: what must be equal after a restore.
    fn jobs(&self) -> Vec<String> {
        self.site
            .sql(
                "SELECT concat_ws('|', j.id, j.ingest_mode, j.source_system, c.center_key, j.original_name,
                        j.kind, j.size_bytes, j.content_hash, j.idempotency_key, j.storage_path,
                        j.status, j.error_detail, j.provenance::text, j.created_at, j.updated_at)
                 FROM upload_jobs j LEFT JOIN centers c ON c.id = j.center_id ORDER BY j.id",
            )
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.site.run(args);
        assert!(
            !o.status.success(),
            "lxgate {args:?} should fail: {}",
            stdout(&o)
        );
        stderr(&o)
    }
}

/// A repository and its password file in `dir`, created with `restic init`.
fn repository(dir: &Path) -> (PathBuf, PathBuf) {
    let repo = dir.join("repo");
    let pw = dir.join("restic-password");
    std::fs::write(&pw, PASSWORD).unwrap();
    run_ok(
        Command::new("restic")
            .args(["init", "--repo"])
            .arg(&repo)
            .env("RESTIC_PASSWORD_FILE", &pw),
        "restic init (apt-get install restic)",
    );
    (repo, pw)
}

/// Drops of every kind: videos, reports and preanonymized pairs, `n` files in all.
fn drop_many(import: &Path, n: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..n {
        if i % 10 == 0 {
            let p = import.join("preanonymized_import");
            let text = format!("preanonymized note {seed} {i} {}", rng.gen::<u64>());
            drop_file(&p, &format!("n{seed}-{i}.txt"), text.as_bytes());
            drop_file(
                &p,
                &format!("n{seed}-{i}.json"),
                format!("{{\"external_id\":\"{seed}-{i}\"}}").as_bytes(),
            );
        } else {
            let size = if i % 97 == 0 {
                1_500_000
            } else {
                rng.gen_range(1..48_000)
            };
            let mut c = vec![0u8; size];
            rng.fill(&mut c[..]);
            let (dir, ext) = if i % 3 == 0 {
                ("report_import", "pdf")
            } else {
                ("video_import", "mp4")
            };
            drop_file(&import.join(dir), &format!("f{seed}-{i}.{ext}"), &c);
        }
    }
}

/// Every job's media as the restored host serves it, against the source's object.
fn served_identical(target: &Host, source_storage: &Path) -> usize {
    let srv = Server::start(&target.site);
    let tok = target.site.token("super_admin", None, "restore-check");
    let rows = target
        .site
        .sql("SELECT id::text, storage_path, content_hash FROM upload_jobs WHERE status <> 'error' ORDER BY id");
    for r in &rows {
        let (id, path, hash): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let resp = http()
            .get(&srv.url(&format!("/api/media/{id}")))
            .set("Authorization", &format!("Bearer {tok}"))
            .call()
            .unwrap_or_else(|e| panic!("GET media of job {id}: {e}"));
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
        // Sealed objects are served opened: the body is the plaintext the job hashed,
        // and the restored object is the source's, byte for byte.
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&body)),
            hash,
            "job {id}: served media differs from the source"
        );
        let want = std::fs::read(source_storage.join(&path)).unwrap();
        let got = std::fs::read(target.site.data().join("storage").join(&path)).unwrap();
        assert!(got == want, "job {id}: restored object differs");
    }
    rows.len()
}

#[test]
fn a_thousand_jobs_back_up_and_restore_onto_a_fresh_host_byte_identical() {
    let _serial = serial();
    let t = tempdir();
    let (repo, pw) = repository(t.path());
    let a = Host::new(&repo, &pw);
    a.site.ensure_master_key(&a.key());
    a.site.ok(&["center", "add", "A", "--name", "A"]);
    drop_many(&a.site.data().join("import"), 1_100, 1);
    a.site.ok(&["watch", "--once"]);
    let jobs = a.jobs();
    assert!(jobs.len() >= 1_000, "{} jobs", jobs.len());
    assert!(
        a.site
            .count("SELECT count(DISTINCT kind) FROM upload_jobs WHERE status <> 'error'")
            == 3,
        "videos, reports and pairs"
    );

    let out = a.site.ok(&["backup", "run"]);
    assert!(out.starts_with("backup done: snapshot "), "{out}");
    assert!(
        out.contains(&format!("{} jobs", jobs.len())),
        "the manifest counts every job: {out}"
    );
    // No plaintext dump, no key in the repository.
    let ls = run_ok(
        Command::new("restic")
            .args(["ls", "latest", "--repo"])
            .arg(&repo)
            .env("RESTIC_PASSWORD_FILE", &pw),
        "restic ls",
    );
    let listed = stdout(&ls);
    assert!(listed.contains("/backup/lxgate.dump.age"), "{listed}");
    assert!(listed.contains("/backup/manifest.json"));
    assert!(
        !listed.contains("/keys"),
        "the master key must not be backed up"
    );

    let out = a.site.ok(&["backup", "verify"]);
    assert!(
        out.starts_with("restore rehearsal passed: snapshot"),
        "{out}"
    );
    assert!(out.contains(" 0 missing, 0 damaged"), "{out}");
    // The rehearsal leaves no scratch directory or database behind.
    assert_eq!(
        names(&a.state.join("backup")),
        ["lxgate.dump.age", "manifest.json"]
    );
    assert_eq!(
        a.site
            .count("SELECT count(*) FROM pg_database WHERE datname LIKE 'lxgate_rehearsal_%'"),
        0
    );

    // A fresh host: migrated (as lxgate-migrate leaves it), units stopped, the master
    // key brought over from where it was kept safe.
    let b = Host::new(&repo, &pw);
    std::fs::create_dir_all(b.key().parent().unwrap()).unwrap();
    std::fs::copy(a.key(), b.key()).unwrap();
    let o = b.site.run(&["restore", "--snapshot", "latest"]);
    assert!(o.status.success(), "restore: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("restored: snapshot"), "{out}");
    // Not a terminal: no bar, one summary line of what arrived (issue 21).
    let log = stderr(&o);
    let summary = log.lines().any(|l| {
        l.split_once("restore: ").is_some_and(|(_, rest)| {
            rest.split_once(" files, ")
                .is_some_and(|(n, _)| n.parse::<u64>().is_ok_and(|n| n > 0))
        })
    });
    assert!(summary && !log.contains('\r'), "{log}");
    assert_eq!(b.jobs(), jobs, "the job table equals the source's");
    let audit = b.site.ok(&["storage", "audit", "--verify"]);
    assert!(
        audit.contains(" 0 orphans, 0 missing, 0 damaged"),
        "{audit}"
    );
    let served = served_identical(&b, &a.storage());
    assert!(served >= 1_000, "{served}");

    // Restoring again onto a host that now holds data is refused, naming the way out.
    let e = b.fail(&["restore", "--snapshot", "latest"]);
    assert!(e.contains("is not empty") && e.contains("--merge"), "{e}");
    let e = b.fail(&["restore", "--snapshot", "latest", "--merge"]);
    assert!(
        e.contains("the database holds") && e.contains("jobs"),
        "{e}"
    );
}

#[test]
fn a_backup_taken_while_uploads_and_drops_continue_restores_consistent() {
    let _serial = serial();
    let t = tempdir();
    let (repo, pw) = repository(t.path());
    let a = Host::new(&repo, &pw);
    a.site.ensure_master_key(&a.key());
    a.site.ok(&["center", "add", "A", "--name", "A"]);
    drop_many(&a.site.data().join("import"), 200, 2);
    a.site.ok(&["watch", "--once"]);
    // The watcher first, and seen ingesting: at its start it clears storage/tmp of
    // `.ingest-*` files, which would cut uploads already in flight.
    let watch_log = a.site.dir.path().join("watch.log");
    let _watcher = Proc::spawn(&["watch"], &a.site.env(), &watch_log);
    let initial = a.site.count("SELECT count(*) FROM upload_jobs");
    drop_many(&a.site.data().join("import"), 2, 99);
    wait_for("the watcher to ingest", Duration::from_secs(30), || {
        a.site.count("SELECT count(*) FROM upload_jobs") > initial
    });
    let srv = Server::start(&a.site);
    let tok = a.site.token("uploader", Some("A"), "load");

    let stop = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(AtomicUsize::new(0));
    let uploader = {
        let (stop, uploaded, url) = (stop.clone(), uploaded.clone(), srv.url("/api/upload/"));
        let log = srv.log.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body: Vec<u8> = format!("upload {i} ")
                    .into_bytes()
                    .into_iter()
                    .cycle()
                    .take(20_000 + (i as usize % 5_000))
                    .collect();
                let r = http()
                    .post(&url)
                    .set("Authorization", &format!("Bearer {tok}"))
                    .set("X-Filename", &format!("u{i}.mp4"))
                    .set("X-Kind", "video")
                    .send_bytes(&body);
                assert!(
                    r.is_ok(),
                    "upload {i}: {r:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                uploaded.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let dropper = {
        let (stop, import) = (stop.clone(), a.site.data().join("import"));
        std::thread::spawn(move || {
            let mut round = 100;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                drop_many(&import, 10, round);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    wait_for("uploads under way", Duration::from_secs(30), || {
        uploaded.load(Ordering::Relaxed) > 20
    });
    let before = a.site.count("SELECT count(*) FROM upload_jobs");
    let out = a.site.ok(&["backup", "run"]);
    let after = a.site.count("SELECT count(*) FROM upload_jobs");
    stop.store(true, Ordering::Relaxed);
    uploader.join().unwrap();
    dropper.join().unwrap();
    assert!(
        after > before,
        "ingest went on during the backup ({before} → {after} jobs): {out}"
    );

    let b = Host::new(&repo, &pw);
    std::fs::create_dir_all(b.key().parent().unwrap()).unwrap();
    std::fs::copy(a.key(), b.key()).unwrap();
    let out = b.site.ok(&["restore", "--snapshot", "latest"]);
    // No job without its object; objects newer than the dump are kept, not lost.
    let audit: serde_json::Value =
        serde_json::from_str(&b.site.ok(&["storage", "audit", "--verify", "--json"])).unwrap();
    assert_eq!(audit["missing"], serde_json::json!([]), "{out}");
    assert_eq!(audit["mismatched"], serde_json::json!([]), "{out}");
    let restored = b.jobs();
    let source = a.jobs();
    assert!(restored.len() as i64 >= before, "{out}");
    for j in &restored {
        let id = j.split('|').next().unwrap();
        let same = source.iter().find(|s| s.starts_with(id)).unwrap();
        assert_eq!(j, same, "job {id} as restored differs from the source");
    }
    let orphans = audit["orphans"].as_array().unwrap().len();
    if orphans > 0 {
        assert!(out.contains("objects newer than the dump kept"), "{out}");
    }
}

#[test]
fn a_damaged_repository_a_wrong_password_and_a_dump_that_does_not_open_are_each_named() {
    let _serial = serial();
    let t = tempdir();
    let (repo, pw) = repository(t.path());
    let a = Host::new(&repo, &pw);
    // Without the master key there is nothing to seal the dump to.
    let e = a.fail(&["backup", "prepare"]);
    assert!(
        e.contains("master identity") && e.contains("keys ensure"),
        "{e}"
    );
    a.site.ensure_master_key(&a.key());
    a.site.ok(&["center", "add", "A", "--name", "A"]);
    drop_many(&a.site.data().join("import"), 30, 3);
    a.site.ok(&["watch", "--once"]);
    a.site.ok(&["backup", "run"]);

    // Wrong password.
    let wrong = t.path().join("wrong-password");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let e = a.fail(&[
        "backup",
        "verify",
        "--password-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(e.contains("repository password is wrong"), "{e}");
    assert!(!e.contains("not the password"), "the password leaked: {e}");

    // No repository there.
    let none = t.path().join("nothing-here");
    let e = a.fail(&["backup", "verify", "--repository", none.to_str().unwrap()]);
    assert!(e.contains("there is no restic repository at"), "{e}");

    // A damaged copy of the repository: one pack file altered.
    let damaged = t.path().join("damaged");
    run_ok(
        Command::new("cp").arg("-a").arg(&repo).arg(&damaged),
        "cp -a",
    );
    let pack = files_under(&damaged.join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    let e = a.fail(&[
        "backup",
        "verify",
        "--read-data",
        "--repository",
        damaged.to_str().unwrap(),
    ]);
    assert!(e.contains("the repository is damaged"), "{e}");

    // A host whose master key is another one: the dump does not open with it.
    let b = Host::new(&repo, &pw);
    b.site.ensure_master_key(&b.key());
    let e = b.fail(&["restore", "--snapshot", "latest"]);
    assert!(e.contains("is not the one this dump is sealed to"), "{e}");
    assert_eq!(b.site.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(files_under(&b.storage()).is_empty(), "nothing restored");

    // A snapshot of the state root alone, with the backup directory as it now is.
    let snapshot_state = || {
        run_ok(
            Command::new("restic")
                .args(["backup", "--tag", "lxgate", "--repo"])
                .arg(&repo)
                .arg(&a.state)
                .env("RESTIC_PASSWORD_FILE", &pw),
            "restic backup",
        )
    };
    // A dump whose bytes were altered after sealing (its manifest updated to match, so
    // only the age layer can tell): it does not open, and says so.
    a.site.ok(&["backup", "prepare"]);
    let dump = a.state.join("backup/lxgate.dump.age");
    let mut d = std::fs::read(&dump).unwrap();
    let n = d.len();
    d[n - 40] ^= 1;
    std::fs::write(&dump, &d).unwrap();
    let manifest = a.state.join("backup/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["dump"]["sha256"] = lxgate::db::dump::sha256_file(&dump).unwrap().into();
    std::fs::write(&manifest, m.to_string()).unwrap();
    snapshot_state();
    let e = a.fail(&["backup", "verify"]);
    assert!(e.contains("does not open"), "{e}");
    // And a dump that no longer matches its manifest is refused before it is opened.
    std::fs::write(&dump, b"garbage").unwrap();
    snapshot_state();
    let e = a.fail(&["backup", "verify"]);
    assert!(e.contains("does not match its manifest"), "{e}");
}
