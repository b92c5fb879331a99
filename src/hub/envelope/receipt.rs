//! The hub's receipt for one envelope: what the sender checks before it counts a
//! transfer as delivered.

use serde::{Deserialize, Serialize};

use super::{Envelope, Opened, Sealed, RECEIPT_CONTRACT_VERSION};

/// The hub's acknowledgement of one exact envelope (lx-dtypes
/// `HubMediaEnvelopeReceipt`), strict both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub contract_version: String,
    pub envelope_contract_version: String,
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
    pub ciphertext_sha256: String,
    pub ciphertext_size: u64,
    pub envelope_fingerprint_sha256: String,
    pub receiver_transfer_id: String,
    pub transfer_status: String,
    pub processing_decision: String,
    pub verified: bool,
}

impl Receipt {
    /// The receipt for an envelope the hub opened and applied.
    pub fn for_envelope(
        e: &Envelope,
        opened: &Opened,
        transfer_id: &str,
        decision: &str,
    ) -> Receipt {
        Receipt {
            contract_version: RECEIPT_CONTRACT_VERSION.into(),
            envelope_contract_version: e.contract_version.clone(),
            profile: e.profile.clone(),
            transfer_key: e.transfer_key.clone(),
            source_node_key: e.source_node_key.clone(),
            source_center_key: e.source_center_key.clone(),
            target_node_key: e.target_node_key.clone(),
            resource_kind: e.resource_kind.clone(),
            resource_hash: e.resource_hash.clone(),
            processed_media_hash: e.processed_media_hash.clone(),
            transfer_mode: e.transfer_mode.clone(),
            media_role: e.media_role.clone(),
            plaintext_sha256: e.plaintext_sha256.clone(),
            plaintext_size: e.plaintext_size,
            recipient_key_id: e.recipient_key_id.clone(),
            ciphertext_sha256: opened.ciphertext_sha256.clone(),
            ciphertext_size: opened.ciphertext_size,
            envelope_fingerprint_sha256: opened.fingerprint.clone(),
            receiver_transfer_id: transfer_id.into(),
            transfer_status: "applied".into(),
            processing_decision: decision.into(),
            verified: true,
        }
    }

    /// The sender's checks (lx-dtypes strict validation and
    /// `validate_hub_media_receipt_matches_envelope`, then the ciphertext it sent):
    /// the names of the fields that do not match, empty when the receipt is for `s`.
    pub fn mismatches(&self, s: &Sealed) -> Vec<&'static str> {
        let e = &s.envelope;
        let mut out = Vec::new();
        let mut check = |name: &'static str, ok: bool| {
            if !ok {
                out.push(name);
            }
        };
        check(
            "contract_version",
            self.contract_version == RECEIPT_CONTRACT_VERSION,
        );
        check(
            "envelope_contract_version",
            self.envelope_contract_version == e.contract_version,
        );
        check("profile", self.profile == e.profile);
        check("transfer_key", self.transfer_key == e.transfer_key);
        check("source_node_key", self.source_node_key == e.source_node_key);
        check(
            "source_center_key",
            self.source_center_key == e.source_center_key,
        );
        check("target_node_key", self.target_node_key == e.target_node_key);
        check("resource_kind", self.resource_kind == e.resource_kind);
        check("resource_hash", self.resource_hash == e.resource_hash);
        check(
            "processed_media_hash",
            self.processed_media_hash == e.processed_media_hash,
        );
        check("transfer_mode", self.transfer_mode == e.transfer_mode);
        check("media_role", self.media_role == e.media_role);
        check(
            "plaintext_sha256",
            self.plaintext_sha256 == e.plaintext_sha256,
        );
        check("plaintext_size", self.plaintext_size == e.plaintext_size);
        check(
            "recipient_key_id",
            self.recipient_key_id == e.recipient_key_id,
        );
        check(
            "envelope_fingerprint_sha256",
            self.envelope_fingerprint_sha256 == e.fingerprint(),
        );
        check(
            "ciphertext_sha256",
            self.ciphertext_sha256 == s.ciphertext_sha256,
        );
        check(
            "ciphertext_size",
            self.ciphertext_size == s.ciphertext_size
                && self.ciphertext_size == self.plaintext_size,
        );
        check(
            "receiver_transfer_id",
            !self.receiver_transfer_id.is_empty() && self.receiver_transfer_id.len() <= 255,
        );
        check("transfer_status", self.transfer_status == "applied");
        check(
            "processing_decision",
            (1..=64).contains(&self.processing_decision.len()),
        );
        check("verified", self.verified);
        out.sort_unstable();
        out
    }
}
