//! Managed storage on disk: temp files under `tmp/`, objects under `objects/ab/cdef…`.

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Cheap to clone: the HTTP state that holds it is cloned several times per request.
#[derive(Debug, Clone)]
pub struct Storage {
    root: Arc<Path>,
}

impl Storage {
    pub fn new(root: impl Into<PathBuf>) -> Storage {
        Storage {
            root: Arc::from(root.into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn object_rel(sha256: &str) -> String {
        format!("objects/{}/{}", &sha256[..2], &sha256[2..])
    }

    /// Create tmp/ and objects/, and delete temp files a crash left behind. Only
    /// files named by this module (`.ingest-*`) are removed.
    pub fn prepare(&self) -> io::Result<usize> {
        fs::create_dir_all(self.tmp_dir())?;
        fs::create_dir_all(self.root.join("objects"))?;
        let mut removed = 0;
        for e in fs::read_dir(self.tmp_dir())? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(".ingest-") {
                fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn writer(&self) -> io::Result<StagedWriter> {
        let name = format!(".ingest-{}", uuid::Uuid::new_v4());
        let path = self.tmp_dir().join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)?;
        Ok(StagedWriter {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Move a staged file to its content path (or drop it if that content is already
    /// there) and fsync the directory so the name survives a power cut.
    pub fn place(&self, staged: Staged) -> io::Result<()> {
        let rel = Self::object_rel(&staged.sha256);
        let dest = self.root.join(&rel);
        let dir = dest.parent().expect("object path has a parent");
        fs::create_dir_all(dir)?;
        if dest.exists() {
            // Dropping `staged` removes the temp file.
            return Ok(());
        }
        fs::rename(&staged.path, &dest)?;
        staged.placed();
        File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// A temp file being written and hashed in one pass. Dropped without `finish`, it
/// deletes its file: an aborted upload leaves nothing behind.
pub struct StagedWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl StagedWriter {
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        self.file.as_mut().expect("not finished").write_all(buf)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(mut self) -> io::Result<Staged> {
        let file = self.file.take().expect("finish once");
        file.sync_all()?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        Ok(Staged {
            path: std::mem::take(&mut self.path),
            sha256: hex::encode(hasher.finalize()),
            size: self.size,
        })
    }
}

/// So a decoder (age) can write plaintext straight into staging.
impl Write for StagedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        StagedWriter::write(self, buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A complete, fsynced temp file with its hash. Dropped before it is placed, it
/// deletes its file: whichever boundary refuses it, on whatever path (a refused name,
/// a hash mismatch, a failed commit), the temp file goes with it and a refused upload
/// never leaves a full-size copy (for sealed media, plaintext) in `tmp/`.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Staged {
    /// Delete the temp file now (what dropping it does), where that reads clearer.
    pub fn discard(self) {
        drop(self)
    }

    /// The file now lives at its object path: nothing left to delete.
    fn placed(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_file_goes_when_dropped_and_stays_once_placed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path());
        storage.prepare().unwrap();
        let stage = |bytes: &[u8]| {
            let mut w = storage.writer().unwrap();
            w.write(bytes).unwrap();
            w.finish().unwrap()
        };
        let refused = stage(b"refused");
        let path = refused.path.clone();
        assert!(path.exists());
        drop(refused);
        assert!(!path.exists(), "a dropped staged file stays in tmp/");
        let kept = stage(b"kept");
        let object = storage.root().join(Storage::object_rel(&kept.sha256));
        storage.place(kept).unwrap();
        assert!(object.exists());
        assert!(std::fs::read_dir(storage.tmp_dir())
            .unwrap()
            .next()
            .is_none());
    }
}
