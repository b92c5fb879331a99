//! Site → hub export end to end on real parts: a site's `lxgate hub-export run` sends a
//! marked job through the hub's real nginx (TLS, client certificate, the rendered server
//! block) to the hub's `lxgate serve`, and every retry path ends in exactly one transfer
//! and one job at the hub.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

struct Fleet {
    hub: Site,
    _hub_srv: Server,
    nginx: Nginx,
    pki: Pki,
    site: Site,
    creds: PathBuf,
    site_cfg: PathBuf,
    secret: String,
}

fn fleet() -> Fleet {
    fleet_with("")
}

/// `hub_extra`: more settings in the hub's `[hub]` table.
fn fleet_with(hub_extra: &str) -> Fleet {
    let mut hub = Site::new("central_hub");
    let pki = Pki::new(&hub.dir.path().join("pki"));
    let cfg = hub.dir.path().join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "role = \"central_hub\"\n[host]\nserver_name = \"localhost\"\nmaster_key = \"{}\"\ntls_certificate = \"{}\"\ntls_certificate_key = \"{}\"\n[hub]\ntransfer_api = true\nclient_ca_file = \"{}\"\n{hub_extra}",
            hub.dir.path().join("keys/master.age").display(),
            pki.path("server.crt").display(),
            pki.path("server.key").display(),
            pki.path("client-ca.crt").display()
        ),
    )
    .unwrap();
    hub.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    hub.migrate();
    // The hub's age master identity (opens sealed media).
    let key = hub.dir.path().join("keys/master.age");
    hub.ensure_master_key(&key);
    hub.ok(&["center", "add", "A", "--name", "A"]);
    let secret = hub.add_node("site-a", "A", Some(&pki.fingerprint("site")));
    let hub_srv = Server::start(&hub);

    let nginx = Nginx::rendered(&hub, &hub_srv);

    let mut site = Site::new("site_node");
    site.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
    let site_cfg = site.dir.path().join("site.toml");
    write_site_config(
        &site_cfg,
        &format!("https://localhost:{}", nginx.port),
        &pki.path("hub-ca.crt"),
        &pki,
    );
    site.set("LXGATE_CONFIG", site_cfg.to_str().unwrap());
    // What systemd's LoadCredential= hands the unit: the secret and the client key.
    let creds = site.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("hub-node-secret"), format!("{secret}\n")).unwrap();
    std::fs::copy(pki.path("site.key"), creds.join("hub-client-key")).unwrap();
    site.set("CREDENTIALS_DIRECTORY", creds.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    Fleet {
        hub,
        _hub_srv: hub_srv,
        nginx,
        pki,
        site,
        creds,
        site_cfg,
        secret,
    }
}

fn write_site_config(path: &std::path::Path, url: &str, ca: &std::path::Path, pki: &Pki) {
    std::fs::write(
        path,
        format!(
            "[hub]\nexport = true\nurl = \"{url}\"\nnode_key = \"site-a\"\ntarget_node_key = \"hub\"\nca_file = \"{}\"\nclient_certificate = \"{}\"\n",
            ca.display(),
            pki.path("site.crt").display()
        ),
    )
    .unwrap();
}

/// Ingest one video at the site through its watcher; its job id and content hash.
fn site_job(f: &Fleet, name: &str, bytes: &[u8]) -> (String, String) {
    drop_file(&f.site.data().join("import/video_import"), name, bytes);
    f.site.ok(&["watch", "--once"]);
    let rows = f.site.sql(&format!(
        "SELECT id::text, content_hash FROM upload_jobs WHERE original_name = '{name}'"
    ));
    assert_eq!(rows.len(), 1, "the site ingested {name}");
    (rows[0].get(0), rows[0].get(1))
}

/// `hub-export run`: exit code and stderr.
fn run(f: &Fleet) -> (i32, String) {
    let o = f.site.run(&["hub-export", "run"]);
    (o.status.code().unwrap_or(-1), stderr(&o))
}

fn export_row(f: &Fleet, job: &str) -> (String, i32, Option<String>) {
    let r = f.site.sql(&format!(
        "SELECT state, attempts, last_error FROM hub_exports WHERE upload_job_id = '{job}'"
    ));
    (r[0].get(0), r[0].get(1), r[0].get(2))
}

fn hub_counts(f: &Fleet, hash: &str) -> (i64, i64) {
    (
        f.hub.count(&format!(
            "SELECT count(*) FROM transfers WHERE resource_hash = '{hash}'"
        )),
        f.hub.count(&format!(
            "SELECT count(*) FROM upload_jobs WHERE content_hash = '{hash}' AND ingest_mode = 'hub_transfer'"
        )),
    )
}

