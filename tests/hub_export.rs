//! Site → hub export end to end on real parts: a site's `lxgate hub-export run` sends a
//! marked job through the hub's real nginx (TLS, client certificate, the rendered server
//! block) to the hub's `lxgate serve` as payload schema 7.0 with the media in a
//! hub_media_envelope_v1, and every retry path ends in exactly one transfer and one job
//! at the hub.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use serde_json::json;
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
    /// The hub's recipient public key (PEM file the site seals to).
    recipient: PathBuf,
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
    let key = hub.dir.path().join("keys/master.age");
    hub.ensure_master_key(&key);
    // The hub's envelope recipient key, and its public half for the site.
    let recipient_key = hub.dir.path().join("keys/hub-recipient.pem");
    let public = hub.ok(&[
        "keys",
        "hub-recipient",
        "--out",
        recipient_key.to_str().unwrap(),
    ]);
    hub.set(
        "ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES",
        recipient_key.to_str().unwrap(),
    );
    hub.ok(&["center", "add", "A", "--name", "A"]);
    let secret = hub.add_node("site-a", "A", Some(&pki.fingerprint("site")));
    let hub_srv = Server::start(&hub);

    let nginx = Nginx::rendered(&hub, &hub_srv);

    let mut site = Site::new("site_node");
    site.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
    let recipient = site.dir.path().join("hub-recipient.pub.pem");
    std::fs::write(&recipient, public).unwrap();
    site.set(
        "LX_ANNOTATE_HUB_EXPORT_RECIPIENT_PUBLIC_KEY_FILE",
        recipient.to_str().unwrap(),
    );
    let staging = site.dir.path().join("envelopes");
    site.set(
        "LX_ANNOTATE_HUB_EXPORT_ENVELOPE_STAGING_DIR",
        staging.to_str().unwrap(),
    );
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
        recipient,
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

/// The site sends to `https://localhost:PORT`, trusting the hub's CA.
fn point_site_at(f: &Fleet, port: u16) {
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{port}"),
        &f.pki.path("hub-ca.crt"),
        &f.pki,
    );
}

