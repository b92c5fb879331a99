//! Rows → preanonymized pairs (text + sidecar), exactly as endoreg-db 1.6.5's
//! converter (`services/interoperability/sap_ish_import.py`) builds them:
//! rows grouped by case (PatientNr, FallNr), a patient's case-less rows joined to each
//! of their cases; per case one pair for each text row (cwd, briefe, radiologie), or
//! one from its anchor row with a case summary; then one pair per patient without any
//! case. Pairs are numbered over the whole bundle.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use super::sidecar::Json;
use super::tables::Row;
use super::values;

/// Table types whose rows carry report text.
const TEXT_TYPES: &[&str] = &["cwd", "briefe", "radiologie"];

/// Anchor priority, highest first; also the order of the case summary's sections.
const ANCHOR_TYPES: &[&str] = &[
    "cwd",
    "briefe",
    "radiologie",
    "pathodocs",
    "prozeduren",
    "diagnosen",
    "labor",
    "bewegungen",
    "meona_medikamente",
    "stammdaten",
    "patienten",
];

/// A row's timestamp: the first of these columns that holds one.
const TIMESTAMP_FIELDS: &[&str] = &[
    "dokumentzeit",
    "date_erstellzeit",
    "zugangszeit",
    "diagnosezeit",
    "beginnzeit",
    "apply_date",
    "prepare_date",
    "creation_date",
];

/// The report text columns, in the order the first non-blank one is taken.
const TEXT_FIELDS: &[&str] = &["pmd_anam", "str_text", "befund", "kurbefund", "beurteilung"];

#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub stem: String,
    /// The carrier `.txt`: the text and one newline.
    pub text: String,
    /// The sidecar `.json`, byte for byte.
    pub sidecar: String,
}

/// The center written into every sidecar.
pub struct Center<'a> {
    pub key: &'a str,
    pub name: &'a str,
}

/// The longest file name Linux takes, in bytes; the sidecar's temporary name
/// (`.<stem>.json.tmp`) is the longest one lxgate writes.
const NAME_MAX: usize = 255;

fn row_time(row: &Row) -> Option<NaiveDateTime> {
    TIMESTAMP_FIELDS.iter().find_map(|f| row.time(f))
}

fn preferred_text(row: &Row) -> Option<&str> {
    TEXT_FIELDS.iter().find_map(|f| row.text(f))
}

fn anchor_rank(t: &str) -> usize {
    ANCHOR_TYPES
        .iter()
        .position(|x| *x == t)
        .unwrap_or(ANCHOR_TYPES.len())
}

/// `_pick_anchor_row`: by type priority, earliest timestamp (none sorts last), file
/// name, row number; the first of equals.
fn anchor<'a>(rows: &[&'a Row]) -> &'a Row {
    rows.iter()
        .min_by(|a, b| {
            (
                anchor_rank(a.document_type),
                row_time(a).unwrap_or_else(values::latest),
                &a.source_file,
                a.row_number,
            )
                .cmp(&(
                    anchor_rank(b.document_type),
                    row_time(b).unwrap_or_else(values::latest),
                    &b.source_file,
                    b.row_number,
                ))
        })
        .copied()
        .expect("a group has rows")
}

fn seconds(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The per-type details of one summary line.
fn details(row: &Row) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(t) = row_time(row) {
        d.push(seconds(t));
    }
    let v = |f: &str| row.text(f).map(str::to_string);
    match row.document_type {
        "diagnosen" => d.extend(v("diagnoseschluessel_1").map(|c| format!("code={c}"))),
        "labor" => {
            d.extend(v("leistungstext").or_else(|| v("leistung")));
            d.extend(v("messwert").map(|m| format!("value={m}")));
        }
        "prozeduren" => d.extend(v("op_code").map(|c| format!("op_code={c}"))),
        "bewegungen" => {
            d.extend(v("behandlungsort"));
            d.extend(v("fachabteilung"));
            d.extend(v("zimmer").map(|r| format!("room={r}")));
        }
        "pathodocs" => {
            d.extend(v("dokumentnummer").map(|x| format!("document_id={x}")));
            d.extend(v("dokumenttyp_id").map(|x| format!("type={x}")));
        }
        "meona_medikamente" => {
            d.extend(v("tradename"));
            d.extend(v("actual_dose").map(|x| format!("dose={x}")));
            d.extend(v("unit_dose_name"));
        }
        _ => {}
    }
    d
}

