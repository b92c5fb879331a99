//! The sidecar of a preanonymized carrier: `NAME.json`, `NAME.yaml` or `NAME.yml`, as
//! endoreg-db's watcher reads them (SPEC §6). Both schemas a migrated host may hold are
//! accepted: the older lenient one (unknown keys ignored, nulls allowed, `external_id`
//! alone) and the current one's new fields with their rules (hashes, dates, the
//! validation fields). Unknown keys are kept, so provenance shows everything the
//! sidecar said.

use std::path::Path;

use serde_json::{Map, Value};

/// Sidecar suffixes in the order endoreg-db looks for them.
pub const SIDECAR_SUFFIXES: &[&str] = &["json", "yaml", "yml"];

/// How a known key's value is checked and normalised.
#[derive(Clone, Copy)]
enum Field {
    /// A string, stripped; blank becomes null.
    Text,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM[:SS[.f]]`.
    Time,
    /// ISO 8601 date and time, with or without an offset.
    DateTime,
    Bool,
    /// 64 lower-case hex characters, exactly (patient and examination hashes).
    IdentityHash,
    /// 64 hex characters; stripped and lower-cased.
    Sha256,
    Object,
}

const FIELDS: &[(&str, Field)] = &[
    ("external_id", Field::Text),
    ("external_id_origin", Field::Text),
    ("casenumber", Field::Text),
    ("patient_first_name", Field::Text),
    ("patient_last_name", Field::Text),
    ("patient_dob", Field::Date),
    ("patient_gender", Field::Text),
    ("examination_date", Field::Date),
    ("examination_time", Field::Time),
    ("anonymized_text", Field::Text),
    ("text", Field::Text),
    ("file_path", Field::Text),
    ("endoscope_type", Field::Text),
    ("endoscope_sn", Field::Text),
    ("patient_hash", Field::IdentityHash),
    ("examination_hash", Field::IdentityHash),
    ("center_key", Field::Text),
    ("center_name", Field::Text),
    ("source_system", Field::Text),
    ("file_sha256", Field::Sha256),
    ("human_anonymization_validated", Field::Bool),
    ("validated_by", Field::Text),
    ("validated_at", Field::DateTime),
    ("source_document_type", Field::Text),
    ("original_document_id", Field::Text),
    ("original_document_version", Field::Text),
    ("raw_columns", Field::Object),
];

/// The keys a sidecar may carry with a meaning (others are kept, unread).
pub fn known_keys() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(k, _)| *k)
}

/// A parsed, checked sidecar.
#[derive(Debug)]
pub struct Sidecar {
    /// The sidecar with known values normalised (stripped, blanks null, gender mapped).
    pub value: Value,
    /// Keys neither schema knows: kept in `value`, listed for provenance.
    pub unknown_keys: Vec<String>,
    /// sha256 of the file's bytes (part of the pair's identity).
    pub sha256: String,
}

impl Sidecar {
    /// A declared text value (after normalisation), if any.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(Value::as_str)
    }
}

/// Read and check the sidecar at `path`; the error is the quarantine reason.
pub fn load(path: &Path) -> Result<Sidecar, String> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read sidecar: {e}"))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let raw = parse(&bytes, &ext).map_err(|e| format!("{name}: {e}"))?;
    let (value, unknown_keys) = validate(&raw).map_err(|e| format!("{name}: {e}"))?;
    Ok(Sidecar {
        value,
        unknown_keys,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
    })
}

/// UTF-8 JSON for `.json`, YAML for `.yaml`/`.yml`; the top level must be a mapping.
pub fn parse(bytes: &[u8], ext: &str) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "sidecar is not UTF-8: save it as UTF-8 and drop the pair again")?;
    let v = if ext == "json" {
        serde_json::from_str::<Value>(text).map_err(|e| {
            format!(
                "sidecar is not valid JSON: {e} (line {}, column {}); fix the JSON and drop the pair again",
                e.line(),
                e.column()
            )
        })?
    } else {
        let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| {
            format!("sidecar is not valid YAML: {e}; fix the YAML and drop the pair again")
        })?;
        match docs.as_slice() {
            [one] => yaml_to_json(one)?,
            [] => Value::Null,
            _ => return Err("sidecar holds more than one YAML document: keep one".into()),
        }
    };
    if !v.is_object() {
        return Err(
            "sidecar must be a mapping of keys to values (a JSON object or YAML mapping)".into(),
        );
    }
    Ok(v)
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Result<Value, String> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(r.clone())),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => return Err("sidecar keys must be plain strings".into()),
                };
                m.insert(key, yaml_to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(
                "sidecar uses a YAML alias or an unreadable value: write plain values".into(),
            )
        }
    })
}

/// The sidecar's known keys checked and normalised; unknown keys kept as they are and
/// listed. Every field may be null or absent.
pub fn validate(v: &Value) -> Result<(Value, Vec<String>), String> {
    let obj = v.as_object().ok_or("sidecar must be a mapping")?;
    let mut out = Map::new();
    let mut unknown = Vec::new();
    for (k, val) in obj {
        let Some((_, field)) = FIELDS.iter().find(|(name, _)| name == k) else {
            unknown.push(k.clone());
            out.insert(k.clone(), val.clone());
            continue;
        };
        let norm = if val.is_null() {
            Value::Null
        } else {
            check(*field, val).map_err(|why| format!("sidecar key {k:?} {why}"))?
        };
        out.insert(k.clone(), norm);
    }
    if let Some(Value::String(g)) = out.get("patient_gender") {
        let g = normalize_patient_gender(g);
        out.insert("patient_gender".into(), Value::String(g));
    }
    // endoreg-db 1.6.5 also wants external_id with external_id_origin; the older schema
    // (and lxgate's own earlier sidecars) did not, and a migrated host holds both.
    Ok((Value::Object(out), unknown))
}

fn check(field: Field, v: &Value) -> Result<Value, String> {
    let s = v.as_str();
    match field {
        Field::Text => {
            let s = s.ok_or("must be a string or null")?.trim();
            Ok(if s.is_empty() {
                Value::Null
            } else {
                Value::String(s.to_string())
            })
        }
        Field::Date => {
            let s = s.ok_or("must be a date YYYY-MM-DD or null")?;
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("{s:?} is not a date YYYY-MM-DD"))?;
            Ok(v.clone())
        }
        Field::Time => {
            let s = s.ok_or("must be a time HH:MM[:SS] or null")?;
            ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .find_map(|f| chrono::NaiveTime::parse_from_str(s, f).ok())
                .ok_or(format!("{s:?} is not a time HH:MM[:SS]"))?;
            Ok(v.clone())
        }
        Field::DateTime => {
            let s = s.ok_or("must be an ISO 8601 date and time or null")?;
            let t = s.replacen(' ', "T", 1);
            let ok = chrono::DateTime::parse_from_rfc3339(&t).is_ok()
                || ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
                    .iter()
                    .any(|f| chrono::NaiveDateTime::parse_from_str(&t, f).is_ok());
            if !ok {
                return Err(format!(
                    "{s:?} is not an ISO 8601 date and time (e.g. 2026-01-31T14:05:00+01:00)"
                ));
            }
            Ok(v.clone())
        }
        Field::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Ok(Value::Bool(n.as_i64() == Some(1)))
            }
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" | "t" | "y" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" | "f" | "n" => Ok(Value::Bool(false)),
                _ => Err(format!("{s:?} is not true or false")),
            },
            _ => Err("must be true, false or null".into()),
        },
        Field::IdentityHash => {
            let s = s.ok_or("must be a string or null")?;
            if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                Ok(v.clone())
            } else {
                Err("must be a SHA-256 digest: 64 lower-case hex characters".into())
            }
        }
        Field::Sha256 => {
            let s = s
                .ok_or("must be a string or null")?
                .trim()
                .to_ascii_lowercase();
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Value::String(s))
            } else {
                Err("must be a SHA-256 digest: 64 hex characters".into())
            }
        }
        Field::Object => {
            if v.is_object() {
                Ok(v.clone())
            } else {
                Err("must be an object (mapping) or null".into())
            }
        }
    }
}

/// endoreg-db's `normalize_patient_gender`: the usual German and English spellings and
/// letters map to male, female, other, unknown; any other value passes through.
pub fn normalize_patient_gender(g: &str) -> String {
    let folded = g.trim().to_lowercase();
    match folded.as_str() {
        "m" | "male" | "männlich" | "maennlich" => "male".into(),
        "w" | "f" | "female" | "weiblich" => "female".into(),
        "d" | "divers" | "other" => "other".into(),
        "u" | "unbekannt" | "unknown" => "unknown".into(),
        _ => g.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(j: &str) -> Value {
        validate(&serde_json::from_str(j).unwrap()).unwrap().0
    }
    fn err(j: &str) -> String {
        validate(&serde_json::from_str(j).unwrap()).unwrap_err()
    }

    #[test]
    fn genders_are_normalised_as_the_reference_and_others_pass_through() {
        for (g, want) in [
            ("W", "female"),
            ("M", "male"),
            ("Männlich", "male"),
            ("d", "other"),
            ("Unbekannt", "unknown"),
            ("x", "x"),
            ("nonbinary", "nonbinary"),
        ] {
            let v = ok(&format!(r#"{{"patient_gender": "{g}"}}"#));
            assert_eq!(v["patient_gender"], want, "{g}");
        }
    }

    #[test]
    fn nulls_blanks_and_unknown_keys_are_accepted_and_kept() {
        let (v, unknown) = validate(
            &serde_json::json!({"external_id": null, "casenumber": "  ", "legacy_note": 3, "text": " t "}),
        )
        .unwrap();
        assert_eq!(v["casenumber"], Value::Null);
        assert_eq!(v["text"], "t");
        assert_eq!(v["legacy_note"], 3);
        assert_eq!(unknown, vec!["legacy_note"]);
    }

    #[test]
    fn the_current_schemas_rules_hold() {
        let h = "a".repeat(64);
        let v = ok(&format!(
            r#"{{"patient_hash": "{h}", "file_sha256": " {} ", "human_anonymization_validated": "yes", "validated_at": "2026-01-31T14:05:00+01:00", "patient_dob": "1970-01-02", "examination_time": "08:15"}}"#,
            "AB".repeat(32)
        ));
        assert_eq!(v["file_sha256"], "ab".repeat(32));
        assert_eq!(v["human_anonymization_validated"], true);
        for (j, needle) in [
            (
                format!(r#"{{"patient_hash": "{}"}}"#, "A".repeat(64)),
                "lower-case",
            ),
            (r#"{"file_sha256": "abc"}"#.into(), "64 hex"),
            (r#"{"patient_dob": "02.01.1970"}"#.into(), "YYYY-MM-DD"),
            (r#"{"validated_at": "yesterday"}"#.into(), "ISO 8601"),
            (
                r#"{"human_anonymization_validated": "maybe"}"#.into(),
                "true or false",
            ),
            (r#"{"casenumber": 7}"#.into(), "string"),
            (r#"{"raw_columns": []}"#.into(), "object"),
        ] {
            let e = err(&j);
            assert!(e.contains(needle), "{j}: {e}");
        }
    }

    #[test]
    fn yaml_sidecars_parse_like_json_ones() {
        let y = parse(
            b"center_key: A\ncasenumber: '0042'\nexternal_id: null\nraw_columns:\n  x: y\n",
            "yaml",
        )
        .unwrap();
        assert_eq!(
            y,
            serde_json::json!({"center_key": "A", "casenumber": "0042", "external_id": null, "raw_columns": {"x": "y"}})
        );
        assert!(parse(b"- a\n- b\n", "yml").unwrap_err().contains("mapping"));
        assert!(parse(b"a: [\n", "yml")
            .unwrap_err()
            .contains("not valid YAML"));
    }
}
