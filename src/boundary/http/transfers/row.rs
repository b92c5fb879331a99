//! A transfer as the hub keeps it (`hub_transfers`), and the lookups of a transfer and
//! of a site node.

use serde_json::Value;

use super::super::error::ApiError;
use super::super::AppState;
use crate::hub::envelope::Identity;
use crate::hub::wire::rows;
use crate::hub::wire::status::StatusBody;
use crate::hub::wire::{ResourceKind, CASE_RESOLUTION_UNRESOLVED, CLEANUP_NOT_REQUESTED};

/// A transfer as the hub keeps it.
pub(super) struct Transfer {
    pub(super) id: uuid::Uuid,
    pub(super) key: String,
    pub(super) source_node_key: String,
    pub(super) target_node_key: String,
    pub(super) source_center_key: String,
    pub(super) center_id: Option<i64>,
    pub(super) kind: String,
    pub(super) resource_hash: String,
    pub(super) transfer_mode: String,
    pub(super) status: String,
    pub(super) processing_policy: String,
    pub(super) processing_intent: String,
    pub(super) processing_decision: String,
    pub(super) cleanup_policy: String,
    pub(super) schema: String,
    pub(super) detail: Option<String>,
    pub(super) resource_rows: Value,
    pub(super) processing_snapshot: Value,
    pub(super) provenance: Value,
    pub(super) receipt: Option<Value>,
    pub(super) job: Option<uuid::Uuid>,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
    pub(super) updated_at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str = "t.transfer_id, t.transfer_key, t.source_node_key, t.target_node_key,
    t.source_center_key, c.id, t.resource_kind, t.resource_hash, t.transfer_mode,
    t.transfer_status, t.processing_policy, t.processing_intent, t.processing_decision,
    t.cleanup_policy, t.payload_schema_version, t.detail, t.resource_rows,
    t.processing_snapshot, t.provenance, t.envelope_receipt, t.upload_job_id, t.created_at,
    t.updated_at";

impl Transfer {
    pub(super) fn from_row(r: &tokio_postgres::Row) -> Transfer {
        Transfer {
            id: r.get(0),
            key: r.get(1),
            source_node_key: r.get(2),
            target_node_key: r.get(3),
            source_center_key: r.get(4),
            center_id: r.get(5),
            kind: r.get(6),
            resource_hash: r.get(7),
            transfer_mode: r.get(8),
            status: r.get(9),
            processing_policy: r.get(10),
            processing_intent: r.get(11),
            processing_decision: r.get(12),
            cleanup_policy: r.get(13),
            schema: r.get(14),
            detail: r.get(15),
            resource_rows: r.get(16),
            processing_snapshot: r.get(17),
            provenance: r.get(18),
            receipt: r.get(19),
            job: r.get(20),
            created_at: r.get(21),
            updated_at: r.get(22),
        }
    }

    pub(super) fn resource_kind(&self) -> ResourceKind {
        if self.kind == "report" {
            ResourceKind::Report
        } else {
            ResourceKind::Video
        }
    }

    pub(super) fn processed_media_hash(&self) -> String {
        rows::processed_media_hash(self.resource_kind(), &self.resource_rows)
    }

    /// The status body (endoreg-db `TransferJobStatusSerializer` + receipt).
    pub(super) fn body(&self) -> StatusBody {
        StatusBody {
            id: self.id.to_string(),
            transfer_key: self.key.clone(),
            source_node_key: self.source_node_key.clone(),
            target_node_key: self.target_node_key.clone(),
            source_center_key: Some(self.source_center_key.clone()),
            resource_kind: self.kind.clone(),
            resource_hash: self.resource_hash.clone(),
            processed_media_hash: self.processed_media_hash(),
            transfer_mode: self.transfer_mode.clone(),
            transfer_status: self.status.clone(),
            processing_policy: self.processing_policy.clone(),
            processing_intent: self.processing_intent.clone(),
            processing_decision: self.processing_decision.clone(),
            cleanup_policy: self.cleanup_policy.clone(),
            cleanup_status: CLEANUP_NOT_REQUESTED.into(),
            payload_schema_version: self.schema.clone(),
            status_detail: self.detail.clone().unwrap_or_default(),
            target_object_id: self.job.map(|j| Value::String(j.to_string())),
            linked_patient_id: None,
            linked_patient_examination_id: None,
            case_resolution_status: CASE_RESOLUTION_UNRESOLVED.into(),
            created_at: self
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            updated_at: self
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            envelope_receipt: self.receipt.clone(),
            detail: None,
        }
    }

    pub(super) fn json(&self) -> Value {
        serde_json::to_value(self.body()).expect("the status body serializes")
    }

    pub(super) fn identity(&self) -> Identity {
        Identity {
            transfer_key: self.key.clone(),
            source_node_key: self.source_node_key.clone(),
            source_center_key: self.source_center_key.clone(),
            target_node_key: self.target_node_key.clone(),
            resource_kind: self.kind.clone(),
            resource_hash: self.resource_hash.clone(),
            processed_media_hash: self.processed_media_hash(),
        }
    }
}

pub(super) async fn load(state: &AppState, key: &str) -> Result<Option<Transfer>, ApiError> {
    let client = state.pool.get().await?;
    Ok(client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM transfers t
                 LEFT JOIN centers c ON c.center_key = t.source_center_key
                 WHERE t.transfer_key = $1"
            ),
            &[&key],
        )
        .await?
        .map(|r| Transfer::from_row(&r)))
}

/// The registered site node (any center), as the serializer's lookup finds it.
pub(super) async fn site_node(
    state: &AppState,
    key: &str,
) -> Result<Option<(i64, String)>, ApiError> {
    let client = state.pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT c.id, c.center_key FROM nodes n JOIN centers c ON c.id = n.center_id
             WHERE n.node_key = $1 AND n.role = 'site_node'",
            &[&key],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}
