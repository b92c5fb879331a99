//! The reference's table templates (endoreg-db 1.6.5,
//! `endoreg_db/data/tabular_import_format/document_templates.yaml`), in its file order:
//! which columns a header must have, and which columns a table type knows. The oracle
//! test (tests/sap_reference/hand_made.rs) checks this table against the reference's file.

/// How the reference coerces a cell of a known column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Datetime,
    Int,
    Bool,
}

/// One table type: the columns a header must contain, and every column it knows as
/// (header, canonical name, kind).
#[derive(Debug)]
pub struct Template {
    pub document_type: &'static str,
    pub required: &'static [&'static str],
    pub columns: &'static [(&'static str, &'static str, Kind)],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        document_type: "cwd",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Dokumentnummer",
            "Dokumentversion",
            "pmdAnam",
        ],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Dokumentzeit", "dokumentzeit", Kind::Datetime),
            ("Dokumentnummer", "dokumentnummer", Kind::Str),
            ("Dokumentversion", "dokumentversion", Kind::Str),
            ("pmdAnam", "pmd_anam", Kind::Str),
        ],
    },
    Template {
        document_type: "bewegungen",
        required: &[
            "PatientNr",
            "FallNr",
            "Zugangszeit",
            "Behandlungsort",
            "Fachabteilung",
            "Zimmer",
        ],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Zugangszeit", "zugangszeit", Kind::Datetime),
            ("Behandlungsort", "behandlungsort", Kind::Str),
            ("Fachabteilung", "fachabteilung", Kind::Str),
            ("Zimmer", "zimmer", Kind::Str),
        ],
    },
    Template {
        document_type: "briefe",
        required: &["PatientNr", "FallNr", "dateErstellzeit", "strText"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("dateErstellzeit", "date_erstellzeit", Kind::Datetime),
            ("strText", "str_text", Kind::Str),
        ],
    },
    Template {
        document_type: "diagnosen",
        required: &["PatientNr", "FallNr", "Diagnoseschluessel1", "Diagnosezeit"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Diagnoseschluessel1", "diagnoseschluessel_1", Kind::Str),
            ("Diagnosezeit", "diagnosezeit", Kind::Datetime),
            ("KzAufnahmediagnose", "kz_aufnahmediagnose", Kind::Bool),
            (
                "KzBehandlungsdiagnose",
                "kz_behandlungsdiagnose",
                Kind::Bool,
            ),
            ("KzEntlassdiagnose", "kz_entlassdiagnose", Kind::Bool),
            (
                "KzFachabteilungshauptdiagnose",
                "kz_fachabteilungshauptdiagnose",
                Kind::Bool,
            ),
            (
                "KzKrankenhaushauptdiagnose",
                "kz_krankenhaushauptdiagnose",
                Kind::Bool,
            ),
            ("KzNebendiagnose", "kz_nebendiagnose", Kind::Bool),
            ("KzOperationsdiagnose", "kz_operationsdiagnose", Kind::Bool),
        ],
    },
    Template {
        document_type: "labor",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Leistung",
            "Leistungstext",
            "Messwert",
        ],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Dokumentzeit", "dokumentzeit", Kind::Datetime),
            ("Leistung", "leistung", Kind::Str),
            ("Leistungstext", "leistungstext", Kind::Str),
            ("Messwert", "messwert", Kind::Str),
        ],
    },
    Template {
        document_type: "meona_medikamente",
        required: &["PatientNr", "id", "tradename", "patient_id", "apply_date"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("id", "medication_row_id", Kind::Str),
            ("tradename", "tradename", Kind::Str),
            ("patient_id", "source_patient_id", Kind::Str),
            ("apply_date", "apply_date", Kind::Datetime),
            ("prepare_date", "prepare_date", Kind::Datetime),
            ("creation_date", "creation_date", Kind::Datetime),
            ("actual_dose", "actual_dose", Kind::Str),
            ("unit_dose_name", "unit_dose_name", Kind::Str),
            ("main_application_id", "main_application_id", Kind::Str),
            ("main_order_id", "main_order_id", Kind::Str),
            ("status", "status", Kind::Str),
        ],
    },
    Template {
        document_type: "pathodocs",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentnummer",
            "Dokumentzeit",
            "DokumenttypID",
        ],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Dokumentnummer", "dokumentnummer", Kind::Str),
            ("Dokumentzeit", "dokumentzeit", Kind::Datetime),
            ("DokumenttypID", "dokumenttyp_id", Kind::Str),
        ],
    },
    Template {
        document_type: "patienten",
        required: &["PatientNr", "PatientAlter", "Geschlecht"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("PatientAlter", "patient_alter", Kind::Int),
            ("Geschlecht", "geschlecht", Kind::Str),
        ],
    },
    Template {
        document_type: "prozeduren",
        required: &["PatientNr", "FallNr", "OPCode", "Beginnzeit"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("OPCode", "op_code", Kind::Str),
            ("Beginnzeit", "beginnzeit", Kind::Datetime),
        ],
    },
    Template {
        document_type: "radiologie",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Dokumentnummer",
            "Dokumentversion",
        ],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("Dokumentzeit", "dokumentzeit", Kind::Datetime),
            ("Dokumentnummer", "dokumentnummer", Kind::Str),
            ("Dokumentversion", "dokumentversion", Kind::Str),
            ("kurbefund", "kurbefund", Kind::Str),
            ("befund", "befund", Kind::Str),
            ("beurteilung", "beurteilung", Kind::Str),
        ],
    },
    Template {
        document_type: "stammdaten",
        required: &["PatientNr", "FallNr", "PatientAlter", "Geschlecht"],
        columns: &[
            ("PatientNr", "patient_nr", Kind::Str),
            ("FallNr", "fall_nr", Kind::Str),
            ("PatientAlter", "patient_alter", Kind::Int),
            ("Geschlecht", "geschlecht", Kind::Str),
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_list_every_table_with_its_columns() {
        let doc = include_str!("../../../docs/sap-import.md");
        for t in TEMPLATES {
            let optional: Vec<&str> = t
                .columns
                .iter()
                .map(|c| c.0)
                .filter(|c| !t.required.contains(c))
                .collect();
            let row = format!(
                "| `{}` | {} | {} |",
                t.document_type,
                t.required.join(", "),
                optional.join(", ")
            )
            .replace(" |  |", " | |");
            assert!(doc.contains(&row), "docs/sap-import.md lacks the row {row}");
        }
    }
}
