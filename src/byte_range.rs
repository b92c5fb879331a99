//! Which bytes of a stored object a reader asks for, as an RFC 9110 `Range` header says.
//! One range is served as asked; several get the whole body, which RFC 9110 allows and
//! nginx does by default. The app's sealed media (`GET /api/media/{id}`) and hub
//! export's ffprobe feed answer ranges with this, so both seek the same way.

/// What a Range header asks of a representation `len` bytes long (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No Range, several ranges, or a Range to ignore: the whole body, 200.
    Whole,
    /// One satisfiable range, first and last byte inclusive: 206.
    Part(u64, u64),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

pub fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.map(str::trim) else {
        return Wanted::Whole;
    };
    let Some((unit, set)) = spec.split_once('=') else {
        return Wanted::Whole;
    };
    // Several ranges get the whole body, which RFC 9110 allows (nginx's default too).
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => Wanted::Whole,
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if len == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(len.saturating_sub(n), len - 1),
        },
        (first, "") => match num(first) {
            None => Wanted::Whole,
            Some(a) if a >= len => Wanted::Unsatisfiable,
            Some(a) => Wanted::Part(a, len - 1),
        },
        (first, last) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    Wanted::Unsatisfiable
                } else {
                    Wanted::Part(a, b.min(len - 1))
                }
            }
            // last < first is an invalid range-spec: the header is ignored.
            _ => Wanted::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        let w = |r: &str| wanted(Some(r), 100);
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(w("bytes=0-0"), Wanted::Part(0, 0));
        assert_eq!(w("bytes=40-59"), Wanted::Part(40, 59));
        assert_eq!(w("bytes=99-99"), Wanted::Part(99, 99));
        assert_eq!(w("bytes=90-"), Wanted::Part(90, 99));
        assert_eq!(w("bytes=90-500"), Wanted::Part(90, 99));
        assert_eq!(w("bytes=-1"), Wanted::Part(99, 99));
        assert_eq!(w("bytes=-500"), Wanted::Part(0, 99));
        assert_eq!(w("Bytes=1-2"), Wanted::Part(1, 2));
        assert_eq!(w("bytes=100-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=100-200"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert_eq!(w(ignored), Wanted::Whole, "{ignored}");
        }
    }
}