#[test]
fn a_marked_job_reaches_the_hub_once_through_nginx_mtls_and_retries_never_duplicate() {
    let f = fleet();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (job, hash) = site_job(&f, "Mueller_Hans_1961.mp4", &body);

    // Nothing leaves unmarked.
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (0, 0));

    f.site.ok(&["hub-export", "mark", &job, "--by", "test"]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 applied"), "{err}");
    assert_eq!(export_row(&f, &job).0, "applied");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let hub_job = f.hub.sql(&format!(
        "SELECT original_name, provenance->>'client_cert_fingerprint', storage_path, t.transfer_status
         FROM upload_jobs j JOIN transfers t ON t.upload_job_id = j.id WHERE j.content_hash = '{hash}'"
    ));
    let name: String = hub_job[0].get(0);
    assert_eq!(
        name,
        format!("{job}.mp4"),
        "the hub never sees the site's file name"
    );
    let fp: Option<String> = hub_job[0].get(1);
    assert_eq!(
        fp.as_deref().map(str::to_ascii_lowercase),
        Some(f.pki.fingerprint("site"))
    );
    let stored: String = hub_job[0].get(2);
    assert_eq!(
        std::fs::read(f.hub.data().join("storage").join(stored)).unwrap(),
        body
    );
    let status: String = hub_job[0].get(3);
    assert_eq!(status, "applied");
    // Signed with a fresh nonce each: the hub remembered both requests (register,
    // media) as used, and audited the transfer; the site audited its export.
    assert_eq!(f.hub.count("SELECT count(*) FROM seen_signatures"), 2);
    assert!(
        err.contains("lxgate::audit") && err.contains("event=\"export\""),
        "{err}"
    );

    // A second run has nothing to send.
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 applied"), "{err}");
    // A crash after the hub applied but before the site recorded it: the rerun
    // registers the same key, reads `applied` from the 409, and sends nothing twice.
    f.site.sql("UPDATE hub_exports SET state = 'pending'");
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(export_row(&f, &job).0, "applied");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    // Marking twice is one mark.
    f.site.ok(&["hub-export", "mark", &job]);
    assert_eq!(f.site.count("SELECT count(*) FROM hub_exports"), 1);
}

#[test]
fn a_crash_between_register_and_media_is_finished_by_the_next_run() {
    let f = fleet();
    let (job, hash) = site_job(&f, "b.mp4", b"clip b, registered before the crash");
    f.site.ok(&["hub-export", "mark", &job]);
    // The register went through, then the sender died: the hub awaits media.
    let body = serde_json::json!({
        "transfer_key": format!("job-{job}"), "source_node_key": "site-a",
        "target_node_key": "hub", "source_center_key": "A", "resource_kind": "video",
        "resource_hash": hash, "payload_schema_version": 1, "metadata": []
    });
    let curl = run_ok(
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(f.pki.path("hub-ca.crt"))
            .arg("--cert")
            .arg(f.pki.path("site.crt"))
            .arg("--key")
            .arg(f.pki.path("site.key"))
            .args(["-H", "X-Network-Node-Key: site-a", "-H"])
            .arg(format!("X-Network-Node-Secret: {}", f.secret))
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(body.to_string())
            .arg(format!(
                "https://localhost:{}/api/media/hub/transfers/",
                f.nginx.port
            )),
        "curl register",
    );
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "201");
    assert_eq!(hub_counts(&f, &hash), (1, 0));
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(export_row(&f, &job).0, "applied");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
}

