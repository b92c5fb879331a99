//! Signed transfer requests (SPEC §8, beyond the reference): the node secret never
//! travels. The sender signs `METHOD \n PATH \n TIMESTAMP \n TRANSFER_KEY \n BODY_SHA256`
//! with HMAC-SHA256 under a key derived from the secret by PBKDF2 with a per-node salt.
//! That derived key is exactly the slow hash the hub stores, so the hub keeps no more
//! than before: a stolen hub table still does not reveal the secret (it does allow
//! forging signatures for that node, which still need its pinned client certificate).
//!
//! Each request carries a fresh random nonce (`X-Lxgate-Nonce`, appended to the signed
//! text as a sixth line), and the hub accepts each signature once (`access::replay`): a
//! captured request cannot be sent again, not even within the timestamp window.
//! Requests from senders before nonces sign the five lines and are still accepted once.
//!
//! The body hash is declared in a header, as in AWS SigV4's x-amz-content-sha256, so the
//! hub can check the signature before it reads a large body; it then checks the body
//! against the declared hash before anything is stored (for media the declared hash is
//! the file's sha256, which must also equal the registered resource_hash).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const TIMESTAMP: &str = "x-lxgate-timestamp";
pub const CONTENT_SHA256: &str = "x-lxgate-content-sha256";
pub const SIGNATURE: &str = "x-lxgate-signature";
pub const NONCE: &str = "x-lxgate-nonce";
/// How far a request's timestamp may be from the hub's clock, in seconds.
pub const WINDOW_SECS: i64 = 300;

/// What a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub timestamp: i64,
    pub transfer_key: &'a str,
    pub body_sha256: &'a str,
    /// Random per request; `None` only from senders that predate nonces.
    pub nonce: Option<&'a str>,
}

impl Signed<'_> {
    fn canonical(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path,
            self.timestamp,
            self.transfer_key,
            self.body_sha256.to_ascii_lowercase()
        );
        if let Some(nonce) = self.nonce {
            text.push('\n');
            text.push_str(nonce);
        }
        text
    }

    fn mac(&self, key: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(self.canonical().as_bytes());
        mac
    }

    pub fn sign(&self, key: &[u8]) -> String {
        hex::encode(self.mac(key).finalize().into_bytes())
    }

    /// Constant-time check of a hex signature; the signature's bytes when it verifies
    /// (the replay check remembers those, not the text, which has two cases of hex).
    pub fn verify(&self, key: &[u8], signature: &str) -> Option<Vec<u8>> {
        let sig = hex::decode(signature.trim()).ok()?;
        self.mac(key).verify_slice(&sig).is_ok().then_some(sig)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `timestamp` is within the window around `now` (both unix seconds). No
/// arithmetic that can overflow: a timestamp near i64::MIN must not wrap into the window.
pub fn fresh(timestamp: i64, now: i64) -> bool {
    skew(timestamp, now) <= WINDOW_SECS as u64
}

/// How many seconds `timestamp` is from `now`.
pub fn skew(timestamp: i64, now: i64) -> u64 {
    now.abs_diff(timestamp)
}

/// A fresh request nonce: 128 random bits, hex.
pub fn new_nonce() -> String {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    hex::encode(raw)
}

/// A nonce the hub accepts: 16 to 64 hex digits (it is part of the signed text).
pub fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ts: i64, body: &str) -> Signed<'_> {
        Signed {
            method: "POST",
            path: "/api/media/hub/transfers/",
            timestamp: ts,
            transfer_key: "job-1",
            body_sha256: body,
            nonce: None,
        }
    }

    #[test]
    fn a_signature_covers_every_part() {
        let key = [7u8; 32];
        let body = sha256_hex(b"{}");
        let sig = req(100, &body).sign(&key);
        assert!(req(100, &body).verify(&key, &sig).is_some());
        assert!(req(101, &body).verify(&key, &sig).is_none(), "timestamp");
        assert!(
            req(100, &sha256_hex(b"[]")).verify(&key, &sig).is_none(),
            "body"
        );
        assert!(req(100, &body).verify(&[8u8; 32], &sig).is_none(), "key");
        let mut other = req(100, &body);
        other.path = "/api/media/hub/transfers/job-1/status/";
        assert!(other.verify(&key, &sig).is_none(), "path");
        other = req(100, &body);
        other.transfer_key = "job-2";
        assert!(other.verify(&key, &sig).is_none(), "transfer key");
        assert!(req(100, &body).verify(&key, "zz").is_none(), "not hex");
        other = req(100, &body);
        other.nonce = Some("00112233445566778899aabbccddeeff");
        assert!(other.verify(&key, &sig).is_none(), "nonce added");
        let with_nonce = other.sign(&key);
        other.nonce = Some("00112233445566778899aabbccddeef0");
        assert!(other.verify(&key, &with_nonce).is_none(), "nonce changed");
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        assert!(fresh(1000, 1300) && fresh(1300, 1000));
        assert!(!fresh(1000, 1301) && !fresh(1301, 1000));
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_never_fresh() {
        let now: i64 = 1_764_000_000;
        assert!(!fresh(now.wrapping_sub(i64::MIN), now));
        assert!(!fresh(i64::MIN, now) && !fresh(i64::MAX, now));
        assert!(!fresh(now, i64::MIN) && !fresh(i64::MIN, i64::MAX));
        assert!(fresh(i64::MAX, i64::MAX - 300));
        assert_eq!(skew(i64::MIN, i64::MAX), u64::MAX);
    }

    #[test]
    fn nonces_are_fresh_and_valid() {
        let (a, b) = (new_nonce(), new_nonce());
        assert!(valid_nonce(&a) && a != b);
        assert!(!valid_nonce("short") && !valid_nonce(&"g".repeat(32)));
    }
}
