//! The reference's templates, and one hand-made bundle per rule of issue 16.
use super::*;

#[test]
fn lxgate_knows_the_reference_templates() {
    let out = reference::python()
        .arg("-c")
        .arg(
            "import json, yaml, sys\n\
             from pathlib import Path\n\
             import importlib.util\n\
             root = Path(importlib.util.find_spec('endoreg_db').submodule_search_locations[0])\n\
             d = yaml.safe_load((root / 'data/tabular_import_format/document_templates.yaml').read_text())\n\
             print(json.dumps([[t['document_type'], t['required_columns'], [[k, v['target'], v.get('type', 'str')] for k, v in t['columns'].items()]] for t in d['templates']]))",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<serde_json::Value> = templates::TEMPLATES
        .iter()
        .map(|t| {
            serde_json::json!([
                t.document_type,
                t.required,
                t.columns
                    .iter()
                    .map(|(c, target, kind)| serde_json::json!([
                        c,
                        target,
                        format!("{kind:?}").to_lowercase()
                    ]))
                    .collect::<Vec<_>>()
            ])
        })
        .collect();
    assert_eq!(serde_json::Value::Array(ours), theirs);
}

/// One hand-made bundle per rule of the issue: each agrees with the reference, and
/// lxgate's output shows the rule.
#[test]
fn hand_made_bundles_agree_rule_by_rule() {
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // File names keep letters of any script; other characters become `_`, unmerged.
    cases.push((
        "names",
        zip(&[(
            "cwd.txt",
            format!("{CWD}Müller 00/12\tF-1\t2024-01-01\tD1\t1\tText\n").as_bytes(),
        )]),
    ));
    // The reference's template columns: meona without FallNr, diagnosen, bewegungen,
    // pathodocs, and radiologie without its optional text columns.
    cases.push((
        "templates",
        zip(&[
            ("m.txt", b"PatientNr\tid\ttradename\tpatient_id\tapply_date\tactual_dose\tunit_dose_name\tmain_order_id\nP1\t77\tIbuprofen\tX1\t2024-02-03 08:00\t400\tmg\tO9\n"),
            ("d.txt", b"PatientNr\tFallNr\tDiagnoseschluessel1\tDiagnosezeit\tKzNebendiagnose\nP2\tF2\tK21.0\t2024-02-01\tja\n"),
            ("b.txt", b"PatientNr\tFallNr\tZugangszeit\tBehandlungsort\tFachabteilung\tZimmer\nP2\tF2\t2024-01-31 23:00\tStation 3\tGastro\t12\n"),
            ("p.txt", b"PatientNr\tFallNr\tDokumentnummer\tDokumentzeit\tDokumenttypID\nP3\tF3\tPA-1\t01.03.2024\tHisto\n"),
            ("r.txt", b"PatientNr\tFallNr\tDokumentzeit\tDokumentnummer\tDokumentversion\nP4\tF4\t2024-04-04\tR1\t2\n"),
        ]),
    ));
    // Quoted cells: embedded CRLF and LF, doubled quotes, a tab inside quotes.
    cases.push((
        "quoting",
        zip(&[("cwd.txt", format!("{CWD}P1\tF1\t2024-01-01\tD1\t1\t\"Zeile 1\r\nZeile \"\"2\"\"\tmit Tab\nZeile 3\"\r\n").as_bytes())]),
    ));
    // Fractional seconds keep their date.
    cases.push((
        "fraction",
        zip(&[(
            "cwd.txt",
            format!("{CWD}P1\tF1\t2024-10-14 10:10:00.000\tD1\t1\tText\n").as_bytes(),
        )]),
    ));
    // Grouping and numbering: cases sorted, a patient's case-less rows join each case,
    // every text row its own pair, then patients without a case.
    cases.push((
        "grouping",
        zip(&[
            ("a.txt", format!("{CWD}P2\tF1\t2024-01-01\tD1\t1\tzweiter Patient\nP1\tF2\t2024-01-02\tD2\t1\tFall 2\nP1\t\t2024-01-03\tD3\t1\tohne Fall\nP1\tF1\t2024-01-04\tD4\t1\tFall 1\n").as_bytes()),
            ("b.txt", b"PatientNr\tPatientAlter\tGeschlecht\nP9\t50\tw\n"),
        ]),
    ));
    // A case without a text row: the case summary, at most five lines per type.
    let mut labor =
        String::from("PatientNr\tFallNr\tDokumentzeit\tLeistung\tLeistungstext\tMesswert\n");
    for i in 0..7 {
        labor.push_str(&format!(
            "P1\tF1\t2024-01-0{} 0{i}:00\tCRP\tC-reaktives Protein\t{i}.5\n",
            i + 1
        ));
    }
    cases.push((
        "summary",
        zip(&[
            ("l.txt", labor.as_bytes()),
            (
                "o.txt",
                b"PatientNr\tFallNr\tOPCode\tBeginnzeit\nP1\tF1\t5-513.1\t2024-01-09T08:00:00\n",
            ),
        ]),
    ));
    // raw_columns: template columns by original header, unknown ones apart, a short
    // row's missing cells as null.
    cases.push((
        "raw-columns",
        zip(&[(
            "cwd.txt",
            format!(
                "Extra\t{}",
                CWD.replace("pmdAnam", " PMDANAM ")
                    .replace("\n", "\tLetzte\n")
            )
            .to_string()
            .add_row("x\tP1\tF1\t2024-01-01\tD1\t1\tText")
            .as_bytes(),
        )]),
    ));
    // Genders: normalised from the row or a related row; unknown spellings pass.
    cases.push((
        "gender",
        zip(&[
            ("s.txt", b"PatientNr\tFallNr\tPatientAlter\tGeschlecht\nP1\tF1\t40\tW\nP2\tF2\t41\tM\xc4NNLICH\nP3\tF3\t42\tX\n"),
            ("c.txt", format!("{CWD}P1\tF1\t2024-01-01\tD1\t1\tText\n").as_bytes()),
        ]),
    ));
    // Ambiguous headers skip that one file (cwd and radiologie tie); the rest converts.
    cases.push((
        "ambiguous",
        zip(&[
            ("amb.txt", b"PatientNr\tFallNr\tDokumentzeit\tDokumentnummer\tDokumentversion\tpmdAnam\tbefund\nP1\tF1\t2024-01-01\tD1\t1\tA\tB\n"),
            ("ok.txt", format!("{CWD}P2\tF2\t2024-01-01\tD2\t1\tText\n").as_bytes()),
        ]),
    ));
    // Encodings, and which files are tables: cp1252, BOM, `.TXT` ignored, sorted by
    // path components (`a/b.txt` before `a-b.txt`).
    cases.push((
        "files",
        zip(&[
            ("a-b.txt", b"PatientNr\tFallNr\tdateErstellzeit\tstrText\nP1\tF1\t01.01.2024 10:00\tGr\xfc\xdfe \x80\n"),
            ("a/b.txt", "\u{feff}PatientNr\tFallNr\tdateErstellzeit\tstrText\nP1\tF1\t01.01.2024 09:00\tÜber\n".as_bytes()),
            ("c.TXT", format!("{CWD}P1\tF1\t2024-01-01\tD1\t1\tignored\n").as_bytes()),
        ]),
    ));
    // No supported table: both refuse.
    cases.push(("no-table", zip(&[("notes.txt", b"Name\tWert\nx\t1\n")])));

    let bundles: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let reference = theirs(&bundles);
    let mine: Vec<Outcome> = bundles.iter().map(|b| ours(b)).collect();
    let mut bad = Vec::new();
    for ((label, _), (m, r)) in cases.iter().zip(mine.iter().zip(&reference)) {
        if let Some(d) = disagreement(m, r) {
            bad.push(format!("{label}: {d}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));

    let by = |label: &str| &mine[cases.iter().position(|c| c.0 == label).unwrap()];
    // names
    assert_eq!(
        file(by("names"), "sap_ish_0001_cwd_müller_00_12_f-1.txt"),
        "Text\n"
    );
    // templates: meona is patient-level (no FallNr), its document id is main_order_id.
    let m = sidecar(
        by("templates"),
        "sap_ish_0004_meona_medikamente_p1_case_0004.json",
    );
    assert_eq!(m["original_document_id"], "O9");
    assert_eq!(m["examination_date"], "2024-02-03");
    let d = file(by("templates"), "sap_ish_0001_diagnosen_p2_f2.txt");
    assert!(
        d.contains("bewegungen: 1 row(s)\n- 2024-01-31 23:00:00 | Station 3 | Gastro | room=12"),
        "{d}"
    );
    assert!(file(by("templates"), "sap_ish_0003_radiologie_p4_f4.txt").starts_with("Case summary"));
    // quoting
    assert_eq!(
        file(by("quoting"), "sap_ish_0001_cwd_p1_f1.txt"),
        "Zeile 1\nZeile \"2\"\tmit Tab\nZeile 3\n"
    );
    // fraction
    let f = sidecar(by("fraction"), "sap_ish_0001_cwd_p1_f1.json");
    assert_eq!(
        (
            f["examination_date"].as_str(),
            f["examination_time"].as_str()
        ),
        (Some("2024-10-14"), Some("10:10:00"))
    );
    // grouping: (P1,F1) first with its own text and the case-less row, then (P1,F2),
    // then (P2,F1), then P9 known only from patienten.
    let g: Vec<&str> = files_of(by("grouping"))
        .iter()
        .map(|f| f.0.as_str())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    assert_eq!(
        g,
        [
            "sap_ish_0001_cwd_p1_f1.txt",
            "sap_ish_0002_cwd_p1_case_0002.txt",
            "sap_ish_0003_cwd_p1_f2.txt",
            "sap_ish_0004_cwd_p1_case_0004.txt",
            "sap_ish_0005_cwd_p2_f1.txt",
            "sap_ish_0006_patienten_p9_case_0006.txt",
        ]
    );
    assert_eq!(
        sidecar(by("grouping"), "sap_ish_0006_patienten_p9_case_0006.json")["patient_gender"],
        "female"
    );
    // summary
    let s = file(by("summary"), "sap_ish_0001_prozeduren_p1_f1.txt");
    assert!(s.starts_with("Case summary generated from SAP IS-H tabular export\nPatientNr: P1\nFallNr: F1\nprozeduren: 1 row(s)\n- 2024-01-09 08:00:00 | op_code=5-513.1\nlabor: 7 row(s)\n- 2024-01-01 00:00:00 | C-reaktives Protein | value=0.5\n"), "{s}");
    assert_eq!(s.lines().filter(|l| l.starts_with("- ")).count(), 6);
    // raw_columns
    let r = sidecar(by("raw-columns"), "sap_ish_0001_cwd_p1_f1.json");
    assert_eq!(
        r["raw_columns"]["primary_row"]["raw_columns"][" PMDANAM "],
        "Text"
    );
    assert_eq!(
        r["raw_columns"]["related_rows_by_type"]["cwd"][0]["unknown_columns"],
        serde_json::json!({"Extra": "x", "Letzte": null})
    );
    assert_eq!(
        r["raw_columns"]["source_files"],
        serde_json::json!(["cwd.txt"])
    );
    // gender
    assert_eq!(
        sidecar(by("gender"), "sap_ish_0001_cwd_p1_f1.json")["patient_gender"],
        "female"
    );
    assert_eq!(
        sidecar(by("gender"), "sap_ish_0002_stammdaten_p2_f2.json")["patient_gender"],
        "male"
    );
    assert_eq!(
        sidecar(by("gender"), "sap_ish_0003_stammdaten_p3_f3.json")["patient_gender"],
        "X"
    );
    // trailing newline: one on the carrier, none on the sidecar.
    assert!(!file(by("gender"), "sap_ish_0001_cwd_p1_f1.json").ends_with('\n'));
    // ambiguous
    assert_eq!(files_of(by("ambiguous")).len(), 2);
    assert!(files_of(by("ambiguous"))[0].0.contains("_p2_f2"));
    // files
    assert_eq!(file(by("files"), "sap_ish_0001_briefe_p1_f1.txt"), "Über\n");
    assert_eq!(
        file(by("files"), "sap_ish_0002_briefe_p1_f1.txt"),
        "Grüße €\n"
    );
    assert!(by("no-table").is_err());
}

trait AddRow {
    fn add_row(self, row: &str) -> String;
}

impl AddRow for String {
    fn add_row(mut self, row: &str) -> String {
        self.push_str(row);
        self.push('\n');
        self
    }
}
