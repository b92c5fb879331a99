//! A valid payload schema 7.0 register body, for every test that registers a transfer.
use serde_json::json;
use sha2::{Digest, Sha256};

pub fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A 7.0 register body for processed `media` made from a raw file hashing to `raw`.
pub fn transfer_from(key: &str, raw: &str, media: &[u8]) -> serde_json::Value {
    let processed = sha(media);
    json!({
        "transfer_key": key,
        "source_node_key": "site-a",
        "target_node_key": "hub",
        "source_center_key": "A",
        "resource_kind": "video",
        "resource_hash": raw,
        "transfer_mode": "metadata_and_processed_media",
        "processing_policy": "preserve_processing_state",
        "processing_intent": "sender_requests_state_preservation",
        "cleanup_policy": "retain_all",
        "payload_schema_version": "7.0",
        "resource_rows": {
            "video_file": {"raw_video_hash": raw, "processed_video_hash": processed,
                "fps": 25.0, "duration": 2.0, "frame_count": 50, "width": 64, "height": 48,
                "suffix": ".mp4"},
            "video_state": {"anonymized": true, "sensitive_meta_processed": true,
                "anonymization_validated": true, "outside_segments_removed": true,
                "processed_file_sha256": processed},
            "processing_history": {"file_hash": processed, "success": true}
        },
        "processing_snapshot": {"sender_processing_success": true},
        "provenance": {"entrypoint": "lxgate_sender"}
    })
}

pub fn transfer(key: &str, media: &[u8]) -> serde_json::Value {
    transfer_from(key, &sha(&[b"raw:".as_slice(), media].concat()), media)
}
