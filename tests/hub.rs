//! The hub-transfer receiver over real HTTP into real PostgreSQL and storage, speaking
//! payload schema 7.0 and hub_media_envelope_v1 (src/hub): the gates in the reference's
//! order, 201/200/409 registration, the envelope opened into the ingest core, and the
//! reference's refusal bodies and rejection codes.
mod common;
use std::io::{Read, Write};

use common::hub_body::{sha, transfer, transfer_from};
use common::*;
use lxgate::hub::envelope::{self, Envelope, Identity};
use lxgate::hub::keys::RecipientKey;
use serde_json::json;

struct Hub {
    site: Site,
    srv: Server,
    secret: String,
    key: RecipientKey,
}

/// The hub's recipient key file, as `lxgate keys hub-recipient` writes it.
fn recipient_key(site: &Site) -> (std::path::PathBuf, RecipientKey) {
    let path = site.dir.path().join("hub-recipient.pem");
    let public = site.ok(&["keys", "hub-recipient", "--out", path.to_str().unwrap()]);
    let key = RecipientKey::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        lxgate::hub::keys::Recipient::from_pem(&public)
            .unwrap()
            .id(),
        key.public().id()
    );
    (path, key)
}

fn hub_with(settings: &str) -> Hub {
    let mut site = Site::new("central_hub");
    let (key_file, key) = recipient_key(&site);
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, settings).unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.set(
        "ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES",
        key_file.to_str().unwrap(),
    );
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    site.ok(&["center", "add", "B", "--name", "B"]);
    let secret = site.add_node("site-a", "A", None);
    let srv = Server::start(&site);
    Hub {
        site,
        srv,
        secret,
        key,
    }
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

/// The envelope and ciphertext of `media` for the transfer `body` registers.
fn seal_for(h: &Hub, body: &serde_json::Value, media: &[u8]) -> (Envelope, Vec<u8>) {
    let id = Identity {
        transfer_key: body["transfer_key"].as_str().unwrap().into(),
        source_node_key: "site-a".into(),
        source_center_key: "A".into(),
        target_node_key: "hub".into(),
        resource_kind: "video".into(),
        resource_hash: body["resource_hash"].as_str().unwrap().into(),
        processed_media_hash: sha(media),
    };
    let mut ct = Vec::new();
    let s = envelope::seal(
        &mut &media[..],
        media.len() as u64,
        &mut ct,
        &id,
        &h.key.public(),
    )
    .unwrap();
    (s.envelope, ct)
}

fn post_media(
    h: &Hub,
    key: &str,
    envelope_header: &str,
    ct: &[u8],
    hs: Vec<(String, String)>,
) -> (u16, serde_json::Value) {
    let hs = with(
        with(hs, "X-Hub-Media-Role", "processed"),
        "X-Hub-Media-Envelope",
        envelope_header,
    );
    send(
        h,
        "POST",
        &format!("/api/media/hub/transfers/{key}/media/"),
        &hs,
        Some(("application/octet-stream", ct.to_vec())),
    )
}

