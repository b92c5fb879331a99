//! What each watched folder accepts, and how a directory entry is judged.

use std::os::unix::fs::FileTypeExt;

use crate::ingest::Kind;

pub struct Folder {
    pub name: &'static str,
    pub kind: Kind,
    pub extensions: &'static [&'static str],
    /// Carriers may come with a sidecar (`NAME.json`, `.yaml`, `.yml`).
    pub paired: bool,
}

pub const FOLDERS: &[Folder] = &[
    Folder {
        name: "video_import",
        kind: Kind::Video,
        extensions: &["mp4", "avi", "mov", "mkv", "webm", "m4v"],
        paired: false,
    },
    Folder {
        name: "report_import",
        kind: Kind::Report,
        // .txt as lx-annotate 1.6.4 accepts it (text/plain reports).
        extensions: &["pdf", "txt"],
        paired: false,
    },
    Folder {
        name: "preanonymized_import",
        kind: Kind::Preanonymized,
        extensions: &["txt", "pdf", "mp4"],
        paired: true,
    },
];

#[derive(Debug, PartialEq)]
pub enum Entry {
    /// Dotfiles, `~*`, locks, in-progress names: left alone until renamed.
    Ignored,
    Reject(String),
    Candidate {
        is_sidecar: bool,
        stem: String,
    },
}

/// lx-annotate's `should_ignore_file` for one name: in-progress names are matched on
/// the lower-cased name (a copy tool may write `CLIP.MP4.PART`), `.lock` as written.
pub fn ignored_name(name: &str) -> bool {
    const PARTIAL: &[&str] = &[".tmp", ".part", ".partial", ".crdownload", ".download"];
    let lower = name.to_lowercase();
    name.starts_with('.')
        || name.starts_with('~')
        || name == "_processing"
        || name.ends_with(".lock")
        || PARTIAL.iter().any(|s| lower.ends_with(s))
        || lower.contains(".tmp.")
        || lower.contains(".part.")
}

pub fn classify(folder: &Folder, name: &str, meta: &std::fs::Metadata) -> Entry {
    if ignored_name(name) {
        return Entry::Ignored;
    }
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        Some("a symbolic link (never followed)")
    } else if ft.is_dir() {
        Some("a directory (the watcher is not recursive)")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("a device node")
    } else {
        None
    };
    if let Some(what) = what {
        return Entry::Reject(format!("{name} is {what}; drop regular files only"));
    }
    if let Err(e) = crate::ingest::name::validate(name) {
        return Entry::Reject(format!("the file name {e}"));
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s.to_string(), e.to_ascii_lowercase()),
        _ => (name.to_string(), String::new()),
    };
    if folder.paired && crate::ingest::sidecar::SIDECAR_SUFFIXES.contains(&ext.as_str()) {
        return Entry::Candidate {
            is_sidecar: true,
            stem,
        };
    }
    if folder.extensions.contains(&ext.as_str()) {
        return Entry::Candidate {
            is_sidecar: false,
            stem,
        };
    }
    let accepts = folder
        .extensions
        .iter()
        .map(|e| format!(".{e}"))
        .collect::<Vec<_>>()
        .join(" ");
    let pair = if folder.paired {
        ", each with an optional NAME.json, NAME.yaml or NAME.yml sidecar"
    } else {
        ""
    };
    Entry::Reject(format!("{name}: {}/ accepts {accepts}{pair}", folder.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_names_are_ignored() {
        for n in [
            ".x.mp4",
            "~lock.mp4",
            "a.mp4.part",
            "a.lock",
            "a.tmp.mp4",
            "a.part.3",
            "a.crdownload",
            "b.mp4.download",
            "Clip.MP4.PART",
            "Report.PDF.CRDOWNLOAD",
            "a.TMP.pdf",
            "_processing",
        ] {
            assert!(ignored_name(n), "{n}");
        }
        for n in [
            "clip.mp4",
            "partial_report.pdf",
            "tmp.pdf",
            "a.LOCK",
            "CLIP.MP4",
        ] {
            assert!(!ignored_name(n), "{n}");
        }
    }
}
