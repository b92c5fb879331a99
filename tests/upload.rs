//! The API upload boundary over real HTTP into real PostgreSQL and storage.
mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Duration;

/// Headers of a valid raw upload of `a.pdf` as a report.
const A_PDF: &[(&str, &str)] = &[("X-Filename", "a.pdf"), ("X-Kind", "report")];

struct Api {
    site: Site,
    srv: Server,
}

fn setup(role: &str, extra: &[(&str, &str)]) -> Api {
    let mut site = Site::new(role);
    for (k, v) in extra {
        site.set(k, v);
    }
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "Center A"]);
    site.ok(&["center", "add", "B", "--name", "Center B"]);
    let srv = Server::start(&site);
    Api { site, srv }
}

fn post_raw(
    api: &Api,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut r = http()
        .post(&api.srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {token}"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    call(r.send_bytes(body))
}

fn objects(api: &Api) -> Vec<std::path::PathBuf> {
    files_under(&api.site.data().join("storage/objects"))
}
fn temps(api: &Api) -> Vec<std::path::PathBuf> {
    files_under(&api.site.data().join("storage/tmp"))
}

#[test]
fn upload_stores_by_content_and_a_repeat_is_a_dedupe() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up-a");
    let body = b"%PDF-1.4 a report about nobody in particular".repeat(1000);
    let sha = hex::encode(Sha256::digest(&body));
    let (s, job) = post_raw(
        &api,
        &tok,
        &[
            ("X-Filename", "befund%20m%C3%BCller.pdf"),
            // A video: the kind nginx serves from the object itself (reports are sealed,
            // tests/sealed.rs).
            ("X-Kind", "video"),
        ],
        &body,
    );
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["content_hash"], sha);
    assert_eq!(job["dedupe"], false);
    assert_eq!(job["original_name"], "befund müller.pdf");
    assert_eq!(job["center_key"], "A");
    assert_eq!(job["provenance"]["token_label"], "up-a");
    assert_eq!(job["provenance"]["boundary"], "api");
    let path = api
        .site
        .data()
        .join("storage")
        .join(job["storage_path"].as_str().unwrap());
    assert_eq!(
        path,
        api.site
            .data()
            .join(format!("storage/objects/{}/{}", &sha[..2], &sha[2..]))
    );
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&path).unwrap())),
        sha
    );
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 1);

    let (s, again) = post_raw(
        &api,
        &tok,
        &[("X-Filename", "copy.pdf"), ("X-Kind", "video")],
        &body,
    );
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["dedupe"], true);
    assert_eq!(again["id"], job["id"]);
    assert_eq!(objects(&api).len(), 1);
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 1);
    assert!(temps(&api).is_empty());

    // Read back: the job, the list, and the X-Accel-Redirect for nginx.
    let id = job["id"].as_str().unwrap();
    let (s, got) = call(
        http()
            .get(&api.srv.url(&format!("/api/upload-jobs/{id}")))
            .set("Authorization", &format!("Bearer {tok}"))
            .call(),
    );
    assert_eq!((s, &got["id"]), (200, &job["id"]));
    let r = http()
        .get(&api.srv.url(&format!("/api/media/{id}")))
        .set("Authorization", &format!("Bearer {tok}"))
        .call()
        .unwrap();
    assert_eq!(
        r.header("x-accel-redirect").unwrap(),
        format!("/protected_media/objects/{}/{}", &sha[..2], &sha[2..])
    );
    // Another center's token cannot tell the job exists.
    let tok_b = api.site.token("viewer", Some("B"), "view-b");
    let (s, _) = call(
        http()
            .get(&api.srv.url(&format!("/api/upload-jobs/{id}")))
            .set("Authorization", &format!("Bearer {tok_b}"))
            .call(),
    );
    assert_eq!(s, 404);
    let (s, list) = call(
        http()
            .get(&api.srv.url("/api/upload-jobs/"))
            .set("Authorization", &format!("Bearer {tok_b}"))
            .call(),
    );
    assert_eq!((s, list.as_array().unwrap().len()), (200, 0));
}