fn upload_media(h: &Hub, body: &serde_json::Value, media: &[u8]) -> (u16, serde_json::Value) {
    let (e, ct) = seal_for(h, body, media);
    post_media(
        h,
        body["transfer_key"].as_str().unwrap(),
        &e.to_header(),
        &ct,
        headers(h),
    )
}

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
fn register_deliver_apply_and_every_retry_is_harmless() {
    let h = hub();
    let media = b"processed video bytes".repeat(50_000);
    let hs = headers(&h);
    let body = transfer("t-1", &media);
    let (s, t) = register(&h, &hs, body.clone());
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["transfer_status"], "awaiting_media");
    assert_eq!(t["processed_media_hash"], sha(&media));
    assert_eq!(t["payload_schema_version"], "7.0");
    assert!(
        uuid::Uuid::parse_str(t["id"].as_str().unwrap()).is_ok(),
        "{t}"
    );
    // An exact replay is 200 with the same status; anything else under the key is 409.
    let (s, again) = register(&h, &hs, body.clone());
    assert_eq!((s, &again["id"]), (200, &t["id"]), "{again}");
    let mut changed = body.clone();
    changed["resource_rows"]["video_file"]["fps"] = json!(30.0);
    let (s, e) = register(&h, &hs, changed);
    assert_eq!(
        (s, e),
        (
            409,
            json!({"error": "transfer_key already exists for a different transfer payload"})
        )
    );
    let (s, st) = send(&h, "GET", "/api/media/hub/transfers/t-1/status/", &hs, None);
    assert_eq!((s, &st["transfer_status"]), (200, &json!("awaiting_media")));
    let (s, e) = send(
        &h,
        "GET",
        "/api/media/hub/transfers/t-nope/status/",
        &hs,
        None,
    );
    assert_eq!((s, e["detail"].as_str()), (404, Some("Not found.")));

    // Media whose plaintext is not the registered processed media: refused, nothing stored.
    let (s, e) = upload_media(&h, &body, b"some other bytes");
    assert_eq!(
        (s, e["rejection_code"].as_str()),
        (400, Some("envelope_identity_mismatch")),
        "{e}"
    );
    // A flipped ciphertext byte: the tag fails after staging; the staged file goes.
    let (env, mut ct) = seal_for(&h, &body, &media);
    ct[1000] ^= 0x40;
    let (s, e) = post_media(&h, "t-1", &env.to_header(), &ct, headers(&h));
    assert_eq!(
        (s, e["rejection_code"].as_str()),
        (400, Some("envelope_payload_authentication_failed")),
        "{e}"
    );
    assert_eq!(e["rejection_phase"], "payload_authentication");
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(files_under(&h.site.data().join("storage/objects")).is_empty());
    assert!(files_under(&h.site.data().join("storage/tmp")).is_empty());

    // The real envelope: applied, the plaintext stored byte-identical through the
    // ingest core, and a receipt for exactly this envelope and ciphertext.
    let (env, ct) = seal_for(&h, &body, &media);
    let (s, t) = post_media(&h, "t-1", &env.to_header(), &ct, headers(&h));
    assert_eq!((s, &t["transfer_status"]), (200, &json!("applied")), "{t}");
    let receipt = &t["envelope_receipt"];
    assert_eq!(receipt["envelope_fingerprint_sha256"], env.fingerprint());
    assert_eq!(receipt["ciphertext_sha256"], sha(&ct));
    assert_eq!(receipt["receiver_transfer_id"], t["id"]);
    assert_eq!(receipt["verified"], true);
    let job = t["target_object_id"].as_str().unwrap().to_string();
    let row = &h.site.sql(&format!(
        "SELECT ingest_mode, source_system, kind, content_hash, provenance->>'transfer_key', c.center_key, storage_path
         FROM upload_jobs j JOIN centers c ON c.id = j.center_id WHERE j.id = '{job}'"
    ))[0];
    assert_eq!(row.get::<_, String>(0), "hub_transfer");
    assert_eq!(row.get::<_, String>(1), "hub:site-a");
    assert_eq!(row.get::<_, String>(2), "video");
    assert_eq!(row.get::<_, String>(3), sha(&media));
    assert_eq!(row.get::<_, String>(4), "t-1");
    assert_eq!(row.get::<_, String>(5), "A");
    let stored =
        std::fs::read(h.site.data().join("storage").join(row.get::<_, String>(6))).unwrap();
    assert!(stored == media, "the stored object is the plaintext");
    // The rows are kept with the transfer.
    let kept: serde_json::Value = h
        .site
        .sql("SELECT resource_rows FROM transfers WHERE transfer_key = 't-1'")[0]
        .get(0);
    assert_eq!(kept, body["resource_rows"]);

    // Exact replay of the media: 200 again, no second job; status carries the receipt.
    let (s, again) = post_media(&h, "t-1", &env.to_header(), &ct, headers(&h));
    assert_eq!((s, &again["envelope_receipt"]), (200, receipt), "{again}");
    let (s, st) = send(&h, "GET", "/api/media/hub/transfers/t-1/status/", &hs, None);
    assert_eq!((s, &st["envelope_receipt"]), (200, receipt));
    let (s, r) = register(&h, &hs, body.clone());
    assert_eq!((s, &r["transfer_status"]), (200, &json!("applied")));
    // Another envelope for the same media after applied: 409, the transfer inconsistent.
    let (env2, ct2) = seal_for(&h, &body, &media);
    let (s, c) = post_media(&h, "t-1", &env2.to_header(), &ct2, headers(&h));
    assert_eq!(
        (s, &c["transfer_status"]),
        (409, &json!("inconsistent")),
        "{c}"
    );
    assert!(c["detail"]
        .as_str()
        .unwrap()
        .contains("conflicting envelope replay"));
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 1);
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 1);
}

