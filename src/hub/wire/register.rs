//! The register body (`POST …/transfers/`) and the receiver's rules for it, in the
//! order endoreg-db's `TransferJobCreateSerializer` applies them. The hub's own lookups
//! (source node, target node, owning center) sit between `parse`/`check_scope` and
//! `check_rows`, where the reference makes them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::anonymization;
use super::reply::Refusal;
use super::rows::{
    check_pseudonyms, check_report_rows, check_video_values, sha256_hex, ReportRows, Rows,
    VideoRows,
};
use super::{
    CleanupPolicy, ProcessingIntent, ProcessingPolicy, ResourceKind, TransferMode, MAX_KEY_LEN,
    PAYLOAD_SCHEMA_VERSION,
};

/// The register body as both sides see it. `resource_rows` stays JSON: the hub keeps
/// exactly what the site sent (an exact replay compares it), and `check_rows` reads
/// it into the typed rows below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterBody {
    pub transfer_key: String,
    pub source_node_key: String,
    #[serde(default)]
    pub target_node_key: String,
    #[serde(default)]
    pub source_center_key: String,
    pub resource_kind: ResourceKind,
    pub resource_hash: String,
    #[serde(default)]
    pub transfer_mode: TransferMode,
    #[serde(default)]
    pub processing_policy: ProcessingPolicy,
    #[serde(default)]
    pub processing_intent: ProcessingIntent,
    #[serde(default)]
    pub cleanup_policy: CleanupPolicy,
    pub payload_schema_version: String,
    #[serde(default)]
    pub resource_rows: Value,
    #[serde(default)]
    pub processing_snapshot: ProcessingSnapshot,
    #[serde(default)]
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_processing_success: Option<bool>,
}

/// The provenance keys endoreg-db's model accepts; any other key is a 400 at save.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_center_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_frame_provenance: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_provenance_recovery: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_marker: Option<String>,
}

// ---- the receiver's rules ----

const FIELDS: [&str; 14] = [
    "transfer_key",
    "source_node_key",
    "target_node_key",
    "source_center_key",
    "resource_kind",
    "resource_hash",
    "transfer_mode",
    "processing_policy",
    "processing_intent",
    "cleanup_policy",
    "payload_schema_version",
    "resource_rows",
    "processing_snapshot",
    "provenance",
];

/// A DRF `CharField`: a string (or a number, as DRF takes it), trimmed, within `max`.
fn char_field(
    v: &Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
    allow_blank: bool,
    errors: &mut Map<String, Value>,
) -> Option<String> {
    let text = match v.get(name) {
        None if required => {
            errors.insert(name.into(), "This field is required.".into());
            return None;
        }
        None => return Some(String::new()),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) => {
            errors.insert(name.into(), "This field may not be null.".into());
            return None;
        }
        Some(_) => {
            errors.insert(name.into(), "Not a valid string.".into());
            return None;
        }
    };
    if text.is_empty() && !allow_blank {
        errors.insert(name.into(), "This field may not be blank.".into());
        return None;
    }
    if text.chars().count() > max {
        errors.insert(
            name.into(),
            format!("Ensure this field has no more than {max} characters.").into(),
        );
        return None;
    }
    // PostgreSQL stores no NUL; the reference's database refuses it too.
    if text.contains('\0') {
        errors.insert(name.into(), "Null characters are not allowed.".into());
        return None;
    }
    Some(text)
}

