//! The hub transfer wire, payload schema "7.0" (endoreg-db 1.6.2–1.6.5 receive it,
//! lx-annotate 1.6.x sends it): every path, header, field name and literal that either
//! side of lxgate puts on the wire or reads off it lives here, once.
//!
//! `register` is the body a site registers a transfer with, `status` the body every
//! answer carries (with the envelope receipt), `reply` the refusal bodies. The media
//! itself travels as `crate::hub::envelope` ciphertext.

pub mod anonymization;
pub mod register;
pub mod reply;
pub mod rows;
pub mod status;

use serde::{Deserialize, Serialize};

/// The only payload schema version endoreg-db 1.6.2 to 1.6.5 accept.
pub const PAYLOAD_SCHEMA_VERSION: &str = "7.0";

/// Under the hub's base URL.
pub const TRANSFERS_PATH: &str = "/api/media/hub/transfers/";

pub fn status_path(transfer_key: &str) -> String {
    format!("{TRANSFERS_PATH}{transfer_key}/status/")
}

pub fn media_path(transfer_key: &str) -> String {
    format!("{TRANSFERS_PATH}{transfer_key}/media/")
}

/// Request header names, lower case as HTTP/1.1 libraries compare them.
pub mod header {
    pub const NODE_KEY: &str = "x-network-node-key";
    pub const NODE_SECRET: &str = "x-network-node-secret";
    pub const MEDIA_ROLE: &str = "x-hub-media-role";
    pub const MEDIA_ENVELOPE: &str = "x-hub-media-envelope";
}

/// The media body's content type; anything else is 415.
pub const MEDIA_CONTENT_TYPE: &str = "application/octet-stream";
/// The one media role the hub accepts (anonymized, processed media).
pub const MEDIA_ROLE_PROCESSED: &str = "processed";
/// The envelope header's limit in bytes (a real envelope is about 1050).
pub const MAX_ENVELOPE_HEADER_BYTES: usize = 4096;
/// endoreg-db's default for ENDOREG_HUB_TRANSFER_MAX_UPLOAD_BYTES: 50 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 50 * 1024 * 1024 * 1024;
/// Transfer and node keys, as the reference's columns hold them.
pub const MAX_KEY_LEN: usize = 255;

/// What a transfer carries. `study` exists on the wire (metadata only); lxgate neither
/// sends nor accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Video,
    Report,
    Study,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Video => "video",
            ResourceKind::Report => "report",
            ResourceKind::Study => "study",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    #[default]
    MetadataOnly,
    MetadataAndRawMedia,
    MetadataAndProcessedMedia,
    MetadataRawAndProcessedMedia,
}

impl TransferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::MetadataOnly => "metadata_only",
            TransferMode::MetadataAndRawMedia => "metadata_and_raw_media",
            TransferMode::MetadataAndProcessedMedia => "metadata_and_processed_media",
            TransferMode::MetadataRawAndProcessedMedia => "metadata_raw_and_processed_media",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingPolicy {
    ReprocessAlways,
    ReprocessIfMissingOutputs,
    #[default]
    PreserveProcessingState,
    IngestOnlyNoProcessing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProcessingIntent {
    #[serde(rename = "sender_requests_hub_processing")]
    HubProcessing,
    #[default]
    #[serde(rename = "sender_requests_state_preservation")]
    StatePreservation,
    #[serde(rename = "sender_requests_archive_only")]
    ArchiveOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    #[default]
    RetainAll,
    DeleteCentralRawAfterApply,
    DeleteCentralRawAfterVerifiedBackup,
    DeleteCentralSourceAfterAnonymizedDerivativesExist,
}

/// A transfer's state at the hub (endoreg-db `TransferJob.TransferStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Pending,
    Claimed,
    Running,
    RetryWait,
    AwaitingMedia,
    Applied,
    Failed,
    Inconsistent,
    Lost,
}

impl TransferStatus {
    pub const ALL: [TransferStatus; 9] = [
        TransferStatus::Pending,
        TransferStatus::Claimed,
        TransferStatus::Running,
        TransferStatus::RetryWait,
        TransferStatus::AwaitingMedia,
        TransferStatus::Applied,
        TransferStatus::Failed,
        TransferStatus::Inconsistent,
        TransferStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Pending => "pending",
            TransferStatus::Claimed => "claimed",
            TransferStatus::Running => "running",
            TransferStatus::RetryWait => "retry_wait",
            TransferStatus::AwaitingMedia => "awaiting_media",
            TransferStatus::Applied => "applied",
            TransferStatus::Failed => "failed",
            TransferStatus::Inconsistent => "inconsistent",
            TransferStatus::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<TransferStatus> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `processing_decision` values lxgate's hub gives (it stores media and does not
/// reprocess): preserved state once applied, waiting before.
pub mod decision {
    pub const WAIT_FOR_MISSING_MEDIA: &str = "wait_for_missing_media";
    pub const SKIP_PRESERVED_STATE: &str = "skip_processing_preserved_state";
    pub const MARK_INCONSISTENT: &str = "mark_inconsistent";
}

/// `cleanup_status` for `retain_all`.
pub const CLEANUP_NOT_REQUESTED: &str = "not_requested";
/// `case_resolution_status` lxgate reports: it links no patients.
pub const CASE_RESOLUTION_UNRESOLVED: &str = "unresolved";

/// The envelope's identifier rule for keys: `^[A-Za-z0-9][A-Za-z0-9._:-]*$`.
pub fn valid_identifier(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
}

/// The transfer key lx-annotate builds (`hub_export_jobs.py::build_transfer_key`):
/// `{source_node_key}__{video|report}__{resource_hash}__processed_v1`.
pub fn transfer_key(source_node_key: &str, kind: ResourceKind, resource_hash: &str) -> String {
    format!(
        "{source_node_key}__{}__{resource_hash}__processed_v1",
        kind.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        for s in TransferStatus::ALL {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.as_str());
            assert_eq!(TransferStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::from_value::<TransferStatus>(json).unwrap(), s);
        }
        assert_eq!(TransferStatus::parse("done"), None);
    }

    #[test]
    fn transfer_keys_have_the_reference_form_and_pass_the_envelope_rule() {
        let k = transfer_key("site-a", ResourceKind::Video, &"ab".repeat(32));
        assert_eq!(
            k,
            format!("site-a__video__{}__processed_v1", "ab".repeat(32))
        );
        assert!(valid_identifier(&k, MAX_KEY_LEN));
        assert!(!valid_identifier("-x", MAX_KEY_LEN));
        assert!(!valid_identifier("a b", MAX_KEY_LEN));
        assert!(!valid_identifier(&"a".repeat(256), MAX_KEY_LEN));
    }

    #[test]
    fn policies_serialize_as_the_reference_sends_them() {
        assert_eq!(
            serde_json::to_value(ProcessingIntent::default()).unwrap(),
            "sender_requests_state_preservation"
        );
        assert_eq!(
            serde_json::to_value(ProcessingPolicy::default()).unwrap(),
            "preserve_processing_state"
        );
        assert_eq!(
            serde_json::to_value(CleanupPolicy::default()).unwrap(),
            "retain_all"
        );
        assert_eq!(
            serde_json::to_value(TransferMode::MetadataAndProcessedMedia).unwrap(),
            TransferMode::MetadataAndProcessedMedia.as_str()
        );
    }
}
