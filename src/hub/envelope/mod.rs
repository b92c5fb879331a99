//! `hub_media_envelope_v1`, profile `x25519-hkdf-sha256-aes256gcm-v1` (lx-dtypes
//! `hub_media_envelope`, lx-annotate `hub_export_envelope`, endoreg-db
//! `transfer_envelope`): the processed media travels as one AES-256-GCM ciphertext
//! as long as the plaintext, its tag in the envelope header beside a data key wrapped
//! to the hub's X25519 recipient key. The AAD binds every identity field.
//!
//! Sealing and opening stream: a chunk at a time, never the file in memory. GCM over
//! a stream is AES-CTR plus GHASH (RustCrypto `ctr`, `ghash`), since `aes-gcm` wants
//! the whole message in one buffer; the key wrap is a one-shot `aes-gcm`.

use std::io::{Read, Write};

use aes::cipher::KeyInit;
use aes_gcm::aead::{Aead, Payload};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use super::keys::{Keyring, Recipient};
use super::wire::reply::Rejection;
use super::wire::{valid_identifier, MEDIA_ROLE_PROCESSED};

mod gcm;
mod receipt;

use gcm::GcmStream;
pub use receipt::Receipt;

pub const CONTRACT_VERSION: &str = "hub_media_envelope_v1";
pub const RECEIPT_CONTRACT_VERSION: &str = "hub_media_envelope_receipt_v1";
pub const PROFILE: &str = "x25519-hkdf-sha256-aes256gcm-v1";
const WRAP_INFO: &[u8] = b"lx-hub-media-envelope-wrap-v1";
const TRANSFER_MODE: &str = "metadata_and_processed_media";
/// GCM's limit for one message (2^32 - 2 blocks of keystream).
pub const MAX_PLAINTEXT: u64 = (1u64 << 36) - 32;
/// Read size for sealing and opening files.
pub const CHUNK: usize = 1024 * 1024;

/// The envelope header, its 20 fields in the order the reference writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub contract_version: String,
    pub profile: String,
    pub transfer_key: String,
    pub source_node_key: String,
    pub source_center_key: String,
    pub target_node_key: String,
    pub resource_kind: String,
    pub resource_hash: String,
    pub processed_media_hash: String,
    pub transfer_mode: String,
    pub media_role: String,
    pub plaintext_sha256: String,
    pub plaintext_size: u64,
    pub recipient_key_id: String,
    pub ephemeral_public_key: String,
    pub wrap_salt: String,
    pub wrap_nonce: String,
    pub wrapped_data_encryption_key: String,
    pub payload_nonce: String,
    pub payload_tag: String,
}

/// What a transfer is, as the envelope binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub transfer_key: String,
    pub source_node_key: String,
    pub source_center_key: String,
    pub target_node_key: String,
    pub resource_kind: String,
    pub resource_hash: String,
    pub processed_media_hash: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Canonical unpadded base64url of exactly `N` bytes, or None.
fn unb64<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return None;
    }
    let v = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let arr: [u8; N] = v.try_into().ok()?;
    (b64(&arr) == s).then_some(arr)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// Python's `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)`:
/// serde_json's compact form of a sorted map, with every character outside printable
/// ASCII escaped as `\uXXXX` (serde_json already escapes the control characters).
pub fn canonical_json(fields: &std::collections::BTreeMap<&str, serde_json::Value>) -> Vec<u8> {
    let text = serde_json::to_string(fields).expect("a map of JSON values serializes");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.into_bytes()
}