#[test]
fn media_headers_sizes_and_envelopes_are_refused_as_the_reference_does() {
    let h = hub_with("[hub]\ntransfer_api = true\nmax_media_size = 4000\n");
    let media = vec![7u8; 3000];
    let body = transfer("t-media", &media);
    assert_eq!(register(&h, &headers(&h), body.clone()).0, 201);
    let (env, ct) = seal_for(&h, &body, &media);
    let path = "/api/media/hub/transfers/t-media/media/";
    let full = with(
        with(headers(&h), "X-Hub-Media-Role", "processed"),
        "X-Hub-Media-Envelope",
        &env.to_header(),
    );
    // Not octet-stream: 415, in DRF's words for the type without its parameters.
    let (s, e) = send(
        &h,
        "POST",
        path,
        &full,
        Some(("multipart/form-data; boundary=x", ct.clone())),
    );
    assert_eq!(
        (s, &e["detail"]),
        (
            415,
            &json!("Unsupported media type \"multipart/form-data\" in request.")
        )
    );
    // Another role, no envelope, an envelope over 4 KiB.
    let (s, e) = send(
        &h,
        "POST",
        path,
        &with(full.clone(), "X-Hub-Media-Role", "raw"),
        Some(("application/octet-stream", ct.clone())),
    );
    assert_eq!((s, e["media_role"].is_string()), (400, true), "{e}");
    let (s, e) = send(
        &h,
        "POST",
        path,
        &without(full.clone(), "X-Hub-Media-Envelope"),
        Some(("application/octet-stream", ct.clone())),
    );
    assert_eq!((s, e["envelope"].is_string()), (400, true), "{e}");
    let mut big = serde_json::to_value(&env).unwrap();
    big["transfer_key"] = json!(format!("t-media{}", " ".repeat(4100)));
    let (s, e) = post_media(&h, "t-media", &big.to_string(), &ct, headers(&h));
    assert_eq!(
        (s, e["envelope"].as_str()),
        (
            400,
            Some("Hub media envelope metadata exceeds the header limit.")
        ),
        "{e}"
    );
    // A size given as a string, an extra field: envelope_metadata_invalid.
    let mut loose = serde_json::to_value(&env).unwrap();
    loose["plaintext_size"] = json!("3000");
    let (s, e) = post_media(&h, "t-media", &loose.to_string(), &ct, headers(&h));
    assert_eq!(
        (s, e["rejection_code"].as_str()),
        (400, Some("envelope_metadata_invalid")),
        "{e}"
    );
    // Sealed to another hub's key.
    let stranger = RecipientKey::generate();
    let id = Identity {
        transfer_key: "t-media".into(),
        source_node_key: "site-a".into(),
        source_center_key: "A".into(),
        target_node_key: "hub".into(),
        resource_kind: "video".into(),
        resource_hash: body["resource_hash"].as_str().unwrap().into(),
        processed_media_hash: sha(&media),
    };
    let mut ct3 = Vec::new();
    let s3 = envelope::seal(&mut &media[..], 3000, &mut ct3, &id, &stranger.public()).unwrap();
    let (s, e) = post_media(&h, "t-media", &s3.envelope.to_header(), &ct3, headers(&h));
    assert_eq!(
        (s, e["rejection_code"].as_str()),
        (400, Some("recipient_key_unavailable")),
        "{e}"
    );
    // A body shorter than the envelope says: ciphertext_size_mismatch.
    let (s, e) = post_media(&h, "t-media", &env.to_header(), &ct[..2999], headers(&h));
    assert_eq!(
        (s, e["rejection_code"].as_str()),
        (400, Some("ciphertext_size_mismatch")),
        "{e}"
    );
    // Over ENDOREG_HUB_TRANSFER_MAX_UPLOAD_BYTES / max_media_size.
    let large = vec![8u8; 5000];
    let lbody = transfer("t-large", &large);
    assert_eq!(register(&h, &headers(&h), lbody.clone()).0, 201);
    let (s, e) = upload_media(&h, &lbody, &large);
    assert_eq!(
        (s, e["file"].as_str()),
        (
            400,
            Some("Uploaded media exceeds the configured size limit.")
        ),
        "{e}"
    );
    // A connection that ends before its Content-Length: envelope_stream_incomplete.
    let addr = h.srv.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 3000\r\n");
    for (k, v) in &full {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    c.write_all(&ct[..1500]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.contains("400"), "{answer}");
    // Nothing stored by any of them, and the real envelope still applies.
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 0);
    assert!(files_under(&h.site.data().join("storage/tmp")).is_empty());
    let (s, t) = post_media(&h, "t-media", &env.to_header(), &ct, headers(&h));
    assert_eq!((s, &t["transfer_status"]), (200, &json!("applied")), "{t}");
}

