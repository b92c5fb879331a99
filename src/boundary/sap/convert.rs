//! Tables → preanonymized pairs (text + sidecar), as endoreg-db's importer groups them:
//! rows by (PatientNr, FallNr); one pair per text-bearing row (cwd, briefe,
//! radiologie); a case with no text-bearing row gets one pair from its
//! highest-priority anchor row.

use std::collections::BTreeMap;

use serde_json::Value;

use super::tables::{parse_datetime, Table};

/// Anchor tables for cases without text, highest priority first.
const ANCHOR_PRIORITY: &[&str] = &[
    "pathodocs",
    "prozeduren",
    "diagnosen",
    "labor",
    "bewegungen",
    "meona_medikamente",
    "stammdaten",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub stem: String,
    pub text: String,
    pub sidecar: BTreeMap<String, Value>,
}

pub struct Center<'a> {
    pub key: &'a str,
    pub name: &'a str,
}

/// Lowercase ASCII letters and digits; every other run of characters becomes one '-'.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-').to_string();
    if t.is_empty() {
        "x".into()
    } else {
        t
    }
}

fn gender(g: &str) -> &'static str {
    match g.trim().to_ascii_lowercase().as_str() {
        "m" | "male" | "männlich" | "maennlich" => "male",
        "w" | "f" | "female" | "weiblich" => "female",
        "d" | "x" | "other" | "divers" => "other",
        _ => "unknown",
    }
}

fn text_of(t: &Table, row: &[String]) -> Option<String> {
    let text = match t.kind {
        "cwd" => t.get(row, "pmdAnam").to_string(),
        "briefe" => t.get(row, "strText").to_string(),
        "radiologie" => ["kurbefund", "befund", "beurteilung"]
            .iter()
            .map(|c| t.get(row, c))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => return None,
    };
    // SAP exports escape line breaks inside a cell.
    let text = text.replace("\\n", "\n");
    (!text.trim().is_empty()).then_some(text)
}

fn date_column(kind: &str) -> &'static str {
    match kind {
        "briefe" => "dateErstellzeit",
        "prozeduren" | "bewegungen" => "Beginnzeit",
        "meona_medikamente" => "Verabreichungszeit",
        _ => "Dokumentzeit",
    }
}