#[test]
fn multipart_upload_is_accepted() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("B"), "up-b");
    let boundary = "XyZbOuNdArY";
    let mut body = Vec::new();
    for (name, val) in [("center_key", "B"), ("kind", "video")] {
        body.extend(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{val}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes());
    // Above axum's 2 MB default body limit, which multipart bodies once hit.
    let payload = vec![7u8; 5_000_000];
    body.extend(&payload);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (s, job) = call(
        http()
            .post(&api.srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send_bytes(&body),
    );
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["kind"], "video");
    assert_eq!(job["size_bytes"], 5_000_000);
    assert_eq!(job["content_hash"], hex::encode(Sha256::digest(&payload)));
}

#[test]
fn role_rules_refuse_before_anything_is_stored() {
    let api = setup("standalone", &[]);
    let tok_a = api.site.token("uploader", Some("A"), "up-a");
    let viewer = api.site.token("viewer", Some("A"), "view-a");
    let h = [("X-Filename", "x.pdf"), ("X-Kind", "report")];
    let (s, e) = post_raw(&api, &tok_a, &[h[0], h[1], ("X-Center-Key", "B")], b"data");
    assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{e}");
    let (s, e) = post_raw(&api, &viewer, &h, b"data");
    assert_eq!(s, 403, "{e}");
    let (s, e) = post_raw(&api, "lxg_not_a_token", &h, b"data");
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthenticated")));
    api.site.ok(&["token", "revoke", "up-a"]);
    // Refused within [server] token_recheck_secs (5 by default) of the revocation.
    wait_for(
        "the revocation to take effect",
        Duration::from_secs(15),
        || {
            let (s, _) = call(
                http()
                    .get(&api.srv.url("/api/upload-jobs/"))
                    .set("Authorization", &format!("Bearer {tok_a}"))
                    .call(),
            );
            s == 401
        },
    );
    let (s, _) = post_raw(&api, &tok_a, &h, b"data");
    assert_eq!(s, 401, "revoked token");
    assert!(objects(&api).is_empty() && temps(&api).is_empty());
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 0);
}

#[test]
fn bad_or_missing_headers_get_400_naming_the_header() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    for (headers, needle) in [
        (vec![("X-Kind", "report")], "X-Filename"),
        (vec![("X-Filename", "a.pdf")], "X-Kind"),
        (
            vec![("X-Filename", "a.pdf"), ("X-Kind", "spreadsheet")],
            "X-Kind",
        ),
        (
            vec![("X-Filename", "../etc/passwd"), ("X-Kind", "report")],
            "X-Filename",
        ),
    ] {
        let (s, e) = post_raw(&api, &tok, &headers, b"data");
        assert_eq!(s, 400, "{headers:?}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{headers:?}: {e}"
        );
    }
    // A super_admin without a key and without a default center.
    let admin = api.site.token("super_admin", None, "root");
    let (s, e) = post_raw(&api, &admin, A_PDF, b"data");
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("missing_center_key")),
        "{e}"
    );
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 0);
}

#[test]
fn central_hub_requires_a_center_key_even_from_scoped_tokens() {
    let api = setup("central_hub", &[("LX_ANNOTATE_DEFAULT_CENTER", "A")]);
    let tok = api.site.token("uploader", Some("A"), "up");
    let (s, e) = post_raw(&api, &tok, A_PDF, b"data");
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("missing_center_key")),
        "{e}"
    );
    let admin = api.site.token("super_admin", None, "root");
    let (s, _) = post_raw(&api, &admin, A_PDF, b"data");
    assert_eq!(s, 400, "no default-center fallback on a hub");
    let (s, e) = post_raw(
        &api,
        &tok,
        &[
            ("X-Filename", "a.pdf"),
            ("X-Kind", "report"),
            ("X-Center-Key", "B"),
        ],
        b"data",
    );
    assert_eq!(s, 403, "{e}");
    let (s, _) = post_raw(
        &api,
        &tok,
        &[
            ("X-Filename", "a.pdf"),
            ("X-Kind", "report"),
            ("X-Center-Key", "A"),
        ],
        b"data",
    );
    assert_eq!(s, 201);
}

/// A body reader that yields `total` bytes, optionally slowly, for streaming uploads.
struct Slow {
    left: u64,
    pause_every: u64,
    pause: Duration,
    sent: u64,
}
impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.left as usize).min(64 * 1024);
        buf[..n].fill(b'v');
        self.left -= n as u64;
        self.sent += n as u64;
        if self.pause_every > 0 && self.sent % self.pause_every < n as u64 {
            std::thread::sleep(self.pause);
        }
        Ok(n)
    }
}

