//! The hub-transfer receiver over real HTTP into real PostgreSQL and storage: the
//! gates in order, idempotent registration, media checked against its hash, one job.
mod common;
use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};

struct Hub {
    site: Site,
    srv: Server,
    secret: String,
}

fn hub_with(settings: &str) -> Hub {
    let mut site = Site::new("central_hub");
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, settings).unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    site.ok(&["center", "add", "B", "--name", "B"]);
    let secret = site.add_node("site-a", "A", None);
    let srv = Server::start(&site);
    Hub { site, srv, secret }
}

fn hub() -> Hub {
    hub_with("[hub]\ntransfer_api = true\n")
}

/// Headers nginx and a well-configured site send; tests drop or change some.
fn headers(h: &Hub) -> Vec<(String, String)> {
    [
        ("X-Forwarded-Proto", "https"),
        ("X-Client-Cert-Verified", "SUCCESS"),
        ("X-Network-Node-Key", "site-a"),
        ("X-Network-Node-Secret", h.secret.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn without(mut hs: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    hs.retain(|(k, _)| k != name);
    hs
}

fn with(mut hs: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    hs.retain(|(k, _)| k != name);
    hs.push((name.into(), value.into()));
    hs
}

fn send(
    h: &Hub,
    method: &str,
    path: &str,
    hs: &[(String, String)],
    body: Option<(&str, Vec<u8>)>,
) -> (u16, serde_json::Value) {
    let mut r = http().request(method, &h.srv.url(path));
    for (k, v) in hs {
        r = r.set(k, v);
    }
    call(match body {
        Some((ct, b)) => r.set("Content-Type", ct).send_bytes(&b),
        None => r.call(),
    })
}

fn register(h: &Hub, hs: &[(String, String)], body: serde_json::Value) -> (u16, serde_json::Value) {
    send(
        h,
        "POST",
        "/api/media/hub/transfers/",
        hs,
        Some(("application/json", body.to_string().into_bytes())),
    )
}

fn transfer(key: &str, media: &[u8]) -> serde_json::Value {
    json!({
        "transfer_key": key,
        "source_node_key": "site-a",
        "target_node_key": "hub",
        "source_center_key": "A",
        "resource_kind": "video",
        "resource_hash": hex::encode(Sha256::digest(media)),
        "payload_schema_version": 1,
        "metadata": [{"examination": "colonoscopy"}],
    })
}

fn multipart(role: &str, media: &[u8]) -> (String, Vec<u8>) {
    let b = "lxgateboundary7";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"media_role\"\r\n\r\n{role}\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(media);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

fn upload_media(h: &Hub, key: &str, media: &[u8]) -> (u16, serde_json::Value) {
    let (ct, body) = multipart("processed", media);
    send(
        h,
        "POST",
        &format!("/api/media/hub/transfers/{key}/media/"),
        &headers(h),
        Some((&ct, body)),
    )
}

#[test]
fn gates_refuse_in_order_with_a_reason() {
    let h = hub();
    let body = transfer("t-gates", b"clip");
    let hs = headers(&h);
    let (s, e) = register(&h, &without(hs.clone(), "X-Forwarded-Proto"), body.clone());
    assert_eq!(s, 403, "{e}");
    assert!(e["message"].as_str().unwrap().contains("https"), "{e}");
    let (s, e) = register(
        &h,
        &with(hs.clone(), "X-Client-Cert-Verified", "NONE"),
        body.clone(),
    );
    assert_eq!(s, 403, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{e}"
    );
    let (s, _) = register(
        &h,
        &without(hs.clone(), "X-Network-Node-Secret"),
        body.clone(),
    );
    assert_eq!(s, 401);
    let (s, e) = register(
        &h,
        &with(hs.clone(), "X-Network-Node-Secret", "lxn_wrong"),
        body.clone(),
    );
    assert_eq!(s, 401, "{e}");
    let (s, _) = register(
        &h,
        &with(hs.clone(), "X-Network-Node-Key", "site-x"),
        body.clone(),
    );
    assert_eq!(s, 401);
    // The node may only speak for itself and its own center.
    let mut other_center = body.clone();
    other_center["source_center_key"] = json!("B");
    let (s, e) = register(&h, &hs, other_center);
    assert_eq!(s, 403, "{e}");
    let mut other_node = body.clone();
    other_node["source_node_key"] = json!("site-b");
    let (s, _) = register(&h, &hs, other_node);
    assert_eq!(s, 403);
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);
    // The secret is kept only as a slow hash.
    let stored: String = h
        .site
        .sql("SELECT secret_hash FROM nodes WHERE node_key = 'site-a'")[0]
        .get(0);
    assert!(stored.starts_with("pbkdf2-sha256$") && !stored.contains(&h.secret));
}

#[test]
fn register_deliver_apply_and_every_retry_is_harmless() {
    let h = hub();
    let media = b"processed video bytes".repeat(5000);
    let hs = headers(&h);
    let (s, t) = register(&h, &hs, transfer("t-1", &media));
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["transfer_status"], "awaiting_media");
    let (s, t) = register(&h, &hs, transfer("t-1", &media));
    assert_eq!(
        (s, &t["transfer_status"]),
        (409, &json!("awaiting_media")),
        "{t}"
    );
    let (s, t) = send(&h, "GET", "/api/media/hub/transfers/t-1/status/", &hs, None);
    assert_eq!((s, &t["transfer_status"]), (200, &json!("awaiting_media")));

    // The wrong bytes: inconsistent, nothing stored.
    let (s, t) = upload_media(&h, "t-1", b"some other bytes");
    assert_eq!(
        (s, &t["transfer_status"]),
        (422, &json!("inconsistent")),
        "{t}"
    );
    assert!(
        t["detail"].as_str().unwrap().contains("does not match"),
        "{t}"
    );
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(files_under(&h.site.data().join("storage/objects")).is_empty());
    assert!(files_under(&h.site.data().join("storage/tmp")).is_empty());

    // The right bytes: one job through the ingest core, the transfer applied.
    let (s, t) = upload_media(&h, "t-1", &media);
    assert_eq!((s, &t["transfer_status"]), (200, &json!("applied")), "{t}");
    let job = t["upload_job_id"].as_str().unwrap().to_string();
    let row = &h.site.sql(&format!(
        "SELECT ingest_mode, source_system, kind, content_hash, provenance->>'transfer_key', c.center_key
         FROM upload_jobs j JOIN centers c ON c.id = j.center_id WHERE j.id = '{job}'"
    ))[0];
    assert_eq!(row.get::<_, String>(0), "hub_transfer");
    assert_eq!(row.get::<_, String>(1), "hub:site-a");
    assert_eq!(row.get::<_, String>(2), "video");
    assert_eq!(row.get::<_, String>(3), hex::encode(Sha256::digest(&media)));
    assert_eq!(row.get::<_, String>(4), "t-1");
    assert_eq!(row.get::<_, String>(5), "A");

    // Retries after applied: 409 with the status, never a second job.
    let (s, t) = upload_media(&h, "t-1", &media);
    assert_eq!((s, &t["transfer_status"]), (409, &json!("applied")));
    let (s, t) = register(&h, &hs, transfer("t-1", &media));
    assert_eq!((s, &t["upload_job_id"]), (409, &json!(job)));
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 1);
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 1);
    assert_eq!(
        h.site
            .count("SELECT count(*) FROM upload_jobs WHERE status <> 'error'"),
        1
    );
}

