//! When is a dropped file complete? When its identity — (dev, inode, size, mtime) —
//! stays put for the settle period. The watcher and the SAP import both decide by it.

use std::os::unix::fs::MetadataExt;

/// (dev, inode, size, mtime seconds, mtime nanoseconds).
pub type FileIdentity = (u64, u64, u64, i64, i64);

pub fn identity(m: &std::fs::Metadata) -> FileIdentity {
    (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())
}
