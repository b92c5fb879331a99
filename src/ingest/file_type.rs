//! What a file is, as endoreg-db decides it: its first bytes where they say it
//! unambiguously (python-magic on the first 2048 bytes), else its name (Python's
//! `mimetypes`, then the upload view's own list). Both ingest boundaries that see a
//! file without a trusted type ask here: the upload API for a file sent without a kind,
//! the hub receiver for a report (the wire's report rows carry no suffix).

/// How many leading bytes decide a type: what endoreg-db hands python-magic.
pub const SNIFF_LEN: usize = 2048;

/// The content's type from its first bytes, where they say it unambiguously.
pub fn sniff(h: &[u8]) -> Option<&'static str> {
    if h.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if h.len() >= 12 && &h[4..8] == b"ftyp" {
        return match &h[8..12] {
            b"qt  " => Some("video/quicktime"),
            b"isom" | b"iso2" | b"iso4" | b"iso5" | b"iso6" | b"mp41" | b"mp42" | b"avc1"
            | b"M4V " | b"M4VH" | b"M4VP" | b"dash" | b"mmp4" | b"MSNV" => Some("video/mp4"),
            b"M4A " | b"M4B " | b"M4P " => Some("audio/mp4"),
            b"heic" | b"heix" | b"mif1" | b"msf1" | b"avif" => Some("image/heic"),
            _ => None,
        };
    }
    if h.len() >= 12 && &h[..4] == b"RIFF" {
        return match &h[8..12] {
            b"AVI " => Some("video/x-msvideo"),
            b"WAVE" => Some("audio/x-wav"),
            b"WEBP" => Some("image/webp"),
            _ => None,
        };
    }
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\x7fELF", "application/x-executable"),
        (b"\x1a\x45\xdf\xa3", "video/x-matroska"),
    ];
    SIGNATURES
        .iter()
        .find(|(sig, _)| h.starts_with(sig))
        .map(|(_, m)| *m)
}

/// The type a file name suggests (Python's `mimetypes`, then the view's own list).
pub fn from_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => "application/pdf",
        "mp4" | "m4v" => "video/mp4",
        "avi" => "video/x-msvideo",
        "mov" | "qt" => "video/quicktime",
        "wmv" => "video/x-ms-wmv",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "txt" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// The suffix a report is stored under when only its content names it: a PDF by its
/// magic bytes; anything else lx-annotate sends as a report is a text report.
pub fn report_suffix(head: &[u8]) -> &'static str {
    match sniff(head) {
        Some("application/pdf") => ".pdf",
        _ => ".txt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_win_over_the_name() {
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\x02\0"), Some("video/mp4"));
        assert_eq!(
            sniff(b"\0\0\0\x14ftypqt  \0\0\0\0"),
            Some("video/quicktime")
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some("video/x-msvideo"));
        // Too short to say, or nothing known: the name decides.
        assert_eq!(sniff(b"\0\0\0\x20ftyp"), None);
        assert_eq!(sniff(b"Befund: unauffaellig"), None);
        assert_eq!(from_name("clip.MOV"), Some("video/quicktime"));
        assert_eq!(from_name("no-suffix"), None);
    }

    #[test]
    fn a_report_is_a_pdf_only_by_its_magic_bytes() {
        assert_eq!(report_suffix(b"%PDF-1.4 ..."), ".pdf");
        assert_eq!(report_suffix(b"PDF-1.4 but not at the start"), ".txt");
        assert_eq!(report_suffix(b""), ".txt");
    }
}