#[test]
fn another_nodes_transfer_is_invisible_and_a_pinned_certificate_is_enforced() {
    let h = hub();
    let hs = headers(&h);
    let (s, _) = register(&h, &hs, transfer("t-own", b"x"));
    assert_eq!(s, 201);
    let secret_b = h.site.add_node("site-b", "B", Some("AA:BB:CC"));
    let hs_b = with(
        with(hs.clone(), "X-Network-Node-Key", "site-b"),
        "X-Network-Node-Secret",
        &secret_b,
    );
    let hs_b_cert = with(hs_b.clone(), "X-Client-Cert-Fingerprint", "aabbcc");
    let (s, _) = send(
        &h,
        "GET",
        "/api/media/hub/transfers/t-own/status/",
        &hs_b_cert,
        None,
    );
    assert_eq!(s, 404, "another node's transfer looks absent");
    let mut theirs = transfer("t-own", b"x");
    theirs["source_node_key"] = json!("site-b");
    theirs["source_center_key"] = json!("B");
    let (s, e) = register(&h, &hs_b_cert, theirs.clone());
    assert_eq!(
        (s, e["code"].as_str()),
        (409, Some("transfer_key_taken")),
        "{e}"
    );
    let (s, e) = send(
        &h,
        "GET",
        "/api/media/hub/transfers/t-own/status/",
        &hs_b,
        None,
    );
    assert_eq!(s, 403, "no fingerprint presented: {e}");
    let (s, _) = send(
        &h,
        "GET",
        "/api/media/hub/transfers/t-own/status/",
        &with(hs_b, "X-Client-Cert-Fingerprint", "dd:ee"),
        None,
    );
    assert_eq!(s, 403);
}