#[test]
fn oversize_gets_413_and_leaves_no_file() {
    let api_limit = setup("standalone", &[("UPLOAD_MAX_SIZE", "100000")]);
    let tok = api_limit.site.token("uploader", Some("A"), "up");
    // Declared length over the limit: refused before reading.
    let (s, e) = post_raw(
        &api_limit,
        &tok,
        &[("X-Filename", "big.mp4"), ("X-Kind", "video")],
        &vec![1u8; 100_001],
    );
    assert_eq!((s, e["code"].as_str()), (413, Some("too_large")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("100000"));
    // Chunked, no length: reading stops at the limit.
    let r = http()
        .post(&api_limit.srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {tok}"))
        .set("X-Filename", "big.mp4")
        .set("X-Kind", "video")
        .send(Slow {
            left: 5_000_000,
            pause_every: 0,
            pause: Duration::ZERO,
            sent: 0,
        });
    match r {
        Err(ureq::Error::Status(413, _)) => {}
        // The server may close the connection before the client finishes sending.
        Err(ureq::Error::Transport(_)) => {}
        other => panic!("expected 413, got {other:?}"),
    }
    assert!(objects(&api_limit).is_empty(), "{:?}", objects(&api_limit));
    wait_for("temp files to go", Duration::from_secs(5), || {
        temps(&api_limit).is_empty()
    });
    assert_eq!(api_limit.site.count("SELECT count(*) FROM upload_jobs"), 0);
}

#[test]
fn sigkill_mid_upload_then_restart_leaves_no_row_and_no_temp_file() {
    let mut api = setup("standalone", &[("UPLOAD_MAX_SIZE", "300000000")]);
    let tok = api.site.token("uploader", Some("A"), "up");
    let url = api.srv.url("/api/upload/");
    let sender = std::thread::spawn(move || {
        http()
            .post(&url)
            .set("Authorization", &format!("Bearer {tok}"))
            .set("X-Filename", "long.mp4")
            .set("X-Kind", "video")
            .send(Slow {
                left: 200 * 1024 * 1024,
                pause_every: 4 * 1024 * 1024,
                pause: Duration::from_millis(50),
                sent: 0,
            })
            .is_ok()
    });
    let tmp = api.site.data().join("storage/tmp");
    wait_for("a partial temp file", Duration::from_secs(30), || {
        files_under(&tmp).iter().any(|p| {
            std::fs::metadata(p)
                .map(|m| m.len() > 8 * 1024 * 1024)
                .unwrap_or(false)
        })
    });
    api.srv.proc.kill9();
    assert!(!sender.join().unwrap(), "the upload cannot have succeeded");
    assert!(
        !temps(&api).is_empty(),
        "the crash left a temp file (precondition)"
    );
    api.srv = Server::start(&api.site);
    wait_for("/readyz", Duration::from_secs(10), || {
        call(http().get(&api.srv.url("/readyz")).call()).0 == 200
    });
    assert!(temps(&api).is_empty(), "restart removed the temp file");
    assert!(objects(&api).is_empty());
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 0);
}

#[test]
fn error_bodies_never_carry_paths_or_os_errors() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    // Make storage unwritable by replacing tmp/ with a file: the write fails inside.
    let tmp = api.site.data().join("storage/tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a dir").unwrap();
    let (s, e) = post_raw(&api, &tok, A_PDF, b"data");
    assert_eq!(s, 500, "{e}");
    let text = e.to_string();
    assert!(
        !text.contains(api.site.data().to_str().unwrap()) && !text.contains("os error"),
        "{text}"
    );
    std::fs::remove_file(&tmp).unwrap();
}

