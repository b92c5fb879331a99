//! What is refused before anything is stored, and how: roles, headers, names, NUL,
//! error bodies without paths, rate limits.
use super::*;

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