#[test]
fn transfers_off_answer_404_and_on_without_mtls_refuses_to_start() {
    let h = hub_with("[hub]\ntransfer_api = false\n");
    let (s, e) = register(&h, &headers(&h), transfer("t", b"x"));
    assert_eq!(s, 404, "{e}");
    let o = h.site.run(&["config", "check"]);
    assert!(o.status.success());
    let mut env = h.site.env();
    env.push(("ENDOREG_ENABLE_HUB_TRANSFERS", "true"));
    env.push(("ENDOREG_HUB_TRANSFER_REQUIRE_MTLS", "false"));
    let o = lxgate(&["serve"], &env);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("without mTLS"), "{}", stderr(&o));
}

/// Headers of a request signed as site-a, without the secret (and without a nonce,
/// as senders before nonces sign).
fn signed(
    h: &Hub,
    method: &str,
    path: &str,
    key: &str,
    body_sha256: &str,
    timestamp: i64,
) -> Vec<(String, String)> {
    signed_nonce(h, method, path, key, body_sha256, timestamp, None)
}

/// `signed`, with `nonce` signed and sent in X-Lxgate-Nonce.
fn signed_nonce(
    h: &Hub,
    method: &str,
    path: &str,
    key: &str,
    body_sha256: &str,
    timestamp: i64,
    nonce: Option<&str>,
) -> Vec<(String, String)> {
    let k = lxgate::access::nodes::signing_key("site-a", &h.secret);
    let sig = lxgate::crypto::signing::Signed {
        method,
        path,
        timestamp,
        transfer_key: key,
        body_sha256,
        nonce,
    }
    .sign(&k);
    let mut hs = without(headers(h), "X-Network-Node-Secret");
    if let Some(n) = nonce {
        hs.push(("X-Lxgate-Nonce".into(), n.into()));
    }
    hs.push(("X-Lxgate-Timestamp".into(), timestamp.to_string()));
    hs.push(("X-Lxgate-Content-Sha256".into(), body_sha256.into()));
    hs.push(("X-Lxgate-Signature".into(), sig));
    hs
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn signed_requests_work_without_the_secret_and_nothing_else_passes_for_one() {
    let h = hub_with("[hub]\ntransfer_api = true\nrequire_signed_requests = true\n");
    let now = chrono::Utc::now().timestamp();
    let reg_path = "/api/media/hub/transfers/";
    let body = transfer("t-signed", b"signed clip");
    let bytes = body.to_string().into_bytes();
    let post = |hs: &[(String, String)], b: &[u8]| {
        send(
            &h,
            "POST",
            reg_path,
            hs,
            Some(("application/json", b.to_vec())),
        )
    };

    // This hub takes no secrets: the endoreg-db style header is refused.
    let (s, e) = register(&h, &headers(&h), body.clone());
    assert_eq!((s, e["code"].as_str()), (401, Some("unsigned")), "{e}");
    // A body changed after signing.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now);
    let (s, e) = post(
        &hs,
        &transfer("t-signed", b"other clip").to_string().into_bytes(),
    );
    assert_eq!((s, e["code"].as_str()), (401, Some("bad_signature")), "{e}");
    // A signature made for another transfer key or path.
    let hs = signed(&h, "POST", reg_path, "t-other", &sha(&bytes), now);
    assert_eq!(post(&hs, &bytes).0, 401);
    let hs = signed(
        &h,
        "POST",
        "/api/media/hub/transfers/x/",
        "t-signed",
        &sha(&bytes),
        now,
    );
    assert_eq!(post(&hs, &bytes).0, 401);
    // Too old: a captured request cannot be replayed later.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now - 301);
    let (s, e) = post(&hs, &bytes);
    assert_eq!(s, 401, "{e}");
    assert!(e["message"].as_str().unwrap().contains("NTP"), "{e}");
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);

    // Properly signed: register, media, status.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now);
    let (s, e) = post(&hs, &bytes);
    assert_eq!(s, 201, "{e}");
    let media_path = "/api/media/hub/transfers/t-signed/media/";
    let (ct, mp) = multipart("processed", b"signed clip");
    // Media signed for other bytes than it carries.
    let hs = signed(
        &h,
        "POST",
        media_path,
        "t-signed",
        &sha(b"not the clip"),
        now,
    );
    let (s, e) = send(&h, "POST", media_path, &hs, Some((&ct, mp.clone())));
    assert_eq!((s, e["code"].as_str()), (401, Some("bad_signature")), "{e}");
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 0);
    let hs = signed(
        &h,
        "POST",
        media_path,
        "t-signed",
        &sha(b"signed clip"),
        now,
    );
    let (s, e) = send(&h, "POST", media_path, &hs, Some((&ct, mp)));
    assert_eq!(
        (s, e["transfer_status"].as_str()),
        (200, Some("applied")),
        "{e}"
    );
    let status_path = "/api/media/hub/transfers/t-signed/status/";
    let hs = signed(&h, "GET", status_path, "t-signed", &sha(b""), now);
    let (s, e) = send(&h, "GET", status_path, &hs, None);
    assert_eq!(
        (s, e["transfer_status"].as_str()),
        (200, Some("applied")),
        "{e}"
    );
}