#[test]
fn direct_media_without_nginx_answers_byte_ranges() {
    // `lxgate dev` serves media itself; a video player seeks with Range requests.
    let mut site = Site::new("standalone");
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, "[server]\nserve_media_directly = true\n").unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "Center A"]);
    let api = Api {
        srv: Server::start(&site),
        site,
    };
    let tok = api.site.token("uploader", Some("A"), "up-a");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (s, job) = post_raw(
        &api,
        &tok,
        &[("X-Filename", "v.mp4"), ("X-Kind", "video")],
        &body,
    );
    assert_eq!(s, 201, "{job}");
    let url = api
        .srv
        .url(&format!("/api/media/{}", job["id"].as_str().unwrap()));
    let get = |range: Option<&str>| {
        let mut r = http()
            .get(&url)
            .set("Authorization", &format!("Bearer {tok}"));
        if let Some(v) = range {
            r = r.set("Range", v);
        }
        match r.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        }
    };
    let bytes = |r: ureq::Response| {
        let mut v = Vec::new();
        r.into_reader().read_to_end(&mut v).unwrap();
        v
    };
    let whole = get(None);
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-length"), Some("300000"));
    assert_eq!(bytes(whole), body);
    for (range, first, last) in [
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=299990-", 299_990, 299_999),
        ("bytes=-5", 299_995, 299_999),
    ] {
        let r = get(Some(range));
        assert_eq!(r.status(), 206, "{range}");
        let cr = format!("bytes {first}-{last}/300000");
        assert_eq!(r.header("content-range"), Some(cr.as_str()));
        assert_eq!(bytes(r), body[first..=last], "{range}");
    }
    let r = get(Some("bytes=300000-"));
    assert_eq!(r.status(), 416);
    assert_eq!(r.header("content-range"), Some("bytes */300000"));
    // Several ranges at once are not supported: the whole body, as RFC 9110 allows.
    let r = get(Some("bytes=0-1,5-6"));
    assert_eq!(r.status(), 200);
    assert_eq!(bytes(r).len(), 300_000);
}

/// Status, Retry-After and JSON body of a response, whatever its status.
fn call_retry(r: Result<ureq::Response, ureq::Error>) -> (u16, Option<String>, serde_json::Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let retry = resp.header("retry-after").map(str::to_string);
    let (s, v) = call(Ok(resp));
    (s, retry, v)
}

/// Issue 14/23: names with control characters (after percent-decoding), bidi controls
/// or lookalike slashes are refused with a 400 that names the problem and repeats only
/// a short escaped prefix; nothing is stored.
#[test]
fn forged_names_are_refused_naming_the_character() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    let long_tail = "x".repeat(200);
    for (name, needle) in [
        ("a%0Aforged%20log%20line.pdf", "U+000A"),
        ("a%0Db.pdf", "U+000D"),
        ("%1B%5B31mred.pdf", "U+001B"),
        ("clip%E2%80%AEfdp.exe", "U+202E"),
        ("a%E2%88%95b.pdf", "U+2215"),
        ("a%E2%81%84b.pdf", "U+2044"),
        ("a%EF%BC%8Fb.pdf", "U+FF0F"),
        (&format!("%E2%80%AE{long_tail}.pdf"), "U+202E"),
    ] {
        let (s, e) = post_raw(
            &api,
            &tok,
            &[("X-Filename", name), ("X-Kind", "report")],
            b"data",
        );
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("bad_filename")),
            "{name}: {e}"
        );
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("X-Filename") && msg.contains(needle),
            "{name}: {msg}"
        );
        assert!(msg.len() < 250, "{name}: a long echo: {msg}");
        assert!(
            msg.chars()
                .all(|c| !c.is_control() && !"\u{202e}\u{2215}\u{2044}\u{ff0f}".contains(c)),
            "{name}: raw characters echoed: {msg:?}"
        );
    }
    // The multipart filename goes through the same rule.
    let b = "bNdRy";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nvideo\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%0D%0Ab.mp4\"\r\n\r\nbytes\r\n--{b}--\r\n"
    );
    let (s, e) = call(
        http()
            .post(&api.srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={b}"),
            )
            .send_bytes(body.as_bytes()),
    );
    assert_eq!((s, e["code"].as_str()), (400, Some("bad_filename")), "{e}");
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(objects(&api).is_empty());
}

/// Issue 23: a User-Agent is stored capped at 256 characters and without control
/// characters (it is echoed in every list).
#[test]
fn user_agent_is_capped_and_stripped() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    let ua = format!("evil\tagent {}", "x".repeat(10_000));
    let (s, job) = call(
        http()
            .post(&api.srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("User-Agent", &ua)
            .set("X-Filename", "a.pdf")
            .set("X-Kind", "report")
            .send_bytes(b"data"),
    );
    assert_eq!(s, 201, "{job}");
    let stored = job["provenance"]["user_agent"].as_str().unwrap();
    assert_eq!(stored.chars().count(), 256, "{}", stored.len());
    assert!(stored.starts_with("evilagent xxx"), "{stored}");
}

