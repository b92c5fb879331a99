//! The sidecar's bytes as the reference writes them: Python's
//! `json.dumps(payload, ensure_ascii=True, indent=2, sort_keys=True)`, with no trailing
//! newline. Written by hand because the bytes, not just the data, must agree.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The JSON values a sidecar holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Int(u64),
    Str(String),
    Arr(Vec<Json>),
    /// Keys sort by code point, as Python's `sort_keys` does.
    Obj(BTreeMap<String, Json>),
}

/// A string literal, every character outside printable ASCII escaped (`\u00e4`,
/// surrogate pairs above the BMP, DEL included).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

impl Json {
    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, d: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', 2 * d));
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => string(out, s),
            Json::Arr(v) if v.is_empty() => out.push_str("[]"),
            Json::Obj(m) if m.is_empty() => out.push_str("{}"),
            Json::Arr(v) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    x.write(out, depth + 1);
                }
                pad(out, depth);
                out.push(']');
            }
            Json::Obj(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    pad(out, depth + 1);
                    string(out, k);
                    out.push_str(": ");
                    x.write(out, depth + 1);
                }
                pad(out, depth);
                out.push('}');
            }
        }
    }

    /// The bytes Python's `json.dumps(..., ensure_ascii=True, indent=2, sort_keys=True)`
    /// gives for this value.
    pub fn to_python(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_dumps_shape() {
        let v = Json::Obj(BTreeMap::from([
            (
                "text".to_string(),
                Json::Str("Größe 😀\u{7f}\u{1}\"\\".into()),
            ),
            ("a".to_string(), Json::Arr(vec![Json::Int(2), Json::Null])),
            ("e".to_string(), Json::Obj(BTreeMap::new())),
        ]));
        assert_eq!(
            v.to_python(),
            "{\n  \"a\": [\n    2,\n    null\n  ],\n  \"e\": {},\n  \"text\": \"Gr\\u00f6\\u00dfe \\ud83d\\ude00\\u007f\\u0001\\\"\\\\\"\n}"
        );
    }
}
