//! The nginx server block as `lxgate render nginx` writes it, in front of `lxgate serve`
//! (real nginx, TLS, client certificates, curl as the client): what a client on the
//! network can and cannot reach, and what nginx writes to its disk on the way.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Edge {
    site: Site,
    srv: Server,
    nginx: Nginx,
    pki: Pki,
}

/// A site of `role` with these settings (given its PKI), its own rendered nginx block
/// serving it.
fn edge(role: &str, settings: impl FnOnce(&Pki) -> String) -> Edge {
    let mut site = Site::new(role);
    let pki = Pki::new(&site.dir.path().join("pki"));
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, format!("role = \"{role}\"\n{}", settings(&pki))).unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    let srv = Server::start(&site);
    let nginx = Nginx::rendered(&site, &srv);
    Edge {
        site,
        srv,
        nginx,
        pki,
    }
}

fn standalone() -> Edge {
    edge("standalone", Pki::host_settings)
}

fn curl_with(e: &Edge, path: &str, args: &[&str], zeros: Option<usize>) -> (u16, String) {
    e.nginx.curl(&e.pki.path("hub-ca.crt"), path, args, zeros)
}

fn curl(e: &Edge, path: &str, args: &[&str]) -> (u16, String) {
    curl_with(e, path, args, None)
}