/// A small real video made by ffmpeg (so ffprobe has facts to read).
fn test_clip(f: &Fleet, seconds: u32) -> Vec<u8> {
    let clip = f.site.dir.path().join(format!("clip-{seconds}s.mp4"));
    run_ok(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size=64x48:rate=25:duration={seconds}"))
            .args(["-pix_fmt", "yuv420p"])
            .arg(&clip),
        "ffmpeg",
    );
    std::fs::read(&clip).unwrap()
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

/// The site keeps videos sealed at rest from now on.
fn seal_site_videos(f: &Fleet) {
    let mut cfg = std::fs::OpenOptions::new()
        .append(true)
        .open(&f.site_cfg)
        .unwrap();
    std::io::Write::write_all(&mut cfg, b"\n[storage]\nvideo = \"sealed\"\n").unwrap();
}

/// How the site keeps a job's object: `plain` or `age`.
fn site_stored_as(f: &Fleet, job: &str) -> String {
    f.site.sql(&format!(
        "SELECT stored_as FROM upload_jobs WHERE id = '{job}'"
    ))[0]
        .get(0)
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

fn failure_class(f: &Fleet, job: &str) -> Option<String> {
    f.site.sql(&format!(
        "SELECT failure_class FROM hub_exports WHERE upload_job_id = '{job}'"
    ))[0]
        .get(0)
}

/// One run sends the mark: applied at the site, one transfer and one job at the hub.
fn delivered(f: &Fleet, job: &str, hash: &str) {
    let (code, err) = run(f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(export_row(f, job).0, "applied");
    assert_eq!(hub_counts(f, hash), (1, 1));
}

/// Envelope files waiting in the site's staging directory.
fn staged_envelopes(f: &Fleet) -> Vec<PathBuf> {
    files_under(&f.site.dir.path().join("envelopes"))
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
    // Not a terminal: no bar, the summary line instead (#21).
    assert!(err.contains("hub export: 1 files, 2.86 MiB in "), "{err}");
    assert!(!err.contains('\r') && !err.contains("=>"), "{err}");
    assert_eq!(export_row(&f, &job).0, "applied");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let hub_job = f.hub.sql(&format!(
        "SELECT original_name, j.provenance->>'client_cert_fingerprint', storage_path, t.transfer_status,
                t.transfer_key, t.envelope_receipt IS NOT NULL, t.payload_schema_version
         FROM upload_jobs j JOIN transfers t ON t.upload_job_id = j.id WHERE j.content_hash = '{hash}'"
    ));
    let name: String = hub_job[0].get(0);
    assert_eq!(
        name,
        format!("{hash}.mp4"),
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
    assert_eq!(hub_job[0].get::<_, String>(3), "applied");
    assert_eq!(
        hub_job[0].get::<_, String>(4),
        format!("site-a__video__{hash}__processed_v1")
    );
    assert!(hub_job[0].get::<_, bool>(5), "the receipt is kept");
    assert_eq!(hub_job[0].get::<_, String>(6), "7.0");
    // The reference's credential: the secret header, no signatures remembered.
    assert_eq!(f.hub.count("SELECT count(*) FROM seen_signatures"), 0);
    assert!(
        err.contains("lxgate::audit") && err.contains("event=\"export\""),
        "{err}"
    );
    assert!(
        staged_envelopes(&f).is_empty(),
        "the envelope goes once applied"
    );

    // A second run has nothing to send.
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 applied"), "{err}");
    // Sent again without the envelope the hub applied: the hub answers `applied` with a
    // receipt for that envelope, which this site cannot match; it fails the mark as
    // lx-annotate does, and nothing is stored twice.
    f.site.sql("UPDATE hub_exports SET state = 'pending'");
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert_eq!(
        failure_class(&f, &job).as_deref(),
        Some("integrity_inconsistency")
    );
    assert!(why.unwrap_or_default().contains("receipt"));
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
    let body = f.site.ok(&["hub-export", "show", &job]);
    // The sender's own body passes endoreg-db's identity-hash rule.
    let body_file = f.site.dir.path().join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let checked = common::reference::hub_envelope(&["identity", body_file.to_str().unwrap()]);
    assert_eq!(checked["ok"], true, "{checked}");
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
            .arg(body)
            .arg(format!(
                "https://localhost:{}/api/media/hub/transfers/",
                f.nginx.port
            )),
        "curl register",
    );
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "201");
    assert_eq!(hub_counts(&f, &hash), (1, 0));
    // The rerun's register is an exact replay (200, awaiting media): one job at the hub.
    delivered(&f, &job, &hash);
}

#[test]
fn a_retry_sends_the_same_envelope_and_ciphertext() {
    let f = fleet();
    let (job, hash) = site_job(&f, "r.mp4", b"clip r, sealed once");
    f.site.ok(&["hub-export", "mark", &job]);
    // The hub unreachable: sealed, kept, retried later.
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", free_port()),
        &f.pki.path("hub-ca.crt"),
        &f.pki,
    );
    assert_eq!(run(&f).0, 1);
    assert_eq!(export_row(&f, &job).0, "pending");
    assert_eq!(failure_class(&f, &job).as_deref(), Some("transient_retry"));
    let kept = staged_envelopes(&f);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let json = kept
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let persisted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let envelope: lxgate::hub::envelope::Envelope =
        serde_json::from_value(persisted["envelope"].clone()).unwrap();
    point_site_at(&f, f.nginx.port);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let receipt: serde_json::Value = f.hub.sql("SELECT envelope_receipt FROM transfers")[0].get(0);
    assert_eq!(
        receipt["envelope_fingerprint_sha256"],
        envelope.fingerprint()
    );
    assert_eq!(receipt["ciphertext_sha256"], persisted["ciphertext_sha256"]);
}

#[test]
fn what_goes_wrong_is_kept_with_its_reason_and_class() {
    let f = fleet();
    let (job, hash) = site_job(&f, "c.mp4", b"clip c");
    f.site.ok(&["hub-export", "mark", &job]);

    // A wrong secret: 403, final (authorization), kept with the hub's reason.
    std::fs::write(f.creds.join("hub-node-secret"), "not-the-secret").unwrap();
    let (code, err) = run(&f);
    assert_eq!(code, 1, "{err}");
    let (state, attempts, why) = export_row(&f, &job);
    assert_eq!((state.as_str(), attempts), ("failed", 1));
    assert_eq!(
        failure_class(&f, &job).as_deref(),
        Some("authorization_denial")
    );
    assert!(why.as_deref().unwrap_or("").contains("403"), "{why:?}");
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("Invalid network node credentials"),
        "{why:?}"
    );
    std::fs::write(f.creds.join("hub-node-secret"), &f.secret).unwrap();
    f.site.ok(&["hub-export", "retry"]);

    // The hub's certificate from a CA the site does not trust: no request is sent.
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", f.nginx.port),
        &f.pki.path("rogue-ca.crt"),
        &f.pki,
    );
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "pending");
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("no answer from the hub"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash), (0, 0));

    // A hub address that redirects: refused, not followed, retried.
    let redirect = Nginx::start(
        &f.site.dir.path().join("redirector"),
        &format!(
            "server {{ listen 127.0.0.1:{{port}} ssl; ssl_certificate {}; ssl_certificate_key {}; return 301 https://localhost:{}$request_uri; }}",
            f.pki.path("server.crt").display(),
            f.pki.path("server.key").display(),
            f.nginx.port
        ),
    );
    point_site_at(&f, redirect.port);
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
    point_site_at(&f, f.nginx.port);
    delivered(&f, &job, &hash);
}

/// LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES as lx-annotate counts it: once that many attempts
/// ended in a retryable failure the export is failed with the last reason; `retry`
/// gives it a fresh budget, and the same mark then goes through.
#[test]
fn retryable_failures_end_in_failed_after_the_retry_budget() {
    let mut f = fleet();
    let (job, hash) = site_job(&f, "budget.mp4", b"clip under a budget");
    f.site.ok(&["hub-export", "mark", &job]);
    f.site.set("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES", "2");
    // Nothing listens there: no answer, a retryable failure.
    write_site_config(
        &f.site_cfg,
        &format!("https://localhost:{}", free_port()),
        &f.pki.path("hub-ca.crt"),
        &f.pki,
    );
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (state, attempts, why) = export_row(&f, &job);
    assert_eq!((state.as_str(), attempts), ("pending", 1), "{why:?}");
    let (code, _) = run(&f);
    assert_eq!(code, 1);
    let (state, attempts, why) = export_row(&f, &job);
    assert_eq!((state.as_str(), attempts), ("failed", 2), "{why:?}");
    let why = why.unwrap_or_default();
    assert!(
        why.contains("no answer from the hub")
            && why.contains("gave up after 2 attempts")
            && why.contains("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES")
            && why.contains("lxgate hub-export retry"),
        "{why}"
    );
    assert_eq!(failure_class(&f, &job).as_deref(), Some("transient_retry"));
    // Failed is final: a further run does not try it.
    let (code, _) = run(&f);
    assert_eq!(code, 0);
    assert_eq!(export_row(&f, &job).1, 2);

    // 0 allows one attempt, as in lx-annotate (retry_count 1 is not below 0).
    f.site.ok(&["hub-export", "retry"]);
    f.site.set("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES", "0");
    run(&f);
    assert_eq!(export_row(&f, &job).0, "failed");

    f.site.ok(&["hub-export", "retry"]);
    point_site_at(&f, f.nginx.port);
    delivered(&f, &job, &hash);
}

/// LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS bounds the wait for a hub that takes
/// the connection and never answers; the attempt is retried, not hung.
#[test]
fn a_silent_hub_is_given_up_on_after_the_request_timeout() {
    let mut f = fleet();
    let (job, _) = site_job(&f, "silent.mp4", b"clip for a silent hub");
    f.site.ok(&["hub-export", "mark", &job]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accept and hold: the handshake never gets its answer.
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(90));
        drop(conns);
    });
    point_site_at(&f, port);
    f.site
        .set("LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS", "2");
    let mut child = command(&["hub-export", "run"], &f.site.env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A bound far above the 2 s asked for, far below the 300 s read timeout that was
    // fixed before the setting existed: not a measurement.
    let limit = std::time::Duration::from_secs(60);
    let start = std::time::Instant::now();
    let mut in_time = false;
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            in_time = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !in_time {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(
        in_time,
        "hub-export run still waits for a silent hub after {limit:?} with a 2 s request timeout"
    );
    assert_eq!(status.code(), Some(1));
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "pending", "{why:?}");
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("no answer from the hub"),
        "{why:?}"
    );
    drop(held);
}