impl Envelope {
    fn fields(&self, all: bool) -> std::collections::BTreeMap<&'static str, serde_json::Value> {
        let v = serde_json::to_value(self).expect("the envelope serializes");
        let serde_json::Value::Object(m) = v else {
            unreachable!("a struct serializes to an object")
        };
        m.into_iter()
            .filter(|(k, _)| {
                all || !matches!(k.as_str(), "wrapped_data_encryption_key" | "payload_tag")
            })
            .map(|(k, v)| {
                (
                    FIELD_NAMES
                        .iter()
                        .copied()
                        .find(|n| *n == k)
                        .expect("known field"),
                    v,
                )
            })
            .collect()
    }

    /// The AAD of the key wrap and the payload: the canonical JSON of the 18 fields
    /// other than the two AEAD outputs.
    pub fn authenticated_data(&self) -> Vec<u8> {
        canonical_json(&self.fields(false))
    }

    /// Hex SHA-256 of the canonical JSON of all 20 fields.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(canonical_json(&self.fields(true))))
    }

    /// The header value: compact JSON in field order.
    pub fn to_header(&self) -> String {
        serde_json::to_string(self).expect("the envelope serializes")
    }

    /// Parse and check a header strictly (lx-dtypes `HubMediaEnvelopeMetadata`):
    /// unknown or missing fields, a size sent as a string, a non-canonical or
    /// wrong-length binary field are all `envelope_metadata_invalid`.
    pub fn parse(header: &str) -> Result<Envelope, Rejection> {
        let e: Envelope = serde_json::from_str(header).map_err(|_| Rejection::MetadataInvalid)?;
        e.check().then_some(e).ok_or(Rejection::MetadataInvalid)
    }

    fn check(&self) -> bool {
        self.contract_version == CONTRACT_VERSION
            && self.profile == PROFILE
            && valid_identifier(&self.transfer_key, 255)
            && valid_identifier(&self.source_node_key, 253)
            && valid_identifier(&self.source_center_key, 255)
            && valid_identifier(&self.target_node_key, 253)
            && matches!(self.resource_kind.as_str(), "video" | "report")
            && !self.resource_hash.is_empty()
            && self.resource_hash.chars().count() <= 255
            && !self.resource_hash.chars().any(char::is_whitespace)
            && is_sha256_hex(&self.processed_media_hash)
            && self.transfer_mode == TRANSFER_MODE
            && self.media_role == MEDIA_ROLE_PROCESSED
            && is_sha256_hex(&self.plaintext_sha256)
            && self.plaintext_sha256 == self.processed_media_hash
            && self.plaintext_size > 0
            && is_sha256_hex(&self.recipient_key_id)
            && unb64::<32>(&self.ephemeral_public_key).is_some()
            && unb64::<16>(&self.wrap_salt).is_some()
            && unb64::<12>(&self.wrap_nonce).is_some()
            && unb64::<48>(&self.wrapped_data_encryption_key).is_some()
            && unb64::<12>(&self.payload_nonce).is_some()
            && unb64::<16>(&self.payload_tag).is_some()
    }

    /// The identity fields that differ from the transfer's (endoreg-db
    /// `validate_envelope_identity`), sorted.
    pub fn identity_mismatches(&self, t: &Identity) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = [
            ("transfer_key", &self.transfer_key, &t.transfer_key),
            ("source_node_key", &self.source_node_key, &t.source_node_key),
            ("target_node_key", &self.target_node_key, &t.target_node_key),
            (
                "source_center_key",
                &self.source_center_key,
                &t.source_center_key,
            ),
            ("resource_kind", &self.resource_kind, &t.resource_kind),
            ("resource_hash", &self.resource_hash, &t.resource_hash),
            (
                "processed_media_hash",
                &self.processed_media_hash,
                &t.processed_media_hash,
            ),
            (
                "plaintext_sha256",
                &self.plaintext_sha256,
                &t.processed_media_hash,
            ),
        ]
        .into_iter()
        .filter(|(_, got, want)| want.is_empty() || got != want)
        .map(|(n, _, _)| n)
        .collect();
        out.sort_unstable();
        out
    }
}

const FIELD_NAMES: [&str; 20] = [
    "contract_version",
    "profile",
    "transfer_key",
    "source_node_key",
    "source_center_key",
    "target_node_key",
    "resource_kind",
    "resource_hash",
    "processed_media_hash",
    "transfer_mode",
    "media_role",
    "plaintext_sha256",
    "plaintext_size",
    "recipient_key_id",
    "ephemeral_public_key",
    "wrap_salt",
    "wrap_nonce",
    "wrapped_data_encryption_key",
    "payload_nonce",
    "payload_tag",
];

fn wrapping_key(shared: &[u8; 32], salt: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(salt), shared)
        .expand(WRAP_INFO, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    okm
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the media is {0} bytes; the envelope carries 1 byte to 64 GiB")]
    Size(u64),
    #[error("the media changed while it was sealed (it no longer hashes to {0}): check the stored object with `lxgate storage audit --verify`")]
    Changed(String),
    #[error("the hub's recipient key is a low-order point, not a real X25519 key: ask the hub for its key (`lxgate keys hub-recipient`)")]
    WeakKey,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A sealed file: its envelope, and the ciphertext's hash and size (the sender keeps
/// these to check the hub's receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub envelope: Envelope,
    pub ciphertext_sha256: String,
    pub ciphertext_size: u64,
}