/// Field-level validation: types, required fields, choices, the schema version. A
/// DRF-shaped error dict on failure (each message in a list).
pub fn parse(body: &Value) -> Result<RegisterBody, Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(Refusal::non_field(
            "Invalid data. Expected a dictionary, but got a different type.",
        ));
    };
    let mut errors = Map::new();
    let key = char_field(obj, "transfer_key", MAX_KEY_LEN, true, false, &mut errors);
    let source = char_field(
        obj,
        "source_node_key",
        MAX_KEY_LEN,
        true,
        false,
        &mut errors,
    );
    let target = char_field(
        obj,
        "target_node_key",
        MAX_KEY_LEN,
        false,
        true,
        &mut errors,
    );
    let center = char_field(
        obj,
        "source_center_key",
        MAX_KEY_LEN,
        false,
        true,
        &mut errors,
    );
    let hash = char_field(obj, "resource_hash", MAX_KEY_LEN, true, false, &mut errors);
    let version = match obj.get("payload_schema_version") {
        None => Some("1.0".to_string()),
        Some(_) => char_field(obj, "payload_schema_version", 32, true, false, &mut errors),
    };
    if let Some(v) = &version {
        if v != PAYLOAD_SCHEMA_VERSION {
            errors.insert(
                "payload_schema_version".into(),
                format!(
                    "Only privacy-preserving hub payload_schema_version '{PAYLOAD_SCHEMA_VERSION}' is accepted."
                )
                .into(),
            );
        }
    }
    fn choice<T: serde::de::DeserializeOwned + Default>(
        obj: &Map<String, Value>,
        name: &str,
        required: bool,
        errors: &mut Map<String, Value>,
    ) -> Option<T> {
        match obj.get(name) {
            None if required => {
                errors.insert(name.into(), "This field is required.".into());
                None
            }
            None => Some(T::default()),
            Some(v) => match serde_json::from_value::<T>(v.clone()) {
                Ok(t) => Some(t),
                Err(_) => {
                    let shown = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    errors.insert(
                        name.into(),
                        format!(
                            "{} is not a valid choice.",
                            crate::ingest::name::escaped_prefix(&shown)
                        )
                        .into(),
                    );
                    None
                }
            },
        }
    }
    #[derive(Deserialize, Default)]
    #[serde(transparent)]
    struct Kind(Option<ResourceKind>);
    let kind = choice::<Kind>(obj, "resource_kind", true, &mut errors).and_then(|k| k.0);
    let mode = choice::<TransferMode>(obj, "transfer_mode", false, &mut errors);
    let policy = choice::<ProcessingPolicy>(obj, "processing_policy", false, &mut errors);
    let intent = choice::<ProcessingIntent>(obj, "processing_intent", false, &mut errors);
    let cleanup = choice::<CleanupPolicy>(obj, "cleanup_policy", false, &mut errors);
    let json_field = |name: &str| obj.get(name).cloned().unwrap_or(Value::Object(Map::new()));
    if !errors.is_empty() {
        return Err(Refusal::fields(errors));
    }
    // PostgreSQL stores no NUL, in text or jsonb: say where, rather than fail the insert.
    for name in ["resource_rows", "processing_snapshot", "provenance"] {
        if let Some(at) = obj.get(name).and_then(|v| nul_at(v, name)) {
            return Err(Refusal::field(
                name,
                format!(
                    "{at} contains a NUL character (\\u0000), which cannot be stored: remove it"
                ),
            ));
        }
    }
    let (
        Some(transfer_key),
        Some(source_node_key),
        Some(target_node_key),
        Some(source_center_key),
        Some(resource_kind),
        Some(resource_hash),
        Some(transfer_mode),
        Some(processing_policy),
        Some(processing_intent),
        Some(cleanup_policy),
        Some(payload_schema_version),
    ) = (
        key, source, target, center, kind, hash, mode, policy, intent, cleanup, version,
    )
    else {
        return Err(Refusal::non_field("the transfer body is incomplete"));
    };
    // Unknown top-level fields are ignored, as DRF ignores them; the three JSON fields
    // are checked by `check_rows` (rows, snapshot) and at save (provenance).
    let _ = FIELDS;
    Ok(RegisterBody {
        transfer_key,
        source_node_key,
        target_node_key,
        source_center_key,
        resource_kind,
        resource_hash,
        transfer_mode,
        processing_policy,
        processing_intent,
        cleanup_policy,
        payload_schema_version,
        resource_rows: json_field("resource_rows"),
        processing_snapshot: ProcessingSnapshot::default(),
        provenance: Provenance::default(),
    })
    .map(|mut b| {
        b.processing_snapshot =
            serde_json::from_value(json_field("processing_snapshot")).unwrap_or_default();
        b
    })
}

/// Where in `v` a NUL character is, if anywhere.
fn nul_at(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let at = format!("{at}.{}", crate::ingest::name::escaped_prefix(k));
            if k.contains('\0') {
                Some(at)
            } else {
                nul_at(x, &at)
            }
        }),
        _ => None,
    }
}

/// The identity-hash refusal message endoreg-db gives (and lx-annotate recognises).
pub const IDENTITY_HASH_REFUSED: &str = "Patient identity hashes must remain on the source node";

