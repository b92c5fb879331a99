//! Reading an SAP IS-H bundle (a zip) safely. Nothing is extracted to disk: each
//! accepted `.txt` entry is read into memory under hard limits, so no path in the
//! archive can ever name a place on the filesystem.

use std::collections::BTreeSet;
use std::io::Read;

use crate::config::SapImport;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    pub max_entry_bytes: u64,
    pub max_total_bytes: u64,
    /// Uncompressed / compressed, checked for entries over 1 MiB.
    pub max_ratio: u64,
}

impl Limits {
    /// The bundle limits `[sap_import]` sets; the entry count stays fixed.
    pub fn from_settings(s: &SapImport) -> Limits {
        Limits {
            max_entry_bytes: s.max_entry_bytes,
            max_total_bytes: s.max_total_bytes,
            max_ratio: s.max_ratio,
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_entry_bytes: SapImport::DEFAULT_MAX_ENTRY_BYTES,
            max_total_bytes: SapImport::DEFAULT_MAX_TOTAL_BYTES,
            max_ratio: SapImport::DEFAULT_MAX_RATIO,
        }
    }
}

/// Why a bundle was refused; each names what to do.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    #[error("not a readable zip archive (truncated or corrupt: {0}); re-export the bundle")]
    Corrupt(String),
    #[error("entry name is not valid UTF-8 (bytes {0}); re-export with UTF-8 file names")]
    NonUtf8Name(String),
    #[error(
        "entry {0:?} escapes the archive (absolute path or '..'): refused as a zip-slip attempt"
    )]
    Slip(String),
    #[error("entry {0:?} is a symbolic link; bundles may contain only files")]
    Symlink(String),
    #[error("entry {0:?} appears more than once; a bundle must name each table once")]
    Duplicate(String),
    #[error("entry {0:?} is encrypted; export the bundle without a password")]
    Encrypted(String),
    #[error("entry {name:?} is {size} bytes uncompressed, over the {limit}-byte entry limit")]
    EntryTooLarge { name: String, size: u64, limit: u64 },
    #[error("bundle expands to more than {0} bytes: refused as a possible zip bomb")]
    TotalTooLarge(u64),
    #[error("entry {name:?} expands {ratio}:1, over the {limit}:1 limit: refused as a possible zip bomb")]
    Ratio {
        name: String,
        ratio: u64,
        limit: u64,
    },
    #[error("bundle has more than {0} entries")]
    TooManyEntries(usize),
}

pub struct Entry {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Entry names straight from the central directory. The zip crate indexes entries by
/// name, so a duplicate would silently shadow its twin; we look before it does.
/// None when the directory cannot be walked (the zip crate then reports why).
fn central_names(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let u16_at =
        |i: usize| Some(u16::from_le_bytes(bytes.get(i..i + 2)?.try_into().ok()?) as usize);
    let u32_at =
        |i: usize| Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?) as usize);
    let lowest = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=bytes.len().checked_sub(22)?)
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let (count, mut at) = (u16_at(eocd + 10)?, u32_at(eocd + 16)?);
    let mut names = Vec::with_capacity(count.min(limits_cap()));
    for _ in 0..count {
        if bytes.get(at..at + 4)? != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let (n, e, c) = (u16_at(at + 28)?, u16_at(at + 30)?, u16_at(at + 32)?);
        names.push(bytes.get(at + 46..at + 46 + n)?.to_vec());
        at += 46 + n + e + c;
    }
    Some(names)
}

fn limits_cap() -> usize {
    Limits::default().max_entries
}

/// The `.txt` entries (any depth) in archive order, plus names of other entries.
pub fn read(bytes: &[u8], limits: Limits) -> Result<(Vec<Entry>, Vec<String>), BundleError> {
    if let Some(names) = central_names(bytes) {
        if names.len() > limits.max_entries {
            return Err(BundleError::TooManyEntries(limits.max_entries));
        }
        let mut seen = BTreeSet::new();
        for raw in names {
            let name = std::str::from_utf8(&raw)
                .map_err(|_| BundleError::NonUtf8Name(hex::encode(&raw)))?;
            if !seen.insert(name.to_string()) {
                return Err(BundleError::Duplicate(name.to_string()));
            }
        }
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(BundleError::TooManyEntries(limits.max_entries));
    }
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let mut tables = Vec::new();
    let mut others = Vec::new();
    for i in 0..zip.len() {
        let (name, is_dir) = {
            let f = zip
                .by_index_raw(i)
                .map_err(|e| BundleError::Corrupt(e.to_string()))?;
            let name = std::str::from_utf8(f.name_raw())
                .map_err(|_| BundleError::NonUtf8Name(hex::encode(f.name_raw())))?
                .to_string();
            if name.starts_with('/')
                || name.starts_with('\\')
                || name.split(['/', '\\']).any(|c| c == "..")
                || name.contains(':')
            {
                return Err(BundleError::Slip(name));
            }
            if f.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
                return Err(BundleError::Symlink(name));
            }
            if !seen.insert(name.clone()) {
                return Err(BundleError::Duplicate(name));
            }
            if f.encrypted() {
                return Err(BundleError::Encrypted(name));
            }
            if f.size() > 1 << 20 {
                let ratio = f.size() / f.compressed_size().max(1);
                if ratio > limits.max_ratio {
                    return Err(BundleError::Ratio {
                        name,
                        ratio,
                        limit: limits.max_ratio,
                    });
                }
            }
            if f.size() > limits.max_entry_bytes {
                return Err(BundleError::EntryTooLarge {
                    name,
                    size: f.size(),
                    limit: limits.max_entry_bytes,
                });
            }
            (name, f.is_dir())
        };
        if is_dir {
            continue;
        }
        if !name.to_ascii_lowercase().ends_with(".txt") {
            others.push(name);
            continue;
        }
        let f = zip
            .by_index(i)
            .map_err(|e| BundleError::Corrupt(e.to_string()))?;
        // The declared size may lie: read at most one byte past the limit.
        let mut buf = Vec::new();
        f.take(limits.max_entry_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| BundleError::Corrupt(format!("{name}: {e}")))?;
        if buf.len() as u64 > limits.max_entry_bytes {
            return Err(BundleError::EntryTooLarge {
                name,
                size: buf.len() as u64,
                limit: limits.max_entry_bytes,
            });
        }
        total += buf.len() as u64;
        if total > limits.max_total_bytes {
            return Err(BundleError::TotalTooLarge(limits.max_total_bytes));
        }
        tables.push(Entry { name, bytes: buf });
    }
    Ok((tables, others))
}