#[test]
fn what_goes_wrong_is_kept_with_its_reason_and_retried_after_the_fix() {
    let f = fleet();
    let (job, hash) = site_job(&f, "c.mp4", b"clip c");
    f.site.ok(&["hub-export", "mark", &job]);

    // A wrong secret: the hub says who it does not know; the mark stays pending.
    std::fs::write(f.creds.join("hub-node-secret"), "not-the-secret").unwrap();
    let (code, err) = run(&f);
    assert_eq!(code, 1, "{err}");
    let (state, attempts, why) = export_row(&f, &job);
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(why.as_deref().unwrap_or("").contains("401"), "{why:?}");

    // The hub's certificate from a CA the site does not trust: no request is sent.
    std::fs::write(f.creds.join("hub-node-secret"), &f.secret).unwrap();
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", f.nginx.port),
        &f.pki.path("rogue-ca.crt"),
        &f.pki,
    );
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (_, _, why) = export_row(&f, &job);
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("no answer from the hub"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash), (0, 0));

    // A hub address that redirects: refused, not followed.
    let redirect = Nginx::start(
        &f.site.dir.path().join("redirector"),
        &format!(
            "server {{ listen 127.0.0.1:{{port}} ssl; ssl_certificate {}; ssl_certificate_key {}; return 301 https://localhost:{}$request_uri; }}",
            f.pki.path("server.crt").display(),
            f.pki.path("server.key").display(),
            f.nginx.port
        ),
    );
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", redirect.port),
        &f.pki.path("hub-ca.crt"),
        &f.pki,
    );
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (_, attempts, why) = export_row(&f, &job);
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("redirects are refused"),
        "{why:?}"
    );
    assert_eq!(attempts, 3);
    assert_eq!(hub_counts(&f, &hash), (0, 0));

    // Fixed: the same mark goes through.
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", f.nginx.port),
        &f.pki.path("hub-ca.crt"),
        &f.pki,
    );
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(export_row(&f, &job).0, "applied");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
}

#[test]
fn a_damaged_object_is_refused_by_the_hub_and_the_mark_fails_with_the_fix() {
    let f = fleet();
    let (job, hash) = site_job(&f, "d.mp4", b"clip d as ingested");
    let rel: String = f.site.sql(&format!(
        "SELECT storage_path FROM upload_jobs WHERE id = '{job}'"
    ))[0]
        .get(0);
    let object = f.site.data().join("storage").join(rel);
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&object, b"clip d, flipped on disk").unwrap();
    f.site.ok(&["hub-export", "mark", &job]);
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert!(
        why.as_deref().unwrap_or("").contains("storage audit"),
        "{why:?}"
    );
    assert_eq!(
        hub_counts(&f, &hash).1,
        0,
        "no job at the hub from damaged media"
    );
    // Failed marks wait for the operator; `retry` queues them again.
    let (code, _) = run(&f);
    assert_eq!(code, 0, "a failed mark is not resent by itself");
    f.site.ok(&["hub-export", "retry"]);
    assert_eq!(export_row(&f, &job).0, "pending");
}

#[test]
fn a_client_certificate_rustls_cannot_use_is_named_with_the_fix() {
    let f = fleet();
    std::fs::write(
        &f.site_cfg,
        std::fs::read_to_string(&f.site_cfg)
            .unwrap()
            .replace("site.crt", "site-v1.crt"),
    )
    .unwrap();
    std::fs::copy(f.pki.path("site-v1.key"), f.creds.join("hub-client-key")).unwrap();
    let (code, err) = run(&f);
    assert_eq!(code, 1);
    assert!(
        err.contains("site-v1.crt") && err.contains("X.509 v3"),
        "{err}"
    );
}

#[test]
fn a_hub_that_takes_only_signatures_refuses_the_secret_and_accepts_the_default_sender() {
    let f = fleet_with("require_signed_requests = true\n");
    let (job, hash) = site_job(&f, "e.mp4", b"clip e");
    f.site.ok(&["hub-export", "mark", &job]);
    // A sender set up for an endoreg-db hub sends the secret itself.
    let cfg = std::fs::read_to_string(&f.site_cfg).unwrap();
    std::fs::write(&f.site_cfg, format!("{cfg}sign_requests = false\n")).unwrap();
    assert_eq!(run(&f).0, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "pending");
    assert!(
        why.as_deref().unwrap_or("").contains("only signed"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash), (0, 0));
    // lxgate's default signs: accepted.
    std::fs::write(&f.site_cfg, cfg).unwrap();
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
}

