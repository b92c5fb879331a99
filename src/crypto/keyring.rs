//! The host's age master identities as the service uses them: the key file (`[host]
//! master_key`) and, while `lxgate keys rotate` runs, the next identity beside it
//! (`<key>.next`). New objects are sealed to the newest identity the host has; sealed
//! objects open with any of them, so nothing becomes unreadable mid-rotation. Read
//! from disk on each use (a small file): a rotation run by root takes effect in a
//! running service without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::age::{AgeError, Identity, Recipient};

#[derive(Debug, thiserror::Error)]
#[error("the age master identity {} cannot be read ({source}): run lxgate-keys.service (lxgate keys ensure) and make sure this service user is in the keys group", path.display())]
pub struct KeyError {
    pub path: PathBuf,
    #[source]
    pub source: AgeError,
}

/// Cheap to clone, like the managed storage that holds it.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    path: Arc<Path>,
}

impl MasterKeys {
    pub fn new(path: impl Into<PathBuf>) -> MasterKeys {
        MasterKeys {
            path: Arc::from(path.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a rotation keeps the identity it moves objects to until it is done.
    pub fn next_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".next");
        self.path.with_file_name(name)
    }

    /// Every identity the host has, newest first (the next one during a rotation).
    pub fn identities(&self) -> Result<Vec<Identity>, KeyError> {
        let next = self.next_path();
        let mut out = Vec::new();
        let mut first_error = None;
        // During the last step of a rotation the key file is briefly absent while the
        // next one is renamed into place: either file alone is enough.
        for p in [next.as_path(), &self.path] {
            match Identity::from_file(p) {
                Ok(id) => out.push(id),
                Err(AgeError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && p == next => {}
                Err(e) => {
                    first_error.get_or_insert(KeyError {
                        path: p.to_path_buf(),
                        source: e,
                    });
                }
            }
        }
        match (out.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            (true, None) => unreachable!("the key file was tried"),
            (false, _) => Ok(out),
        }
    }

    /// The recipient new objects are sealed to.
    pub fn sealing_recipient(&self) -> Result<Recipient, KeyError> {
        Ok(self.identities()?[0].recipient())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_identity_seals_and_both_open() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::new(dir.path().join("master.age"));
        assert!(keys.identities().is_err(), "no key file is an error");
        let old = Identity::generate();
        let next = Identity::generate();
        let write = |p: &Path, id: &Identity| {
            std::fs::write(
                p,
                super::super::age::ExposeSecret::expose_secret(&id.to_secret_string()),
            )
            .unwrap()
        };
        write(keys.path(), &old);
        assert_eq!(keys.sealing_recipient().unwrap(), old.recipient());
        write(&keys.next_path(), &next);
        assert_eq!(keys.sealing_recipient().unwrap(), next.recipient());
        assert_eq!(keys.identities().unwrap().len(), 2);
        std::fs::remove_file(keys.path()).unwrap();
        assert_eq!(keys.sealing_recipient().unwrap(), next.recipient());
    }
}
