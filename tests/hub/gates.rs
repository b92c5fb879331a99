//! The transport and node gates, in the reference's order: https, mTLS, the node's
//! secret or signature, the pinned certificate, the owning center; replay and rate limits.
use super::*;

#[test]
fn gates_refuse_in_order_with_the_reference_answers() {
    let h = hub();
    let body = transfer("t-gates", b"clip");
    let hs = headers(&h);
    // The body is validated before anyone is authenticated (endoreg-db's order).
    let mut bad = body.clone();
    bad["payload_schema_version"] = json!("2.0");
    let (s, e) = register(&h, &[], bad);
    assert_eq!(s, 400, "{e}");
    assert!(e["payload_schema_version"][0]
        .as_str()
        .unwrap()
        .contains("'7.0'"));
    let mut unknown = body.clone();
    unknown["source_node_key"] = json!("site-x");
    let (s, e) = register(&h, &[], unknown);
    assert_eq!(s, 400, "{e}");
    assert!(e["source_node_key"][0]
        .as_str()
        .unwrap()
        .contains("Unknown active source_node_key"));
    let mut other_center = body.clone();
    other_center["source_center_key"] = json!("B");
    let (s, e) = register(&h, &hs, other_center);
    assert_eq!(s, 400, "{e}");
    assert!(e["source_center_key"][0]
        .as_str()
        .unwrap()
        .contains("owning center"));
    let mut other_target = body.clone();
    other_target["target_node_key"] = json!("another-hub");
    assert_eq!(register(&h, &hs, other_target).0, 400);
    // Then the transport and node gates, each a 403 with the reference's detail.
    let (s, e) = register(&h, &without(hs.clone(), "X-Forwarded-Proto"), body.clone());
    assert_eq!(
        (s, e["detail"].as_str()),
        (
            403,
            Some("Hub transfer requires HTTPS or equivalent secure transport")
        )
    );
    let (s, e) = register(
        &h,
        &with(hs.clone(), "X-Client-Cert-Verified", "NONE"),
        body.clone(),
    );
    assert_eq!(
        (s, e["detail"].as_str()),
        (
            403,
            Some("Hub transfer requires proxy-verified mutual TLS client authentication")
        )
    );
    for hs in [
        without(hs.clone(), "X-Network-Node-Secret"),
        with(hs.clone(), "X-Network-Node-Secret", "lxn_wrong"),
        with(hs.clone(), "X-Network-Node-Key", "site-b"),
    ] {
        let (s, e) = register(&h, &hs, body.clone());
        assert_eq!(
            (s, e["detail"].as_str()),
            (
                403,
                Some("Invalid network node credentials for this transfer")
            ),
            "{e}"
        );
    }
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);
    // The secret is kept only as a slow hash.
    let stored: String = h
        .site
        .sql("SELECT secret_hash FROM nodes WHERE node_key = 'site-a'")[0]
        .get(0);
    assert!(stored.starts_with("pbkdf2-sha256$") && !stored.contains(&h.secret));
}

#[test]
fn another_nodes_transfer_is_refused_and_a_pinned_certificate_is_enforced() {
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
    let (s, e) = send(
        &h,
        "GET",
        "/api/media/hub/transfers/t-own/status/",
        &hs_b_cert,
        None,
    );
    assert_eq!(
        (s, e["detail"].as_str()),
        (
            403,
            Some("Invalid network node credentials for this transfer")
        )
    );
    let mut theirs = transfer("t-b", b"x");
    theirs["source_node_key"] = json!("site-b");
    theirs["source_center_key"] = json!("B");
    let (s, e) = register(&h, &hs_b, theirs.clone());
    assert_eq!(s, 403, "no fingerprint presented: {e}");
    let (s, _) = register(
        &h,
        &with(hs_b.clone(), "X-Client-Cert-Fingerprint", "dd:ee"),
        theirs.clone(),
    );
    assert_eq!(s, 403);
    let (s, e) = register(&h, &hs_b_cert, theirs);
    assert_eq!(s, 201, "{e}");
}