/// Seal `size` bytes of `plain` (which must hash to `id.processed_media_hash`) to
/// `recipient`, writing the ciphertext to `out`.
pub fn seal(
    plain: &mut impl Read,
    size: u64,
    out: &mut impl Write,
    id: &Identity,
    recipient: &Recipient,
) -> Result<Sealed, SealError> {
    use rand::RngCore;
    if size == 0 || size > MAX_PLAINTEXT {
        return Err(SealError::Size(size));
    }
    let mut rng = rand::rngs::OsRng;
    let ephemeral = EphemeralSecret::random_from_rng(rng);
    let ephemeral_public = PublicKey::from(&ephemeral);
    let mut dek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(dek.as_mut());
    let (mut salt, mut wrap_nonce, mut payload_nonce) = ([0u8; 16], [0u8; 12], [0u8; 12]);
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut wrap_nonce);
    rng.fill_bytes(&mut payload_nonce);
    let mut envelope = Envelope {
        contract_version: CONTRACT_VERSION.into(),
        profile: PROFILE.into(),
        transfer_key: id.transfer_key.clone(),
        source_node_key: id.source_node_key.clone(),
        source_center_key: id.source_center_key.clone(),
        target_node_key: id.target_node_key.clone(),
        resource_kind: id.resource_kind.clone(),
        resource_hash: id.resource_hash.clone(),
        processed_media_hash: id.processed_media_hash.clone(),
        transfer_mode: TRANSFER_MODE.into(),
        media_role: MEDIA_ROLE_PROCESSED.into(),
        plaintext_sha256: id.processed_media_hash.clone(),
        plaintext_size: size,
        recipient_key_id: recipient.id(),
        ephemeral_public_key: b64(ephemeral_public.as_bytes()),
        wrap_salt: b64(&salt),
        wrap_nonce: b64(&wrap_nonce),
        wrapped_data_encryption_key: b64(&[0u8; 48]),
        payload_nonce: b64(&payload_nonce),
        payload_tag: b64(&[0u8; 16]),
    };
    let aad = envelope.authenticated_data();
    let shared = ephemeral.diffie_hellman(&recipient.public);
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let kek = wrapping_key(shared.as_bytes(), &salt);
    let wrapped = aes_gcm::Aes256Gcm::new(aes_gcm::Key::<aes_gcm::Aes256Gcm>::from_slice(&kek[..]))
        .encrypt(
            (&wrap_nonce).into(),
            Payload {
                msg: dek.as_ref(),
                aad: &aad,
            },
        )
        .expect("AES-GCM encrypts 32 bytes");
    let mut gcm = GcmStream::new(&dek, &payload_nonce, &aad);
    let (mut plain_hash, mut cipher_hash) = (Sha256::new(), Sha256::new());
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let want = (size - done).min(CHUNK as u64) as usize;
        if want == 0 {
            break;
        }
        let n = read_full(plain, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        plain_hash.update(&buf[..n]);
        gcm.encrypt(&mut buf[..n]);
        cipher_hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    // The file must end where the size said, and hash to what was approved.
    let mut extra = [0u8; 1];
    if done != size
        || plain.read(&mut extra)? != 0
        || hex::encode(plain_hash.finalize()) != id.processed_media_hash
    {
        return Err(SealError::Changed(id.processed_media_hash.clone()));
    }
    out.flush()?;
    envelope.wrapped_data_encryption_key = b64(&wrapped);
    envelope.payload_tag = b64(&gcm.tag());
    Ok(Sealed {
        envelope,
        ciphertext_sha256: hex::encode(cipher_hash.finalize()),
        ciphertext_size: size,
    })
}

/// Fill `buf` unless the reader ends first; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// An envelope being opened: feed the ciphertext through `update` in order (each
/// chunk becomes plaintext in place), then `finish` says whether it was authentic.
/// Nothing read before `finish` succeeds may be used as media.
pub struct Opening {
    envelope: Envelope,
    gcm: GcmStream,
    cipher_hash: Sha256,
    plain_hash: Sha256,
    size: u64,
}

/// What an opened envelope proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub ciphertext_sha256: String,
    pub ciphertext_size: u64,
    pub fingerprint: String,
}