/// A case summary for anchors without free text: one `column: value` line per column.
fn summary_of(t: &Table, row: &[String]) -> String {
    t.header
        .iter()
        .zip(row)
        .filter(|(h, v)| {
            !v.trim().is_empty()
                && !h.eq_ignore_ascii_case("PatientNr")
                && !h.eq_ignore_ascii_case("FallNr")
        })
        .map(|(h, v)| format!("{h}: {}", v.trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One pair to be: the case it belongs to, its document type and text, and the row
/// it came from.
struct Source<'a> {
    patient: String,
    case: String,
    doctype: &'static str,
    text: String,
    table: &'a Table,
    row: &'a [String],
}

pub fn pairs(tables: &[Table], center: &Center) -> Vec<Pair> {
    // Genders by patient from stammdaten/patienten.
    let mut genders: BTreeMap<String, &'static str> = BTreeMap::new();
    for t in tables
        .iter()
        .filter(|t| t.kind == "stammdaten" || t.kind == "patienten")
    {
        for r in &t.rows {
            genders.insert(
                t.get(r, "PatientNr").to_string(),
                gender(t.get(r, "Geschlecht")),
            );
        }
    }
    let mut out: Vec<Source> = Vec::new();
    let mut cases_with_text = std::collections::BTreeSet::new();
    for t in tables {
        for r in &t.rows {
            if let Some(text) = text_of(t, r) {
                let key = (
                    t.get(r, "PatientNr").to_string(),
                    t.get(r, "FallNr").to_string(),
                );
                cases_with_text.insert(key.clone());
                out.push(Source {
                    patient: key.0,
                    case: key.1,
                    doctype: t.kind,
                    text,
                    table: t,
                    row: r,
                });
            }
        }
    }
    // Cases without a text-bearing row: one pair from the best anchor row.
    let mut anchors: BTreeMap<(String, String), (usize, &Table, &Vec<String>)> = BTreeMap::new();
    for t in tables {
        let Some(prio) = ANCHOR_PRIORITY.iter().position(|k| *k == t.kind) else {
            continue;
        };
        for r in &t.rows {
            let key = (
                t.get(r, "PatientNr").to_string(),
                t.get(r, "FallNr").to_string(),
            );
            if key.1.is_empty() || cases_with_text.contains(&key) {
                continue;
            }
            let better = anchors.get(&key).is_none_or(|(p, _, _)| prio < *p);
            if better {
                anchors.insert(key, (prio, t, r));
            }
        }
    }
    for ((patient, case), (_, t, r)) in anchors {
        out.push(Source {
            patient,
            case,
            doctype: t.kind,
            text: summary_of(t, r),
            table: t,
            row: r,
        });
    }
    out.into_iter()
        .enumerate()
        .map(
            |(
                i,
                Source {
                    patient,
                    case,
                    doctype,
                    text,
                    table: t,
                    row: r,
                },
            )| {
                let mut sc: BTreeMap<String, Value> = BTreeMap::new();
                let mut put = |k: &str, v: &str| {
                    if !v.trim().is_empty() {
                        sc.insert(k.to_string(), Value::String(v.to_string()));
                    }
                };
                put("external_id", &patient);
                put("external_id_origin", &format!("sap_ish:{}", center.key));
                put("casenumber", &case);
                put("text", &text);
                put("anonymized_text", &text);
                put(
                    "patient_gender",
                    genders.get(&patient).copied().unwrap_or("unknown"),
                );
                put("source_system", "sap_ish");
                put("source_document_type", doctype);
                put("original_document_id", t.get(r, "Dokumentnummer"));
                put("original_document_version", t.get(r, "Dokumentversion"));
                put("center_key", center.key);
                put("center_name", center.name);
                if let Some((d, time)) = parse_datetime(t.get(r, date_column(t.kind))) {
                    put("examination_date", &d);
                    put("examination_time", time.as_deref().unwrap_or(""));
                }
                let raw: serde_json::Map<String, Value> = t
                    .header
                    .iter()
                    .zip(r.iter())
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(h, v)| (h.clone(), Value::String(v.trim().to_string())))
                    .collect();
                if !raw.is_empty() {
                    sc.insert("raw_columns".into(), Value::Object(raw));
                }
                Pair {
                    stem: format!(
                        "sap_ish_{:04}_{}_{}_{}",
                        i + 1,
                        slug(doctype),
                        slug(&patient),
                        slug(&case)
                    ),
                    text,
                    sidecar: sc,
                }
            },
        )
        .collect()
}

/// Sorted keys, two-space indent, every non-ASCII character escaped (`\uXXXX`, with
/// surrogate pairs): the shape of Python's `json.dumps(sort_keys=True, indent=2)`.
pub fn sidecar_json(sc: &BTreeMap<String, Value>) -> String {
    let pretty = serde_json::to_string_pretty(sc).expect("strings serialize");
    let mut out = String::with_capacity(pretty.len());
    for c in pretty.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_is_ascii_sorted_and_round_trips() {
        let mut sc = BTreeMap::new();
        sc.insert("text".to_string(), Value::String("Größe 😀".into()));
        sc.insert("casenumber".to_string(), Value::String("7".into()));
        let j = sidecar_json(&sc);
        assert!(j.is_ascii());
        assert!(j.find("casenumber").unwrap() < j.find("text").unwrap());
        assert!(j.contains("\\u00df") && j.contains("\\ud83d\\ude00"), "{j}");
        let back: BTreeMap<String, Value> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, sc);
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("P-00 12/ä"), "p-00-12");
        assert_eq!(slug("///"), "x");
    }
}