#[test]
fn sealed_media_is_opened_by_the_hub_and_a_hub_that_requires_it_refuses_plain_media() {
    let f = fleet_with("require_sealed_media = true\n");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (job, hash) = site_job(&f, "f.mp4", &body);
    f.site.ok(&["hub-export", "mark", &job]);
    // Plain media to a hub that takes only sealed media: refused, nothing stored.
    assert_eq!(run(&f).0, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert!(
        why.as_deref().unwrap_or("").contains("hub_recipient"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash).1, 0);

    // Sealed to another key: the hub cannot open it.
    let cfg = std::fs::read_to_string(&f.site_cfg).unwrap();
    let stranger = lxgate::crypto::age::Identity::generate()
        .recipient()
        .to_string();
    std::fs::write(
        &f.site_cfg,
        format!("{cfg}hub_recipient = \"{stranger}\"\n"),
    )
    .unwrap();
    f.site.ok(&["hub-export", "retry"]);
    assert_eq!(run(&f).0, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert!(
        why.as_deref().unwrap_or("").contains("does not open"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash).1, 0);

    // Sealed to the hub's recipient: opened, hashed as plaintext, stored.
    let recipient = f.hub.ok(&["keys", "recipient"]).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    std::fs::write(
        &f.site_cfg,
        format!("{cfg}hub_recipient = \"{recipient}\"\n"),
    )
    .unwrap();
    f.site.ok(&["hub-export", "retry"]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let stored: String = f.hub.sql(&format!(
        "SELECT storage_path FROM upload_jobs WHERE content_hash = '{hash}'"
    ))[0]
        .get(0);
    assert_eq!(
        std::fs::read(f.hub.data().join("storage").join(stored)).unwrap(),
        body
    );
}

#[test]
fn a_report_sealed_at_the_site_is_sent_opened_and_sealed_again_at_the_hub() {
    let f = fleet();
    let marker = format!("MARKER{}", uuid::Uuid::new_v4().simple());
    let body: Vec<u8> = format!("%PDF-1.4 {marker} a report line\n")
        .bytes()
        .cycle()
        .take(300_000)
        .collect();
    drop_file(&f.site.data().join("import/report_import"), "r.pdf", &body);
    f.site.ok(&["watch", "--once"]);
    let rows = f.site.sql(
        "SELECT id::text, content_hash, stored_as FROM upload_jobs WHERE original_name = 'r.pdf'",
    );
    let (job, hash, form): (String, String, String) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(form, "age", "sealed at the site");
    f.site.ok(&["hub-export", "mark", &job]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        hub_counts(&f, &hash),
        (1, 1),
        "the hub has the plaintext's hash"
    );
    let r = f.hub.sql(&format!(
        "SELECT storage_path, stored_as FROM upload_jobs WHERE content_hash = '{hash}'"
    ));
    let (stored, form): (String, String) = (r[0].get(0), r[0].get(1));
    assert_eq!(form, "age", "sealed again at the hub, to the hub's key");
    let o = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(f.hub.master_key())
        .arg(f.hub.data().join("storage").join(stored))
        .output()
        .unwrap();
    assert!(o.status.success() && o.stdout == body, "age -d at the hub");
    for site in [&f.site, &f.hub] {
        let plain: Vec<PathBuf> = files_under(&site.data())
            .into_iter()
            .filter(|p| {
                std::fs::read(p)
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
            })
            .collect();
        assert!(plain.is_empty(), "plaintext on disk: {plain:?}");
    }
}

#[test]
fn marks_refuse_what_the_hub_would_refuse() {
    let f = fleet();
    let o = f
        .site
        .run(&["hub-export", "mark", "6f1c7c53-36a4-4a49-9e55-3f0d3d3c2b7e"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no upload job"), "{}", stderr(&o));
    assert_eq!(f.site.count("SELECT count(*) FROM hub_exports"), 0);
}

/// Benchmark for the closing notes, never an assertion on time. Run with
/// `cargo test --release --test hub_export -- --ignored --nocapture export_throughput`.
#[test]
#[ignore]
fn export_throughput() {
    const MIB: usize = 1 << 20;
    let size = 512 * MIB;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let body: Vec<u8> = (0..size / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    for sealed in [false, true] {
        let f = fleet();
        let (job, _) = site_job(&f, "bench.mp4", &body);
        if sealed {
            let r = f.hub.ok(&["keys", "recipient"]).trim().to_string();
            let cfg = std::fs::read_to_string(&f.site_cfg).unwrap();
            std::fs::write(&f.site_cfg, format!("{cfg}hub_recipient = \"{r}\"\n")).unwrap();
        }
        f.site.ok(&["hub-export", "mark", &job]);
        let t = std::time::Instant::now();
        let (code, err) = run(&f);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(code, 0, "{err}");
        let object: String = f.site.sql(&format!(
            "SELECT storage_path FROM upload_jobs WHERE id = '{job}'"
        ))[0]
            .get(0);
        let object = f.site.data().join("storage").join(object);
        let t = std::time::Instant::now();
        run_ok(
            std::process::Command::new("sha256sum").arg(&object),
            "sha256sum",
        );
        let floor = t.elapsed().as_secs_f64();
        println!(
            "export {} MiB {}: {:.2} s = {:.0} MB/s (sha256sum of the same file: {:.2} s = {:.0} MB/s)",
            size / MIB,
            if sealed { "sealed with age" } else { "plain" },
            secs,
            size as f64 / secs / 1e6,
            floor,
            size as f64 / floor / 1e6
        );
    }
}
