//! Registration and media delivery: 201/200/409, the envelope opened into the ingest
//! core, and the reference's refusals of headers, sizes, envelopes and bodies.
use super::*;

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
