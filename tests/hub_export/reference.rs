//! The sender's register bodies against the reference's own code: endoreg-db's row
//! schemas and its register serializer, lx-dtypes' payload contract.
use super::*;

/// Issue 15, test 2 (rows): the bodies lxgate's sender registers, a video with its
/// ffprobe facts and a report with its text, pass endoreg-db 1.6.5's own row schemas
/// (TransferVideoResourceRows / TransferReportResourceRows, extra=forbid), processing
/// snapshot and provenance validators and its identity-hash rule; the same check
/// refuses a body with one field too many, so it is not a check that cannot fail.
/// lx-dtypes 0.5.8's payload contract, which lx-annotate's exporter runs before sending,
/// refuses them for one reason only: no `sensitive_meta` (lxgate holds no patient or
/// examination record to derive hub pseudonyms from; the hub does not require them,
/// docs/hub-wire.md).
#[test]
fn the_senders_bodies_pass_endoreg_dbs_own_row_schemas() {
    let f = fleet();
    let file = f.site.dir.path().join("body.json");
    for body in marked_bodies(&f) {
        std::fs::write(&file, body.to_string()).unwrap();
        let checked = common::reference::hub_rows(&["check", file.to_str().unwrap()]);
        assert_eq!(checked["ok"], true, "{}: {checked}", body["resource_kind"]);
        let (kind, head) = file_row(&body);
        assert_eq!(
            checked["resource_rows"][head], body["resource_rows"][head],
            "the hub keeps the {head} row as sent"
        );
        let mut bad = body.clone();
        bad["resource_rows"][head]["file_name"] = json!("x");
        std::fs::write(&file, bad.to_string()).unwrap();
        let refused = common::reference::hub_rows(&["check", file.to_str().unwrap()]);
        assert_eq!(refused["ok"], false, "{refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("Extra inputs are not permitted"),
            "{refused}"
        );
        std::fs::write(&file, body.to_string()).unwrap();
        let contract = common::reference::hub_rows(&["sender", file.to_str().unwrap()]);
        assert_eq!(
            contract,
            json!({"ok": false, "errors": [{"loc": ["resource_rows", "sensitive_meta"], "type": "missing"}]}),
            "{kind}: lx-dtypes' sender contract misses sensitive_meta and nothing else"
        );
    }
}

/// A body's kind and the row that names its file (and carries the raw hash).
fn file_row(body: &serde_json::Value) -> (&str, &'static str) {
    match body["resource_kind"].as_str().unwrap() {
        "video" => ("video", "video_file"),
        kind => (kind, "raw_pdf_file"),
    }
}

/// The register bodies lxgate's sender builds for what a site holds: a video with its
/// ffprobe facts, a PDF report and a text report, each marked.
fn marked_bodies(f: &Fleet) -> Vec<serde_json::Value> {
    let (video, _) = site_job(f, "v.mp4", &test_clip(f, 1));
    let (report, _) = site_report(f, "r.pdf", &text_pdf("Befund ohne Auffaelligkeiten"));
    let (text, _) = site_report(f, "r.txt", b"Befund: Polyp entfernt.\n");
    f.site.ok(&["hub-export", "mark", &video, &report, &text]);
    [video, report, text]
        .iter()
        .map(|job| serde_json::from_str(&f.site.ok(&["hub-export", "show", job])).unwrap())
        .collect()
}