/// `_build_case_summary`: the text of a pair whose row has no report text.
fn case_summary(rows: &[&Row]) -> String {
    let a = anchor(rows);
    let mut lines = Vec::new();
    let (patient, case) = (a.text("patient_nr"), a.text("fall_nr"));
    if patient.is_some() || case.is_some() {
        lines.push("Case summary generated from SAP IS-H tabular export".to_string());
        lines.extend(patient.map(|p| format!("PatientNr: {p}")));
        lines.extend(case.map(|c| format!("FallNr: {c}")));
    }
    for t in ANCHOR_TYPES {
        let of_type: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.document_type == *t)
            .collect();
        if of_type.is_empty() {
            continue;
        }
        lines.push(format!("{t}: {} row(s)", of_type.len()));
        for r in of_type.iter().take(5) {
            let d = details(r);
            if !d.is_empty() {
                lines.push(format!("- {}", d.join(" | ")));
            }
        }
    }
    values::strip(&lines.join("\n")).to_string()
}

fn columns<'r>(cols: impl Iterator<Item = (&'r str, Option<&'r str>)>) -> Json {
    Json::Obj(
        cols.map(|(k, v)| (k.to_string(), v.map_or(Json::Null, |v| Json::Str(v.into()))))
            .collect(),
    )
}

/// `_build_enriched_raw_columns`.
fn raw_columns(primary: &Row, related: &[&Row]) -> Json {
    let mut by_type: BTreeMap<String, Json> = BTreeMap::new();
    for r in related {
        let entry = Json::Obj(BTreeMap::from([
            ("source_file".into(), Json::Str(r.source_file.to_string())),
            ("row_number".into(), Json::Int(r.row_number as u64)),
            ("raw_columns".into(), columns(r.raw_columns())),
            ("unknown_columns".into(), columns(r.unknown_columns())),
        ]));
        match by_type
            .entry(r.document_type.to_string())
            .or_insert_with(|| Json::Arr(Vec::new()))
        {
            Json::Arr(v) => v.push(entry),
            _ => unreachable!("only arrays are inserted"),
        }
    }
    let files: std::collections::BTreeSet<&str> = related.iter().map(|r| &*r.source_file).collect();
    Json::Obj(BTreeMap::from([
        (
            "primary_row".into(),
            Json::Obj(BTreeMap::from([
                (
                    "document_type".into(),
                    Json::Str(primary.document_type.into()),
                ),
                (
                    "source_file".into(),
                    Json::Str(primary.source_file.to_string()),
                ),
                ("row_number".into(), Json::Int(primary.row_number as u64)),
                ("raw_columns".into(), columns(primary.raw_columns())),
            ])),
        ),
        ("related_rows_by_type".into(), Json::Obj(by_type)),
        (
            "source_files".into(),
            Json::Arr(files.into_iter().map(|f| Json::Str(f.into())).collect()),
        ),
    ]))
}

/// `build_preanonymized_payload` plus `_build_payload_for_case`: the sidecar and the text.
fn payload(primary: &Row, related: &[&Row], center: &Center) -> (BTreeMap<String, Json>, String) {
    let mut p: BTreeMap<String, Json> = BTreeMap::new();
    fn put(p: &mut BTreeMap<String, Json>, k: &str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            p.insert(k.to_string(), Json::Str(v.to_string()));
        }
    }
    let mut put = |k: &str, v: Option<&str>| put(&mut p, k, v);
    let external_id = primary
        .text("patient_nr")
        .or_else(|| primary.text("source_patient_id"));
    put("external_id", external_id);
    put("casenumber", primary.text("fall_nr"));
    put("source_system", Some("sap_ish"));
    put(
        "original_document_id",
        primary
            .text("dokumentnummer")
            .or_else(|| primary.text("main_order_id"))
            .or_else(|| primary.text("medication_row_id")),
    );
    put("original_document_version", primary.text("dokumentversion"));
    put("center_name", Some(center.name));
    put("center_key", Some(center.key));
    let origin = if center.key.is_empty() {
        "sap_ish".to_string()
    } else {
        format!("sap_ish:{}", center.key)
    };
    put("external_id_origin", Some(&origin));
    let text = match preferred_text(primary) {
        Some(t) => t.to_string(),
        None => case_summary(related),
    };
    put("anonymized_text", Some(&text));
    put("text", Some(&text));
    let gender = values::gender(primary.text("geschlecht")).or_else(|| {
        related
            .iter()
            .find_map(|r| values::gender(r.text("geschlecht")))
    });
    put("patient_gender", gender.as_deref());
    let when = row_time(primary).or_else(|| related.iter().filter_map(|r| row_time(r)).min());
    if let Some(t) = when {
        put("examination_date", Some(&t.format("%Y-%m-%d").to_string()));
        put("examination_time", Some(&t.format("%H:%M:%S").to_string()));
    }
    p.insert("raw_columns".into(), raw_columns(primary, related));
    p.insert(
        "source_document_type".into(),
        Json::Str(primary.document_type.into()),
    );
    (p, text)
}