#[test]
fn a_damaged_object_never_leaves_the_site() {
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
    assert_eq!(
        failure_class(&f, &job).as_deref(),
        Some("configuration_rejection")
    );
    assert!(
        why.as_deref().unwrap_or("").contains("storage audit"),
        "{why:?}"
    );
    assert_eq!(
        hub_counts(&f, &hash),
        (0, 0),
        "nothing registered from damaged media"
    );
    assert!(staged_envelopes(&f).is_empty());
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
fn signing_is_an_option_both_ends_enable() {
    let f = fleet_with("require_signed_requests = true\n");
    let (job, hash) = site_job(&f, "e.mp4", b"clip e");
    f.site.ok(&["hub-export", "mark", &job]);
    // The default sender sends the secret, as the reference does: this hub refuses it.
    assert_eq!(run(&f).0, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert!(
        why.as_deref().unwrap_or("").contains("only signed"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash), (0, 0));
    // Signing on at the site too: accepted, each request's signature remembered once.
    let cfg = std::fs::read_to_string(&f.site_cfg).unwrap();
    std::fs::write(&f.site_cfg, format!("{cfg}sign_requests = true\n")).unwrap();
    f.site.ok(&["hub-export", "retry"]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    assert_eq!(f.hub.count("SELECT count(*) FROM seen_signatures"), 2);
}

#[test]
fn media_sealed_to_another_hub_is_refused_and_video_facts_come_from_ffprobe() {
    let f = fleet();
    let body = test_clip(&f, 2);
    let (job, hash) = site_job(&f, "f.mp4", &body);
    f.site.ok(&["hub-export", "mark", &job]);
    // The site holds another hub's key: the hub cannot open the envelope.
    let stranger = lxgate::hub::keys::RecipientKey::generate()
        .public()
        .to_pem();
    let good = std::fs::read_to_string(&f.recipient).unwrap();
    std::fs::write(&f.recipient, stranger).unwrap();
    assert_eq!(run(&f).0, 1);
    let (state, _, why) = export_row(&f, &job);
    assert_eq!(state, "failed");
    assert_eq!(
        failure_class(&f, &job).as_deref(),
        Some("configuration_rejection")
    );
    assert!(
        why.as_deref()
            .unwrap_or("")
            .contains("recipient_key_unavailable"),
        "{why:?}"
    );
    assert_eq!(hub_counts(&f, &hash), (1, 0));

    // The right key: the registration replays exactly, the media applies.
    std::fs::write(&f.recipient, good).unwrap();
    f.site.ok(&["hub-export", "retry"]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let rows: serde_json::Value = f.hub.sql("SELECT resource_rows FROM transfers")[0].get(0);
    let v = &rows["video_file"];
    assert_eq!(
        (
            v["width"].as_u64(),
            v["height"].as_u64(),
            v["frame_count"].as_u64()
        ),
        (Some(64), Some(48), Some(50)),
        "{rows}"
    );
    assert_eq!(v["fps"].as_f64(), Some(25.0));
    assert_eq!(rows["video_state"]["anonymization_validated"], true);
}

/// A one-page PDF whose text layer is `text` (ASCII), built byte by byte with its xref.
fn text_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out += &format!("{} 0 obj\n{o}\nendobj\n", i + 1);
    }
    let xref = out.len();
    out += &format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for o in offsets {
        out += &format!("{o:010} 00000 n \n");
    }
    out += &format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.into_bytes()
}

/// Ingest one report at the site through its watcher; its job id and content hash.
fn site_report(f: &Fleet, name: &str, bytes: &[u8]) -> (String, String) {
    drop_file(&f.site.data().join("import/report_import"), name, bytes);
    f.site.ok(&["watch", "--once"]);
    let rows = f.site.sql(&format!(
        "SELECT id::text, content_hash FROM upload_jobs WHERE original_name = '{name}' AND kind = 'report'"
    ));
    assert_eq!(rows.len(), 1, "the site ingested {name}");
    (rows[0].get(0), rows[0].get(1))
}

/// Reports go as reports: a PDF with its text layer and a text report each reach the hub
/// under `{node}__report__{hash}__processed_v1` with the report rows endoreg-db requires
/// (raw_pdf_file with the anonymized text, raw_pdf_state with the processed hash); a
/// report without text cannot be marked, as the hub would refuse it.
#[test]
fn reports_are_exported_with_their_text_as_the_report_rows() {
    let f = fleet();
    let pdf = text_pdf("Koloskopie bis zum Zoekum, Schleimhaut unauffaellig");
    let (pdf_job, pdf_hash) = site_report(&f, "Befund_Mueller.pdf", &pdf);
    let (txt_job, txt_hash) = site_report(
        &f,
        "befund.txt",
        "Gastroskopie: Refluxoesophagitis LA A.\n".as_bytes(),
    );
    for job in [&pdf_job, &txt_job] {
        assert_eq!(
            site_stored_as(&f, job),
            "age",
            "reports are sealed at rest by default"
        );
    }
    f.site.ok(&["hub-export", "mark", &pdf_job, &txt_job]);
    let body: serde_json::Value =
        serde_json::from_str(&f.site.ok(&["hub-export", "show", &pdf_job])).unwrap();
    assert_eq!(body["resource_kind"], "report");
    assert_eq!(
        body["transfer_key"],
        format!("site-a__report__{pdf_hash}__processed_v1")
    );
    assert_eq!(body["resource_hash"], pdf_hash.as_str());
    let rows = &body["resource_rows"];
    assert_eq!(
        rows["raw_pdf_file"],
        json!({
            "pdf_hash": pdf_hash,
            "anonymized_text": "Koloskopie bis zum Zoekum, Schleimhaut unauffaellig",
        })
    );
    assert_eq!(
        rows["raw_pdf_state"]["processed_file_sha256"],
        pdf_hash.as_str()
    );
    assert_eq!(rows["raw_pdf_state"]["anonymization_validated"], true);
    assert!(rows.get("video_file").is_none(), "{rows}");

    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 applied"), "{err}");
    // The wire's report rows carry no suffix: the hub names each by its content.
    for (hash, bytes, text, suffix) in [
        (
            &pdf_hash,
            pdf.clone(),
            "Koloskopie bis zum Zoekum, Schleimhaut unauffaellig",
            ".pdf",
        ),
        (
            &txt_hash,
            b"Gastroskopie: Refluxoesophagitis LA A.\n".to_vec(),
            "Gastroskopie: Refluxoesophagitis LA A.",
            ".txt",
        ),
    ] {
        assert_eq!(hub_counts(&f, hash), (1, 1));
        let t = f.hub.sql(&format!(
            "SELECT t.resource_kind, t.resource_rows->'raw_pdf_file'->>'anonymized_text', j.kind, j.storage_path,
                    j.stored_as, j.original_name
             FROM transfers t JOIN upload_jobs j ON j.id = t.upload_job_id WHERE t.resource_hash = '{hash}'"
        ));
        assert_eq!(t[0].get::<_, String>(5), format!("{hash}{suffix}"));
        assert_eq!(t[0].get::<_, String>(0), "report");
        assert_eq!(t[0].get::<_, String>(1), text);
        assert_eq!(t[0].get::<_, String>(2), "report");
        let (stored, form): (String, String) = (t[0].get(3), t[0].get(4));
        assert_eq!(form, "age", "sealed again at the hub, to the hub's key");
        let o = std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(f.hub.master_key())
            .arg(f.hub.data().join("storage").join(stored))
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stdout == bytes,
            "the report's bytes, unchanged (age -d at the hub)"
        );
    }

    // A PDF with no text layer (a scan): the hub would refuse its blank text.
    let scan = text_pdf("").into_iter().collect::<Vec<u8>>();
    let (scan_job, _) = site_report(&f, "scan.pdf", &scan);
    let o = f.site.run(&["hub-export", "mark", &scan_job]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the report has no text") && stderr(&o).contains("anonymized_text"),
        "{}",
        stderr(&o)
    );
    // A raw job of another kind is refused.
    let (video_job, _) = site_job(&f, "v.mp4", b"a video, not a report");
    let o = f
        .site
        .run(&["hub-export", "mark", &txt_job, "--raw", &video_job]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("must be a report"), "{}", stderr(&o));
}

/// Issue 15, test 2 (rows): the bodies lxgate's sender registers, a video with its
/// ffprobe facts and a report with its text, pass endoreg-db 1.6.5's own row schemas
/// (TransferVideoResourceRows / TransferReportResourceRows, extra=forbid), processing
/// snapshot and provenance validators and its identity-hash rule; the same check
/// refuses a body with one field too many, so it is not a check that cannot fail.
/// lx-dtypes 0.5.8's payload contract, which lx-annotate's exporter runs before sending,
/// refuses them for one reason only: no `sensitive_meta` (lxgate holds no patient or
/// examination record to derive hub pseudonyms from; the hub does not require them,
/// docs/hub-wire.md).
#[test]
fn the_senders_bodies_pass_endoreg_dbs_own_row_schemas() {
    let f = fleet();
    let file = f.site.dir.path().join("body.json");
    for body in marked_bodies(&f) {
        std::fs::write(&file, body.to_string()).unwrap();
        let checked = common::reference::hub_rows(&["check", file.to_str().unwrap()]);
        assert_eq!(checked["ok"], true, "{}: {checked}", body["resource_kind"]);
        let (kind, head) = file_row(&body);
        assert_eq!(
            checked["resource_rows"][head], body["resource_rows"][head],
            "the hub keeps the {head} row as sent"
        );
        let mut bad = body.clone();
        bad["resource_rows"][head]["file_name"] = json!("x");
        std::fs::write(&file, bad.to_string()).unwrap();
        let refused = common::reference::hub_rows(&["check", file.to_str().unwrap()]);
        assert_eq!(refused["ok"], false, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("Extra inputs are not permitted"),
            "{refused}"
        );
        std::fs::write(&file, body.to_string()).unwrap();
        let contract = common::reference::hub_rows(&["sender", file.to_str().unwrap()]);
        assert_eq!(
            contract,
            json!({"ok": false, "errors": [{"loc": ["resource_rows", "sensitive_meta"], "type": "missing"}]}),
            "{kind}: lx-dtypes' sender contract misses sensitive_meta and nothing else"
        );
    }
}

/// A body's kind and the row that names its file (and carries the raw hash).
fn file_row(body: &serde_json::Value) -> (&str, &'static str) {
    match body["resource_kind"].as_str().unwrap() {
        "video" => ("video", "video_file"),
        kind => (kind, "raw_pdf_file"),
    }
}

/// The register bodies lxgate's sender builds for what a site holds: a video with its
/// ffprobe facts, a PDF report and a text report, each marked.
fn marked_bodies(f: &Fleet) -> Vec<serde_json::Value> {
    let (video, _) = site_job(f, "v.mp4", &test_clip(f, 1));
    let (report, _) = site_report(f, "r.pdf", &text_pdf("Befund ohne Auffaelligkeiten"));
    let (text, _) = site_report(f, "r.txt", b"Befund: Polyp entfernt.\n");
    f.site.ok(&["hub-export", "mark", &video, &report, &text]);
    [video, report, text]
        .iter()
        .map(|job| serde_json::from_str(&f.site.ok(&["hub-export", "show", job])).unwrap())
        .collect()
}

/// Issue 15, test 2 (the hub's gate): endoreg-db 1.6.5's own `TransferJobCreateSerializer`
/// (real Django and DRF, its models on a real PostgreSQL, its anonymization-state rules
/// in its compiled extension built for this Python) accepts the video, PDF-report and
/// text-report bodies lxgate's sender builds, and refuses each defect with its own
/// message: an identity hash in a row, another schema version, anonymization not
/// validated (decided by the extension), a local (version 4) UUID as pseudonym, a
/// resource hash that is not the raw file's. What it stubbed is printed.
#[test]
fn the_senders_bodies_pass_endoreg_dbs_own_register_serializer() {
    let f = fleet();
    let bodies = marked_bodies(&f);
    let video = &bodies[0];
    let defect = |edit: fn(&mut serde_json::Value), field: &'static str, msg: &'static str| {
        let mut b = video.clone();
        edit(&mut b);
        (b, field, msg)
    };
    let defects = [
        defect(
            |b| b["resource_rows"]["video_file"]["patient_hash"] = json!("ab".repeat(32)),
            "non_field_errors",
            "Patient identity hashes must remain on the source node",
        ),
        defect(
            |b| b["payload_schema_version"] = json!("2.0"),
            "payload_schema_version",
            "Only privacy-preserving hub payload_schema_version '7.0' is accepted.",
        ),
        defect(
            |b| b["resource_rows"]["video_state"]["anonymization_validated"] = json!(false),
            "resource_rows",
            "Current anonymization_status='done_processing_anonymization' is not eligible.",
        ),
        defect(
            |b| {
                b["resource_rows"]["sensitive_meta"] = json!({
                    "patient_uuid": uuid::Uuid::new_v4(), "examination_uuid": uuid::Uuid::new_v4()})
            },
            "resource_rows",
            "Hub records require site-salted UUIDv8 pseudonyms, not local UUIDs",
        ),
        defect(
            |b| b["resource_hash"] = json!("cd".repeat(32)),
            "resource_hash",
            "resource_hash must match resource_rows.video_file.raw_video_hash",
        ),
    ];
    let files: Vec<PathBuf> = bodies
        .iter()
        .chain(defects.iter().map(|(b, _, _)| b))
        .enumerate()
        .map(|(i, b)| {
            let p = f.site.dir.path().join(format!("body-{i}.json"));
            std::fs::write(&p, b.to_string()).unwrap();
            p
        })
        .collect();
    let answers = common::reference::hub_serializer(
        &common::fresh_db(),
        &json!({"hub": "hub", "site": "site-a", "center": "A"}),
        &files,
    );
    for (body, answer) in bodies.iter().zip(&answers) {
        let (kind, head) = file_row(body);
        assert_eq!(answer["ok"], true, "{kind}: {answer}");
        assert_eq!(
            (
                &answer["source_node"],
                &answer["target_node"],
                &answer["source_center"]
            ),
            (&json!("site-a"), &json!("hub"), &json!("A")),
            "{kind}"
        );
        assert_eq!(
            answer["resource_rows"][head], body["resource_rows"][head],
            "{kind}: the serializer keeps the {head} row as sent"
        );
    }
    for ((_, field, msg), answer) in defects.iter().zip(&answers[bodies.len()..]) {
        assert_eq!(answer["ok"], false, "{msg}: {answer}");
        let said = answer["errors"][field].to_string();
        assert!(said.contains(msg), "{field} should say {msg:?}: {answer}");
    }
}

/// The endoreg_rust_backend setup.sh builds from the endoreg-db wheel's rust/ source for
/// Python 3.11 decides every anonymization state exactly as the cp312 binary the wheel
/// ships (tests/reference/rust_backend_rules.py on each). Needs a CPython 3.12, which this
/// project's machines do not promise: `LXGATE_REFERENCE_PYTHON312=/path/to/python3.12
/// cargo test --test hub_export -- --ignored rust_backend`.
#[test]
#[ignore = "needs a CPython 3.12 named by LXGATE_REFERENCE_PYTHON312"]
fn the_rust_backend_built_here_decides_as_the_shipped_one() {
    let py312 = std::env::var("LXGATE_REFERENCE_PYTHON312")
        .expect("LXGATE_REFERENCE_PYTHON312 names a CPython 3.12 to load the shipped binary");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/rust_backend_rules.py");
    // The reference environment (and so the 3.11 build) exists once python() returned.
    let mut ours = common::reference::python();
    let site = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reference/site/endoreg_db");
    let so = |tag: &str| {
        site.join(format!(
            "endoreg_rust_backend.cpython-{tag}-x86_64-linux-gnu.so"
        ))
    };
    let built = run_ok(ours.arg(&script).arg(so("311")), "rules of the 3.11 build");
    let shipped = run_ok(
        std::process::Command::new(py312)
            .arg(&script)
            .arg(so("312")),
        "rules of the shipped cp312 binary",
    );
    let (built, shipped): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&built.stdout).unwrap(),
        serde_json::from_slice(&shipped.stdout).unwrap(),
    );
    assert_eq!(built["video"].as_array().unwrap().len(), 128);
    assert_eq!(built, shipped);
}

