//! The `NAME.json` sidecar of a preanonymized carrier: the keys the SAP import writes
//! (SPEC §6). Validated here so a malformed sidecar is quarantined with its reason.

use std::path::Path;

/// The string keys a sidecar may carry (plus the object `raw_columns`): what the SAP
/// import writes and the watcher accepts.
pub const SIDECAR_STRING_KEYS: &[&str] = &[
    "external_id",
    "external_id_origin",
    "casenumber",
    "text",
    "anonymized_text",
    "patient_gender",
    "source_system",
    "source_document_type",
    "original_document_id",
    "original_document_version",
    "center_key",
    "center_name",
    "examination_date",
    "examination_time",
];

/// The parsed sidecar and the sha256 of its bytes (part of the pair's identity).
pub fn load(path: &Path) -> Result<(serde_json::Value, String), String> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read sidecar: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{name}: sidecar is not valid JSON: {e} (line {}, column {}); fix the JSON and drop the pair again", e.line(), e.column()))?;
    validate(&v).map_err(|e| format!("{name}: {e}"))?;
    Ok((
        v,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
    ))
}

pub fn validate(v: &serde_json::Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("sidecar must be a JSON object")?;
    for (k, val) in obj {
        if SIDECAR_STRING_KEYS.contains(&k.as_str()) {
            if !val.is_string() {
                return Err(format!("sidecar key {k:?} must be a string"));
            }
        } else if k == "raw_columns" {
            if !val.is_object() {
                return Err("sidecar key \"raw_columns\" must be an object".into());
            }
        } else {
            return Err(format!(
                "unknown sidecar key {k:?}; known keys: {}, raw_columns",
                SIDECAR_STRING_KEYS.join(", ")
            ));
        }
    }
    if let Some(g) = obj.get("patient_gender").and_then(|g| g.as_str()) {
        if !["male", "female", "other", "unknown"].contains(&g) {
            return Err(format!(
                "patient_gender {g:?} must be male, female, other or unknown"
            ));
        }
    }
    Ok(())
}