/// Issue 15, test 2 (the hub's gate): endoreg-db 1.6.5's own `TransferJobCreateSerializer`
/// (real Django and DRF, its models on a real PostgreSQL, its anonymization-state rules
/// in its compiled extension built for this Python) accepts the video, PDF-report and
/// text-report bodies lxgate's sender builds, and refuses each defect with its own
/// message: an identity hash in a row, another schema version, anonymization not
/// validated (decided by the extension), a local (version 4) UUID as pseudonym, a
/// resource hash that is not the raw file's. What it stubbed is printed.
#[test]
fn the_senders_bodies_pass_endoreg_dbs_own_register_serializer() {
    let f = fleet();
    let bodies = marked_bodies(&f);
    let video = &bodies[0];
    let defect = |edit: fn(&mut serde_json::Value), field: &'static str, msg: &'static str| {
        let mut b = video.clone();
        edit(&mut b);
        (b, field, msg)
    };
    let defects = [
        defect(
            |b| b["resource_rows"]["video_file"]["patient_hash"] = json!("ab".repeat(32)),
            "non_field_errors",
            "Patient identity hashes must remain on the source node",
        ),
        defect(
            |b| b["payload_schema_version"] = json!("2.0"),
            "payload_schema_version",
            "Only privacy-preserving hub payload_schema_version '7.0' is accepted.",
        ),
        defect(
            |b| b["resource_rows"]["video_state"]["anonymization_validated"] = json!(false),
            "resource_rows",
            "Current anonymization_status='done_processing_anonymization' is not eligible.",
        ),
        defect(
            |b| {
                b["resource_rows"]["sensitive_meta"] = json!({
                    "patient_uuid": uuid::Uuid::new_v4(), "examination_uuid": uuid::Uuid::new_v4()})
            },
            "resource_rows",
            "Hub records require site-salted UUIDv8 pseudonyms, not local UUIDs",
        ),
        defect(
            |b| b["resource_hash"] = json!("cd".repeat(32)),
            "resource_hash",
            "resource_hash must match resource_rows.video_file.raw_video_hash",
        ),
    ];
    let files: Vec<PathBuf> = bodies
        .iter()
        .chain(defects.iter().map(|(b, _, _)| b))
        .enumerate()
        .map(|(i, b)| {
            let p = f.site.dir.path().join(format!("body-{i}.json"));
            std::fs::write(&p, b.to_string()).unwrap();
            p
        })
        .collect();
    let answers = common::reference::hub_serializer(
        &common::fresh_db(),
        &json!({"hub": "hub", "site": "site-a", "center": "A"}),
        &files,
    );
    for (body, answer) in bodies.iter().zip(&answers) {
        let (kind, head) = file_row(body);
        assert_eq!(answer["ok"], true, "{kind}: {answer}");
        assert_eq!(
            (
                &answer["source_node"],
                &answer["target_node"],
                &answer["source_center"]
            ),
            (&json!("site-a"), &json!("hub"), &json!("A")),
            "{kind}"
        );
        assert_eq!(
            answer["resource_rows"][head], body["resource_rows"][head],
            "{kind}: the serializer keeps the {head} row as sent"
        );
    }
    for ((_, field, msg), answer) in defects.iter().zip(&answers[bodies.len()..]) {
        assert_eq!(answer["ok"], false, "{msg}: {answer}");
        let said = answer["errors"][field].to_string();
        assert!(said.contains(msg), "{field} should say {msg:?}: {answer}");
    }
}

/// The endoreg_rust_backend setup.sh builds from the endoreg-db wheel's rust/ source for
/// Python 3.11 decides every anonymization state exactly as the cp312 binary the wheel
/// ships (tests/reference/rust_backend_rules.py on each). Needs a CPython 3.12, which this
/// project's machines do not promise: `LXGATE_REFERENCE_PYTHON312=/path/to/python3.12
/// cargo test --test hub_export -- --ignored rust_backend`.
#[test]
#[ignore = "needs a CPython 3.12 named by LXGATE_REFERENCE_PYTHON312"]
fn the_rust_backend_built_here_decides_as_the_shipped_one() {
    let py312 = std::env::var("LXGATE_REFERENCE_PYTHON312")
        .expect("LXGATE_REFERENCE_PYTHON312 names a CPython 3.12 to load the shipped binary");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/rust_backend_rules.py");
    // The reference environment (and so the 3.11 build) exists once python() returned.
    let mut ours = common::reference::python();
    let site = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reference/site/endoreg_db");
    let so = |tag: &str| {
        site.join(format!(
            "endoreg_rust_backend.cpython-{tag}-x86_64-linux-gnu.so"
        ))
    };
    let built = run_ok(ours.arg(&script).arg(so("311")), "rules of the 3.11 build");
    let shipped = run_ok(
        std::process::Command::new(py312)
            .arg(&script)
            .arg(so("312")),
        "rules of the shipped cp312 binary",
    );
    let (built, shipped): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&built.stdout).unwrap(),
        serde_json::from_slice(&shipped.stdout).unwrap(),
    );
    assert_eq!(built["video"].as_array().unwrap().len(), 128);
    assert_eq!(built, shipped);
}
