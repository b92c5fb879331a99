//! Writes that survive a power cut: a file is either complete under its final name or
//! absent. Every boundary and operator command that writes files uses these two.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Make the directory's entries (a rename, a new name) durable. Best effort: a
/// filesystem that cannot fsync a directory has nothing more to offer.
pub fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// Flush every file of `dir`'s filesystem to disk in one call: one journal commit for a
/// batch of files written without fsync, instead of one per file.
pub fn syncfs(dir: &Path) -> std::io::Result<()> {
    rustix::fs::syncfs(&File::open(dir)?).map_err(std::io::Error::from)
}

/// Write `bytes` to `temp` (mode `mode` when given), fsync it and rename it to `path`.
/// The caller names the temp file, because each caller's cleanup recognises its own
/// leftovers, and calls `sync_dir` on the parent once per batch of renames.
pub fn write_atomic(
    path: &Path,
    temp: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> std::io::Result<()> {
    let _ = fs::remove_file(temp);
    let mut f = File::create_new(temp)?;
    f.write_all(bytes)?;
    if let Some(mode) = mode {
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    f.sync_all()?;
    fs::rename(temp, path)
}
