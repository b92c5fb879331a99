//! Tab-separated tables as the reference reads them: decoded (UTF-8 with or without
//! BOM, cp1252, latin-1), newlines unified, split by Python's `csv` rules (tab
//! delimiter, `"` quoting with `""` escapes and embedded newlines), turned into records
//! like `csv.DictReader`, matched against the templates, and normalised per row.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDateTime;

use super::bundle::Entry;
use super::templates::{Kind, Template, TEMPLATES};
use super::values;

/// Decode in the reference's order: UTF-8 (a leading BOM dropped), cp1252, latin-1.
pub fn decode(bytes: &[u8]) -> (String, &'static str) {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Ok(s) = std::str::from_utf8(body) {
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

/// Python's text mode ("universal newlines"): `\r\n` and a lone `\r` become `\n`.
fn unify_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Python's `csv` field size limit (`csv.field_size_limit()`), in characters.
pub const FIELD_LIMIT: usize = 131_072;

#[derive(Clone, Copy, PartialEq)]
enum State {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    QuoteInQuoted,
    EatNewline,
}

/// A character, or the end of a line (`None`), as `_csv.c` feeds its state machine.
struct Parser {
    state: State,
    fields: Vec<String>,
    field: String,
    len: usize,
}

impl Parser {
    fn save(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
        self.len = 0;
    }

    fn add(&mut self, c: char) -> Result<(), String> {
        if self.len >= FIELD_LIMIT {
            return Err(format!("field larger than field limit ({FIELD_LIMIT})"));
        }
        self.field.push(c);
        self.len += 1;
        Ok(())
    }

    fn end_of(&mut self, eol: bool) {
        self.save();
        self.state = if eol {
            State::StartRecord
        } else {
            State::EatNewline
        };
    }

    fn feed(&mut self, c: Option<char>) -> Result<(), String> {
        let newline = matches!(c, Some('\n' | '\r'));
        let eol = c.is_none();
        match self.state {
            State::StartRecord if eol => {}
            State::StartRecord if newline => self.state = State::EatNewline,
            State::StartRecord | State::StartField => {
                self.state = State::StartField;
                match c {
                    _ if eol || newline => self.end_of(eol),
                    Some('"') => self.state = State::InQuoted,
                    Some('\t') => self.save(),
                    Some(c) => {
                        self.add(c)?;
                        self.state = State::InField;
                    }
                    None => unreachable!("handled as eol"),
                }
            }
            State::InField => match c {
                _ if eol || newline => self.end_of(eol),
                Some('\t') => {
                    self.save();
                    self.state = State::StartField;
                }
                Some(c) => self.add(c)?,
                None => unreachable!("handled as eol"),
            },
            State::InQuoted => match c {
                None => {}
                Some('"') => self.state = State::QuoteInQuoted,
                Some(c) => self.add(c)?,
            },
            State::QuoteInQuoted => match c {
                Some('"') => {
                    self.add('"')?;
                    self.state = State::InQuoted;
                }
                Some('\t') => {
                    self.save();
                    self.state = State::StartField;
                }
                _ if eol || newline => self.end_of(eol),
                Some(c) => {
                    self.add(c)?;
                    self.state = State::InField;
                }
                None => unreachable!("handled as eol"),
            },
            State::EatNewline => match c {
                _ if newline => {}
                None => self.state = State::StartRecord,
                Some(_) => {
                    return Err("new-line character seen in unquoted field".into());
                }
            },
        }
        Ok(())
    }
}

/// Records as `csv.reader(..., delimiter="\t")` yields them, blank lines as `[]`.
pub fn records(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut p = Parser {
        state: State::StartRecord,
        fields: Vec::new(),
        field: String::new(),
        len: 0,
    };
    let mut out = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    while lines.peek().is_some() {
        // One record: lines until the state machine is back at a record start.
        loop {
            let Some(line) = lines.next() else {
                // The input ended inside a quoted field: Python keeps what it has.
                if p.len != 0 || p.state == State::InQuoted {
                    p.save();
                    out.push(std::mem::take(&mut p.fields));
                }
                return Ok(out);
            };
            for c in line.chars() {
                p.feed(Some(c))?;
            }
            p.feed(None)?;
            if p.state == State::StartRecord {
                break;
            }
        }
        out.push(std::mem::take(&mut p.fields));
        p.len = 0;
    }
    Ok(out)
}

/// A header-keyed record: keys in first-seen order, later duplicates overwrite.
type Record = Vec<(String, Option<String>)>;

fn put(rec: &mut Record, key: &str, value: Option<String>) {
    match rec.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => rec.push((key.to_string(), value)),
    }
}