const IDENTITY_MARKERS: [&str; 7] = [
    "patienthash",
    "examinationhash",
    "casehash",
    "examinerhash",
    "identityfingerprint",
    "patientpseudonym",
    "casepseudonym",
];

/// Whether a key or string value names a patient identity hash (endoreg-db
/// `reject_identity_hash_fields`): `_`, `-` and spaces dropped, case folded, then
/// exactly `hash`, or ending in a marker with an optional `s`, `es` or `display`.
pub fn names_identity_hash(field: &str) -> bool {
    let n: String = field
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    n == "hash"
        || IDENTITY_MARKERS.iter().any(|m| {
            ["", "s", "es", "display"]
                .iter()
                .any(|suffix| n.ends_with(&format!("{m}{suffix}")))
        })
}

/// Every key and string value anywhere in `v`.
pub fn carries_identity_hash(v: &Value) -> bool {
    match v {
        Value::String(s) => names_identity_hash(s),
        Value::Array(a) => a.iter().any(carries_identity_hash),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| names_identity_hash(k) || carries_identity_hash(x)),
        _ => false,
    }
}

impl RegisterBody {
    /// The serializer's first object-level checks: identity hashes anywhere in the
    /// body, then the transfer mode. `raw` is the body as received.
    pub fn check_scope(&self, raw: &Value) -> Result<(), Refusal> {
        if carries_identity_hash(raw) {
            return Err(Refusal::non_field(IDENTITY_HASH_REFUSED));
        }
        if matches!(
            self.transfer_mode,
            TransferMode::MetadataAndRawMedia | TransferMode::MetadataRawAndProcessedMedia
        ) {
            return Err(Refusal::field(
                "transfer_mode",
                "Raw media transfer is not permitted. Only anonymized metadata or anonymized processed media may be transferred.",
            ));
        }
        Ok(())
    }

    /// The row rules, after the hub resolved nodes and center: privacy boundary,
    /// hashes, eligibility, the strict row schemas, segment linkage, pseudonyms.
    pub fn check_rows(&self) -> Result<Rows, Refusal> {
        let rows_obj = self.resource_rows.as_object();
        if let Some(meta) = rows_obj.and_then(|r| r.get("sensitive_meta")?.as_object()) {
            let mut direct: Vec<&str> = meta
                .keys()
                .map(String::as_str)
                .filter(|k| !matches!(*k, "patient_uuid" | "examination_uuid"))
                .collect();
            direct.sort_unstable();
            if !direct.is_empty() {
                return Err(Refusal::field(
                    "resource_rows",
                    format!(
                        "Direct identity fields are prohibited in hub transfers: {}",
                        direct.join(", ")
                    ),
                ));
            }
        }
        if rows_obj
            .and_then(|r| r.get("raw_pdf_file")?.as_object())
            .is_some_and(|f| f.contains_key("text"))
        {
            return Err(Refusal::field(
                "resource_rows",
                "Raw report text is prohibited in hub transfers; use only validated anonymized_text.",
            ));
        }
        let processed = self.transfer_mode == TransferMode::MetadataAndProcessedMedia;
        let rows = match self.resource_kind {
            ResourceKind::Video => Rows::Video(self.check_video(processed)?),
            ResourceKind::Report => Rows::Report(self.check_report(processed)?),
            ResourceKind::Study => return Err(Refusal::field(
                "resource_kind",
                "this hub accepts video and report transfers; study ledgers are not stored here",
            )),
        };
        if let Err(e) = serde_json::from_value::<ProcessingSnapshot>(self.processing_snapshot_raw())
        {
            return Err(Refusal::field(
                "resource_rows",
                format!("processing_snapshot: {e}"),
            ));
        }
        Ok(rows)
    }

    fn processing_snapshot_raw(&self) -> Value {
        serde_json::to_value(&self.processing_snapshot).unwrap_or_default()
    }

    fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, Refusal> {
        serde_json::from_value(self.resource_rows.clone())
            .map_err(|e| Refusal::field("resource_rows", format!("resource_rows: {e}")))
    }

