//! The one rule for original file names, whichever boundary a file came through (API
//! upload, watcher, hub receiver). A name is shown to people (lists, provenance, logs),
//! so it must not be able to forge log lines (CR/LF, ESC), reorder what a reader sees
//! (bidi controls: `clip\u{202e}4pm.exe` reads as `clipexe.mp4`), or look like a path
//! (`a\u{2215}b` reads as `a/b`). Refused, never rewritten: the sender renames and
//! retries, and what is stored is exactly what was sent.

/// Longest accepted name, in bytes (the usual file-system limit).
pub const MAX_BYTES: usize = 255;

/// How many characters of a refused name an error message repeats (escaped).
const PREFIX_CHARS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is missing: name the file, e.g. clip.mp4")]
    Missing,
    #[error(
        "{prefix} is {len} bytes long: at most {MAX_BYTES} bytes are accepted; shorten the name"
    )]
    TooLong { prefix: String, len: usize },
    #[error("{prefix} is not a file name: `.` and `..` name directories")]
    Dot { prefix: String },
    #[error("{prefix} contains {what} ({code}): send a plain file name without it")]
    Refused {
        prefix: String,
        what: &'static str,
        code: String,
    },
}

/// The name, trimmed, if it is a plain, printable, single-component file name.
pub fn validate(name: &str) -> Result<String, NameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NameError::Missing);
    }
    if name.len() > MAX_BYTES {
        return Err(NameError::TooLong {
            prefix: escaped_prefix(name),
            len: name.len(),
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Dot {
            prefix: escaped_prefix(name),
        });
    }
    if let Some((c, what)) = name.chars().find_map(|c| refused(c).map(|w| (c, w))) {
        return Err(NameError::Refused {
            prefix: escaped_prefix(name),
            what,
            code: format!("U+{:04X}", c as u32),
        });
    }
    Ok(name.to_string())
}

/// Why `c` may not appear in a name, if it may not.
fn refused(c: char) -> Option<&'static str> {
    Some(match c {
        '/' | '\\' => "a path separator",
        // Characters that render as a slash or backslash.
        '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{2571}' | '\u{2572}' | '\u{29F5}'
        | '\u{29F8}' | '\u{29F9}' | '\u{FE68}' | '\u{FF0F}' | '\u{FF3C}' | '\u{1735}' => {
            "a character that looks like a path separator"
        }
        // Marks, embeddings, overrides and isolates (Unicode bidi controls).
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => "a bidirectional control character",
        // Invisible characters that make two different names look the same.
        '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' => {
            "an invisible character"
        }
        '\u{2028}' | '\u{2029}' => "a line break",
        c if c.is_control() => "a control character",
        _ => return None,
    })
}

/// The start of a client-supplied value, quoted, with everything but printable ASCII
/// escaped, so an error message or log line cannot be steered by what it repeats.
pub fn escaped_prefix(s: &str) -> String {
    escaped(s, PREFIX_CHARS)
}

/// A client-supplied key repeated in an answer as the reference repeats it, bare, when it
/// is short printable ASCII; anything else as `escaped_prefix`, so what it repeats still
/// cannot steer the message.
pub fn bare_or_escaped(s: &str) -> String {
    if s.chars().count() <= PREFIX_CHARS && s.chars().all(|c| matches!(c, ' '..='~')) {
        s.to_string()
    } else {
        escaped_prefix(s)
    }
}

/// `escaped_prefix` with room for `max_chars` characters.
pub fn escaped(s: &str, max_chars: usize) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_unchanged_but_trimmed() {
        assert_eq!(
            validate(" befund müller.pdf ").unwrap(),
            "befund müller.pdf"
        );
        assert_eq!(
            validate("日本語 clip (1).mp4").unwrap(),
            "日本語 clip (1).mp4"
        );
        assert_eq!(validate("..a").unwrap(), "..a");
    }

    #[test]
    fn every_kind_of_forgery_is_refused_and_named() {
        for (name, what) in [
            ("a\nb.pdf", "a control character"),
            ("a\rb.pdf", "a control character"),
            ("a\u{1b}[31mb.pdf", "a control character"),
            ("a\u{85}b", "a control character"),
            ("clip\u{202e}4pm.exe", "a bidirectional control character"),
            ("a\u{2067}b", "a bidirectional control character"),
            ("a\u{2215}b", "a character that looks like a path separator"),
            ("a\u{2044}b", "a character that looks like a path separator"),
            ("a\u{ff0f}b", "a character that looks like a path separator"),
            ("a\u{200b}b", "an invisible character"),
            ("a/b", "a path separator"),
            ("a\\b", "a path separator"),
            ("a\0b", "a control character"),
        ] {
            match validate(name) {
                Err(NameError::Refused { what: w, .. }) => assert_eq!(w, what, "{name:?}"),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(validate("  "), Err(NameError::Missing));
        assert!(matches!(validate(".."), Err(NameError::Dot { .. })));
        assert!(matches!(
            validate(&"a".repeat(256)),
            Err(NameError::TooLong { len: 256, .. })
        ));
    }

    #[test]
    fn messages_repeat_only_a_short_escaped_prefix() {
        let long = format!("\u{202e}\n{}", "x".repeat(200));
        let msg = validate(&long).unwrap_err().to_string();
        assert!(msg.starts_with("\"\\u{202e}\\u{a}xxx"), "{msg}");
        assert!(msg.len() < 200, "{msg}");
        assert!(!msg.contains('\n') && !msg.contains('\u{202e}'));
        assert!(msg.contains("U+202E"), "{msg}");
    }
}