#[test]
fn transfers_off_answer_404_and_on_without_mtls_refuses_to_start() {
    let h = hub_with("[hub]\ntransfer_api = false\n");
    let (s, e) = register(&h, &headers(&h), transfer("t", b"x"));
    assert_eq!((s, e["detail"].as_str()), (404, Some("Not found.")), "{e}");
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

#[test]
fn signed_requests_work_without_the_secret_and_nothing_else_passes_for_one() {
    let h = hub_with("[hub]\ntransfer_api = true\nrequire_signed_requests = true\n");
    let now = chrono::Utc::now().timestamp();
    let reg_path = "/api/media/hub/transfers/";
    let media = b"signed clip".to_vec();
    let body = transfer("t-signed", &media);
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
    let refused = |e: &serde_json::Value, what: &str| {
        assert!(
            e["detail"].as_str().unwrap_or("").contains(what),
            "{what}: {e}"
        )
    };

    // This hub takes no secrets: the endoreg-db style header is refused.
    let (s, e) = register(&h, &headers(&h), body.clone());
    assert_eq!(s, 403, "{e}");
    refused(&e, "only signed transfer requests");
    // A body changed after signing.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now);
    let (s, e) = post(
        &hs,
        &transfer("t-signed", b"other clip").to_string().into_bytes(),
    );
    assert_eq!(s, 403);
    refused(&e, "changed after signing");
    // A signature made for another transfer key or path.
    let hs = signed(&h, "POST", reg_path, "t-other", &sha(&bytes), now);
    assert_eq!(post(&hs, &bytes).0, 403);
    let hs = signed(
        &h,
        "POST",
        "/api/media/hub/transfers/x/",
        "t-signed",
        &sha(&bytes),
        now,
    );
    assert_eq!(post(&hs, &bytes).0, 403);
    // Too old: a captured request cannot be replayed later.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now - 301);
    let (s, e) = post(&hs, &bytes);
    assert_eq!(s, 403, "{e}");
    refused(&e, "NTP");
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);

    // Properly signed: register, media, status.
    let hs = signed(&h, "POST", reg_path, "t-signed", &sha(&bytes), now);
    let (s, e) = post(&hs, &bytes);
    assert_eq!(s, 201, "{e}");
    let media_path = "/api/media/hub/transfers/t-signed/media/";
    let (env, ct) = seal_for(&h, &body, &media);
    // Media signed for another ciphertext than it carries.
    let hs = signed(
        &h,
        "POST",
        media_path,
        "t-signed",
        &sha(b"not the ciphertext"),
        now,
    );
    let (s, e) = post_media(&h, "t-signed", &env.to_header(), &ct, hs);
    assert_eq!(s, 403, "{e}");
    refused(&e, "changed after signing");
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 0);
    let hs = signed(&h, "POST", media_path, "t-signed", &sha(&ct), now);
    let (s, e) = post_media(&h, "t-signed", &env.to_header(), &ct, hs);
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

/// Issue 23: the timestamp check cannot overflow. `now - 2^63` once wrapped into the
/// window (release) or panicked the handler (debug): now a 403 naming the clock skew.
#[test]
fn timestamps_at_the_ends_of_i64_are_refused_not_wrapped() {
    let h = hub_with("[hub]\ntransfer_api = true\nrequire_signed_requests = true\n");
    let now = chrono::Utc::now().timestamp();
    // Status answers 404 for an unknown key before any gate: register "t" first.
    let reg = "/api/media/hub/transfers/";
    let bytes = transfer("t", b"clip").to_string().into_bytes();
    let hs = signed(&h, "POST", reg, "t", &sha(&bytes), now);
    assert_eq!(
        send(&h, "POST", reg, &hs, Some(("application/json", bytes))).0,
        201
    );
    let path = "/api/media/hub/transfers/t/status/";
    for ts in [now.wrapping_sub(i64::MIN), i64::MIN, i64::MAX, -now] {
        let hs = signed(&h, "GET", path, "t", &sha(b""), ts);
        let (s, e) = send(&h, "GET", path, &hs, None);
        assert_eq!(s, 403, "{ts}: {e}");
        assert!(e["detail"].as_str().unwrap().contains("NTP"), "{ts}: {e}");
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
    assert_eq!(s, 403, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("already accepted once"),
        "{e}"
    );
    // The signature's hex in upper case is the same signature.
    let upper: Vec<(String, String)> = hs
        .iter()
        .map(|(k, v)| match k.as_str() {
            "X-Lxgate-Signature" => (k.clone(), v.to_ascii_uppercase()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert_eq!(post(&h, &upper).0, 403);

    let status = "/api/media/hub/transfers/t-once/status/";
    let get = |h: &Hub, nonce: Option<&str>| {
        let hs = signed_nonce(h, "GET", status, "t-once", &sha(b""), now, nonce);
        send(h, "GET", status, &hs, None)
    };
    assert_eq!(get(&h, Some(n1)).0, 200, "same nonce, another request");
    assert_eq!(get(&h, Some(n1)).0, 403);
    assert_eq!(get(&h, None).0, 200, "a sender before nonces, once");
    assert_eq!(get(&h, None).0, 403);
    let (s, e) = get(&h, Some("not-hex"));
    assert_eq!(s, 403, "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("X-Lxgate-Nonce"),
        "{e}"
    );

    // Across a restart.
    let n2 = "fedcba9876543210fedcba9876543210";
    assert_eq!(get(&h, Some(n2)).0, 200);
    h.srv = Server::start(&h.site);
    assert_eq!(get(&h, Some(n2)).0, 403, "replayed after a restart");
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

/// Issue 23: node authentication (PBKDF2 per unsigned request) is rate limited per
/// source: 429 with Retry-After, before any hashing. The requests go in parallel: one
/// PBKDF2 in a debug build takes longer than the bucket needs to refill.
#[test]
fn node_authentication_is_rate_limited() {
    let h = hub_with("[hub]\ntransfer_api = true\nauth_per_second = 1\n");
    // Status answers 404 for an unknown key before any gate: register "t" first.
    assert_eq!(register(&h, &headers(&h), transfer("t", b"clip")).0, 201);
    std::thread::sleep(std::time::Duration::from_secs(2));
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
        statuses.iter().all(|s| [403, 429].contains(s)),
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
