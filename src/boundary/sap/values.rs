//! Cell values as the reference reads them. Its converter is Python, so "blank",
//! "same header", "letter" and "timestamp" mean what Python's `str.strip`,
//! `str.casefold`, `str.isalnum` and `datetime.strptime` say; each is reproduced here so
//! the same export yields the same pairs.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Python's `str.isspace`: Unicode White_Space plus the four separators U+001C..U+001F.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// A text cell: stripped, and blank means absent.
pub fn text(s: Option<&str>) -> Option<String> {
    s.map(strip).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Python's `str.casefold()` (full Unicode case folding).
pub fn casefold(s: &str) -> String {
    unicase::UniCase::unicode(s).to_folded_case()
}

/// How headers are compared: stripped, then case-folded.
pub fn header_key(s: &str) -> String {
    casefold(strip(s))
}

/// Python's `str.isalnum` for one character: a letter or a number category.
fn is_alnum(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
    )
}

/// The reference's file-name token: letters and digits lower-cased, `-` and `_` kept,
/// everything else `_`, no collapsing, outer `_` stripped; blank gives the fallback.
pub fn slug(value: Option<&str>, fallback: &str) -> String {
    let Some(v) = value.map(strip).filter(|v| !v.is_empty()) else {
        return fallback.to_string();
    };
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if is_alnum(c) {
            out.extend(c.to_lowercase());
        } else if c == '-' || c == '_' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    let t = out.trim_matches('_');
    if t.is_empty() {
        fallback.to_string()
    } else {
        t.to_string()
    }
}

/// `normalize_patient_gender`: known spellings map to male/female/other/unknown; any
/// other value passes through stripped.
pub fn gender(value: Option<&str>) -> Option<String> {
    let v = text(value)?;
    let mapped = match casefold(&v).as_str() {
        "m" | "male" | "männlich" | "maennlich" => "male",
        "w" | "f" | "female" | "weiblich" => "female",
        "d" | "divers" | "other" => "other",
        "u" | "unbekannt" | "unknown" => "unknown",
        _ => return Some(v),
    };
    Some(mapped.to_string())
}

/// A decimal digit as Python's `\d` and `int()` see it: any Unicode `Nd` character.
/// Unicode assigns `Nd` in runs of ten from zero, so the value is the offset in its run.
fn digit(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return Some(c as u32 - '0' as u32);
    }
    if c.general_category() != GeneralCategory::DecimalNumber {
        return None;
    }
    let mut start = c as u32;
    while let Some(p) = start.checked_sub(1).and_then(char::from_u32) {
        if p.general_category() != GeneralCategory::DecimalNumber {
            break;
        }
        start -= 1;
    }
    Some((c as u32 - start) % 10)
}

/// One piece of a `strptime` pattern, as Python's `_strptime.TimeRE` spells it.
#[derive(Clone, Copy)]
enum Tok {
    Lit(char),
    /// A space in the format: `\s+`.
    Space,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Fraction,
}

/// A character class inside an alternative.
#[derive(Clone, Copy)]
enum Class {
    Is(char),
    Range(char, char),
    /// `\d`: any Unicode decimal digit.
    Digit,
}

impl Class {
    fn matches(self, c: char) -> bool {
        match self {
            Class::Is(x) => c == x,
            Class::Range(a, b) => (a..=b).contains(&c),
            Class::Digit => digit(c).is_some(),
        }
    }
}

use Class::{Digit as D, Is, Range as R};

/// The alternatives of each field, in Python's order (the first that lets the whole
/// pattern match wins, as in `re`).
fn alternatives(t: Tok) -> &'static [&'static [Class]] {
    match t {
        Tok::Year => &[&[D, D, D, D]],
        Tok::Month => &[
            &[Is('1'), R('0', '2')],
            &[Is('0'), R('1', '9')],
            &[R('1', '9')],
        ],
        Tok::Day => &[
            &[Is('3'), R('0', '1')],
            &[R('1', '2'), D],
            &[Is('0'), R('1', '9')],
            &[R('1', '9')],
            &[Is(' '), R('1', '9')],
        ],
        Tok::Hour => &[&[Is('2'), R('0', '3')], &[R('0', '1'), D], &[D]],
        Tok::Minute => &[&[R('0', '5'), D], &[D]],
        Tok::Second => &[&[Is('6'), R('0', '1')], &[R('0', '5'), D], &[D]],
        _ => &[],
    }
}

/// First match of `toks` at `chars[at..]` in `re`'s backtracking order; the captured
/// spans go into `caps` (one per field token, in order). Returns the end position.
fn match_at(
    toks: &[Tok],
    chars: &[char],
    at: usize,
    caps: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    let Some((&t, rest)) = toks.split_first() else {
        return Some(at);
    };
    match t {
        Tok::Lit(c) => (chars.get(at) == Some(&c))
            .then(|| match_at(rest, chars, at + 1, caps))
            .flatten(),
        Tok::Space => {
            let mut n = 0;
            while chars.get(at + n).is_some_and(|&c| is_space(c)) {
                n += 1;
            }
            (1..=n)
                .rev()
                .find_map(|k| match_at(rest, chars, at + k, caps))
        }
        Tok::Fraction => {
            let mut n = 0;
            while n < 6 && chars.get(at + n).is_some_and(|c| c.is_ascii_digit()) {
                n += 1;
            }
            (1..=n).rev().find_map(|k| {
                caps.push((at, at + k));
                let r = match_at(rest, chars, at + k, caps);
                if r.is_none() {
                    caps.pop();
                }
                r
            })
        }
        field => alternatives(field).iter().find_map(|alt| {
            let fits = alt
                .iter()
                .enumerate()
                .all(|(i, class)| chars.get(at + i).is_some_and(|&c| class.matches(c)));
            if !fits {
                return None;
            }
            caps.push((at, at + alt.len()));
            let r = match_at(rest, chars, at + alt.len(), caps);
            if r.is_none() {
                caps.pop();
            }
            r
        }),
    }
}

