use super::*;
use crate::hub::wire::rows::processed_media_hash;
use serde_json::json;

fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

pub(crate) fn video_body() -> Value {
    json!({
        "transfer_key": format!("site-a__video__{}__processed_v1", hash('a')),
        "source_node_key": "site-a",
        "target_node_key": "hub",
        "source_center_key": "A",
        "resource_kind": "video",
        "resource_hash": hash('a'),
        "transfer_mode": "metadata_and_processed_media",
        "processing_policy": "preserve_processing_state",
        "processing_intent": "sender_requests_state_preservation",
        "cleanup_policy": "retain_all",
        "payload_schema_version": "7.0",
        "resource_rows": {
            "video_file": {"raw_video_hash": hash('a'), "processed_video_hash": hash('b'),
                "fps": 25.0, "duration": 2.0, "frame_count": 50, "width": 64, "height": 48, "suffix": ".mp4"},
            "video_state": {"anonymized": true, "sensitive_meta_processed": true,
                "anonymization_validated": true, "outside_segments_removed": true,
                "processed_file_sha256": hash('b')},
            "processing_history": {"file_hash": hash('b'), "success": true}
        },
        "processing_snapshot": {"sender_processing_success": true},
        "provenance": {"entrypoint": "lxgate_sender"}
    })
}

fn check(v: &Value) -> Result<Rows, Value> {
    let b = parse(v).map_err(|r| r.body)?;
    b.check_scope(v).map_err(|r| r.body)?;
    b.check_rows().map_err(|r| r.body)
}

#[test]
fn a_sender_body_passes_and_names_its_processed_hash() {
    let rows = check(&video_body()).unwrap();
    assert_eq!(rows.processed_media_hash(), Some(hash('b').as_str()));
    assert_eq!(
        processed_media_hash(ResourceKind::Video, &video_body()["resource_rows"]),
        hash('b')
    );
}

#[test]
fn the_schema_version_is_seven_point_oh_as_a_string() {
    for v in [json!(1), json!("2.0"), json!("7"), json!(null)] {
        let mut b = video_body();
        b["payload_schema_version"] = v.clone();
        let e = check(&b).unwrap_err();
        assert!(e.get("payload_schema_version").is_some(), "{v}: {e}");
    }
    let mut b = video_body();
    b.as_object_mut().unwrap().remove("payload_schema_version");
    assert!(check(&b).unwrap_err()["payload_schema_version"][0]
        .as_str()
        .unwrap()
        .contains("'7.0'"));
}

#[test]
fn identity_hashes_are_refused_anywhere_in_the_body() {
    for (path, key) in [
        ("provenance", "patient_hash"),
        ("resource_rows", "examinationHashes"),
        ("processing_snapshot", "Case-Hash-Display"),
    ] {
        let mut b = video_body();
        b[path][key] = json!("x");
        assert_eq!(
            check(&b).unwrap_err()["non_field_errors"][0],
            IDENTITY_HASH_REFUSED,
            "{key}"
        );
    }
    let mut b = video_body();
    b["provenance"]["custom_marker"] = json!("hash");
    assert_eq!(
        check(&b).unwrap_err()["non_field_errors"][0],
        IDENTITY_HASH_REFUSED
    );
    assert!(!names_identity_hash("resource_hash"));
    assert!(!names_identity_hash("raw_video_hash"));
    assert!(names_identity_hash("identity_fingerprints"));
}

#[test]
fn rows_are_strict_and_the_four_flags_must_be_true() {
    let mut b = video_body();
    b["resource_rows"]["video_file"]["colour"] = json!("red");
    assert!(check(&b).unwrap_err().get("resource_rows").is_some());
    for flag in [
        "anonymized",
        "sensitive_meta_processed",
        "anonymization_validated",
        "outside_segments_removed",
    ] {
        let mut b = video_body();
        b["resource_rows"]["video_state"][flag] = json!(null);
        assert!(
            check(&b).unwrap_err().get("resource_rows").is_some(),
            "{flag}"
        );
    }
    let mut b = video_body();
    b["resource_rows"]["video_state"]["processing_error"] = json!(true);
    assert!(check(&b).is_err());
    let mut b = video_body();
    b["resource_hash"] = json!(hash('c'));
    assert!(check(&b).unwrap_err().get("resource_hash").is_some());
    let mut b = video_body();
    b["transfer_mode"] = json!("metadata_and_raw_media");
    assert!(check(&b).unwrap_err().get("transfer_mode").is_some());
    let mut b = video_body();
    b["resource_rows"]["sensitive_meta"] = json!({
        "patient_uuid": uuid::Uuid::new_v4(), "examination_uuid": uuid::Uuid::new_v4()});
    assert!(check(&b).unwrap_err()["resource_rows"][0]
        .as_str()
        .unwrap()
        .contains("UUIDv8"));
    let mut b = video_body();
    b["resource_rows"]["sensitive_meta"] = json!({"patient_first_name": "x"});
    assert!(check(&b).unwrap_err()["resource_rows"][0]
        .as_str()
        .unwrap()
        .contains("Direct identity"));
}

#[test]
fn a_report_needs_anonymized_text_and_never_raw_text() {
    let report = json!({
        "transfer_key": "k", "source_node_key": "site-a", "resource_kind": "report",
        "resource_hash": hash('a'), "transfer_mode": "metadata_and_processed_media",
        "payload_schema_version": "7.0",
        "resource_rows": {
            "raw_pdf_file": {"pdf_hash": hash('a'), "anonymized_text": "Befund ohne Namen"},
            "raw_pdf_state": {"anonymized": true, "sensitive_meta_processed": true,
                "anonymization_validated": true, "processed_file_sha256": hash('b')}
        }
    });
    assert!(matches!(check(&report), Ok(Rows::Report(_))));
    let mut b = report.clone();
    b["resource_rows"]["raw_pdf_file"]["text"] = json!("Mueller");
    assert!(check(&b).unwrap_err()["resource_rows"][0]
        .as_str()
        .unwrap()
        .contains("Raw report text"));
    let mut b = report.clone();
    b["resource_rows"]["raw_pdf_file"]["anonymized_text"] = json!("  ");
    assert!(check(&b).is_err());
}
