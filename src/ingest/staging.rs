//! Managed storage on disk: temp files under `tmp/`, objects under `objects/ab/cdef…`
//! (plain) or `objects/ab/cdef….age` (sealed). A storage handle chosen for a kind of
//! media (`for_kind`) stages in that kind's form at rest: a sealed kind is hashed as
//! plaintext and sealed in the same pass, so no plaintext byte reaches the disk.

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::at_rest::{AtRest, Object, OpenError};
use super::Kind;
use crate::config::{Config, StoragePolicy};
use crate::crypto::age::{Recipient, Sealing};
use crate::crypto::keyring::MasterKeys;

/// Cheap to clone: the HTTP state that holds it is cloned several times per request.
#[derive(Debug, Clone)]
pub struct Storage {
    root: Arc<Path>,
    policy: StoragePolicy,
    keys: MasterKeys,
    /// Set by `for_kind`: the form new objects are staged in.
    at_rest: Option<AtRest>,
}

impl Storage {
    pub fn new(root: impl Into<PathBuf>, policy: StoragePolicy, keys: MasterKeys) -> Storage {
        Storage {
            root: Arc::from(root.into()),
            policy,
            keys,
            at_rest: None,
        }
    }

    /// Managed storage as the settings describe it: root, per-kind policy, master key.
    pub fn from_config(config: &Config) -> Storage {
        Storage::new(
            &config.paths.storage,
            config.storage,
            MasterKeys::new(&config.host.master_key),
        )
    }

    /// This storage, staging new objects the way the policy keeps `kind`.
    pub fn for_kind(&self, kind: Kind) -> Storage {
        let at_rest = match kind {
            Kind::Video => self.policy.video,
            Kind::Report => self.policy.report,
            Kind::Preanonymized => self.policy.preanonymized,
        };
        Storage {
            at_rest: Some(at_rest),
            ..self.clone()
        }
    }

    /// This storage, staging in `at_rest` whatever the policy says (smoke, recovery).
    pub fn staging_as(&self, at_rest: AtRest) -> Storage {
        Storage {
            at_rest: Some(at_rest),
            ..self.clone()
        }
    }

