//! Reading an SAP IS-H bundle (a zip) safely. Nothing is extracted to disk: each file
//! entry is decompressed in memory under hard limits, so no path in the archive can ever
//! name a place on the filesystem.
//!
//! Before the zip crate decompresses anything, lxgate walks the archive itself and must
//! account for every byte: local entries tile the file from offset 0 up to the central
//! directory, the directory is followed by its end record, and the archive comment holds
//! no second end record. An archive with bytes nobody owns (a self-extractor stub, a
//! fake end record, data hidden between entries) is refused, because readers disagree
//! on such archives: the reference's Python reader would see other entries than lxgate.

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
    #[error("{0}; lxgate reads only archives whose every byte belongs to an entry or the central directory. Re-export the bundle as a plain zip")]
    Unaccounted(String),
    #[error("entry name is not valid UTF-8 although the archive marks it so (bytes {0}); re-export with UTF-8 file names")]
    NonUtf8Name(String),
    #[error("entry {0:?} contains a NUL character; re-export the bundle")]
    NulInName(String),
    #[error(
        "entry {0:?} is unsafe (absolute path, '..', backslash or colon): refused as a zip-slip attempt"
    )]
    Slip(String),
    #[error("entry {0:?} is a symbolic link; bundles may contain only files")]
    Symlink(String),
    #[error("entry {0:?} appears more than once; a bundle must name each table once")]
    Duplicate(String),
    #[error("entry {0:?} is both a file and a folder in the archive; re-export the bundle")]
    FileFolderClash(String),
    #[error("folder {0:?} has a table's name (*.txt); rename it and re-export the bundle")]
    FolderNamedTxt(String),
    #[error("entry {0:?} is encrypted; export the bundle without a password")]
    Encrypted(String),
    #[error("entry {name:?} uses compression method {method}; lxgate reads stored and deflate entries only: re-export with standard zip compression")]
    Method { name: String, method: u16 },
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

/// A table candidate: a file entry whose name ends in `.txt` (case-sensitive, as the
/// reference's `rglob("*.txt")`).
pub struct Entry {
    /// The entry's name as the reference decodes it (UTF-8 when flagged, else cp437).
    pub name: String,
    /// The path components after dropping empty and `.` ones (what extraction creates).
    pub parts: Vec<String>,
    pub bytes: Vec<u8>,
}

impl Entry {
    /// The file name alone: what the reference records as `source_file`.
    pub fn file_name(&self) -> &str {
        self.parts.last().map(String::as_str).unwrap_or("")
    }
}

/// One central-directory record, as read by our own walk.
struct Central {
    raw_name: Vec<u8>,
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    external: u32,
}

const EOCD: [u8; 4] = *b"PK\x05\x06";
const EOCD64: [u8; 4] = *b"PK\x06\x06";
const LOCATOR64: [u8; 4] = *b"PK\x06\x07";
const CENTRAL: [u8; 4] = *b"PK\x01\x02";
const LOCAL: [u8; 4] = *b"PK\x03\x04";
const DESCRIPTOR: [u8; 4] = *b"PK\x07\x08";

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u16(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u16::from_le_bytes(self.0.get(at..at.checked_add(2)?)?.try_into().ok()?) as u64)
    }
    fn u32(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u32::from_le_bytes(self.0.get(at..at.checked_add(4)?)?.try_into().ok()?) as u64)
    }
    fn u64(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from_le_bytes(
            self.0.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }
    fn slice(&self, at: u64, len: u64) -> Option<&[u8]> {
        let at = usize::try_from(at).ok()?;
        let len = usize::try_from(len).ok()?;
        self.0.get(at..at.checked_add(len)?)
    }
}

fn corrupt(what: &str) -> BundleError {
    BundleError::Corrupt(what.to_string())
}

