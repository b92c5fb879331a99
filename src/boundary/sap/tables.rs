//! Tab-separated tables: decoding, header matching against the known table types
//! (SPEC §6; docs/sap-import.md lists them), and rows.

/// A known table type: its name and the columns a header must contain.
pub struct TableType {
    pub name: &'static str,
    pub required: &'static [&'static str],
}

pub const TABLE_TYPES: &[TableType] = &[
    TableType {
        name: "cwd",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Dokumentnummer",
            "Dokumentversion",
            "pmdAnam",
        ],
    },
    TableType {
        name: "briefe",
        required: &["PatientNr", "FallNr", "dateErstellzeit", "strText"],
    },
    TableType {
        name: "radiologie",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Dokumentnummer",
            "Dokumentversion",
            "kurbefund",
            "befund",
            "beurteilung",
        ],
    },
    TableType {
        name: "pathodocs",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Dokumentnummer",
            "Befundtext",
        ],
    },
    TableType {
        name: "prozeduren",
        required: &["PatientNr", "FallNr", "OPCode", "Beginnzeit"],
    },
    TableType {
        name: "diagnosen",
        required: &["PatientNr", "FallNr", "Diagnosecode", "Diagnosetext"],
    },
    TableType {
        name: "labor",
        required: &[
            "PatientNr",
            "FallNr",
            "Dokumentzeit",
            "Leistung",
            "Leistungstext",
            "Messwert",
        ],
    },
    TableType {
        name: "bewegungen",
        required: &["PatientNr", "FallNr", "Bewegungsart", "Beginnzeit"],
    },
    TableType {
        name: "meona_medikamente",
        required: &["PatientNr", "FallNr", "Medikament", "Verabreichungszeit"],
    },
    TableType {
        name: "stammdaten",
        required: &["PatientNr", "FallNr", "PatientAlter", "Geschlecht"],
    },
    TableType {
        name: "patienten",
        required: &["PatientNr", "PatientAlter", "Geschlecht"],
    },
];

/// Decode in the reference's order: UTF-8 with BOM, UTF-8, cp1252, latin-1.
pub fn decode(bytes: &[u8]) -> (String, &'static str) {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        if let Ok(s) = std::str::from_utf8(rest) {
            return (s.to_string(), "utf-8-sig");
        }
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_string(), "utf-8");
    }
    if let Some(s) = cp1252(bytes) {
        return (s, "cp1252");
    }
    (bytes.iter().map(|&b| b as char).collect(), "latin-1")
}

fn cp1252(bytes: &[u8]) -> Option<String> {
    // 0x80..=0x9F; 0 marks the five bytes cp1252 leaves undefined.
    const HIGH: [u16; 32] = [
        0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
        0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
        0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => char::from_u32(HIGH[(b - 0x80) as usize] as u32).filter(|c| *c != '\0'),
            _ => Some(b as char),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Table {
    pub file: String,
    pub kind: &'static str,
    pub encoding: &'static str,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Column value by name (case-insensitive), empty when absent.
    pub fn get<'a>(&self, row: &'a [String], col: &str) -> &'a str {
        self.header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(col))
            .and_then(|i| row.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    }
}

pub enum Matched {
    Table(Table),
    Skipped { file: String, header: Vec<String> },
}

/// Match a table's header: a type matches when every required column is present
/// (case-insensitive); the best is the one with most required columns; a tie is an error.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Matched, String> {
    let (text, encoding) = decode(bytes);
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next() else {
        return Ok(Matched::Skipped {
            file: file.to_string(),
            header: vec![],
        });
    };
    let header: Vec<String> = head.split('\t').map(|h| h.trim().to_string()).collect();
    let has = |c: &str| header.iter().any(|h| h.eq_ignore_ascii_case(c));
    let mut best: Vec<&TableType> = Vec::new();
    for t in TABLE_TYPES
        .iter()
        .filter(|t| t.required.iter().all(|c| has(c)))
    {
        match best.first() {
            Some(b) if b.required.len() > t.required.len() => {}
            Some(b) if b.required.len() == t.required.len() => best.push(t),
            _ => best = vec![t],
        }
    }
    match best.as_slice() {
        [] => Ok(Matched::Skipped {
            file: file.to_string(),
            header,
        }),
        [t] => Ok(Matched::Table(Table {
            file: file.to_string(),
            kind: t.name,
            encoding,
            rows: lines
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect(),
            header,
        })),
        many => Err(format!(
            "{file}: header matches {} equally well; the bundle is ambiguous",
            many.iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// `2024-03-01 10:00:00`, `01.03.2024 10:00`, `2024-03-01`, `01.03.2024` → (date, time).
pub fn parse_datetime(s: &str) -> Option<(String, Option<String>)> {
    use chrono::{NaiveDate, NaiveDateTime};
    let s = s.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some((
                dt.date().format("%Y-%m-%d").to_string(),
                Some(dt.time().format("%H:%M:%S").to_string()),
            ));
        }
    }
    for f in ["%Y-%m-%d", "%d.%m.%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return Some((d.format("%Y-%m-%d").to_string(), None));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_list_every_table_with_its_columns() {
        let doc = include_str!("../../../docs/sap-import.md");
        for t in TABLE_TYPES {
            let row = format!("| `{}` | {} |", t.name, t.required.join(", "));
            assert!(doc.contains(&row), "docs/sap-import.md lacks the row {row}");
        }
    }

    #[test]
    fn encodings_in_order() {
        assert_eq!(decode("\u{feff}Müller".as_bytes()).1, "utf-8-sig");
        assert_eq!(decode("Müller".as_bytes()), ("Müller".into(), "utf-8"));
        assert_eq!(decode(b"M\xfcller \x80"), ("Müller €".into(), "cp1252"));
        assert_eq!(decode(b"M\xfcller \x81").1, "latin-1");
    }

    #[test]
    fn dates_in_each_accepted_form() {
        assert_eq!(
            parse_datetime("2024-03-01 10:00:00"),
            Some(("2024-03-01".into(), Some("10:00:00".into())))
        );
        assert_eq!(
            parse_datetime("01.03.2024 10:00"),
            Some(("2024-03-01".into(), Some("10:00:00".into())))
        );
        assert_eq!(
            parse_datetime("2024-03-01"),
            Some(("2024-03-01".into(), None))
        );
        assert_eq!(parse_datetime("gestern"), None);
    }

    #[test]
    fn stammdaten_and_patienten_are_told_apart() {
        let Matched::Table(t) = parse(
            "a.txt",
            b"PatientNr\tFallNr\tPatientAlter\tGeschlecht\n1\t2\t40\tW\n",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(t.kind, "stammdaten");
        let Matched::Table(t) =
            parse("b.txt", b"patientnr\tPatientAlter\tGESCHLECHT\n1\t40\tW\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.kind, "patienten");
    }
}
