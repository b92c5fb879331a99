//! Against the reference's own code and tools: lx-annotate's sender envelope, endoreg-db's
//! receiver, its register serializer and anonymization-state rules, nodes moved with
//! their Django secret hash, recipient keys made by openssl.
use super::*;
use crate::common::reference::hub_envelope as reference;

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
