//! What a hostile or careless client can make `lxgate serve` spend.
//! Through the rendered nginx (TLS, client certificates) where nginx is part of the
//! answer (statuses, memory behind the proxy, transfers); straight to the app where the
//! app must protect itself whatever fronts it (slow clients, connection floods,
//! shutdown). Bounds are limits a regression crosses by a wide margin, not timings.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A central hub behind its own rendered nginx: /api/upload/ and the transfer
/// endpoints reach the app as they do in production.
struct Edge {
    hub: Site,
    srv: Server,
    nginx: Nginx,
    pki: Pki,
    secret: String,
    uploader: String,
}

fn edge(server: &str) -> Edge {
    let mut hub = Site::new("central_hub");
    let pki = Pki::new(&hub.dir.path().join("pki"));
    let cfg = hub.dir.path().join("hub.toml");
    let settings = format!(
        "role = \"central_hub\"\n[server]\n{server}\n{}",
        pki.hub_settings()
    );
    std::fs::write(&cfg, settings).unwrap();
    hub.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    hub.migrate();
    hub.ok(&["center", "add", "A", "--name", "A"]);
    hub.ok(&["center", "add", "B", "--name", "B"]);
    let secret = hub.add_node("site-a", "A", None);
    let uploader = hub.token("uploader", Some("A"), "up");
    let srv = Server::start(&hub);
    let nginx = Nginx::rendered(&hub, &srv);
    Edge {
        hub,
        srv,
        nginx,
        pki,
        secret,
        uploader,
    }
}