/// The name of pair `index`: `sap_ish_<index>_<type>_<patient>_<case>`, each token a slug
/// of the sidecar value it comes from (`external_id`, `casenumber`).
fn stem(index: usize, primary: &Row) -> Result<String, String> {
    let external_id = primary
        .text("patient_nr")
        .or_else(|| primary.text("source_patient_id"));
    let stem = format!(
        "sap_ish_{index:04}_{}_{}_{}",
        values::slug(Some(primary.document_type), "document"),
        values::slug(external_id, "patient"),
        values::slug(primary.text("fall_nr"), &format!("case_{index:04}"))
    );
    if ".".len() + stem.len() + ".json.tmp".len() > NAME_MAX {
        return Err(format!(
            "pair {index} would be named {stem:?}, longer than a file name may be ({NAME_MAX} bytes); shorten the patient or case numbers in the export"
        ));
    }
    Ok(stem)
}

/// What a bundle's rows become before any pair is built: each pair's primary row and the
/// rows of its case, in the reference's numbering. Only references, so a bundle whose
/// pairs are many times its size (every pair carries its whole case) is never held in
/// memory at once, and every name is checked before the first file is written.
pub struct Plan<'r> {
    groups: Vec<Vec<&'r Row>>,
    /// (primary row, index into `groups`), pair 1 first.
    items: Vec<(&'r Row, usize)>,
}

impl<'r> Plan<'r> {
    /// Group rows (in the reference's file and row order) by case (PatientNr, FallNr),
    /// join a patient's case-less rows to each of their cases; per case one pair for each
    /// text row, or its anchor row; then one pair per patient without any case.
    pub fn new(rows: &'r [Row]) -> Plan<'r> {
        let mut cases: BTreeMap<(&str, &str), Vec<&Row>> = BTreeMap::new();
        let mut patients: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for r in rows {
            match (r.text("patient_nr"), r.text("fall_nr")) {
                (Some(p), Some(c)) => cases.entry((p, c)).or_default().push(r),
                (p, _) => {
                    if let Some(p) = p.or_else(|| r.text("source_patient_id")) {
                        patients.entry(p).or_default().push(r);
                    }
                }
            }
        }
        let with_cases: std::collections::BTreeSet<&str> = cases.keys().map(|(p, _)| *p).collect();
        let mut plan = Plan {
            groups: Vec::new(),
            items: Vec::new(),
        };
        for ((patient, _), case_rows) in cases {
            let mut related = case_rows;
            related.extend(patients.get(patient).into_iter().flatten());
            let group = plan.groups.len();
            let texts: Vec<&Row> = related
                .iter()
                .copied()
                .filter(|r| TEXT_TYPES.contains(&r.document_type) && preferred_text(r).is_some())
                .collect();
            if texts.is_empty() {
                plan.items.push((anchor(&related), group));
            } else {
                plan.items.extend(texts.into_iter().map(|r| (r, group)));
            }
            plan.groups.push(related);
        }
        for (patient, related) in patients {
            if with_cases.contains(patient) {
                continue;
            }
            plan.items.push((anchor(&related), plan.groups.len()));
            plan.groups.push(related);
        }
        plan
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every pair's name, in order; the refusal of the bundle when one cannot be written.
    pub fn stems(&self) -> Result<Vec<String>, String> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, (primary, _))| stem(i + 1, primary))
            .collect()
    }

    /// Pair `i` (0-based), built now.
    pub fn pair(&self, i: usize, center: &Center) -> Result<Pair, String> {
        let (primary, group) = self.items[i];
        let related = &self.groups[group];
        let (sidecar, text) = payload(primary, related, center);
        Ok(Pair {
            stem: stem(i + 1, primary)?,
            text: format!("{}\n", values::strip(&text)),
            sidecar: Json::Obj(sidecar).to_python(),
        })
    }

    /// All pairs, built one after the other.
    pub fn pairs<'p>(
        &'p self,
        center: &'p Center,
    ) -> impl Iterator<Item = Result<Pair, String>> + 'p {
        (0..self.len()).map(move |i| self.pair(i, center))
    }
}