/// Bytes in nginx's client body temp files under `dir`, unlinked ones included: nginx
/// deletes a temp file right after creating it, so `du` of the directory alone sees
/// nothing while the body is on disk. Every open descriptor that points below `dir`.
fn temp_bytes(dir: &Path) -> u64 {
    let mut total: u64 = files_under(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        if !proc
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let open = std::fs::read_link(fd.path()).unwrap_or_default();
            let deleted = open.to_string_lossy().ends_with(" (deleted)");
            if open.starts_with(dir) && deleted {
                total += std::fs::metadata(fd.path()).map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// The most bytes nginx held in body temp files while `f` ran (sampled continuously).
fn peak_temp_bytes<T>(dir: &Path, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, dir) = (stop.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(temp_bytes(&dir));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(temp_bytes(&dir))
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

fn body_temp(e: &Edge) -> PathBuf {
    e.nginx.dir.join("body")
}

#[test]
fn the_attestation_header_is_the_one_the_app_trusts_set_on_the_hub_location_cleared_elsewhere() {
    let name = "X-Lx-Attested";
    let e = edge("central_hub", |pki| {
        format!("{}mtls_meta_key = \"{name}\"\n", pki.hub_settings())
    });
    let secret = e
        .site
        .add_node("site-a", "A", Some(&e.pki.fingerprint("site")));
    let node = [
        "-H",
        "X-Network-Node-Key: site-a",
        "-H",
        &format!("X-Network-Node-Secret: {secret}"),
    ]
    .map(String::from);
    let node: Vec<&str> = node.iter().map(String::as_str).collect();
    let (cert, key) = (e.pki.path("site.crt"), e.pki.path("site.key"));
    let with_cert = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];

    // A forged attestation without a certificate. On the transfer path nginx refuses
    // it; by a path nginx files under `/` (it decodes %2e%2e, the app routes the raw
    // path to the status handler) it reaches the app, which must not trust it. The
    // node has no pinned certificate, so nothing else would stop it.
    let secret_b = e.site.add_node("site-b", "A", None);
    let forged = format!("{}: SUCCESS", name.to_ascii_lowercase());
    let node_b = format!("X-Network-Node-Secret: {secret_b}");
    let args = [
        "-H",
        "X-Network-Node-Key: site-b",
        "-H",
        &node_b,
        "-H",
        &forged,
    ];
    let (s, _) = curl(&e, "/api/media/hub/transfers/t-edge/status/", &args);
    assert_eq!(
        s, 403,
        "nginx refuses the transfer path without a certificate"
    );
    // The reference answers an unknown transfer key 404 before any gate, so this path
    // (key `..`) can only show that the forged header opens nothing; the gate that
    // refuses an unattested node is tested against the app in tests/hub.rs.
    let (s, b) = curl(&e, "/api/media/hub/transfers/%2e%2e/status/", &args);
    assert!(
        s == 404 || s == 403,
        "the forged header reached the app as trusted: {s} {b}"
    );

    // A real client certificate: nginx attests it under the configured name.
    let reg = common::hub_body::transfer("t-edge", b"clip").to_string();
    let mut args = with_cert.to_vec();
    args.extend(&node);
    args.extend(["-H", "Content-Type: application/json", "-d", &reg]);
    let (s, b) = curl(&e, "/api/media/hub/transfers/", &args);
    assert_eq!(s, 201, "a site certificate through nginx: {b}");

    // The app trusts only the name nginx was rendered with.
    let mut env = e.site.env();
    env.push((
        "ENDOREG_HUB_TRANSFER_MTLS_META_KEY",
        "X-Client-Cert-Verified",
    ));
    let o = lxgate(&["config", "check"], &env);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nginx sets and clears the header X-Lx-Attested"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn health_readiness_and_metrics_answer_locally_and_not_through_nginx() {
    let e = standalone();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/metrics?format=text",
        "//metrics",
        "/%6detrics",
        "/api/../readyz",
    ] {
        let (s, b) = curl(&e, path, &[]);
        assert_eq!(s, 404, "{path} through nginx: {b}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, b) = call(http().get(&e.srv.url(path)).call());
        assert_eq!(s, 200, "{path} on the app's own listener: {b}");
    }
    // The rest of the API is still proxied, with nginx's request id: a client's own
    // X-Request-Id is replaced, the answer carries nginx's, and the app logged it.
    let (s, b) = curl(
        &e,
        "/api/upload-jobs/",
        &["-D", "-", "-H", "X-Request-Id: chosen-by-the-client"],
    );
    assert_eq!(s, 401, "{b}");
    let id = b
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no X-Request-Id in the answer:\n{b}"))
        .trim()
        .to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{id:?}"
    );
    let log = std::fs::read_to_string(&e.srv.log).unwrap();
    assert!(log.contains(&format!("request_id={id}")), "{log}");
    assert!(!log.contains("chosen-by-the-client"), "{log}");
}

#[test]
fn an_unauthenticated_300_mb_chunked_post_leaves_no_byte_on_nginx_disk() {
    let e = standalone();
    let chunked = ["-H", "Transfer-Encoding: chunked", "--data-binary", "@-"];
    let dir = body_temp(&e);
    // Not proxied at all: nginx answers 404 and discards the body.
    let ((s, b), peak) = peak_temp_bytes(&dir, || {
        curl_with(&e, "/healthz", &chunked, Some(300 << 20))
    });
    assert_eq!(s, 404, "{b} (nginx spooled {peak} bytes)");
    assert_eq!(peak, 0, "bytes nginx spooled for POST /healthz");
    // Proxied, with the 1m limit of every location without large bodies. The body
    // streams to the app, so whichever comes first answers: nginx past 1m (413) or the
    // app, which has no POST on this route (405). Neither leaves a byte on disk.
    let ((s, b), peak) = peak_temp_bytes(&dir, || {
        curl_with(&e, "/api/upload-jobs/", &chunked, Some(300 << 20))
    });
    assert!(s == 413 || s == 405, "{s} {b} (nginx spooled {peak} bytes)");
    assert_eq!(peak, 0, "bytes nginx spooled for POST /api/upload-jobs/");
    // A declared length over the limit is refused before anything is read.
    let big = e.site.dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let upload = ["-X", "POST", "-T", big.to_str().unwrap()];
    let ((s, b), peak) = peak_temp_bytes(&dir, || curl(&e, "/api/upload-jobs/", &upload));
    assert_eq!(s, 413, "{b} (nginx spooled {peak} bytes)");
    assert_eq!(peak, 0);
    assert_eq!(temp_bytes(&dir), 0);
}

#[test]
fn a_chunked_upload_streams_through_nginx_without_touching_its_disk() {
    let e = standalone();
    let tok = e.site.token("uploader", Some("A"), "edge-up");
    let auth = format!("Authorization: Bearer {tok}");
    let size = 64 << 20;
    let args = [
        "-H",
        &auth,
        "-H",
        "X-Filename: clip.mp4",
        "-H",
        "X-Kind: video",
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@-",
    ];
    let ((s, b), peak) = peak_temp_bytes(&body_temp(&e), || {
        curl_with(&e, "/api/upload/", &args, Some(size))
    });
    assert_eq!(s, 201, "{b}");
    let job: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(job["size_bytes"], size);
    assert_eq!(peak, 0, "bytes nginx spooled for a streamed upload");
}

#[test]
fn a_silent_client_is_cut_off_after_the_header_timeout() {
    use std::io::Read;
    let e = standalone();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", e.nginx.port)).unwrap();
    // nginx's default is 60 s; the rendered block says 15 s. Read until nginx closes.
    c.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = c
        .read(&mut buf)
        .expect("nginx closes a silent connection within 45 s");
    let waited = start.elapsed();
    assert_eq!(n, 0, "nginx sent {:?}", &buf[..n]);
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(45),
        "closed after {waited:?}"
    );
}

/// Connections nginx (its master `pid` and workers) holds open to the app at `port`:
/// ESTABLISHED in /proc/net/tcp with the app's port as the remote end, on a socket one
/// of those processes has open.
fn nginx_connections_to(pid: u32, port: u16) -> usize {
    let stat_ppid = |p: &Path| -> Option<u32> {
        let stat = std::fs::read_to_string(p.join("stat")).ok()?;
        stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()
    };
    let mut sockets = std::collections::HashSet::new();
    for proc in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = proc.path();
        let Ok(this) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if this != pid && stat_ppid(&path) != Some(pid) {
            continue;
        }
        for fd in std::fs::read_dir(path.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            if let Some(inode) = link
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                sockets.insert(inode.to_string());
            }
        }
    }
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2] == remote && f[3] == "01" && sockets.contains(f[9])
        })
        .count()
}