/// The central directory, every byte of the file accounted for, or why not.
fn walk(bytes: &[u8], limits: Limits) -> Result<Vec<Central>, BundleError> {
    let b = Bytes(bytes);
    let len = bytes.len() as u64;
    // The end record: the last signature whose comment runs exactly to the end.
    let lowest = len.saturating_sub(22 + 65_535);
    let mut ends = (lowest..=len.checked_sub(22).ok_or_else(|| corrupt("too short"))?)
        .rev()
        .filter(|&i| {
            b.slice(i, 4) == Some(&EOCD) && b.u16(i + 20).map(|c| i + 22 + c) == Some(len)
        });
    let eocd = ends
        .next()
        .ok_or_else(|| corrupt("no end-of-central-directory record at the end of the file"))?;
    if ends.next().is_some() || bytes[eocd as usize + 22..].windows(4).any(|w| w == EOCD) {
        return Err(BundleError::Unaccounted(
            "the archive comment holds a second end-of-central-directory record, so readers disagree on the entries".into(),
        ));
    }
    let disk = b.u16(eocd + 4).unwrap_or(0) | b.u16(eocd + 6).unwrap_or(0);
    if disk != 0 {
        return Err(corrupt("multi-disk archives are not supported"));
    }
    let mut count = b.u16(eocd + 10).ok_or_else(|| corrupt("end record"))?;
    let mut cd_size = b.u32(eocd + 12).ok_or_else(|| corrupt("end record"))?;
    let mut cd_offset = b.u32(eocd + 16).ok_or_else(|| corrupt("end record"))?;
    // Where the central directory must end: the zip64 record, or the end record.
    let mut cd_end = eocd;
    if eocd >= 20 && b.slice(eocd - 20, 4) == Some(&LOCATOR64) {
        let at = b
            .u64(eocd - 20 + 8)
            .ok_or_else(|| corrupt("zip64 locator"))?;
        if b.slice(at, 4) != Some(&EOCD64) {
            return Err(corrupt("zip64 locator points to no zip64 end record"));
        }
        let record = b.u64(at + 4).ok_or_else(|| corrupt("zip64 end record"))? + 12;
        if at.checked_add(record) != Some(eocd - 20) {
            return Err(BundleError::Unaccounted(
                "bytes between the zip64 end record and its locator".into(),
            ));
        }
        count = b.u64(at + 32).ok_or_else(|| corrupt("zip64 end record"))?;
        cd_size = b.u64(at + 40).ok_or_else(|| corrupt("zip64 end record"))?;
        cd_offset = b.u64(at + 48).ok_or_else(|| corrupt("zip64 end record"))?;
        cd_end = at;
    }
    if count > limits.max_entries as u64 {
        return Err(BundleError::TooManyEntries(limits.max_entries));
    }
    match cd_offset.checked_add(cd_size) {
        Some(end) if end == cd_end => {}
        Some(end) if end < cd_end => {
            return Err(BundleError::Unaccounted(format!(
                "{} bytes before the archive's own offsets begin or after its central directory (a self-extractor stub or appended data)",
                cd_end - end
            )))
        }
        _ => return Err(corrupt("central directory runs past its end record")),
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = cd_offset;
    for _ in 0..count {
        if b.slice(at, 4) != Some(&CENTRAL) {
            return Err(corrupt("central directory entry signature"));
        }
        let field = |o: u64| {
            b.u32(at + o)
                .ok_or_else(|| corrupt("central directory entry"))
        };
        let short = |o: u64| {
            b.u16(at + o)
                .ok_or_else(|| corrupt("central directory entry"))
        };
        let (n, e, c) = (short(28)?, short(30)?, short(32)?);
        let mut entry = Central {
            raw_name: b
                .slice(at + 46, n)
                .ok_or_else(|| corrupt("central directory name"))?
                .to_vec(),
            flags: short(8)? as u16,
            method: short(10)? as u16,
            crc: field(16)? as u32,
            compressed: field(20)?,
            uncompressed: field(24)?,
            offset: field(42)?,
            external: field(38)? as u32,
        };
        // Zip64 extra field: the 8-byte values replace the saturated ones, in order.
        let extra = b
            .slice(at + 46 + n, e)
            .ok_or_else(|| corrupt("extra field"))?;
        let mut x = 0usize;
        while x + 4 <= extra.len() {
            let tag = u16::from_le_bytes([extra[x], extra[x + 1]]);
            let size = u16::from_le_bytes([extra[x + 2], extra[x + 3]]) as usize;
            let body = extra
                .get(x + 4..x + 4 + size)
                .ok_or_else(|| corrupt("extra field"))?;
            if tag == 1 {
                let mut vals = body
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
                for slot in [
                    &mut entry.uncompressed,
                    &mut entry.compressed,
                    &mut entry.offset,
                ] {
                    if *slot == 0xFFFF_FFFF {
                        *slot = vals.next().ok_or_else(|| corrupt("zip64 extra field"))?;
                    }
                }
            }
            x += 4 + size;
        }
        entries.push(entry);
        at += 46 + n + e + c;
    }
    if at != cd_offset + cd_size {
        return Err(BundleError::Unaccounted(
            "the central directory's size does not match its entries".into(),
        ));
    }
    // The local entries must tile [0, cd_offset) in order, with no gap and no overlap.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].offset);
    let mut expected = 0u64;
    for &i in &order {
        let e = &entries[i];
        if e.offset != expected {
            return Err(BundleError::Unaccounted(if e.offset > expected {
                format!(
                    "{} bytes at offset {expected} belong to no entry (a self-extractor stub or hidden data)",
                    e.offset - expected
                )
            } else {
                format!("entries overlap at offset {}", e.offset)
            }));
        }
        if b.slice(e.offset, 4) != Some(&LOCAL) {
            return Err(corrupt("local header signature"));
        }
        let n = b
            .u16(e.offset + 26)
            .ok_or_else(|| corrupt("local header"))?;
        let x = b
            .u16(e.offset + 28)
            .ok_or_else(|| corrupt("local header"))?;
        if b.slice(e.offset + 30, n) != Some(e.raw_name.as_slice()) {
            return Err(BundleError::Unaccounted(format!(
                "the local header of {:?} names another file than the central directory",
                String::from_utf8_lossy(&e.raw_name)
            )));
        }
        let local_flags = b.u16(e.offset + 6).ok_or_else(|| corrupt("local header"))?;
        if local_flags & 1 != 0 {
            return Err(BundleError::Encrypted(
                String::from_utf8_lossy(&e.raw_name).into_owned(),
            ));
        }
        let data_end = (e.offset + 30 + n + x)
            .checked_add(e.compressed)
            .ok_or_else(|| corrupt("entry size"))?;
        expected = if e.flags & 8 != 0 {
            // A data descriptor: optional signature, CRC, then 4- or 8-byte sizes.
            let next = order
                .iter()
                .map(|&j| entries[j].offset)
                .find(|&o| o > e.offset)
                .unwrap_or(cd_offset);
            let signed = b.slice(data_end, 4) == Some(&DESCRIPTOR);
            let crc_at = data_end + if signed { 4 } else { 0 };
            let fits = [12u64, 20]
                .iter()
                .any(|l| crc_at + l == next && b.u32(crc_at) == Some(e.crc as u64));
            if !fits {
                return Err(BundleError::Unaccounted(format!(
                    "the data descriptor of {:?} does not end where the next entry begins",
                    String::from_utf8_lossy(&e.raw_name)
                )));
            }
            next
        } else {
            data_end
        };
    }
    if expected != cd_offset {
        return Err(if expected < cd_offset {
            BundleError::Unaccounted(format!(
                "{} bytes between the last entry and the central directory belong to no entry",
                cd_offset - expected
            ))
        } else {
            corrupt("the last entry runs into the central directory")
        });
    }
    Ok(entries)
}

/// IBM code page 437, bytes 0x80..=0xFF: how the reference's Python reader decodes
/// a name the archive does not mark as UTF-8.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

fn decode_name(raw: &[u8], flags: u16) -> Result<String, BundleError> {
    let name = if flags & 0x800 != 0 {
        std::str::from_utf8(raw)
            .map_err(|_| BundleError::NonUtf8Name(hex::encode(raw)))?
            .to_string()
    } else {
        let high: Vec<char> = CP437_HIGH.chars().collect();
        raw.iter()
            .map(|&b| {
                if b < 0x80 {
                    b as char
                } else {
                    high[(b - 0x80) as usize]
                }
            })
            .collect()
    };
    if name.contains('\0') {
        return Err(BundleError::NulInName(name.replace('\0', "\\0")));
    }
    Ok(name)
}

/// What the bundle holds: its `.txt` tables sorted as the reference walks them (by path
/// components), and the names of all other file entries.
pub struct Contents {
    pub tables: Vec<Entry>,
    pub others: Vec<String>,
}

pub fn read(bytes: &[u8], limits: Limits) -> Result<Contents, BundleError> {
    let central = walk(bytes, limits)?;
    // Names, safety, and the folder tree extraction would build.
    let mut names = Vec::with_capacity(central.len());
    let mut raw_seen = BTreeSet::new();
    let mut files: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut folders: BTreeSet<Vec<String>> = BTreeSet::new();
    for c in &central {
        let name = decode_name(&c.raw_name, c.flags)?;
        if name.starts_with('/')
            || name.split('/').any(|p| p == "..")
            || name.contains('\\')
            || name.contains(':')
        {
            return Err(BundleError::Slip(name));
        }
        if (c.external >> 16) & 0o170000 == 0o120000 {
            return Err(BundleError::Symlink(name));
        }
        if c.flags & 0x41 != 0 {
            return Err(BundleError::Encrypted(name));
        }
        if !raw_seen.insert(c.raw_name.clone()) {
            return Err(BundleError::Duplicate(name));
        }
        let parts: Vec<String> = name
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(str::to_string)
            .collect();
        let is_dir = name.ends_with('/');
        for k in 1..parts.len() {
            folders.insert(parts[..k].to_vec());
        }
        if is_dir {
            folders.insert(parts.clone());
        } else {
            if parts.is_empty() {
                return Err(BundleError::FileFolderClash(name));
            }
            if c.method != 0 && c.method != 8 {
                return Err(BundleError::Method {
                    name,
                    method: c.method,
                });
            }
            if !files.insert(parts.clone()) {
                return Err(BundleError::Duplicate(name));
            }
        }
        names.push((name, parts, is_dir));
    }
    if let Some(clash) = files.iter().find(|f| folders.contains(*f)) {
        return Err(BundleError::FileFolderClash(clash.join("/")));
    }
    if let Some(folder) = folders
        .iter()
        .find(|f| f.last().is_some_and(|l| l.ends_with(".txt")))
    {
        return Err(BundleError::FolderNamedTxt(folder.join("/")));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| BundleError::Corrupt(e.to_string()))?;
    if zip.len() != central.len() {
        return Err(BundleError::Unaccounted(format!(
            "the zip reader sees {} entries, the central directory {}",
            zip.len(),
            central.len()
        )));
    }
    let mut total = 0u64;
    let mut tables = Vec::new();
    let mut others = Vec::new();
    for (i, (name, parts, is_dir)) in names.into_iter().enumerate() {
        if is_dir {
            continue;
        }
        let c = &central[i];
        if c.uncompressed > 1 << 20 {
            let ratio = c.uncompressed / c.compressed.max(1);
            if ratio > limits.max_ratio {
                return Err(BundleError::Ratio {
                    name,
                    ratio,
                    limit: limits.max_ratio,
                });
            }
        }
        if c.uncompressed > limits.max_entry_bytes {
            return Err(BundleError::EntryTooLarge {
                name,
                size: c.uncompressed,
                limit: limits.max_entry_bytes,
            });
        }
        let f = zip
            .by_index(i)
            .map_err(|e| BundleError::Corrupt(format!("{name}: {e}")))?;
        if f.name_raw() != c.raw_name.as_slice() {
            return Err(BundleError::Unaccounted(
                "the zip reader and the central directory disagree on entry names".into(),
            ));
        }
        // The declared size may lie: read at most one byte past the limit. Every file
        // is read to its end, so a bad checksum anywhere refuses the bundle, as the
        // reference's extraction does.
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
        if parts.last().is_some_and(|l| l.ends_with(".txt")) {
            tables.push(Entry {
                name,
                parts,
                bytes: buf,
            });
        } else {
            others.push(name);
        }
    }
    tables.sort_by(|a, b| a.parts.cmp(&b.parts));
    Ok(Contents { tables, others })
}