impl Opening {
    /// Unwrap the data key with the keyring's key for this envelope.
    pub fn start(envelope: &Envelope, keyring: &Keyring) -> Result<Opening, Rejection> {
        let key = keyring
            .get(&envelope.recipient_key_id)
            .ok_or(Rejection::RecipientKeyUnavailable)?;
        let epk = unb64::<32>(&envelope.ephemeral_public_key).ok_or(Rejection::MetadataInvalid)?;
        let salt = unb64::<16>(&envelope.wrap_salt).ok_or(Rejection::MetadataInvalid)?;
        let wrap_nonce = unb64::<12>(&envelope.wrap_nonce).ok_or(Rejection::MetadataInvalid)?;
        let wrapped =
            unb64::<48>(&envelope.wrapped_data_encryption_key).ok_or(Rejection::MetadataInvalid)?;
        let payload_nonce =
            unb64::<12>(&envelope.payload_nonce).ok_or(Rejection::MetadataInvalid)?;
        let shared = key.secret().diffie_hellman(&PublicKey::from(epk));
        if !shared.was_contributory() {
            return Err(Rejection::RecipientKeyAuthenticationFailed);
        }
        let kek = wrapping_key(shared.as_bytes(), &salt);
        let aad = envelope.authenticated_data();
        let dek = Zeroizing::new(
            aes_gcm::Aes256Gcm::new(aes_gcm::Key::<aes_gcm::Aes256Gcm>::from_slice(&kek[..]))
                .decrypt(
                    (&wrap_nonce).into(),
                    Payload {
                        msg: &wrapped,
                        aad: &aad,
                    },
                )
                .map_err(|_| Rejection::RecipientKeyAuthenticationFailed)?,
        );
        let dek: &[u8; 32] = dek
            .as_slice()
            .try_into()
            .map_err(|_| Rejection::RecipientKeyAuthenticationFailed)?;
        Ok(Opening {
            envelope: envelope.clone(),
            gcm: GcmStream::new(dek, &payload_nonce, &aad),
            cipher_hash: Sha256::new(),
            plain_hash: Sha256::new(),
            size: 0,
        })
    }

    /// Decrypt one chunk in place.
    pub fn update(&mut self, buf: &mut [u8]) {
        self.cipher_hash.update(&*buf);
        self.gcm.decrypt(buf);
        self.plain_hash.update(&*buf);
        self.size += buf.len() as u64;
    }

    /// The tag, then the plaintext's size and hash against the envelope.
    pub fn finish(self) -> Result<Opened, Rejection> {
        let expected = unb64::<16>(&self.envelope.payload_tag).ok_or(Rejection::MetadataInvalid)?;
        if self.size < self.envelope.plaintext_size {
            return Err(Rejection::StreamIncomplete);
        }
        let tag = self.gcm.tag();
        if !bool::from(tag.ct_eq(&expected)) {
            return Err(Rejection::PayloadAuthenticationFailed);
        }
        if self.size != self.envelope.plaintext_size
            || hex::encode(self.plain_hash.finalize()) != self.envelope.plaintext_sha256
        {
            return Err(Rejection::PlaintextIntegrityMismatch);
        }
        Ok(Opened {
            ciphertext_sha256: hex::encode(self.cipher_hash.finalize()),
            ciphertext_size: self.size,
            fingerprint: self.envelope.fingerprint(),
        })
    }
}