#[test]
fn transfer_media_has_its_own_limit_not_the_api_upload_limit() {
    let h = hub_with(
        "[server]\nupload_max_size = 100\n[hub]\ntransfer_api = true\nmax_media_size = 4000\n",
    );
    let fits = vec![5u8; 3000];
    let (s, e) = register(&h, &headers(&h), transfer("t-fits", &fits));
    assert_eq!(s, 201, "{e}");
    let (s, e) = upload_media(&h, "t-fits", &fits);
    assert_eq!(
        (s, e["transfer_status"].as_str()),
        (200, Some("applied")),
        "{e}"
    );
    let big = vec![6u8; 5000];
    let (s, e) = register(&h, &headers(&h), transfer("t-big", &big));
    assert_eq!(s, 201, "{e}");
    let (s, e) = upload_media(&h, "t-big", &big);
    assert_eq!((s, e["code"].as_str()), (413, Some("too_large")), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("max_media_size"),
        "{e}"
    );
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 1);
}

/// Issue 23: the timestamp check cannot overflow. `now - 2^63` once wrapped into the
/// window (release) or panicked the handler (debug): now a 401 naming the clock skew.
#[test]
fn timestamps_at_the_ends_of_i64_are_refused_not_wrapped() {
    let h = hub_with("[hub]\ntransfer_api = true\nrequire_signed_requests = true\n");
    let now = chrono::Utc::now().timestamp();
    let path = "/api/media/hub/transfers/t/status/";
    for ts in [now.wrapping_sub(i64::MIN), i64::MIN, i64::MAX, -now] {
        let hs = signed(&h, "GET", path, "t", &sha(b""), ts);
        let (s, e) = send(&h, "GET", path, &hs, None);
        assert_eq!(
            (s, e["code"].as_str()),
            (401, Some("bad_signature")),
            "{ts}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains("NTP"), "{ts}: {e}");
    }
}

/// Issue 23: a signed request is accepted once, also after a restart (the hub keeps
/// seen signatures in PostgreSQL); a fresh nonce makes an identical request new; rows
/// past the window are deleted.
#[test]
fn a_signed_request_is_accepted_once() {
    let mut h = hub_with("[hub]\ntransfer_api = true\nrequire_signed_requests = true\n");
    let now = chrono::Utc::now().timestamp();
    let reg_path = "/api/media/hub/transfers/";
    let bytes = transfer("t-once", b"clip").to_string().into_bytes();
    let post = |h: &Hub, hs: &[(String, String)]| {
        send(
            h,
            "POST",
            reg_path,
            hs,
            Some(("application/json", bytes.clone())),
        )
    };
    let n1 = "0123456789abcdef0123456789abcdef";
    let hs = signed_nonce(&h, "POST", reg_path, "t-once", &sha(&bytes), now, Some(n1));
    assert_eq!(post(&h, &hs).0, 201);
    let (s, e) = post(&h, &hs);
    assert_eq!((s, e["code"].as_str()), (401, Some("replayed")), "{e}");
    // The signature's hex in upper case is the same signature.
    let upper: Vec<(String, String)> = hs
        .iter()
        .map(|(k, v)| match k.as_str() {
            "X-Lxgate-Signature" => (k.clone(), v.to_ascii_uppercase()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert_eq!(post(&h, &upper).0, 401);

    let status = "/api/media/hub/transfers/t-once/status/";
    let get = |h: &Hub, nonce: Option<&str>| {
        let hs = signed_nonce(h, "GET", status, "t-once", &sha(b""), now, nonce);
        send(h, "GET", status, &hs, None)
    };
    assert_eq!(get(&h, Some(n1)).0, 200, "same nonce, another request");
    assert_eq!(get(&h, Some(n1)).0, 401);
    assert_eq!(get(&h, None).0, 200, "a sender before nonces, once");
    assert_eq!(get(&h, None).0, 401);
    let (s, e) = get(&h, Some("not-hex"));
    assert_eq!((s, e["code"].as_str()), (401, Some("bad_signature")), "{e}");

    // Across a restart.
    let n2 = "fedcba9876543210fedcba9876543210";
    assert_eq!(get(&h, Some(n2)).0, 200);
    h.srv = Server::start(&h.site);
    assert_eq!(get(&h, Some(n2)).0, 401, "replayed after a restart");
    assert_eq!(get(&h, Some(&n2.replace('f', "e"))).0, 200);

    // Expired rows go.
    h.site.sql(
        "INSERT INTO seen_signatures (signature, node_key, expires_at)
         VALUES ('\\x00', 'site-a', now() - interval '1 second')",
    );
    assert_eq!(get(&h, Some(&n2.replace('f', "d"))).0, 200);
    assert_eq!(
        h.site
            .count("SELECT count(*) FROM seen_signatures WHERE expires_at < now()"),
        0
    );
    assert_eq!(h.site.count("SELECT count(*) FROM seen_signatures"), 6);
}

/// Issue 23: NUL anywhere in a transfer's JSON is a 400 naming the field, not a 500.
#[test]
fn nul_in_transfer_json_is_a_400() {
    let h = hub();
    for (field, value) in [
        ("target_node_key", json!("hub\u{0}")),
        ("payload_schema_version", json!("1\u{0}")),
        ("metadata", json!([{"examination": "colo\u{0}noscopy"}])),
        ("metadata", json!([{"exam\u{0}": "x"}])),
    ] {
        let mut body = transfer("t-nul", b"clip");
        body[field] = value;
        let (s, e) = register(&h, &headers(&h), body);
        assert_eq!(
            (s, e["code"].as_str()),
            (400, Some("bad_transfer")),
            "{field}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);
    let log = std::fs::read_to_string(&h.srv.log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}

/// Issue 23: node authentication (PBKDF2 per unsigned request) is rate limited per
/// source: 429 with Retry-After, before any hashing. The requests go in parallel: one
/// PBKDF2 in a debug build takes longer than the bucket needs to refill.
#[test]
fn node_authentication_is_rate_limited() {
    let h = hub_with("[hub]\ntransfer_api = true\nauth_per_second = 1\n");
    let wrong = with(headers(&h), "X-Network-Node-Secret", "lxn_guess");
    let url = h.srv.url("/api/media/hub/transfers/t/status/");
    let answers: Vec<(u16, Option<String>, serde_json::Value)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| {
                    let mut r = http().get(&url);
                    for (k, v) in &wrong {
                        r = r.set(k, v);
                    }
                    let resp = match r.call() {
                        Ok(r) => r,
                        Err(ureq::Error::Status(_, r)) => r,
                        Err(e) => panic!("{e}"),
                    };
                    let retry = resp.header("retry-after").map(str::to_string);
                    let (s, e) = call(Ok(resp));
                    (s, retry, e)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    // At most the burst (2) plus what refilled while the others were hashed got through.
    assert!(limited.len() >= 6, "{statuses:?}");
    for (_, retry, e) in limited {
        assert_eq!(e["code"], "rate_limited", "{e}");
        assert!(
            retry
                .as_deref()
                .expect("Retry-After")
                .parse::<u64>()
                .unwrap()
                >= 1
        );
    }
}