    /// The row that names the resource (`file_key`), whose `hash_key` must be present and
    /// equal `resource_hash`: the same rule, in the reference's words, for videos and
    /// reports.
    fn identity_row(&self, kind: &str, file_key: &str, hash_key: &str) -> Result<&Value, Refusal> {
        let file = self
            .resource_rows
            .get(file_key)
            .filter(|f| !f.is_null())
            .ok_or_else(|| {
                Refusal::field(
                    "resource_rows",
                    format!("resource_rows.{file_key} is required for {kind} transfers"),
                )
            })?;
        let hash = file
            .get(hash_key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("");
        if hash.is_empty() {
            return Err(Refusal::field(
                "resource_rows",
                format!("resource_rows.{file_key}.{hash_key} is required"),
            ));
        }
        if hash != self.resource_hash {
            return Err(Refusal::field(
                "resource_hash",
                format!("resource_hash must match resource_rows.{file_key}.{hash_key}"),
            ));
        }
        Ok(file)
    }

    fn check_video(&self, processed: bool) -> Result<VideoRows, Refusal> {
        let file = self.identity_row("video", "video_file", "raw_video_hash")?;
        if processed
            && file
                .get("processed_video_hash")
                .and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(Refusal::field(
                "resource_rows",
                "resource_rows.video_file.processed_video_hash is required when processed video media will be uploaded",
            ));
        }
        let state = self
            .resource_rows
            .get("video_state")
            .cloned()
            .unwrap_or_default();
        let flag = |k: &str| state.get(k) == Some(&Value::Bool(true));
        eligible(
            "video",
            anonymization::status(anonymization::Resource::Video, &state),
            &[
                "anonymized",
                "sensitive_meta_processed",
                "anonymization_validated",
                "outside_segments_removed",
            ],
            &flag,
        )?;
        processed_state_hash(&state, processed, "video_state")?;
        let rows: VideoRows = self.typed()?;
        check_video_values(&rows)?;
        for s in &rows.video_segments {
            if s.get("source_node_key").and_then(Value::as_str) != Some(&self.source_node_key) {
                return Err(Refusal::field(
                    "resource_rows",
                    "video segment source_node_key must match transfer source_node_key",
                ));
            }
        }
        check_pseudonyms(rows.sensitive_meta.as_ref())?;
        Ok(rows)
    }

    fn check_report(&self, processed: bool) -> Result<ReportRows, Refusal> {
        self.identity_row("report", "raw_pdf_file", "pdf_hash")?;
        let state = self
            .resource_rows
            .get("raw_pdf_state")
            .cloned()
            .unwrap_or_default();
        let flag = |k: &str| state.get(k) == Some(&Value::Bool(true));
        eligible(
            "report",
            anonymization::status(anonymization::Resource::Report, &state),
            &[
                "anonymized",
                "sensitive_meta_processed",
                "anonymization_validated",
            ],
            &flag,
        )?;
        processed_state_hash(&state, processed, "raw_pdf_state")?;
        let rows: ReportRows = self.typed()?;
        if rows.raw_pdf_file.anonymized_text.trim().is_empty() {
            return Err(Refusal::field(
                "resource_rows",
                "anonymized_text must not be blank",
            ));
        }
        if let Some(h) = rows
            .raw_pdf_state
            .as_ref()
            .and_then(|s| s.processed_file_sha256.as_deref())
        {
            sha256_hex(h, "processed_file_sha256")?;
        }
        check_report_rows(&rows.reports)?;
        check_pseudonyms(rows.sensitive_meta.as_ref())?;
        Ok(rows)
    }
}

/// endoreg-db's derived anonymization state must be `validated`, and each named flag
/// literally `true`.
fn eligible(
    kind: &str,
    status: &str,
    required: &[&str],
    flag: &dyn Fn(&str) -> bool,
) -> Result<(), Refusal> {
    if status != "validated" {
        return Err(Refusal::field(
            "resource_rows",
            format!(
                "{kind} transfer is only allowed for anonymized data that was explicitly validated. \
                 Current anonymization_status='{status}' is not eligible."
            ),
        ));
    }
    if required.iter().any(|f| !flag(f)) {
        return Err(Refusal::field(
            "resource_rows",
            format!(
                "{kind} transfer requires completed and validated anonymization stages: {}",
                required.join(", ")
            ),
        ));
    }
    Ok(())
}

fn processed_state_hash(state: &Value, processed: bool, path: &str) -> Result<(), Refusal> {
    let h = state
        .get("processed_file_sha256")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if processed && h.is_empty() {
        return Err(Refusal::field(
            "resource_rows",
            format!("resource_rows.{path}.processed_file_sha256 is required for processed-media transfer"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
