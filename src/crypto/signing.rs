//! Signed transfer requests (SPEC §8, beyond the reference): the node secret never
//! travels. The sender signs `METHOD \n PATH \n TIMESTAMP \n TRANSFER_KEY \n BODY_SHA256`
//! with HMAC-SHA256 under a key derived from the secret by PBKDF2 with a per-node salt.
//! That derived key is exactly the slow hash the hub stores, so the hub keeps no more
//! than before: a stolen hub table still does not reveal the secret (it does allow
//! forging signatures for that node, which still need its pinned client certificate).
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
/// How far a request's timestamp may be from the hub's clock, in seconds.
pub const WINDOW_SECS: i64 = 300;

/// What a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub timestamp: i64,
    pub transfer_key: &'a str,
    pub body_sha256: &'a str,
}

impl Signed<'_> {
    fn canonical(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            self.method.to_ascii_uppercase(),
            self.path,
            self.timestamp,
            self.transfer_key,
            self.body_sha256.to_ascii_lowercase()
        )
    }

    fn mac(&self, key: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(self.canonical().as_bytes());
        mac
    }

    pub fn sign(&self, key: &[u8]) -> String {
        hex::encode(self.mac(key).finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, key: &[u8], signature: &str) -> bool {
        let Ok(sig) = hex::decode(signature.trim()) else {
            return false;
        };
        self.mac(key).verify_slice(&sig).is_ok()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `timestamp` is within the window around `now` (both unix seconds).
pub fn fresh(timestamp: i64, now: i64) -> bool {
    (now - timestamp).abs() <= WINDOW_SECS
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
        }
    }

    #[test]
    fn a_signature_covers_every_part() {
        let key = [7u8; 32];
        let body = sha256_hex(b"{}");
        let sig = req(100, &body).sign(&key);
        assert!(req(100, &body).verify(&key, &sig));
        assert!(!req(101, &body).verify(&key, &sig), "timestamp");
        assert!(!req(100, &sha256_hex(b"[]")).verify(&key, &sig), "body");
        assert!(!req(100, &body).verify(&[8u8; 32], &sig), "key");
        let mut other = req(100, &body);
        other.path = "/api/media/hub/transfers/job-1/status/";
        assert!(!other.verify(&key, &sig), "path");
        other = req(100, &body);
        other.transfer_key = "job-2";
        assert!(!other.verify(&key, &sig), "transfer key");
        assert!(!req(100, &body).verify(&key, "zz"), "not hex");
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        assert!(fresh(1000, 1300) && fresh(1300, 1000));
        assert!(!fresh(1000, 1301) && !fresh(1301, 1000));
    }
}