/// Issue 23: the auth scheme is case-insensitive (RFC 9110 §11.1).
#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("viewer", Some("A"), "view");
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let (s, e) = call(
            http()
                .get(&api.srv.url("/api/upload-jobs/"))
                .set("Authorization", &format!("{scheme} {tok}"))
                .call(),
        );
        assert_eq!(s, 200, "{scheme}: {e}");
    }
    let (s, _) = call(
        http()
            .get(&api.srv.url("/api/upload-jobs/"))
            .set("Authorization", &format!("Basic {tok}"))
            .call(),
    );
    assert_eq!(s, 401);
}

/// Issue 23: `Multipart/Form-Data` is multipart: the file is the file field, not the
/// whole envelope (even when raw-upload headers are present too).
#[test]
fn multipart_media_type_is_case_insensitive() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    let b = "cAsEbOuNdArY";
    let payload = b"the file and nothing else";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nvideo\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(payload);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    for (i, ct) in ["Multipart/Form-Data", "MULTIPART/FORM-DATA"]
        .iter()
        .enumerate()
    {
        let mut body = body.clone();
        // A different file each time, so the second is not a dedupe of the first.
        let at = body.len() - b.len() - 8;
        body.insert(at, b'0' + i as u8);
        let (s, job) = call(
            http()
                .post(&api.srv.url("/api/upload/"))
                .set("Authorization", &format!("Bearer {tok}"))
                .set("Content-Type", &format!("{ct}; boundary={b}"))
                .set("X-Filename", "envelope.bin")
                .set("X-Kind", "report")
                .send_bytes(&body),
        );
        assert_eq!(s, 201, "{ct}: {job}");
        assert_eq!(job["original_name"], "clip.mp4", "{ct}: {job}");
        assert_eq!(job["kind"], "video", "{ct}: {job}");
        assert_eq!(job["size_bytes"], payload.len() + 1, "{ct}: {job}");
    }
}

/// Issue 23: NUL in list filters or a multipart center key is a 400 that says so, not
/// a 500 from PostgreSQL.
#[test]
fn nul_in_filters_and_center_keys_is_a_400() {
    let api = setup("standalone", &[]);
    let admin = api.site.token("super_admin", None, "root");
    for q in [
        "status=%00",
        "kind=video%00",
        "ingest_mode=%00api",
        "center_key=A%00",
    ] {
        let (s, e) = call(
            http()
                .get(&api.srv.url(&format!("/api/upload-jobs/?{q}")))
                .set("Authorization", &format!("Bearer {admin}"))
                .call(),
        );
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("bad_filter")),
            "{q}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains("NUL"), "{e}");
    }
    let b = "nUlBoUnDaRy";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"center_key\"\r\n\r\nA\0\r\n--{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nvideo\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\n\r\nbytes\r\n--{b}--\r\n"
    );
    let (s, e) = call(
        http()
            .post(&api.srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {admin}"))
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={b}"),
            )
            .send_bytes(body.as_bytes()),
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("unknown_center")),
        "{e}"
    );
    let log = std::fs::read_to_string(&api.srv.log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}

