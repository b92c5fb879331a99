//! The requests lx-annotate's frontend and endoreg-db's clients send, unchanged: multipart
//! forms, kind inference, idempotency keys, the status route's fields.
use super::*;

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
fn a_super_admin_upload_without_a_center_takes_the_default_center_by_name() {
    let api = setup("standalone", &[("LX_ANNOTATE_DEFAULT_CENTER", "Center B")]);
    let admin = api.site.token("super_admin", None, "root");
    let (s, job) = post_raw(&api, &admin, A_PDF, b"%PDF by name");
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["center_key"], "B");
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