#[test]
fn identity_hashes_and_ineligible_media_are_400() {
    let h = hub();
    let mut body = transfer("t-id", b"x");
    body["resource_rows"]["video_file"]["patient_hash"] = json!("abc");
    let (s, e) = register(&h, &headers(&h), body);
    assert_eq!(
        (s, &e["non_field_errors"][0]),
        (
            400,
            &json!("Patient identity hashes must remain on the source node")
        ),
        "{e}"
    );
    let mut body = transfer("t-id", b"x");
    body["resource_rows"]["video_state"]["anonymization_validated"] = json!(false);
    let (s, e) = register(&h, &headers(&h), body);
    assert_eq!(s, 400, "{e}");
    assert!(
        e["resource_rows"][0]
            .as_str()
            .unwrap()
            .contains("validated"),
        "{e}"
    );
    let mut body = transfer("t-id", b"x");
    body["provenance"]["favourite_colour"] = json!("blue");
    let (s, e) = register(&h, &headers(&h), body);
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("Transfer payload validation failed")),
        "{e}"
    );
    assert_eq!(h.site.count("SELECT count(*) FROM transfers"), 0);
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

#[test]
fn transfer_media_has_its_own_limit_not_the_api_upload_limit() {
    let h = hub_with(
        "[server]\nupload_max_size = 100\n[hub]\ntransfer_api = true\nmax_media_size = 4000\n",
    );
    let fits = vec![5u8; 3000];
    let body = transfer("t-fits", &fits);
    let (s, e) = register(&h, &headers(&h), body.clone());
    assert_eq!(s, 201, "{e}");
    let (s, e) = upload_media(&h, &body, &fits);
    assert_eq!(
        (s, e["transfer_status"].as_str()),
        (200, Some("applied")),
        "{e}"
    );
    assert_eq!(h.site.count("SELECT count(*) FROM upload_jobs"), 1);
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

/// Issue 23: NUL anywhere in a transfer's JSON is a 400 naming the field, not a 500.
#[test]
fn nul_in_transfer_json_is_a_400() {
    let h = hub();
    for (field, value) in [
        ("target_node_key", json!("hub\u{0}")),
        ("payload_schema_version", json!("7.0\u{0}")),
        (
            "resource_rows",
            json!({"video_file": {"raw_video_hash": "colo\u{0}noscopy"}}),
        ),
        ("processing_snapshot", json!({"exam\u{0}": "x"})),
    ] {
        let mut body = transfer("t-nul", b"clip");
        body[field] = value;
        let (s, e) = register(&h, &headers(&h), body);
        assert_eq!(
            (
                s,
                e[field][0]
                    .as_str()
                    .map(|m| m.contains("NUL") || m.contains("Null"))
            ),
            (400, Some(true)),
            "{field}: {e}"
        );
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

use common::reference::hub_envelope as reference;

fn hub_key_file(h: &Hub) -> std::path::PathBuf {
    h.site.dir.path().join("hub-recipient.pem")
}

/// Issue 15, test 1: lx-annotate's own envelope code seals the media to the hub's key;
/// lxgate applies it, stores the plaintext byte-identical, and its status body and
/// receipt pass lx-dtypes' own strict receipt check against that envelope.
#[test]
fn the_reference_senders_envelope_is_applied_and_the_receipt_passes_its_check() {
    let h = hub();
    let dir = h.site.dir.path();
    let media: Vec<u8> = (0..400_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let raw = sha(b"the raw recording");
    let key = format!("site-a__video__{raw}__processed_v1");
    let body = transfer_from(&key, &raw, &media);
    assert_eq!(register(&h, &headers(&h), body.clone()).0, 201);
    let public = dir.join("hub-recipient.pub.pem");
    std::fs::write(
        &public,
        h.site.ok(&[
            "keys",
            "hub-recipient",
            "--public",
            hub_key_file(&h).to_str().unwrap(),
        ]),
    )
    .unwrap();
    let src = dir.join("media.mp4");
    std::fs::write(&src, &media).unwrap();
    let stage = dir.join("reference-staging");
    std::fs::create_dir_all(&stage).unwrap();
    let identity = json!({
        "transfer_key": key, "source_node_key": "site-a", "source_center_key": "A",
        "target_node_key": "hub", "resource_kind": "video", "resource_hash": raw,
        "processed_media_hash": sha(&media),
    });
    let sealed = reference(&[
        "seal",
        src.to_str().unwrap(),
        stage.to_str().unwrap(),
        public.to_str().unwrap(),
        &identity.to_string(),
    ]);
    let ct = std::fs::read(sealed["ciphertext_path"].as_str().unwrap()).unwrap();
    let header = sealed["header"].as_str().unwrap();
    assert!(
        Envelope::parse(header).is_ok(),
        "lxgate reads the reference's header"
    );
    let (s, status) = post_media(&h, &key, header, &ct, headers(&h));
    assert_eq!(
        (s, &status["transfer_status"]),
        (200, &json!("applied")),
        "{status}"
    );
    let rel: String = h.site.sql(&format!(
        "SELECT storage_path FROM upload_jobs WHERE id = '{}'",
        status["target_object_id"].as_str().unwrap()
    ))[0]
        .get(0);
    assert!(std::fs::read(h.site.data().join("storage").join(rel)).unwrap() == media);
    // The reference's checks on what lxgate answered.
    let env_file = dir.join("envelope.json");
    std::fs::write(&env_file, sealed["envelope"].to_string()).unwrap();
    let status_file = dir.join("status.json");
    std::fs::write(&status_file, status.to_string()).unwrap();
    let checked = reference(&[
        "receipt",
        env_file.to_str().unwrap(),
        status_file.to_str().unwrap(),
    ]);
    assert_eq!(checked["ok"], true, "{checked}");
    assert_eq!(
        status["envelope_receipt"]["ciphertext_sha256"],
        sealed["ciphertext_sha256"]
    );
    // Its retry (the persisted envelope, as lx-annotate resends it) is an exact replay.
    let (s, again) = post_media(&h, &key, header, &ct, headers(&h));
    assert_eq!(
        (s, &again["envelope_receipt"]),
        (200, &status["envelope_receipt"])
    );
}

/// Issue 15, test 2: what lxgate's sender produces opens with endoreg-db's own receiver
/// code to the same bytes (and a flipped byte fails there as here); its register body
/// passes endoreg-db's identity-hash rule.
#[test]
fn lxgates_envelope_opens_with_the_reference_receiver_and_its_body_passes_the_reference_rules() {
    let h = hub();
    let dir = h.site.dir.path();
    let media: Vec<u8> = (0..300_000u32).map(|i| (i * 29 % 253) as u8).collect();
    let body = transfer("site-a__video__x__processed_v1", &media);
    let (envelope, ct) = seal_for(&h, &body, &media);
    let ct_file = dir.join("lxgate.ciphertext");
    std::fs::write(&ct_file, &ct).unwrap();
    let header_file = dir.join("header.json");
    std::fs::write(&header_file, envelope.to_header()).unwrap();
    let job = json!({
        "transfer_key": body["transfer_key"], "resource_kind": "video",
        "resource_hash": body["resource_hash"], "transfer_mode": "metadata_and_processed_media",
        "resource_rows": body["resource_rows"], "source_node_key": "site-a",
        "target_node_key": "hub", "source_center_key": "A",
    });
    let job_file = dir.join("job.json");
    std::fs::write(&job_file, job.to_string()).unwrap();
    let out = dir.join("opened.bin");
    let key = hub_key_file(&h);
    let opened = reference(&[
        "open",
        ct_file.to_str().unwrap(),
        header_file.to_str().unwrap(),
        key.to_str().unwrap(),
        job_file.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(opened["ok"], true, "{opened}");
    assert!(std::fs::read(&out).unwrap() == media, "the same bytes");
    assert_eq!(opened["fingerprint"], envelope.fingerprint());
    assert_eq!(opened["ciphertext_sha256"], sha(&ct));
    let mut bad = ct.clone();
    bad[12_345] ^= 1;
    std::fs::write(&ct_file, &bad).unwrap();
    let refused = reference(&[
        "open",
        ct_file.to_str().unwrap(),
        header_file.to_str().unwrap(),
        key.to_str().unwrap(),
        job_file.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        refused["rejection_code"],
        "envelope_payload_authentication_failed"
    );

    let body_file = dir.join("body.json");
    std::fs::write(&body_file, body.to_string()).unwrap();
    assert_eq!(
        reference(&["identity", body_file.to_str().unwrap()])["ok"],
        true
    );
    let mut hashed = body.clone();
    hashed["resource_rows"]["video_file"]["patient_hash"] = json!("x");
    std::fs::write(&body_file, hashed.to_string()).unwrap();
    let r = reference(&["identity", body_file.to_str().unwrap()]);
    assert_eq!(
        r["error"],
        lxgate::hub::wire::register::IDENTITY_HASH_REFUSED
    );
}

/// Keys made by openssl (as an operator may make them, and as the VM test does) load on
/// both sides with the same key id.
#[test]
fn openssl_x25519_keys_are_recipient_keys() {
    let dir = tempdir();
    let key = dir.path().join("k.pem");
    run_ok(
        std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "X25519", "-out"])
            .arg(&key),
        "openssl genpkey",
    );
    let public = run_ok(
        std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key),
        "openssl pkey",
    );
    let k = RecipientKey::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let r =
        lxgate::hub::keys::Recipient::from_pem(&String::from_utf8(public.stdout).unwrap()).unwrap();
    assert_eq!(k.public().id(), r.id());
    assert_eq!(
        k.public().to_pem(),
        r.to_pem(),
        "lxgate writes the same PEM"
    );
}

/// Issue 15: a node moves from an endoreg-db hub with its Django secret hash
/// (`pbkdf2_sha256$…`, read from stdin), and the site's existing secret authenticates.
#[test]
fn a_node_imported_with_its_django_hash_authenticates_with_its_old_secret() {
    let h = hub();
    let mut c = command(
        &["node", "import", "site-old", "--center", "A"],
        &h.site.env(),
    );
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // PBKDF2-HMAC-SHA256("site-secret", "abc", 1000), as Django's make_password writes it.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pbkdf2_sha256$1000$abc$y9cYSfExXat2TiVf3hAaltybBYumxabN/HkmyRAwijw=\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut body = transfer("t-old", b"clip");
    body["source_node_key"] = json!("site-old");
    let hs = with(
        with(headers(&h), "X-Network-Node-Key", "site-old"),
        "X-Network-Node-Secret",
        "site-secret",
    );
    let (s, e) = register(
        &h,
        &with(hs.clone(), "X-Network-Node-Secret", "site-secreT"),
        body.clone(),
    );
    assert_eq!(s, 403, "{e}");
    let (s, e) = register(&h, &hs, body);
    assert_eq!(s, 201, "{e}");
    // Not a hash at all: refused with what to paste.
    let o = {
        let mut c = command(
            &["node", "import", "site-x", "--center", "A"],
            &h.site.env(),
        );
        c.stdin(std::process::Stdio::piped());
        let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"the-secret-itself\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pbkdf2_sha256$"), "{}", stderr(&o));
}

/// Register bodies, each one change away from a valid 7.0 video or report body, and
/// what the change is.
fn register_variants() -> Vec<(&'static str, serde_json::Value)> {
    let video = |i: usize| transfer(&format!("diff-{i}"), format!("media {i}").as_bytes());
    let report = |i: usize| {
        let mut b = video(i);
        let raw = sha(format!("report {i}").as_bytes());
        b["resource_kind"] = json!("report");
        b["resource_hash"] = json!(raw);
        b["resource_rows"] = json!({
            "raw_pdf_file": {"pdf_hash": raw, "anonymized_text": "Befund ohne Namen"},
            "raw_pdf_state": {"anonymized": true, "sensitive_meta_processed": true,
                "anonymization_validated": true, "processed_file_sha256": raw},
            "processing_history": {"file_hash": raw, "success": true}
        });
        b
    };
    type Edit = fn(&mut serde_json::Value);
    let videos: Vec<(&'static str, Edit)> = vec![
        ("valid", |_| {}),
        ("identity hash in a row", |b| {
            b["resource_rows"]["video_file"]["patient_hash"] = json!("ab".repeat(32))
        }),
        ("schema 2.0", |b| b["payload_schema_version"] = json!("2.0")),
        ("schema with spaces", |b| {
            b["payload_schema_version"] = json!(" 7.0 ")
        }),
        ("raw media mode", |b| {
            b["transfer_mode"] = json!("metadata_and_raw_media")
        }),
        ("unknown mode", |b| b["transfer_mode"] = json!("bogus")),
        ("unknown kind", |b| b["resource_kind"] = json!("audio")),
        ("unknown source node", |b| {
            b["source_node_key"] = json!("site-z")
        }),
        ("unknown target node", |b| {
            b["target_node_key"] = json!("nohub")
        }),
        ("blank target node", |b| b["target_node_key"] = json!("")),
        ("another center", |b| b["source_center_key"] = json!("B")),
        ("unknown center", |b| b["source_center_key"] = json!("Z")),
        ("blank center", |b| b["source_center_key"] = json!("")),
        ("not validated", |b| {
            b["resource_rows"]["video_state"]["anonymization_validated"] = json!(false)
        }),
        ("processing error", |b| {
            b["resource_rows"]["video_state"]["processing_error"] = json!(1)
        }),
        ("segments not removed", |b| {
            b["resource_rows"]["video_state"]["outside_segments_removed"] = json!(false)
        }),
        ("no processed hash in state", |b| {
            b["resource_rows"]["video_state"]
                .as_object_mut()
                .unwrap()
                .remove("processed_file_sha256");
        }),
        ("resource hash not the raw hash", |b| {
            b["resource_hash"] = json!("cd".repeat(32))
        }),
        ("no video_file", |b| {
            b["resource_rows"]
                .as_object_mut()
                .unwrap()
                .remove("video_file");
        }),
        ("direct identity in sensitive_meta", |b| {
            b["resource_rows"]["sensitive_meta"] = json!({"patient_first_name": "x"})
        }),
        ("local UUIDs", |b| {
            b["resource_rows"]["sensitive_meta"] = json!({
                "patient_uuid": "8f2c1f0e-3b7a-4c2d-9e1f-0a1b2c3d4e5f",
                "examination_uuid": "8f2c1f0e-3b7a-4c2d-9e1f-0a1b2c3d4e60"})
        }),
        ("no transfer key", |b| {
            b.as_object_mut().unwrap().remove("transfer_key");
        }),
        ("transfer key of 256", |b| {
            b["transfer_key"] = json!("k".repeat(256))
        }),
        ("unknown top-level field", |b| {
            b["favourite_colour"] = json!("blue")
        }),
        ("empty processing snapshot", |b| {
            b["processing_snapshot"] = json!({})
        }),
        ("segment of another node", |b| {
            b["resource_rows"]["video_segments"] = json!([{"source_node_key": "site-z"}])
        }),
    ];
    let reports: Vec<(&'static str, Edit)> = vec![
        ("valid report", |_| {}),
        ("report with raw text", |b| {
            b["resource_rows"]["raw_pdf_file"]["text"] = json!("Mueller")
        }),
        ("report not validated", |b| {
            b["resource_rows"]["raw_pdf_state"]["anonymization_validated"] = json!(false)
        }),
        ("report only started", |b| {
            b["resource_rows"]["raw_pdf_state"] =
                json!({"processing_started": true, "anonymized": true})
        }),
        ("report hash not the pdf hash", |b| {
            b["resource_hash"] = json!("cd".repeat(32))
        }),
        ("no raw_pdf_file", |b| {
            b["resource_rows"]
                .as_object_mut()
                .unwrap()
                .remove("raw_pdf_file");
        }),
    ];
    let mut out = Vec::new();
    for (base, edits) in [
        (&video as &dyn Fn(usize) -> serde_json::Value, videos),
        (&report, reports),
    ] {
        for (what, edit) in edits {
            let mut b = base(out.len());
            edit(&mut b);
            out.push((what, b));
        }
    }
    out
}

/// Issue 15: lxgate's receiver answers register bodies as endoreg-db 1.6.5's own
/// `TransferJobCreateSerializer` does (tests/reference/hub_serializer.py on the same
/// bodies, with the hub's centers and nodes): accepted where it accepts, 400 with the same
/// fields and messages where it refuses. Where the reference's message is pydantic's
/// dump of a row schema (with its version's help URL), the same field refuses; lxgate
/// names the first rule broken instead.
#[test]
fn register_answers_as_endoreg_dbs_serializer() {
    let h = hub();
    let variants = register_variants();
    let files: Vec<std::path::PathBuf> = variants
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            let p = h.site.dir.path().join(format!("variant-{i}.json"));
            std::fs::write(&p, b.to_string()).unwrap();
            p
        })
        .collect();
    let theirs = common::reference::hub_serializer(
        &common::fresh_db(),
        &json!({"hub": "hub", "site": "site-a", "center": "A", "other_centers": ["B"]}),
        &files,
    );
    let mut differ = Vec::new();
    for ((what, body), theirs) in variants.iter().zip(&theirs) {
        let (status, ours) = register(&h, &headers(&h), body.clone());
        let agree = if theirs["ok"] == true {
            status == 201
        } else if theirs["errors"].to_string().contains("validation error") {
            let fields = |e: &serde_json::Value| {
                e.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>())
            };
            status == 400 && fields(&ours) == fields(&theirs["errors"])
        } else {
            status == 400 && ours == theirs["errors"]
        };
        if !agree {
            differ.push(format!(
                "{what}: lxgate {status} {ours}\n    endoreg-db {theirs}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// The anonymization state lxgate's receiver derives for its refusal is endoreg-db's, for
/// every combination of video (7) and report (5) state flags: compared with the
/// reference's own extension (tests/reference/rust_backend_rules.py).
#[test]
fn anonymization_states_are_derived_as_endoreg_dbs_extension_does() {
    use lxgate::hub::wire::anonymization::{status, Resource};
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/rust_backend_rules.py");
    let mut python = common::reference::python();
    let so = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("reference/site/endoreg_db/endoreg_rust_backend.cpython-311-x86_64-linux-gnu.so");
    let theirs: serde_json::Value = serde_json::from_slice(
        &run_ok(python.arg(&script).arg(&so), "rust_backend_rules.py").stdout,
    )
    .unwrap();
    for (resource, flags) in [
        (Resource::Video, &theirs["video_flags"]),
        (Resource::Report, &theirs["report_flags"]),
    ] {
        let key = if resource == Resource::Video {
            "video"
        } else {
            "report"
        };
        let names: Vec<&str> = flags
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let expected = theirs[key].as_array().unwrap();
        assert_eq!(expected.len(), 1 << names.len());
        for (i, want) in expected.iter().enumerate() {
            // itertools.product([False, True], repeat=n): the first flag is the high bit.
            let state: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .enumerate()
                .map(|(j, n)| (n.to_string(), json!(i >> (names.len() - 1 - j) & 1 == 1)))
                .collect();
            let state = serde_json::Value::Object(state);
            assert_eq!(
                status(resource, &state),
                want.as_str().unwrap(),
                "{key} {state}"
            );
        }
    }
}
