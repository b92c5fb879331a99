//! Site → hub export end to end on real parts: a site's `lxgate hub-export run` sends a
//! marked job through the hub's real nginx (TLS, client certificate, the rendered server
//! block) to the hub's `lxgate serve` as payload schema 7.0 with the media in a
//! hub_media_envelope_v1, and every retry path ends in exactly one transfer and one job
//! at the hub.
#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod reference;
mod sealed;

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

/// Ingest one file of `kind` (`video`, `report`) at the site through its watcher's
/// `<kind>_import` folder; its job id and content hash.
fn site_ingest(f: &Fleet, kind: &str, name: &str, bytes: &[u8]) -> (String, String) {
    drop_file(
        &f.site.data().join(format!("import/{kind}_import")),
        name,
        bytes,
    );
    f.site.ok(&["watch", "--once"]);
    let rows = f.site.sql(&format!(
        "SELECT id::text, content_hash FROM upload_jobs WHERE original_name = '{name}' AND kind = '{kind}'"
    ));
    assert_eq!(rows.len(), 1, "the site ingested {name} as a {kind}");
    (rows[0].get(0), rows[0].get(1))
}

/// Ingest one video at the site; its job id and content hash.
fn site_job(f: &Fleet, name: &str, bytes: &[u8]) -> (String, String) {
    site_ingest(f, "video", name, bytes)
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

/// A hub-stored object opened with the hub's master identity (`age -d`); None if age
/// refuses it.
fn hub_plaintext(f: &Fleet, storage_path: &str) -> Option<Vec<u8>> {
    let o = std::process::Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(f.hub.master_key())
        .arg(f.hub.data().join("storage").join(storage_path))
        .output()
        .expect("run age (apt-get install age)");
    o.status.success().then_some(o.stdout)
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

/// Ingest one report at the site; its job id and content hash.
fn site_report(f: &Fleet, name: &str, bytes: &[u8]) -> (String, String) {
    site_ingest(f, "report", name, bytes)
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