/// Issue 23: token checks are rate limited per source address (X-Forwarded-For only
/// with trusted_proxy): 429 with Retry-After past the bucket, other sources unaffected.
#[test]
fn token_checks_are_rate_limited_per_source() {
    let mut site = Site::new("standalone");
    let write = |name: &str, text: &str| {
        let p = site.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let trusted = write(
        "trusted.toml",
        "[server]\ntrusted_proxy = true\ntoken_auth_per_second = 1\n",
    );
    let direct = write(
        "direct.toml",
        "[server]\ntrusted_proxy = false\ntoken_auth_per_second = 1\n",
    );
    site.set("LXGATE_CONFIG", &trusted);
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    let viewer = site.token("viewer", Some("A"), "view");
    let srv = Server::start(&site);
    let get = |srv: &Server, tok: &str, from: &str| {
        call_retry(
            http()
                .get(&srv.url("/api/upload-jobs/"))
                .set("Authorization", &format!("Bearer {tok}"))
                .set("X-Forwarded-For", from)
                .call(),
        )
    };
    let statuses: Vec<u16> = (0..12)
        .map(|_| get(&srv, "lxg_guess", "10.0.0.1").0)
        .collect();
    assert_eq!(&statuses[..2], &[401, 401], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let (s, retry, e) = get(&srv, &viewer, "10.0.0.1");
    assert_eq!((s, e["code"].as_str()), (429, Some("rate_limited")), "{e}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
    // Another source has its own bucket.
    assert_eq!(get(&srv, &viewer, "10.0.0.2").0, 200);
    drop(srv);
    // Without trusted_proxy the header is ignored: one bucket for the peer.
    let srv = Server::start_with(&site, &[("LXGATE_CONFIG", &direct)]);
    let statuses: Vec<u16> = (0..12)
        .map(|i| get(&srv, "lxg_guess", &format!("10.0.1.{i}")).0)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn a_super_admin_upload_without_a_center_takes_the_default_center_by_name() {
    let api = setup("standalone", &[("LX_ANNOTATE_DEFAULT_CENTER", "Center B")]);
    let admin = api.site.token("super_admin", None, "root");
    let (s, job) = post_raw(&api, &admin, A_PDF, b"%PDF by name");
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["center_key"], "B");
}

/// A multipart body with the parts in the given order; a part with a filename is a file.
fn post_form(
    api: &Api,
    token: &str,
    headers: &[(&str, &str)],
    parts: &[(&str, Option<&str>, &[u8])],
) -> (u16, serde_json::Value) {
    let (ct, body) = multipart(parts);
    let mut r = http()
        .post(&api.srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", &ct);
    for (k, v) in headers {
        r = r.set(k, v);
    }
    call(r.send_bytes(&body))
}

#[test]
fn the_lx_annotate_frontends_request_works_unchanged_and_idempotency_keys_replay() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "frontend");
    let pdf = b"%PDF-1.7\n a report".to_vec();
    // uploadFiles(): `file` first, then center_key and source_system; no kind.
    let parts: [(&str, Option<&str>, &[u8]); 3] = [
        ("file", Some("befund.pdf"), &pdf),
        ("center_key", None, b"A"),
        ("source_system", None, b"lx-annotate"),
    ];
    let (s, first) = post_form(&api, &tok, &[("Idempotency-Key", "k-1")], &parts);
    assert_eq!(s, 201, "{first}");
    let id = first["upload_id"].as_str().unwrap().to_string();
    assert_eq!(first["status_url"], format!("/api/upload/{id}/status/"));
    assert_eq!(
        first["id"],
        id.as_str(),
        "lxgate's job is in the answer too"
    );
    assert_eq!(first["kind"], "report");
    assert_eq!(first["source_system"], "lx-annotate");
    assert_eq!(first["idempotency_key"], "k-1");
    let (s, again) = post_form(&api, &tok, &[("Idempotency-Key", "k-1")], &parts);
    assert_eq!(
        (s, again["upload_id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    let other: [(&str, Option<&str>, &[u8]); 1] = [("file", Some("befund.pdf"), b"%PDF-1.7 other")];
    let (s, e) = post_form(&api, &tok, &[("Idempotency-Key", "k-1")], &other);
    assert_eq!(
        (s, e["code"].as_str()),
        (409, Some("idempotency_conflict")),
        "{e}"
    );
    // The key may also come as a form field.
    let field: [(&str, Option<&str>, &[u8]); 2] = [
        (
            "file",
            Some("clip.bin"),
            b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2mp41",
        ),
        ("idempotency_key", None, b"k-2"),
    ];
    let (s, v) = post_form(&api, &tok, &[], &field);
    assert_eq!((s, v["kind"].as_str()), (201, Some("video")), "{v}");
    assert_eq!(v["idempotency_key"], "k-2");
    assert_eq!(api.site.count("SELECT count(*) FROM upload_jobs"), 2);
    assert!(temps(&api).is_empty(), "{:?}", temps(&api));
}

#[test]
fn the_kind_is_inferred_from_the_content_then_the_name_else_400_naming_the_accepted_types() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up");
    for (name, bytes, kind) in [
        ("x.bin", b"%PDF-1.4 magic wins".to_vec(), "report"),
        ("named.mp4", b"%PDF-1.4 a pdf named .mp4".to_vec(), "report"),
        ("a.avi", b"RIFF\x10\0\0\0AVI LIST".to_vec(), "video"),
        ("m.mov", b"\0\0\0\x14ftypqt  \0\0\0\0qt  ".to_vec(), "video"),
        ("w.wmv", b"\x30\x26\xb2\x75 asf header".to_vec(), "video"),
        ("by-name.pdf", b"no magic here".to_vec(), "report"),
    ] {
        let (s, v) = post_form(&api, &tok, &[], &[("file", Some(name), &bytes)]);
        assert_eq!((s, v["kind"].as_str()), (201, Some(kind)), "{name}: {v}");
    }
    for (name, bytes, named) in [
        ("notes.txt", b"plain text".to_vec(), "text/plain"),
        ("photo.pdf", b"\x89PNG\r\n\x1a\n....".to_vec(), "image/png"),
        ("noext", b"???".to_vec(), "unknown"),
    ] {
        let (s, e) = post_form(&api, &tok, &[], &[("file", Some(name), &bytes)]);
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("unsupported_type")),
            "{name}: {e}"
        );
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains(named) && m.contains("application/pdf") && m.contains("video/x-ms-wmv"),
            "{name}: {m}"
        );
    }
    assert!(
        temps(&api).is_empty(),
        "refused uploads leave nothing: {:?}",
        temps(&api)
    );
}

#[test]
fn unknown_fields_are_refused_and_center_name_names_a_center() {
    let api = setup("standalone", &[]);
    let admin = api.site.token("super_admin", None, "root");
    let (s, e) = post_form(
        &api,
        &admin,
        &[],
        &[("file", Some("a.pdf"), b"%PDF-"), ("patient", None, b"x")],
    );
    assert_eq!((s, e["code"].as_str()), (400, Some("unknown_field")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Unknown upload request field(s): \"patient\""),
        "{e}"
    );
    let (s, v) = post_form(
        &api,
        &admin,
        &[],
        &[
            ("file", Some("a.pdf"), b"%PDF- b"),
            ("center_name", None, b"Center B"),
        ],
    );
    assert_eq!((s, v["center_key"].as_str()), (201, Some("B")), "{v}");
    let tok_a = api.site.token("uploader", Some("A"), "up-a");
    let (s, e) = post_form(
        &api,
        &tok_a,
        &[],
        &[
            ("file", Some("a.pdf"), b"%PDF- c"),
            ("center_name", None, b"Center B"),
        ],
    );
    assert_eq!(s, 403, "{e}");
    let (s, e) = post_form(
        &api,
        &admin,
        &[],
        &[
            ("file", Some("a.pdf"), b"%PDF- d"),
            ("center_key", None, b"A"),
            ("center_name", None, b"Center B"),
        ],
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("unknown_center")),
        "{e}"
    );
}