/// A video kept sealed by both sides' policy crosses opened inside the envelope and is
/// sealed again at the hub (reports, sealed by default, cross the same way:
/// reports_are_exported_with_their_text_as_the_report_rows).
#[test]
fn a_video_sealed_at_the_site_is_sent_opened_and_sealed_again_at_the_hub() {
    let f = fleet_with("[storage]\nvideo = \"sealed\"\n");
    seal_site_videos(&f);
    let marker = format!("MARKER{}", uuid::Uuid::new_v4().simple());
    let body: Vec<u8> = format!("{marker} a clip's bytes\n")
        .bytes()
        .cycle()
        .take(300_000)
        .collect();
    let (job, hash) = site_job(&f, "sealed.mp4", &body);
    assert_eq!(site_stored_as(&f, &job), "age", "sealed at the site");
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

/// A sealed video's facts are what ffprobe reads from the plain file, for an MP4 whose
/// index (moov) follows the media: ffmpeg's default, which a pipe cannot probe (it needs
/// seeking). ffprobe reads the opened object through the loopback feed (feed.rs), and
/// no plaintext reaches the disk.
#[test]
fn a_sealed_video_exports_the_facts_ffprobe_reads_from_the_plain_file() {
    let f = fleet();
    seal_site_videos(&f);
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("moov-last.mp4");
    run_ok(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc=size=320x240:rate=25:duration=4")
            .args(["-c:v", "mpeg4", "-q:v", "1", "-pix_fmt", "yuv420p"])
            .arg(&clip),
        "ffmpeg",
    );
    let body = std::fs::read(&clip).unwrap();
    let at = |b: &[u8]| body.windows(4).position(|w| w == b).unwrap();
    assert!(
        at(b"moov") > at(b"mdat"),
        "ffmpeg put the index after the media"
    );
    let plain = lxgate::boundary::hub_export::video_facts(
        &clip,
        lxgate::config::AtRest::Plain,
        &lxgate::crypto::keyring::MasterKeys::new(f.site.master_key()),
    )
    .expect("ffprobe reads the plain file");
    assert_eq!(
        (plain.width, plain.height, plain.frame_count),
        (Some(320), Some(240), Some(100))
    );

    let (job, hash) = site_job(&f, "moov-last.mp4", &body);
    assert_eq!(site_stored_as(&f, &job), "age", "sealed at the site");
    f.site.ok(&["hub-export", "mark", &job]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let rows: serde_json::Value = f.hub.sql(&format!(
        "SELECT resource_rows FROM transfers WHERE resource_hash = '{hash}'"
    ))[0]
        .get(0);
    let v = &rows["video_file"];
    assert_eq!(
        (
            v["fps"].as_f64(),
            v["duration"].as_f64(),
            v["frame_count"].as_u64(),
            v["width"].as_u64(),
            v["height"].as_u64(),
        ),
        (
            plain.fps,
            plain.duration,
            plain.frame_count,
            plain.width,
            plain.height
        ),
        "{rows}"
    );
    assert_eq!(plain.fps, Some(25.0));
    assert_eq!(plain.duration, Some(4.0));
    // The clip's bytes appear nowhere under the site's data but sealed.
    let probe = &body[at(b"moov")..at(b"moov") + 64];
    let clear: Vec<PathBuf> = files_under(&f.site.data())
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(probe.len()).any(|w| w == probe)))
        .collect();
    assert!(clear.is_empty(), "plaintext on disk: {clear:?}");
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
    {
        let f = fleet();
        let (job, _) = site_job(&f, "bench.mp4", &body);
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
            "export {} MiB in a hub_media_envelope_v1 through nginx mTLS: {:.2} s = {:.0} MB/s (sha256sum of the same file: {:.2} s = {:.0} MB/s)",
            size / MIB,
            secs,
            size as f64 / secs / 1e6,
            floor,
            size as f64 / floor / 1e6
        );
    }
}