/// A center A job through nginx: a `size` byte video whose byte i is i mod 251.
fn upload_video(e: &Edge, tok: &str, size: usize) -> (String, Vec<u8>) {
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let file = e.site.dir.path().join(format!("clip-{size}.mp4"));
    std::fs::write(&file, &body).unwrap();
    let auth = format!("Authorization: Bearer {tok}");
    let data = format!("@{}", file.display());
    let (s, b) = curl(
        e,
        "/api/upload/",
        &[
            "-H",
            &auth,
            "-H",
            "X-Filename: clip.mp4",
            "-H",
            "X-Kind: video",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(s, 201, "{b}");
    let job: serde_json::Value = serde_json::from_str(&b).unwrap();
    (job["id"].as_str().unwrap().to_string(), body)
}

/// GET /api/media/ID through nginx with this token and range: status and body bytes.
fn media(e: &Edge, tok: &str, id: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let out = e.site.dir.path().join("media.out");
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}", "--cacert"])
        .arg(e.pki.path("hub-ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {tok}")]);
    if let Some(r) = range {
        c.args(["-H", &format!("Range: bytes={r}")]);
    }
    let o = run_ok(
        c.arg(format!("https://localhost:{}/api/media/{id}", e.nginx.port)),
        "curl media",
    );
    let status = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    (status, std::fs::read(&out).unwrap_or_default())
}

#[test]
fn nginx_keeps_its_connections_to_the_app_open() {
    let e = standalone();
    let tok = e.site.token("viewer", Some("A"), "edge-view");
    let app: u16 = e.srv.base.rsplit(':').next().unwrap().parse().unwrap();
    for _ in 0..20 {
        let (s, _) = curl(
            &e,
            "/api/upload-jobs/",
            &["-H", &format!("Authorization: Bearer {tok}")],
        );
        assert_eq!(s, 200);
    }
    // Without an upstream keepalive nginx closes its connection after each answer.
    let open = nginx_connections_to(e.nginx.proc.child.id(), app);
    assert!(
        (1..=32).contains(&open),
        "{open} idle connections from nginx to the app after 20 requests"
    );
}

