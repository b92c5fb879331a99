//! `resource_rows`, the strict video and report rows of a register body (endoreg-db
//! `schemas/persisted_json.py`, extra="forbid"), and the value rules the receiver
//! applies to them after the serializer's field rules.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::reply::Refusal;
use super::ResourceKind;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoRows {
    pub video_file: VideoFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_meta: Option<SensitiveMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_state: Option<VideoState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_history: Option<ProcessingHistory>,
    #[serde(default)]
    pub frame_annotations: Vec<FrameAnnotation>,
    /// Segments carry provenance timeline coordinates (lx-dtypes); the hub keeps them
    /// as sent after the linkage checks endoreg-db makes on its side of the row.
    #[serde(default)]
    pub video_segments: Vec<Map<String, Value>>,
    #[serde(default)]
    pub reports: Vec<ReportRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFile {
    pub raw_video_hash: String,
    #[serde(default)]
    pub processed_video_hash: Option<String>,
    #[serde(default)]
    pub fps: Option<f64>,
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub frame_count: Option<u64>,
    #[serde(default)]
    pub width: Option<u64>,
    #[serde(default)]
    pub height: Option<u64>,
    #[serde(default)]
    pub suffix: Option<String>,
}

/// The processing flags of a video (`VideoState`); four must be true to transfer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_extracted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_initialized: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_meta_extracted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_meta_extracted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_prediction_completed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvs_created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_annotations_generated: Option<bool>,
    #[serde(default)]
    pub sensitive_meta_processed: Option<bool>,
    #[serde(default)]
    pub anonymized: Option<bool>,
    #[serde(default)]
    pub anonymization_validated: Option<bool>,
    #[serde(default)]
    pub outside_segments_removed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_annotations_created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_annotations_validated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_created: Option<bool>,
    #[serde(default)]
    pub processed_file_sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRows {
    pub raw_pdf_file: RawPdfFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_meta: Option<SensitiveMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_pdf_state: Option<RawPdfState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_history: Option<ProcessingHistory>,
    #[serde(default)]
    pub reports: Vec<ReportRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPdfFile {
    pub pdf_hash: String,
    pub anonymized_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report_processing_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_report_processed: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPdfState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_meta_extracted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_prediction_completed: Option<bool>,
    #[serde(default)]
    pub sensitive_meta_processed: Option<bool>,
    #[serde(default)]
    pub anonymized: Option<bool>,
    #[serde(default)]
    pub anonymization_validated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_started: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was_created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf_meta_extracted: Option<bool>,
    #[serde(default)]
    pub processed_file_sha256: Option<String>,
}

/// Hub-scoped pseudonyms (UUID version 8), never local ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitiveMeta {
    pub patient_uuid: uuid::Uuid,
    pub examination_uuid: uuid::Uuid,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingHistory {
    #[serde(default)]
    pub file_hash: Option<String>,
    #[serde(default)]
    pub success: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameAnnotation {
    pub annotation_id: IntOrText,
    #[serde(default)]
    pub annotator: Option<String>,
    #[serde(default)]
    pub raw_video_hash: Option<String>,
    pub frame_number: u64,
    pub frame_relative_path: String,
    #[serde(default)]
    pub frame_timestamp: Option<f64>,
    pub label_name: String,
    pub value: bool,
    #[serde(default)]
    pub float_value: Option<f64>,
    pub information_source_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrText {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRow {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub patient_examination: Option<u64>,
    pub template_name: String,
    #[serde(default)]
    pub template_version: Option<IntOrText>,
    #[serde(default)]
    pub template_hash: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub editor_payload: Option<Map<String, Value>>,
    #[serde(default)]
    pub rendered_text: Option<String>,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub finalized_at: Option<String>,
}

/// The typed rows of a checked body.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    Video(VideoRows),
    Report(ReportRows),
}

impl Rows {
    /// The hash of the media the site will upload (the plaintext of the envelope).
    pub fn processed_media_hash(&self) -> Option<&str> {
        match self {
            Rows::Video(v) => v.video_file.processed_video_hash.as_deref(),
            Rows::Report(r) => r
                .raw_pdf_state
                .as_ref()
                .and_then(|s| s.processed_file_sha256.as_deref()),
        }
    }
}

/// The processed hash the status body reports, read from the rows as the hub keeps
/// them (blank when absent, as endoreg-db's serializer gives it).
pub fn processed_media_hash(kind: ResourceKind, rows: &Value) -> String {
    let v = match kind {
        ResourceKind::Video => &rows["video_file"]["processed_video_hash"],
        _ => &rows["raw_pdf_state"]["processed_file_sha256"],
    };
    v.as_str().unwrap_or("").trim().to_string()
}

pub(super) fn check_video_values(rows: &VideoRows) -> Result<(), Refusal> {
    let f = &rows.video_file;
    let bad = |what: &str| {
        Err(Refusal::field(
            "resource_rows",
            format!("video_file.{what}"),
        ))
    };
    if f.fps.is_some_and(|x| x < 0.0) {
        return bad("fps must be >= 0");
    }
    if f.duration.is_some_and(|x| x < 0.0) {
        return bad("duration must be >= 0");
    }
    if f.width == Some(0) {
        return bad("width must be >= 1");
    }
    if f.height == Some(0) {
        return bad("height must be >= 1");
    }
    if let Some(h) = rows
        .video_state
        .as_ref()
        .and_then(|s| s.processed_file_sha256.as_deref())
    {
        sha256_hex(h, "processed_file_sha256")?;
    }
    for a in &rows.frame_annotations {
        if a.frame_timestamp.is_some_and(|t| t < 0.0)
            || [
                &a.frame_relative_path,
                &a.label_name,
                &a.information_source_name,
            ]
            .iter()
            .any(|s| s.trim().is_empty())
        {
            return Err(Refusal::field(
                "resource_rows",
                "frame annotation fields must not be blank and frame_timestamp must be >= 0",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &rows.video_segments {
        if s.get("raw_video_hash").and_then(Value::as_str) != Some(f.raw_video_hash.trim()) {
            return Err(Refusal::field(
                "resource_rows",
                "video segment raw_video_hash must match video_file",
            ));
        }
        let Some(frames) = f.frame_count.filter(|n| *n > 0) else {
            return Err(Refusal::field(
                "resource_rows",
                "video_file.frame_count is required when video_segments are present",
            ));
        };
        let end = s.get("end_frame_number_exclusive").and_then(Value::as_u64);
        if end.is_none_or(|e| e > frames) {
            return Err(Refusal::field(
                "resource_rows",
                "video segment end_frame_number_exclusive exceeds video frame_count",
            ));
        }
        let id = (
            s.get("source_node_key")
                .cloned()
                .unwrap_or_default()
                .to_string(),
            s.get("source_segment_id")
                .cloned()
                .unwrap_or_default()
                .to_string(),
        );
        if !seen.insert(id) {
            return Err(Refusal::field(
                "resource_rows",
                "video segment source identity must be unique",
            ));
        }
    }
    check_report_rows(&rows.reports)
}

pub(super) fn check_report_rows(reports: &[ReportRow]) -> Result<(), Refusal> {
    for r in reports {
        if r.template_name.trim().is_empty()
            || r.status.as_deref().is_some_and(|s| s != "final")
            || r.is_active == Some(false)
            || r.version == Some(0)
            || r.id == Some(0)
            || r.patient_examination == Some(0)
        {
            return Err(Refusal::field(
                "resource_rows",
                "reports rows need a template_name, status \"final\", is_active true and ids >= 1",
            ));
        }
    }
    Ok(())
}

pub(super) fn check_pseudonyms(meta: Option<&SensitiveMeta>) -> Result<(), Refusal> {
    if let Some(m) = meta {
        if [m.patient_uuid, m.examination_uuid]
            .iter()
            .any(|u| u.get_version_num() != 8)
        {
            return Err(Refusal::field(
                "resource_rows",
                "Hub records require site-salted UUIDv8 pseudonyms, not local UUIDs",
            ));
        }
    }
    Ok(())
}

pub(super) fn sha256_hex(v: &str, field: &str) -> Result<(), Refusal> {
    let v = v.trim();
    if v.len() != 64 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Refusal::field(
            "resource_rows",
            format!("{field} must be a 64-character SHA-256 hex digest"),
        ));
    }
    Ok(())
}