    /// The form `for_kind` chose, if it was called.
    pub fn at_rest(&self) -> Option<AtRest> {
        self.at_rest
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn object_rel(sha256: &str, at_rest: AtRest) -> String {
        let suffix = match at_rest {
            AtRest::Plain => "",
            AtRest::Sealed => ".age",
        };
        format!("objects/{}/{}{suffix}", &sha256[..2], &sha256[2..])
    }

    /// Create tmp/ and objects/, and delete temp files a crash left behind. Only
    /// files named by this module (`.ingest-*`) are removed, and only those no running
    /// process claims: every process that opens storage (serve, watch, sap-import, keys
    /// rotate) prepares it, and must not take the temp file of an upload another one is
    /// still writing.
    pub fn prepare(&self) -> io::Result<usize> {
        fs::create_dir_all(self.tmp_dir())?;
        fs::create_dir_all(self.root.join("objects"))?;
        let mut removed = 0;
        for e in fs::read_dir(self.tmp_dir())? {
            let e = e?;
            if !e.file_name().to_string_lossy().starts_with(".ingest-") {
                continue;
            }
            let file = match File::open(e.path()) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => continue,
                Err(err) => return Err(err.into()),
            }
            match fs::remove_file(e.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// A new temp file in `tmp/`, claimed (`InUse`) until the claim is dropped: `prepare`
    /// clears it only after a crash, never while a process holds it.
    pub fn temp_file(&self, what: &str) -> io::Result<(File, PathBuf, InUse)> {
        loop {
            let path = self
                .tmp_dir()
                .join(format!(".ingest-{what}{}", uuid::Uuid::new_v4()));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)?;
            // Between creating and locking, another process's `prepare` may have locked
            // the new file (then it is about to delete it) or deleted it already (then
            // the name no longer leads to this file): take a new one.
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => continue,
                Err(err) => return Err(err.into()),
            }
            let ours = file.metadata()?;
            match fs::metadata(&path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            // The lock belongs to the open file, so a second handle keeps it when the
            // writer's handle is closed (`finish`) before the file is placed.
            let claim = InUse(file.try_clone()?);
            return Ok((file, path, claim));
        }
    }

    pub fn writer(&self) -> io::Result<StagedWriter> {
        let at_rest = self.at_rest.ok_or_else(|| {
            io::Error::other("managed storage was used before the media's kind was chosen")
        })?;
        // The recipient before the file: an unreadable key refuses the upload early.
        let recipient = match at_rest {
            AtRest::Plain => None,
            AtRest::Sealed => Some(self.keys.sealing_recipient().map_err(io::Error::other)?),
        };
        let (file, path, claim) = self.temp_file("")?;
        let sink = match &recipient {
            None => Sink::Plain(file),
            Some(to) => Sink::Sealed(Box::new(Sealing::start(to, file)?)),
        };
        Ok(StagedWriter {
            sink: Some(sink),
            claim,
            path,
            hasher: Sha256::new(),
            size: 0,
            sealed_to: recipient,
        })
    }

    /// Move a staged file to its content path (or drop it if that content is already
    /// there) and fsync the directory so the name survives a power cut. True when the
    /// object was already there.
    pub fn place(&self, staged: Staged) -> io::Result<bool> {
        let dest = self.root.join(staged.object_rel());
        let dir = dest.parent().expect("object path has a parent");
        fs::create_dir_all(dir)?;
        if dest.exists() {
            // Dropping `staged` removes the temp file.
            return Ok(true);
        }
        fs::rename(&staged.path, &dest)?;
        staged.placed();
        File::open(dir)?.sync_all()?;
        Ok(false)
    }

    /// `staged` (a temp file of this storage) staged again in the form this storage
    /// stages in; the old temp file goes.
    pub fn restage(&self, staged: Staged) -> Result<Staged, OpenError> {
        let mut from = Object::open(&staged.path, staged.at_rest(), &self.keys)?;
        let mut to = self.writer()?;
        io::copy(&mut from, &mut to)?;
        Ok(to.finish()?)
    }

    /// A stored object for reading, opened with the master identities if it is sealed.
    pub fn open(&self, rel: &str, at_rest: AtRest) -> Result<Object, OpenError> {
        Object::open(&self.root.join(rel), at_rest, &self.keys)
    }
}

/// A process's claim on one temp file: an exclusive `flock` on it, released when the
/// last handle of the claim closes (placing or discarding the file ends it).
#[derive(Debug)]
pub struct InUse(File);

impl InUse {
    fn clone_claim(&self) -> io::Result<InUse> {
        Ok(InUse(self.0.try_clone()?))
    }
}

enum Sink {
    Plain(File),
    Sealed(Box<Sealing<File>>),
}

/// A temp file being written and hashed in one pass (the hash is of the plaintext,
/// whatever the file holds). Dropped without `finish`, it deletes its file: an aborted
/// upload leaves nothing behind.
pub struct StagedWriter {
    sink: Option<Sink>,
    claim: InUse,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    sealed_to: Option<Recipient>,
}

impl StagedWriter {
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        match self.sink.as_mut().expect("not finished") {
            Sink::Plain(f) => f.write_all(buf),
            Sink::Sealed(s) => s.write_all(buf),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(mut self) -> io::Result<Staged> {
        let file = match self.sink.take().expect("finish once") {
            Sink::Plain(f) => f,
            Sink::Sealed(s) => s.finish()?,
        };
        file.sync_all()?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        Ok(Staged {
            _claim: self.claim.clone_claim()?,
            path: std::mem::take(&mut self.path),
            sha256: hex::encode(hasher.finalize()),
            size: self.size,
            sealed_to: self.sealed_to.take(),
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
        if self.sink.is_some() {
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
    /// Held, never read: the claim lasts as long as the temp file is this value's.
    _claim: InUse,
    pub path: PathBuf,
    /// Of the plaintext: content hash, dedupe and transfer identity.
    pub sha256: String,
    /// Of the plaintext.
    pub size: u64,
    /// The recipient a sealed file is sealed to; None for a plain file.
    pub sealed_to: Option<Recipient>,
}

impl Staged {
    pub fn at_rest(&self) -> AtRest {
        match self.sealed_to {
            None => AtRest::Plain,
            Some(_) => AtRest::Sealed,
        }
    }

    /// Where it is stored once placed, relative to managed storage.
    pub fn object_rel(&self) -> String {
        Storage::object_rel(&self.sha256, self.at_rest())
    }

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
    use std::io::Read;

    fn storage(dir: &Path) -> Storage {
        let policy = StoragePolicy {
            video: AtRest::Plain,
            report: AtRest::Sealed,
            preanonymized: AtRest::Sealed,
        };
        let key = dir.join("master.age");
        let id = crate::crypto::age::Identity::generate();
        fs::write(
            &key,
            crate::crypto::age::ExposeSecret::expose_secret(&id.to_secret_string()),
        )
        .unwrap();
        let s = Storage::new(dir.join("storage"), policy, MasterKeys::new(key));
        s.prepare().unwrap();
        s
    }

    /// Another process's `prepare` (every command that opens storage runs one) leaves
    /// a temp file alone while it is being written and until it is placed or dropped,
    /// and clears one a crash left behind. Before the claim, `lxgate watch` starting
    /// beside a running serve deleted the serve's upload under it.
    #[test]
    fn prepare_clears_crash_leftovers_but_not_temp_files_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path()).for_kind(Kind::Video);
        let leftover = s.tmp_dir().join(".ingest-crashed");
        fs::write(&leftover, b"half").unwrap();
        let mut w = s.writer().unwrap();
        w.write(b"being written").unwrap();
        let writing = w.path.clone();
        assert_eq!(s.prepare().unwrap(), 1);
        assert!(!leftover.exists());
        assert!(writing.exists(), "a temp file being written was deleted");
        let staged = w.finish().unwrap();
        assert_eq!(s.prepare().unwrap(), 0);
        assert!(staged.path.exists(), "a staged, unplaced file was deleted");
        drop(staged);
        assert!(!writing.exists());
        let (out, path, claim) = s.temp_file("rotate-").unwrap();
        drop(out);
        assert_eq!(s.prepare().unwrap(), 0, "claimed after its writer closed");
        drop(claim);
        assert_eq!(s.prepare().unwrap(), 1, "no claim: a crash leftover");
        assert!(!path.exists());
    }

    #[test]
    fn a_staged_file_goes_when_dropped_and_stays_once_placed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(dir.path()).for_kind(Kind::Video);
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
        let object = storage.root().join(kept.object_rel());
        assert!(!storage.place(kept).unwrap());
        assert!(object.exists());
        assert!(std::fs::read_dir(storage.tmp_dir())
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn a_sealed_kind_never_writes_its_plaintext_and_opens_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(dir.path());
        // More than one age chunk, so the marker crosses a chunk boundary somewhere.
        let plain: Vec<u8> = b"MARKER-report-text "
            .iter()
            .copied()
            .cycle()
            .take(200_000)
            .collect();
        let mut w = storage.for_kind(Kind::Report).writer().unwrap();
        for part in plain.chunks(7000) {
            w.write(part).unwrap();
            // Every byte written so far, as the disk has it: no marker.
            let tmp: Vec<u8> = fs::read_dir(storage.tmp_dir())
                .unwrap()
                .flat_map(|e| fs::read(e.unwrap().path()).unwrap())
                .collect();
            assert!(!tmp.windows(6).any(|x| x == b"MARKER"));
        }
        let staged = w.finish().unwrap();
        assert_eq!(staged.sha256, hex::encode(Sha256::digest(&plain)));
        assert_eq!(staged.size, plain.len() as u64);
        let rel = staged.object_rel();
        assert!(rel.ends_with(".age"), "{rel}");
        storage.place(staged).unwrap();
        let on_disk = fs::read(storage.root().join(&rel)).unwrap();
        assert!(on_disk.starts_with(b"age-encryption.org/v1\n"));
        assert!(!on_disk.windows(6).any(|x| x == b"MARKER"));
        let mut back = Vec::new();
        storage
            .open(&rel, AtRest::Sealed)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn a_storage_without_a_kind_refuses_to_stage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(storage(dir.path()).writer().is_err());
    }
}