#[test]
fn protected_media_through_nginx_keeps_the_center_rules() {
    let e = standalone();
    e.site.ok(&["center", "add", "B", "--name", "B"]);
    let up_a = e.site.token("uploader", Some("A"), "up-a");
    let up_b = e.site.token("uploader", Some("B"), "up-b");
    let view_a = e.site.token("viewer", Some("A"), "view-a");
    let view_b = e.site.token("viewer", Some("B"), "view-b");
    let admin = e.site.token("super_admin", None, "root");
    let (job_a, body) = upload_video(&e, &up_a, 300_000);
    let (job_b, _) = upload_video(&e, &up_b, 1000);
    for (range, first, last) in [
        ("0-0", 0, 0),
        ("1000-1999", 1000, 1999),
        ("299990-", 299_990, 299_999),
    ] {
        for tok in [&view_a, &up_a, &admin] {
            let (s, got) = media(&e, tok, &job_a, Some(range));
            assert_eq!(s, 206, "{range}");
            assert_eq!(got, body[first..=last], "{range}");
        }
    }
    let (s, got) = media(&e, &view_a, &job_a, None);
    assert_eq!((s, got.len()), (200, body.len()));
    // A viewer of another center, and a center's tokens asking for another center's
    // job: answered as if the job did not exist.
    assert_eq!(media(&e, &view_b, &job_a, Some("0-9")).0, 404);
    assert_eq!(media(&e, &up_a, &job_b, Some("0-9")).0, 404);
    assert_eq!(media(&e, &view_a, &job_b, None).0, 404);
    assert_eq!(media(&e, &admin, &job_b, Some("0-0")).0, 206);
    let none = "00000000-0000-0000-0000-000000000000";
    assert_eq!(media(&e, &view_a, none, None).0, 404);
    assert_eq!(media(&e, &view_a, "not-a-job", None).0, 404);
    // No valid token: 401, whatever the job.
    let guess = "lxg_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(media(&e, guess, &job_a, None).0, 401);
    assert_eq!(media(&e, guess, "not-a-job", None).0, 401);
}

#[test]
fn a_confirmed_token_seeks_without_counting_against_the_lookup_rate() {
    // One token lookup per second (bursts of 2): a player's range requests on a token
    // the database confirmed a moment ago cost none.
    let e = edge("standalone", |pki| {
        format!(
            "[server]\ntoken_recheck_secs = 60\ntoken_auth_per_second = 1\n{}",
            pki.host_settings()
        )
    });
    let up = e.site.token("uploader", Some("A"), "up-a");
    let (job, body) = upload_video(&e, &up, 100_000);
    for i in 0..20 {
        let at = i * 4096;
        let (s, got) = media(&e, &up, &job, Some(&format!("{at}-{}", at + 4095)));
        assert_eq!(s, 206, "range request {i}");
        assert_eq!(got, body[at..at + 4096]);
    }
    // Audited when access was decided, not once per range request.
    let log = std::fs::read_to_string(&e.srv.log).unwrap();
    let downloads = log
        .lines()
        .filter(|l| l.contains("event=\"media_download\""))
        .count();
    assert_eq!(downloads, 1, "{log}");
}

#[test]
fn a_revoked_token_is_refused_within_the_recheck_window() {
    let window = Duration::from_secs(2);
    let e = edge("standalone", |pki| {
        format!("[server]\ntoken_recheck_secs = 2\n{}", pki.host_settings())
    });
    let up = e.site.token("uploader", Some("A"), "up-a");
    let view = e.site.token("viewer", Some("A"), "view-a");
    let (job, _) = upload_video(&e, &up, 4096);
    assert_eq!(media(&e, &view, &job, Some("0-99")).0, 206);
    e.site.ok(&["token", "revoke", "view-a"]);
    let revoked = std::time::Instant::now();
    // Every request sent once the window has passed since the revocation is refused;
    // before that the token may still pass, but once refused it stays refused.
    let mut refused = false;
    loop {
        let sent = std::time::Instant::now();
        let (s, _) = media(&e, &view, &job, Some("0-99"));
        if sent >= revoked + window {
            assert_eq!(s, 401, "sent {:?} after the revocation", sent - revoked);
            break;
        }
        assert!(
            s == 401 || (s == 206 && !refused),
            "{s}, refused before: {refused}"
        );
        refused |= s == 401;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        media(&e, &up, &job, Some("0-99")).0,
        206,
        "other tokens pass"
    );
}
