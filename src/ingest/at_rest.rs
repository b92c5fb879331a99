//! How a stored object is kept at rest, and how it is read back. Plain objects are
//! files; sealed ones are age files opened with the master identities, readable from
//! any offset (age's payload is a sequence of independently sealed chunks), which is
//! what byte ranges need.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

pub use crate::config::AtRest;
use crate::crypto::age::{AgeError, Opened};
use crate::crypto::keyring::{KeyError, MasterKeys};

/// The `upload_jobs.stored_as` value.
pub fn column(a: AtRest) -> &'static str {
    match a {
        AtRest::Plain => "plain",
        AtRest::Sealed => "age",
    }
}

pub fn from_column(s: &str) -> Option<AtRest> {
    match s {
        "plain" => Some(AtRest::Plain),
        "age" => Some(AtRest::Sealed),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("the sealed object does not open: {0}")]
    Sealed(#[from] AgeError),
    #[error("reading the stored object: {0}")]
    Io(#[from] io::Error),
}

/// Large enough for one sealed age chunk (64 KiB + tag), so a chunk is one read.
const READ_BUFFER: usize = 64 * 1024 + 16;

/// A stored object opened for reading its plaintext.
pub enum Object {
    Plain(File),
    Sealed(Box<Opened<BufReader<File>>>),
}

impl Object {
    pub fn open(path: &Path, at_rest: AtRest, keys: &MasterKeys) -> Result<Object, OpenError> {
        match at_rest {
            AtRest::Plain => Ok(Object::Plain(File::open(path)?)),
            AtRest::Sealed => {
                let identities = keys.identities()?;
                let file = BufReader::with_capacity(READ_BUFFER, File::open(path)?);
                Ok(Object::Sealed(Box::new(Opened::new(&identities, file)?)))
            }
        }
    }

    /// The plaintext length (for a sealed object, authenticated by its last chunk).
    pub fn plaintext_len(&mut self) -> Result<u64, OpenError> {
        match self {
            Object::Plain(f) => Ok(f.metadata()?.len()),
            Object::Sealed(o) => Ok(o.plaintext_len()?),
        }
    }
}

impl Read for Object {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Object::Plain(f) => f.read(buf),
            Object::Sealed(o) => o.read(buf),
        }
    }
}

impl Seek for Object {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Object::Plain(f) => f.seek(pos),
            Object::Sealed(o) => o.seek(pos),
        }
    }
}