/// curl through nginx with the site's client certificate: status and body.
fn curl(e: &Edge, path: &str, args: &[&str]) -> (u16, String) {
    let (cert, key) = (e.pki.path("site.crt"), e.pki.path("site.key"));
    let mut a = vec![
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    e.nginx.curl(&e.pki.path("hub-ca.crt"), path, &a, None)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Write `len` bytes of `fill` to `w` in 1 MiB pieces.
fn fill(w: &mut impl Write, len: u64, fill: u8) {
    let buf = vec![fill; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

const BOUNDARY: &str = "lxgatehostile7";

/// A text field's value: given, or `n` copies of a byte.
enum V<'a> {
    Text(&'a str),
    Fill(u64, u8),
}

/// A multipart body file: text fields, then a file part.
fn multipart_file(path: &Path, fields: &[(&str, V)], file_name: &str, file: &[u8]) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for (name, value) in fields {
        write!(
            w,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
        )
        .unwrap();
        match value {
            V::Text(t) => w.write_all(t.as_bytes()).unwrap(),
            V::Fill(n, b) => fill(&mut w, *n, *b),
        }
        w.write_all(b"\r\n").unwrap();
    }
    write!(w, "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").unwrap();
    w.write_all(file).unwrap();
    write!(w, "\r\n--{BOUNDARY}--\r\n").unwrap();
    w.flush().unwrap();
}

fn multipart_type() -> String {
    format!("Content-Type: multipart/form-data; boundary={BOUNDARY}")
}

#[test]
fn a_100_mib_text_field_leaves_the_server_under_100_mb_and_is_not_echoed() {
    let e = edge("upload_max_size = 200000000");
    let body = e.hub.dir.path().join("kind-field.body");
    // `kind` is 100 MiB of "v": the server must neither hold nor echo it.
    multipart_file(
        &body,
        &[
            ("center_key", V::Text("A")),
            ("kind", V::Fill(100 << 20, b'v')),
        ],
        "clip.mp4",
        b"clip",
    );
    let data = format!("@{}", body.display());
    let auth = format!("Authorization: Bearer {}", e.uploader);
    let ct = multipart_type();
    let (status, answer) = curl(
        &e,
        "/api/upload/",
        &["-H", &auth, "-H", &ct, "--data-binary", &data],
    );
    let peak_mb = vm_hwm_kib(e.srv.proc.child.id()) / 1024;
    eprintln!("peak RSS of lxgate serve with a 100 MiB text field: {peak_mb} MB");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.len() < 1024,
        "the refusal echoes the field: {} bytes",
        answer.len()
    );
    assert!(
        peak_mb < 100,
        "lxgate serve peaked at {peak_mb} MB for one request"
    );
    // A well-formed upload still passes.
    std::fs::remove_file(&body).unwrap();
    multipart_file(
        &body,
        &[("center_key", V::Text("A")), ("kind", V::Text("video"))],
        "ok.mp4",
        b"fine",
    );
    let (status, answer) = curl(
        &e,
        "/api/upload/",
        &["-H", &auth, "-H", &ct, "--data-binary", &data],
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn refused_60_mb_uploads_reach_the_client_with_the_apps_status_not_502() {
    let e = edge("upload_max_size = 50000000");
    let other = e.hub.token("uploader", Some("B"), "b");
    let big = e.hub.dir.path().join("60mb.body");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(60_000_000)
        .unwrap();
    let raw = format!("@{}", big.display());
    let multi = e.hub.dir.path().join("60mb-multipart.body");
    multipart_file(
        &multi,
        &[("center_key", V::Text("A")), ("kind", V::Text("video"))],
        "big.mp4",
        &vec![7u8; 40_000_000],
    );
    let multi = format!("@{}", multi.display());
    let ct = multipart_type();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let (wrong, a, b) = (bearer("not-a-token"), bearer(&e.uploader), bearer(&other));
    let cases: Vec<(u16, Vec<&str>)> = vec![
        // No valid token: refused before a byte is needed.
        (
            401,
            vec![
                "-H",
                &wrong,
                "-H",
                "X-Filename: a.mp4",
                "-H",
                "X-Kind: video",
                "-H",
                "X-Center-Key: A",
                "--data-binary",
                &raw,
            ],
        ),
        // Center B's token for center A, as a form: refused at the file field.
        (403, vec!["-H", &b, "-H", &ct, "--data-binary", &multi]),
        // Over upload_max_size, declared up front.
        (
            413,
            vec![
                "-H",
                &a,
                "-H",
                "X-Filename: a.mp4",
                "-H",
                "X-Kind: video",
                "-H",
                "X-Center-Key: A",
                "--data-binary",
                &raw,
            ],
        ),
    ];
    for round in 0..2 {
        for (want, args) in &cases {
            let (status, answer) = curl(&e, "/api/upload/", args);
            assert_eq!(status, *want, "round {round}: {answer}");
        }
    }
    assert!(files_under(&e.hub.data().join("storage/tmp")).is_empty());
    assert_eq!(e.hub.count("SELECT count(*) FROM upload_jobs"), 0);
}

#[test]
fn a_refused_transfer_upload_leaves_no_temp_file_and_no_echo() {
    let e = edge("");
    let media = vec![9u8; 3_000_000];
    let register = common::hub_body::transfer("t-refused", &media).to_string();
    let key = "X-Network-Node-Key: site-a".to_string();
    let secret = format!("X-Network-Node-Secret: {}", e.secret);
    let (status, answer) = curl(
        &e,
        "/api/media/hub/transfers/",
        &[
            "-H",
            &key,
            "-H",
            &secret,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &register,
        ],
    );
    assert_eq!(status, 201, "{answer}");
    let body = e.hub.dir.path().join("media.body");
    std::fs::write(&body, &media).unwrap();
    let data = format!("@{}", body.display());
    let path = "/api/media/hub/transfers/t-refused/media/";
    let octets = "Content-Type: application/octet-stream";
    let role = "X-Hub-Media-Role: processed";
    // An envelope the hub cannot read, after the whole body has arrived.
    let (status, answer) = curl(
        &e,
        path,
        &[
            "-H",
            &key,
            "-H",
            &secret,
            "-H",
            octets,
            "-H",
            role,
            "-H",
            "X-Hub-Media-Envelope: {\"not\": \"an envelope\"}",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(status, 400, "{answer}");
    let tmp = e.hub.data().join("storage/tmp");
    assert!(
        files_under(&tmp).is_empty(),
        "a refused transfer left {:?}",
        files_under(&tmp)
    );
    // An envelope over the reference's 4 KiB is refused without being echoed.
    let big = format!("X-Hub-Media-Envelope: {}", "x".repeat(5 << 10));
    let (status, answer) = curl(
        &e,
        path,
        &[
            "-H",
            &key,
            "-H",
            &secret,
            "-H",
            octets,
            "-H",
            role,
            "-H",
            &big,
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.len() < 1024, "echoed: {} bytes", answer.len());
    assert!(
        !answer.contains("xxxxxxxx"),
        "echoed the envelope: {answer}"
    );
    assert!(files_under(&tmp).is_empty());
    assert_eq!(e.hub.count("SELECT count(*) FROM upload_jobs"), 0);
}

// ---- Straight to the app -------------------------------------------------------------

/// A standalone site (default center A) with these `[server]` settings, and an
/// uploader token.
fn direct_site(server: &str) -> (Site, String) {
    let (site, _) = Site::with_center_a(&format!("[server]\n{server}\n"));
    let tok = site.token("uploader", Some("A"), "up");
    (site, tok)
}

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_string()
}

fn temps(site: &Site) -> Vec<PathBuf> {
    files_under(&site.data().join("storage/tmp"))
}

/// The head of a raw upload of `len` bytes.
fn upload_head(tok: &str, len: u64) -> String {
    format!(
        "POST /api/upload/ HTTP/1.1\r\nHost: lxgate\r\nAuthorization: Bearer {tok}\r\nX-Filename: slow.mp4\r\nX-Kind: video\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Whether the server closes `s` within `limit` (EOF or reset), and what it sent.
fn closed_within(s: &mut TcpStream, limit: Duration) -> (bool, String) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, String::from_utf8_lossy(&got).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn slow_clients_are_cut_off_after_the_timeouts() {
    // Nothing fronts this app; with nginx, the header timeout must outlast nginx's idle one.
    let (site, tok) =
        direct_site("header_timeout_secs = 2\nbody_timeout_secs = 2\n[host]\nnginx = false");
    let srv = Server::start(&site);

    // Headers dribbled one byte at a time, never finished.
    let mut s = TcpStream::connect(addr(&srv)).unwrap();
    s.write_all(b"POST /api/upload/ HTTP/1.1\r\nHost: lxgate\r\n")
        .unwrap();
    let start = Instant::now();
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"X").is_err() {
            cut = true;
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match s.read(&mut [0u8; 512]) {
            Ok(_) => {
                cut = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(
        cut,
        "a client dribbling its headers kept the connection for 15 s"
    );
    eprintln!("dribbled headers cut after {:?}", start.elapsed());

    // A body that stalls after 1000 of 1000000 bytes.
    let mut s = TcpStream::connect(addr(&srv)).unwrap();
    s.write_all(upload_head(&tok, 1_000_000).as_bytes())
        .unwrap();
    s.write_all(&[b'v'; 1000]).unwrap();
    let start = Instant::now();
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(15));
    assert!(
        closed,
        "a stalled body kept the connection for 15 s: {answer}"
    );
    eprintln!("stalled body cut after {:?}: {answer:?}", start.elapsed());
    wait_for(
        "the stalled upload's temp file to go",
        Duration::from_secs(5),
        || temps(&site).is_empty(),
    );
    assert_eq!(site.count("SELECT count(*) FROM upload_jobs"), 0);
}

/// `lxgate serve` as systemd starts it by default: 1024 open files (soft).
fn start_with_nofile(site: &Site, soft: u64) -> Server {
    use std::os::unix::process::CommandExt;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = site.env();
    env.push(("LXGATE_LISTEN", &listen));
    let log = site.dir.path().join(format!("serve-{port}.log"));
    let mut c = command(&["serve"], &env);
    c.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // Test-only: the limit must be in force before lxgate starts, and only pre_exec
    // (an unsafe fn) runs code between fork and exec.
    #[allow(unsafe_code)]
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = soft.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let mut proc = Proc {
        child: c.spawn().unwrap(),
    };
    let base = format!("http://{listen}");
    let health = format!("{base}/healthz");
    wait_for("lxgate serve to answer", Duration::from_secs(20), || {
        assert!(proc.alive(), "{}", std::fs::read_to_string(&log).unwrap());
        http().get(&health).call().is_ok()
    });
    Server { proc, base, log }
}

fn quick() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
}

#[test]
fn a_thousand_half_open_connections_do_not_stop_a_normal_upload() {
    // The token-check rate limit is per source address, and here the 666 hostile token
    // checks share the normal upload's address: off, so this measures connections only.
    let (site, tok) = direct_site("max_uploads = 400\ntoken_auth_per_second = 0");
    // Under systemd's default open-file limit, as the unit ran before it set its own.
    let srv = start_with_nofile(&site, 1024);
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(addr(&srv)).unwrap();
        match i % 3 {
            // A request head that never ends.
            0 => s.write_all(b"POST /api/upload/ HTTP/1.1\r\nHost: lxgate\r\n"),
            // No valid token, and a body that never comes.
            1 => s.write_all(upload_head("nobody", 1_000_000).as_bytes()),
            // An upload that stalls after its first bytes.
            _ => s
                .write_all(upload_head(&tok, 1_000_000).as_bytes())
                .and_then(|_| s.write_all(&[b'v'; 1000])),
        }
        .unwrap();
        held.push(s);
    }
    let start = Instant::now();
    let r = quick()
        .post(&srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {tok}"))
        .set("X-Filename", "normal.pdf")
        .set("X-Kind", "report")
        .send_bytes(&[b'n'; 64]);
    let took = start.elapsed();
    eprintln!("a normal upload beside 1000 half-open connections took {took:?}");
    let (status, body) = match r {
        Err(ureq::Error::Transport(t)) => (0, serde_json::json!(t.to_string())),
        r => call(r),
    };
    assert_eq!(status, 201, "{body}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Nothing was shed to make room: no half-open request was answered at all (before
    // the fix the stalled uploads got 500 "Too many open files").
    for s in &mut held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf) {
            panic!(
                "a half-open request was answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
    drop(held);
}

#[test]
fn uploads_past_the_bound_get_503_with_retry_after_and_the_rest_still_answers() {
    let (site, tok) = direct_site("max_uploads = 2");
    let srv = Server::start(&site);
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&srv)).unwrap();
        s.write_all(upload_head(&tok, 10_000_000).as_bytes())
            .unwrap();
        s.write_all(&[b'v'; 100_000]).unwrap();
        slow.push(s);
    }
    wait_for("two uploads in progress", Duration::from_secs(10), || {
        temps(&site).len() == 2
    });
    let r = quick()
        .post(&srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {tok}"))
        .set("X-Filename", "third.pdf")
        .set("X-Kind", "report")
        .send_bytes(b"third");
    let resp = match r {
        Err(ureq::Error::Status(_, r)) | Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(resp.status(), 503, "{:?}", resp.into_string());
    let retry: u64 = resp.header("Retry-After").unwrap().parse().unwrap();
    assert!(retry > 0);
    assert_eq!(
        quick().get(&srv.url("/healthz")).call().unwrap().status(),
        200
    );
    drop(slow);
    wait_for(
        "the slow uploads' temp files to go",
        Duration::from_secs(10),
        || temps(&site).is_empty(),
    );
    let (status, body) = call(
        quick()
            .post(&srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("X-Filename", "third.pdf")
            .set("X-Kind", "report")
            .send_bytes(b"third"),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn sigterm_finishes_within_the_deadline_despite_half_open_requests() {
    let (site, tok) = direct_site(
        "shutdown_timeout_secs = 2\nheader_timeout_secs = 600\nbody_timeout_secs = 600",
    );
    let mut srv = Server::start(&site);
    let mut held = Vec::new();
    let mut s = TcpStream::connect(addr(&srv)).unwrap();
    s.write_all(upload_head(&tok, 10_000_000).as_bytes())
        .unwrap();
    s.write_all(&[b'v'; 100_000]).unwrap();
    held.push(s);
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr(&srv)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lxgate\r\n")
            .unwrap();
        held.push(s);
    }
    wait_for("the upload in progress", Duration::from_secs(10), || {
        temps(&site).len() == 1
    });
    let start = Instant::now();
    // terminate() sends SIGTERM, waits 10 s, then kills.
    let code = srv.proc.terminate();
    let took = start.elapsed();
    eprintln!("SIGTERM with half-open requests finished after {took:?}: {code:?}");
    assert_eq!(code, Some(0), "lxgate serve did not exit by itself");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(temps(&site).is_empty(), "{:?}", temps(&site));
    drop(held);
}