/// A file's column names, shared by all its rows: a bundle holds hundreds of thousands
/// of rows, and a name per row and column was most of their memory.
#[derive(Debug)]
struct Columns {
    /// Template columns present, by their original header.
    raw: Vec<String>,
    /// The other columns, by their original header.
    unknown: Vec<String>,
    /// (canonical name, position in `raw`) of the text columns, in template order.
    texts: Vec<(&'static str, usize)>,
}

/// A row of a matched table, normalised as `normalize_document_row` does.
#[derive(Debug, Clone)]
pub struct Row {
    pub document_type: &'static str,
    pub source_file: Arc<str>,
    pub row_number: usize,
    columns: Arc<Columns>,
    /// Raw values of `columns.raw` and `columns.unknown`, in their order.
    raw: Box<[Option<Box<str>>]>,
    unknown: Box<[Option<Box<str>>]>,
    /// Parsed timestamp columns, in template order.
    times: Box<[(&'static str, Option<NaiveDateTime>)]>,
}

impl Row {
    /// A text column's canonical value: stripped, blank as absent. Of two template
    /// columns with the same canonical name the later one counts (a dict's last write).
    pub fn text(&self, target: &str) -> Option<&str> {
        let &(_, i) = self
            .columns
            .texts
            .iter()
            .rev()
            .find(|(t, _)| *t == target)?;
        self.raw[i]
            .as_deref()
            .map(values::strip)
            .filter(|s| !s.is_empty())
    }

    /// A timestamp column's canonical value (the later of two with the same name).
    pub fn time(&self, target: &str) -> Option<NaiveDateTime> {
        self.times
            .iter()
            .rev()
            .find(|(t, _)| *t == target)
            .and_then(|(_, v)| *v)
    }

    /// Template columns present: original header and raw value.
    pub fn raw_columns(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let names = self.columns.raw.iter().map(String::as_str);
        names.zip(self.raw.iter().map(|v| v.as_deref()))
    }

    /// The other columns: original header and raw value.
    pub fn unknown_columns(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let names = self.columns.unknown.iter().map(String::as_str);
        names.zip(self.unknown.iter().map(|v| v.as_deref()))
    }
}

/// What became of one `.txt` file.
pub enum Parsed {
    Table {
        document_type: &'static str,
        encoding: &'static str,
        rows: Vec<Row>,
    },
    Skipped {
        reason: String,
        header: Vec<String>,
    },
}

/// The best template for a header, as `resolve_document_template` ranks them: every
/// required column present; most known columns, then fewest unknown ones; a tie is
/// ambiguous.
fn resolve(header: &[String]) -> Result<&'static Template, String> {
    let keys: BTreeSet<String> = header.iter().map(|h| values::header_key(h)).collect();
    let mut scored = Vec::new();
    for t in TEMPLATES {
        if !t
            .required
            .iter()
            .all(|r| keys.contains(&values::header_key(r)))
        {
            continue;
        }
        let known: BTreeSet<String> = t.columns.iter().map(|c| values::header_key(c.0)).collect();
        let matched = keys.iter().filter(|k| known.contains(*k)).count();
        scored.push((t, matched, keys.len() - matched));
    }
    let Some(&(_, m, u)) = scored
        .iter()
        .max_by_key(|(_, m, u)| (*m, std::cmp::Reverse(*u)))
    else {
        return Err("No known tabular import template matches the provided headers".into());
    };
    let tied: Vec<_> = scored
        .iter()
        .filter(|(_, m2, u2)| *m2 == m && *u2 == u)
        .map(|(t, _, _)| t.document_type)
        .collect();
    match tied.as_slice() {
        [_] => Ok(scored
            .iter()
            .find(|(_, m2, u2)| *m2 == m && *u2 == u)
            .map(|(t, _, _)| *t)
            .expect("one")),
        many => Err(format!(
            "Ambiguous tabular import headers; matched: {}",
            many.join(", ")
        )),
    }
}

/// Where a template's columns sit in a file's records: computed once per file, since
/// every record of a file has the same keys in the same order.
struct Plan {
    template: &'static Template,
    columns: Arc<Columns>,
    /// (record index, canonical name, kind) per template column present. The last
    /// header of a given key wins, as in the reference's lookup dict.
    known: Vec<(usize, &'static str, Kind)>,
    unknown: Vec<usize>,
}

impl Plan {
    fn new(template: &'static Template, rec: &Record) -> Plan {
        let keys: Vec<String> = rec.iter().map(|(k, _)| values::header_key(k)).collect();
        let known = template
            .columns
            .iter()
            .filter_map(|&(column, target, kind)| {
                let want = values::header_key(column);
                keys.iter()
                    .rposition(|k| *k == want)
                    .map(|i| (i, target, kind))
            })
            .collect();
        let names: BTreeSet<String> = template
            .columns
            .iter()
            .map(|c| values::header_key(c.0))
            .collect();
        let unknown: Vec<usize> = (0..keys.len())
            .filter(|&i| !names.contains(&keys[i]))
            .collect();
        let known: Vec<(usize, &'static str, Kind)> = known;
        let columns = Columns {
            raw: known.iter().map(|&(i, _, _)| rec[i].0.clone()).collect(),
            unknown: unknown.iter().map(|&i| rec[i].0.clone()).collect(),
            texts: known
                .iter()
                .enumerate()
                .filter(|(_, k)| k.2 == Kind::Str)
                .map(|(pos, k)| (k.1, pos))
                .collect(),
        };
        Plan {
            template,
            columns: Arc::new(columns),
            known,
            unknown,
        }
    }

    /// `normalize_document_row`: canonical values, template columns, unknown columns.
    fn row(&self, rec: &Record, source_file: &Arc<str>, row_number: usize) -> Row {
        let value = |i: usize| rec[i].1.as_deref().map(Box::from);
        Row {
            document_type: self.template.document_type,
            source_file: source_file.clone(),
            row_number,
            columns: self.columns.clone(),
            raw: self.known.iter().map(|&(i, _, _)| value(i)).collect(),
            unknown: self.unknown.iter().map(|&i| value(i)).collect(),
            // Ages and diagnosis flags reach no output; texts are read from `raw`.
            times: self
                .known
                .iter()
                .filter(|k| k.2 == Kind::Datetime)
                .map(|&(i, target, _)| (target, values::timestamp(rec[i].1.as_deref())))
                .collect(),
        }
    }
}

/// One `.txt` file: its rows under the matching template, or why it is skipped. An
/// error refuses the whole bundle (the reference's reader raises there too).
pub fn parse(entry: &Entry) -> Result<Parsed, String> {
    let (text, encoding) = decode(&entry.bytes);
    let mut recs = records(&unify_newlines(&text))
        .map_err(|e| format!("{}: {e}", entry.name))?
        .into_iter();
    let header = recs.next().unwrap_or_default();
    if header.is_empty() {
        return Ok(Parsed::Skipped {
            reason: "no header row".into(),
            header,
        });
    }
    let mut rows = Vec::new();
    let mut plan: Option<Plan> = None;
    let source_file: Arc<str> = Arc::from(entry.file_name());
    let mut row_number = 1;
    for fields in recs.filter(|r| !r.is_empty()) {
        row_number += 1;
        let mut rec: Record = Vec::with_capacity(header.len());
        for (k, v) in header.iter().zip(&fields) {
            put(&mut rec, k, Some(v.clone()));
        }
        for k in header.iter().skip(fields.len()) {
            put(&mut rec, k, None);
        }
        // Columns with a blank header are dropped; so are surplus cells.
        rec.retain(|(k, _)| !values::strip(k).is_empty());
        if rec
            .iter()
            .all(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        {
            continue;
        }
        let plan = match &plan {
            Some(p) => p,
            None => {
                let keys: Vec<String> = rec.iter().map(|(k, _)| k.clone()).collect();
                match resolve(&keys) {
                    Ok(t) => plan.insert(Plan::new(t, &rec)),
                    Err(reason) => return Ok(Parsed::Skipped { reason, header }),
                }
            }
        };
        rows.push(plan.row(&rec, &source_file, row_number));
    }
    match plan {
        Some(p) => Ok(Parsed::Table {
            document_type: p.template.document_type,
            encoding,
            rows,
        }),
        None => Ok(Parsed::Skipped {
            reason: "no data rows".into(),
            header,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_in_order() {
        assert_eq!(
            decode("\u{feff}Müller".as_bytes()),
            ("Müller".into(), "utf-8")
        );
        assert_eq!(decode("Müller".as_bytes()), ("Müller".into(), "utf-8"));
        assert_eq!(decode(b"M\xfcller \x80"), ("Müller €".into(), "cp1252"));
        assert_eq!(decode(b"M\xfcller \x81").1, "latin-1");
    }

    #[test]
    fn records_follow_python_csv() {
        let r = records("a\t\"b\nc\"\td\n\n\"x\"\"y\"z\t\"open\n").unwrap();
        assert_eq!(
            r,
            vec![
                vec!["a".to_string(), "b\nc".into(), "d".into()],
                vec![],
                vec!["x\"yz".into(), "open\n".into()],
            ]
        );
        assert!(records(&"x".repeat(FIELD_LIMIT + 1)).is_err());
        assert_eq!(
            records(&"x".repeat(FIELD_LIMIT)).unwrap()[0][0].len(),
            FIELD_LIMIT
        );
    }
}
