//! What each watched folder accepts, and how a directory entry is judged.

use std::os::unix::fs::FileTypeExt;

use crate::ingest::Kind;

pub struct Folder {
    pub name: &'static str,
    pub kind: Kind,
    pub extensions: &'static [&'static str],
    /// Carriers need a `NAME.json` sidecar.
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
        extensions: &["pdf"],
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

pub fn ignored_name(name: &str) -> bool {
    const PARTIAL: &[&str] = &[".tmp", ".part", ".partial", ".crdownload", ".download"];
    name.starts_with('.')
        || name.starts_with('~')
        || name.ends_with(".lock")
        || PARTIAL.iter().any(|s| name.ends_with(s))
        || name.contains(".tmp.")
        || name.contains(".part.")
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
    if folder.paired && ext == "json" {
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
        ", each with a NAME.json sidecar"
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
        ] {
            assert!(ignored_name(n), "{n}");
        }
        for n in ["clip.mp4", "partial_report.pdf", "tmp.pdf"] {
            assert!(!ignored_name(n), "{n}");
        }
    }
}