/// Open a whole ciphertext from `input` into `out` (tests, tools; the hub's receiver
/// streams its request body through `Opening` instead). `out` holds unauthenticated
/// plaintext until this returns Ok.
pub fn open(
    envelope: &Envelope,
    keyring: &Keyring,
    input: &mut impl Read,
    out: &mut impl Write,
) -> Result<Opened, OpenError> {
    let mut o = Opening::start(envelope, keyring)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        o.update(&mut buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(o.finish()?)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}", .0.code())]
    Rejected(Rejection),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Rejection> for OpenError {
    fn from(r: Rejection) -> OpenError {
        OpenError::Rejected(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::keys::RecipientKey;

    fn identity(media: &[u8]) -> Identity {
        Identity {
            transfer_key: "site-a__video__r__processed_v1".into(),
            source_node_key: "site-a".into(),
            source_center_key: "A".into(),
            target_node_key: "hub".into(),
            resource_kind: "video".into(),
            resource_hash: "r".into(),
            processed_media_hash: hex::encode(Sha256::digest(media)),
        }
    }

    fn keyring(k: &RecipientKey) -> (tempfile::TempDir, Keyring) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, k.to_pem().as_bytes()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ring = Keyring::load(&[p], true).unwrap();
        (dir, ring)
    }

    /// Our stream GCM against the one-shot `aes-gcm` for sizes around block edges,
    /// fed in uneven chunks.
    #[test]
    fn the_stream_is_aes_gcm() {
        let key = [7u8; 32];
        let nonce = [9u8; 12];
        for len in [1usize, 15, 16, 17, 31, 32, 33, 1000, 4097] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let oneshot = aes_gcm::Aes256Gcm::new(&key.into())
                .encrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &msg,
                        aad: b"aad",
                    },
                )
                .unwrap();
            let mut g = GcmStream::new(&key, &nonce, b"aad");
            let mut ct = msg.clone();
            let mut at = 0;
            for step in [5usize, 16, 3, 40].iter().cycle() {
                if at >= len {
                    break;
                }
                let end = (at + step).min(len);
                g.encrypt(&mut ct[at..end]);
                at = end;
            }
            let tag = g.tag();
            assert_eq!(&oneshot[..len], &ct[..], "ciphertext, {len}");
            assert_eq!(&oneshot[len..], &tag[..], "tag, {len}");
        }
    }

    #[test]
    fn seal_then_open_gives_the_same_bytes_and_the_receipt_matches() {
        let media = b"processed video".repeat(100_000);
        let k = RecipientKey::generate();
        let (_d, ring) = keyring(&k);
        let mut ct = Vec::new();
        let sealed = seal(
            &mut &media[..],
            media.len() as u64,
            &mut ct,
            &identity(&media),
            &k.public(),
        )
        .unwrap();
        assert_eq!(ct.len(), media.len());
        let header = sealed.envelope.to_header();
        assert!(header.len() < 1200 && header.is_ascii(), "{header}");
        let e = Envelope::parse(&header).unwrap();
        let mut plain = Vec::new();
        let opened = open(&e, &ring, &mut &ct[..], &mut plain).unwrap();
        assert_eq!(plain, media);
        assert_eq!(opened.ciphertext_sha256, sealed.ciphertext_sha256);
        let receipt = Receipt::for_envelope(&e, &opened, "id-1", "skip_processing_preserved_state");
        assert!(receipt.mismatches(&sealed).is_empty());
        let mut other = receipt.clone();
        other.ciphertext_sha256 = "0".repeat(64);
        assert_eq!(other.mismatches(&sealed), vec!["ciphertext_sha256"]);
    }

    #[test]
    fn tampering_is_refused_with_the_reference_codes() {
        let media = vec![3u8; 5000];
        let k = RecipientKey::generate();
        let (_d, ring) = keyring(&k);
        let mut ct = Vec::new();
        let s = seal(
            &mut &media[..],
            5000,
            &mut ct,
            &identity(&media),
            &k.public(),
        )
        .unwrap();
        let code = |e: &Envelope, ct: &[u8]| match open(e, &ring, &mut &ct[..], &mut Vec::new()) {
            Err(OpenError::Rejected(r)) => r,
            other => panic!("{other:?}"),
        };
        let mut bad = ct.clone();
        bad[4000] ^= 1;
        assert_eq!(
            code(&s.envelope, &bad),
            Rejection::PayloadAuthenticationFailed
        );
        assert_eq!(code(&s.envelope, &ct[..4999]), Rejection::StreamIncomplete);
        let mut e = s.envelope.clone();
        e.resource_hash = "other".into();
        assert_eq!(
            code(&e, &ct),
            Rejection::RecipientKeyAuthenticationFailed,
            "AAD binds identity"
        );
        let (_d2, other_ring) = keyring(&RecipientKey::generate());
        assert!(matches!(
            open(&s.envelope, &other_ring, &mut &ct[..], &mut Vec::new()),
            Err(OpenError::Rejected(Rejection::RecipientKeyUnavailable))
        ));
    }

    #[test]
    fn the_header_is_strict() {
        let media = vec![1u8; 10];
        let k = RecipientKey::generate();
        let s = seal(
            &mut &media[..],
            10,
            &mut Vec::new(),
            &identity(&media),
            &k.public(),
        )
        .unwrap();
        let v = serde_json::to_value(&s.envelope).unwrap();
        let parse = |v: &serde_json::Value| Envelope::parse(&v.to_string());
        assert!(parse(&v).is_ok());
        let mut x = v.clone();
        x["plaintext_size"] = serde_json::json!("10");
        assert!(parse(&x).is_err(), "size as a string");
        let mut x = v.clone();
        x["extra"] = serde_json::json!(1);
        assert!(parse(&x).is_err());
        let mut x = v.clone();
        x["wrap_salt"] = serde_json::json!(format!("{}=", v["wrap_salt"].as_str().unwrap()));
        assert!(parse(&x).is_err(), "padded");
        let mut x = v.clone();
        x["payload_tag"] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAB");
        assert!(parse(&x).is_err(), "non-canonical trailing bits");
        let mut x = v.clone();
        x["plaintext_sha256"] = serde_json::json!("0".repeat(64));
        assert!(parse(&x).is_err(), "processed hash is the plaintext hash");
    }

    #[test]
    fn canonical_json_escapes_like_python() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("b", serde_json::json!("é\u{7f}😀\n"));
        m.insert("a", serde_json::json!(5));
        assert_eq!(
            String::from_utf8(canonical_json(&m)).unwrap(),
            r#"{"a":5,"b":"\u00e9\u007f\ud83d\ude00\n"}"#
        );
    }
}