#[test]
fn the_status_route_answers_with_the_reference_serializers_fields() {
    let api = setup("standalone", &[]);
    let tok = api.site.token("uploader", Some("A"), "up-a");
    let tok_b = api.site.token("uploader", Some("B"), "up-b");
    let (s, v) = post_form(&api, &tok, &[], &[("file", Some("a.pdf"), b"%PDF- status")]);
    assert_eq!(s, 201, "{v}");
    let url = v["status_url"].as_str().unwrap().to_string();
    let get = |t: &str, u: &str| {
        call(
            http()
                .get(&api.srv.url(u))
                .set("Authorization", &format!("Bearer {t}"))
                .call(),
        )
    };
    let (s, st) = get(&tok, &url);
    assert_eq!(s, 200, "{st}");
    let keys: std::collections::BTreeSet<String> =
        st.as_object().unwrap().keys().cloned().collect();
    let reference: std::collections::BTreeSet<String> = reference::fields(
        "endoreg_db/serializers/hub/upload_job.py",
        "UploadJobStatusSerializer",
    )
    .into_iter()
    .collect();
    assert_eq!(
        keys, reference,
        "endoreg-db 1.6.5's UploadJobStatusSerializer fields"
    );
    assert_eq!(st["id"], v["upload_id"]);
    assert_eq!(st["status"], "stored");
    assert_eq!(st["source_center_key"], "A");
    assert_eq!(st["ingest_mode"], "api");
    let (s, _) = get(&tok_b, &url);
    assert_eq!(s, 404, "another center's job is not found");
    let (s, _) = get(
        &tok,
        "/api/upload/00000000-0000-0000-0000-000000000000/status/",
    );
    assert_eq!(s, 404);
}
