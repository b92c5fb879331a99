//! The status body every transfer answer carries (endoreg-db
//! `TransferJobStatusSerializer`, plus `envelope_receipt` once media is applied, plus
//! `detail` on a media 409), and the sender's checks on it (lx-annotate
//! `_validate_remote_transfer_status`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{TransferStatus, PAYLOAD_SCHEMA_VERSION};
use crate::hub::envelope::Receipt;

/// Identity fields are strings on both sides: the sender compares them as text, and a
/// hub that leaves one out must fail the comparison, not the parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusBody {
    pub id: String,
    pub transfer_key: String,
    pub source_node_key: String,
    pub target_node_key: String,
    pub source_center_key: Option<String>,
    pub resource_kind: String,
    pub resource_hash: String,
    pub processed_media_hash: String,
    pub transfer_mode: String,
    pub transfer_status: String,
    pub processing_policy: String,
    pub processing_intent: String,
    pub processing_decision: String,
    pub cleanup_policy: String,
    pub cleanup_status: String,
    pub payload_schema_version: String,
    pub status_detail: String,
    pub target_object_id: Option<Value>,
    pub linked_patient_id: Option<Value>,
    pub linked_patient_examination_id: Option<Value>,
    pub case_resolution_status: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope_receipt: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the sender expects the hub to echo back.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub transfer_key: &'a str,
    pub source_node_key: &'a str,
    pub target_node_key: &'a str,
    pub source_center_key: &'a str,
    pub resource_kind: &'a str,
    pub resource_hash: &'a str,
    pub processed_media_hash: &'a str,
    pub transfer_mode: &'a str,
}

impl StatusBody {
    pub fn status(&self) -> Option<TransferStatus> {
        TransferStatus::parse(&self.transfer_status)
    }

    /// The fields that differ from what the sender sent (and `id` when blank), sorted;
    /// empty when the acknowledgement is for this transfer.
    pub fn mismatches(&self, e: &Expected<'_>) -> Vec<&'static str> {
        let center = self.source_center_key.as_deref().unwrap_or("");
        let mut out: Vec<&'static str> = [
            ("transfer_key", self.transfer_key.as_str(), e.transfer_key),
            ("source_node_key", &self.source_node_key, e.source_node_key),
            ("target_node_key", &self.target_node_key, e.target_node_key),
            ("source_center_key", center, e.source_center_key),
            ("resource_kind", &self.resource_kind, e.resource_kind),
            ("resource_hash", &self.resource_hash, e.resource_hash),
            (
                "processed_media_hash",
                &self.processed_media_hash,
                e.processed_media_hash,
            ),
            ("transfer_mode", &self.transfer_mode, e.transfer_mode),
            (
                "payload_schema_version",
                &self.payload_schema_version,
                PAYLOAD_SCHEMA_VERSION,
            ),
        ]
        .into_iter()
        .filter(|(_, got, want)| want.is_empty() || got.trim() != *want)
        .map(|(name, _, _)| name)
        .collect();
        if self.id.trim().is_empty() {
            out.push("id");
        }
        out.sort_unstable();
        out
    }

    /// The receipt, strictly parsed; None when absent.
    pub fn receipt(&self) -> Option<Result<Receipt, String>> {
        self.envelope_receipt
            .as_ref()
            .map(|v| serde_json::from_value::<Receipt>(v.clone()).map_err(|e| e.to_string()))
    }
}
