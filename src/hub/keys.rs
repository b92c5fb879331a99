//! The hub's X25519 recipient keys for `hub_media_envelope_v1`: the site holds the
//! hub's public key as a PEM SubjectPublicKeyInfo, the hub a keyring of PEM PKCS#8
//! private keys (ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES), each named by its
//! key id, the hex SHA-256 of the raw public key. Same files as the reference's.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pkcs8::der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// id-X25519 (RFC 8410).
const X25519_OID: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.110");

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(msg: impl Into<String>) -> KeyError {
    KeyError::Invalid(msg.into())
}

/// The hex SHA-256 of a raw X25519 public key: the envelope's `recipient_key_id`.
pub fn key_id(public: &PublicKey) -> String {
    hex::encode(Sha256::digest(public.as_bytes()))
}

/// A hub's public recipient key, as a site holds it.
#[derive(Clone)]
pub struct Recipient {
    pub public: PublicKey,
}

impl Recipient {
    pub fn from_pem(pem: &str) -> Result<Recipient, KeyError> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| invalid(format!("not a PEM public key: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(invalid(format!(
                "a PEM \"PUBLIC KEY\" is needed, this is \"{label}\": use the public key `lxgate keys hub-recipient` printed"
            )));
        }
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&der)
            .map_err(|e| invalid(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if spki.algorithm.oid != X25519_OID {
            return Err(invalid(
                "the hub recipient key must be an X25519 public key",
            ));
        }
        let raw: [u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("an X25519 public key has 32 bytes"))?;
        Ok(Recipient {
            public: PublicKey::from(raw),
        })
    }

    /// Read from a file the way the reference insists: an absolute, regular,
    /// non-symlink file.
    pub fn from_file(path: &Path) -> Result<Recipient, KeyError> {
        let meta = regular_file(path)?;
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        Recipient::from_pem(&text)
    }

    pub fn id(&self) -> String {
        key_id(&self.public)
    }

    pub fn to_pem(&self) -> String {
        let spki = spki::SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifierRef {
                oid: X25519_OID,
                parameters: None,
            },
            subject_public_key: spki::der::asn1::BitStringRef::from_bytes(self.public.as_bytes())
                .expect("32 bytes"),
        };
        let der = spki.to_der().expect("a fixed-size structure encodes");
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &der)
            .expect("PEM encodes")
    }
}

/// One of the hub's private recipient keys.
pub struct RecipientKey {
    secret: StaticSecret,
}

impl RecipientKey {
    pub fn generate() -> RecipientKey {
        RecipientKey {
            secret: StaticSecret::random_from_rng(rand::rngs::OsRng),
        }
    }

    pub fn public(&self) -> Recipient {
        Recipient {
            public: PublicKey::from(&self.secret),
        }
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    pub fn from_pem(pem: &str) -> Result<RecipientKey, KeyError> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|_| invalid("not a PEM private key"))?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(invalid(format!(
                "a PEM \"PRIVATE KEY\" (PKCS#8) is needed, this is \"{label}\""
            )));
        }
        let info = pkcs8::PrivateKeyInfo::from_der(&der)
            .map_err(|_| invalid("not a PKCS#8 private key"))?;
        if info.algorithm.oid != X25519_OID {
            return Err(invalid(
                "the hub recipient private key must be an X25519 key",
            ));
        }
        // RFC 8410: the private key is itself an OCTET STRING of 32 bytes.
        let inner = pkcs8::der::asn1::OctetStringRef::from_der(info.private_key)
            .map_err(|_| invalid("the X25519 private key is malformed"))?;
        let raw: [u8; 32] = inner
            .as_bytes()
            .try_into()
            .map_err(|_| invalid("an X25519 private key has 32 bytes"))?;
        let raw = Zeroizing::new(raw);
        Ok(RecipientKey {
            secret: StaticSecret::from(*raw),
        })
    }

    /// PKCS#8 PEM, as `openssl genpkey -algorithm X25519` and the reference write it.
    pub fn to_pem(&self) -> Zeroizing<String> {
        let mut inner = Zeroizing::new(vec![0x04, 0x20]);
        inner.extend_from_slice(self.secret.as_bytes());
        let info = pkcs8::PrivateKeyInfo {
            algorithm: pkcs8::AlgorithmIdentifierRef {
                oid: X25519_OID,
                parameters: None,
            },
            private_key: &inner,
            public_key: None,
        };
        let der = Zeroizing::new(info.to_der().expect("a fixed-size structure encodes"));
        Zeroizing::new(
            pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &der)
                .expect("PEM encodes"),
        )
    }
}