fn format_tokens(f: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = f.chars();
    while let Some(c) = it.next() {
        out.push(match c {
            '%' => match it.next() {
                Some('Y') => Tok::Year,
                Some('m') => Tok::Month,
                Some('d') => Tok::Day,
                Some('H') => Tok::Hour,
                Some('M') => Tok::Minute,
                Some('S') => Tok::Second,
                _ => Tok::Fraction,
            },
            ' ' => Tok::Space,
            c => Tok::Lit(c),
        });
    }
    out
}

/// The formats the reference tries, in its order.
const FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d",
    "%d.%m.%Y",
];

fn strptime(s: &[char], format: &str) -> Option<NaiveDateTime> {
    let toks = format_tokens(format);
    let mut caps = Vec::new();
    // `re.match` takes the first match; strptime then refuses unconverted data.
    if match_at(&toks, s, 0, &mut caps)? != s.len() {
        return None;
    }
    let fields = toks
        .iter()
        .filter(|t| !matches!(t, Tok::Lit(_) | Tok::Space));
    let (mut y, mut mo, mut d, mut h, mut mi, mut sec, mut us) = (0, 0, 0, 0, 0, 0, 0);
    for (t, &(a, b)) in fields.zip(&caps) {
        let number = |pad: bool| {
            let mut v = 0u32;
            for &c in &s[a..b] {
                if c == ' ' {
                    continue;
                }
                v = v * 10 + digit(c).unwrap_or(0);
            }
            if pad {
                v * 10u32.pow(6 - (b - a) as u32)
            } else {
                v
            }
        };
        match t {
            Tok::Year => y = number(false),
            Tok::Month => mo = number(false),
            Tok::Day => d = number(false),
            Tok::Hour => h = number(false),
            Tok::Minute => mi = number(false),
            Tok::Second => sec = number(false),
            _ => us = number(true),
        }
    }
    // Python's datetime: years 1..=9999, real days, seconds 0..=59.
    if y == 0 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y as i32, mo, d)?;
    let time = NaiveTime::from_hms_micro_opt(h, mi, sec, us)?;
    Some(NaiveDateTime::new(date, time))
}

/// `_parse_datetime`: stripped, every `T` replaced by a space, then the first format
/// that parses.
pub fn timestamp(value: Option<&str>) -> Option<NaiveDateTime> {
    let v = text(value)?.replace('T', " ");
    let chars: Vec<char> = v.chars().collect();
    FORMATS.iter().find_map(|f| strptime(&chars, f))
}

/// Python's `datetime.max`: what a row without a timestamp sorts as.
pub fn latest() -> NaiveDateTime {
    NaiveDateTime::new(
        NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid"),
        NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).expect("valid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<String> {
        timestamp(Some(s)).map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    }

    #[test]
    fn timestamps_as_python_strptime_reads_them() {
        assert_eq!(
            ts("2024-10-14 10:10:00.000").as_deref(),
            Some("2024-10-14 10:10:00.000000")
        );
        assert_eq!(
            ts("2024-10-14T10:10:00.5").as_deref(),
            Some("2024-10-14 10:10:00.500000")
        );
        assert_eq!(
            ts("14.10.2024 10:10").as_deref(),
            Some("2024-10-14 10:10:00.000000")
        );
        assert_eq!(
            ts("2024-1-5").as_deref(),
            Some("2024-01-05 00:00:00.000000")
        );
        assert_eq!(
            ts("2024-01- 5").as_deref(),
            Some("2024-01-05 00:00:00.000000")
        );
        assert_eq!(
            ts("2024-01-05  \t 7:3").as_deref(),
            Some("2024-01-05 07:03:00.000000")
        );
        assert_eq!(
            ts("٢٠٢٤-01-1٥").as_deref(),
            Some("2024-01-15 00:00:00.000000")
        );
        assert_eq!(ts("٢٠٢٤-٠١-٠٥"), None);
        assert_eq!(ts("2024-02-30"), None);
        assert_eq!(ts("2024-01-01 10:00:60"), None);
        assert_eq!(ts("2024-01-01 10:00:00.1234567"), None);
        assert_eq!(ts("0000-01-01"), None);
        assert_eq!(ts("gestern"), None);
    }

    #[test]
    fn slugs_keep_letters_of_any_script() {
        assert_eq!(slug(Some("P-00 12/ä"), "x"), "p-00_12_ä");
        assert_eq!(slug(Some("__Müller__"), "x"), "müller");
        assert_eq!(slug(Some("İ"), "x"), "i\u{307}");
        assert_eq!(slug(Some("///"), "patient"), "patient");
        assert_eq!(slug(Some(" \u{1f} "), "patient"), "patient");
        assert_eq!(slug(Some("Ⓐ²"), "x"), "²");
    }

    #[test]
    fn genders_normalised_or_passed_through() {
        assert_eq!(gender(Some(" MÄNNLICH ")).as_deref(), Some("male"));
        assert_eq!(gender(Some("W")).as_deref(), Some("female"));
        assert_eq!(gender(Some(" X ")).as_deref(), Some("X"));
        assert_eq!(gender(Some("  ")), None);
    }
}
