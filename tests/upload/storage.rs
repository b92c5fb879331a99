//! What an accepted upload becomes: an object by content, a dedupe on repeat, nothing
//! left behind by an oversize body or a killed server, byte ranges when served directly.
use super::*;

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