fn regular_file(path: &Path) -> Result<std::fs::Metadata, KeyError> {
    if !path.is_absolute() {
        return Err(invalid(format!(
            "{}: recipient key paths must be absolute",
            path.display()
        )));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(invalid(format!(
            "{}: recipient keys must be regular files, not symlinks",
            path.display()
        )));
    }
    Ok(meta)
}

/// The hub's private keys by key id.
pub struct Keyring {
    keys: Vec<(String, RecipientKey)>,
}

impl Keyring {
    /// Load every file. Each must be absolute, regular, not world-accessible nor group
    /// writable, and owned by root or (`allow_own_uid`, systemd credentials, which
    /// belong to the service's user) by this process's user.
    pub fn load(paths: &[PathBuf], allow_own_uid: bool) -> Result<Keyring, KeyError> {
        if paths.is_empty() {
            return Err(invalid(
                "no recipient private key files: set ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES (services.lxgate.hub.transferApi.recipientKeyFiles) to the files `lxgate keys hub-recipient` wrote",
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        let mut keys: Vec<(String, RecipientKey)> = Vec::new();
        for p in paths {
            let meta = regular_file(p)?;
            if meta.uid() != 0 && !(allow_own_uid && meta.uid() == me) {
                return Err(invalid(format!(
                    "{}: recipient private keys must be owned by root",
                    p.display()
                )));
            }
            if meta.mode() & 0o027 != 0 {
                return Err(invalid(format!(
                    "{}: recipient private keys must not be readable by others or writable by the group (chmod 0600)",
                    p.display()
                )));
            }
            let text =
                Zeroizing::new(std::fs::read_to_string(p).map_err(|source| KeyError::Io {
                    path: p.clone(),
                    source,
                })?);
            let key = RecipientKey::from_pem(&text)
                .map_err(|e| invalid(format!("{}: {e}", p.display())))?;
            let id = key.public().id();
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(invalid(format!(
                    "{}: the same recipient key is listed twice",
                    p.display()
                )));
            }
            keys.push((id, key));
        }
        Ok(Keyring { keys })
    }

    pub fn get(&self, key_id: &str) -> Option<&RecipientKey> {
        self.keys.iter().find(|(k, _)| k == key_id).map(|(_, v)| v)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem() {
        let k = RecipientKey::generate();
        let pem = k.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = RecipientKey::from_pem(&pem).unwrap();
        assert_eq!(back.public().id(), k.public().id());
        let public = k.public().to_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(Recipient::from_pem(&public).unwrap().id(), k.public().id());
        assert!(
            Recipient::from_pem(&pem).is_err(),
            "a private key is not a recipient"
        );
    }

    #[test]
    fn a_keyring_refuses_loose_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, RecipientKey::generate().to_pem().as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(std::slice::from_ref(&p), true).err().unwrap();
        assert!(e.to_string().contains("chmod 0600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ring = Keyring::load(std::slice::from_ref(&p), true).unwrap();
        assert_eq!(ring.ids().count(), 1);
        assert!(
            Keyring::load(&[p.clone(), p.clone()], true).is_err(),
            "twice"
        );
        assert!(
            Keyring::load(&[PathBuf::from("k.pem")], true).is_err(),
            "relative"
        );
        assert!(Keyring::load(&[], true).is_err());
    }
}
