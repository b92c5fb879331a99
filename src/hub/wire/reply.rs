//! Refusal bodies as endoreg-db shapes them, which lx-annotate reads: a DRF error dict
//! for validation (`{field: [message]}`), `{"detail": …}` for 403 and 404, `{"error": …}`
//! for a register conflict, and the envelope rejection with its code and phase.

use serde_json::{json, Map, Value};

/// A 400 validation answer, shaped as DRF shapes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub body: Value,
}

impl Refusal {
    pub fn field(name: &str, message: impl Into<String>) -> Refusal {
        let mut m = Map::new();
        m.insert(name.into(), json!([message.into()]));
        Refusal {
            body: Value::Object(m),
        }
    }

    /// Several fields at once; each message becomes a one-element list.
    pub fn fields(errors: Map<String, Value>) -> Refusal {
        Refusal {
            body: Value::Object(errors.into_iter().map(|(k, v)| (k, json!([v]))).collect()),
        }
    }

    pub fn non_field(message: impl Into<String>) -> Refusal {
        Refusal::field("non_field_errors", message)
    }

    /// A failure at the model save (provenance, for one): `{"error", "details"}`.
    pub fn payload_invalid(details: Value) -> Refusal {
        Refusal {
            body: json!({"error": "Transfer payload validation failed", "details": details}),
        }
    }

    /// A media header or size refusal: `{field: message}` (endoreg-db raises these
    /// with a plain string, not a list).
    pub fn media(field: &str, message: &str) -> Refusal {
        let mut m = Map::new();
        m.insert(field.into(), Value::String(message.into()));
        Refusal {
            body: Value::Object(m),
        }
    }

    /// The first message in the body, for logs and the sender's failure record.
    pub fn message(&self) -> String {
        summary(&self.body)
    }
}

/// `{"detail": message}`: every 403 and 404.
pub fn detail(message: &str) -> Value {
    json!({ "detail": message })
}

pub const NOT_FOUND: &str = "Not found.";
pub const INSECURE_TRANSPORT: &str = "Hub transfer requires HTTPS or equivalent secure transport";
pub const NO_MTLS: &str = "Hub transfer requires proxy-verified mutual TLS client authentication";
pub const BAD_CREDENTIALS: &str = "Invalid network node credentials for this transfer";
pub const OUT_OF_SCOPE: &str = "Transfer source is outside the authenticated node scope";
pub const KEY_CONFLICT: &str = "transfer_key already exists for a different transfer payload";
pub const MEDIA_IN_PROGRESS: &str = "Transfer media attachment is already in progress.";
pub const ENVELOPE_INVALID: &str = "Encrypted media envelope validation failed.";

/// A register 409: the key is taken by a different payload.
pub fn key_conflict() -> Value {
    json!({ "error": KEY_CONFLICT })
}

/// Why an envelope was refused (endoreg-db `HubMediaEnvelopeRejectionCode`), with the
/// phase it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    CiphertextSizeMismatch,
    IdentityMismatch,
    MetadataInvalid,
    PayloadAuthenticationFailed,
    PlaintextIntegrityMismatch,
    StreamIncomplete,
    RecipientKeyAuthenticationFailed,
    RecipientKeyConfigurationInvalid,
    RecipientKeyUnavailable,
    ReplayConflict,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::CiphertextSizeMismatch => "ciphertext_size_mismatch",
            Rejection::IdentityMismatch => "envelope_identity_mismatch",
            Rejection::MetadataInvalid => "envelope_metadata_invalid",
            Rejection::PayloadAuthenticationFailed => "envelope_payload_authentication_failed",
            Rejection::PlaintextIntegrityMismatch => "envelope_plaintext_integrity_mismatch",
            Rejection::StreamIncomplete => "envelope_stream_incomplete",
            Rejection::RecipientKeyAuthenticationFailed => "recipient_key_authentication_failed",
            Rejection::RecipientKeyConfigurationInvalid => "recipient_key_configuration_invalid",
            Rejection::RecipientKeyUnavailable => "recipient_key_unavailable",
            Rejection::ReplayConflict => "replay_conflict",
        }
    }

    pub fn phase(self) -> &'static str {
        match self {
            Rejection::CiphertextSizeMismatch => "ciphertext_staging",
            Rejection::IdentityMismatch => "envelope_identity",
            Rejection::MetadataInvalid => "envelope_metadata",
            Rejection::PayloadAuthenticationFailed | Rejection::StreamIncomplete => {
                "payload_authentication"
            }
            Rejection::PlaintextIntegrityMismatch => "plaintext_integrity",
            Rejection::RecipientKeyConfigurationInvalid => "recipient_key_configuration",
            Rejection::RecipientKeyAuthenticationFailed | Rejection::RecipientKeyUnavailable => {
                "recipient_key_unwrap"
            }
            Rejection::ReplayConflict => "replay_validation",
        }
    }

    /// The 400 body for this rejection.
    pub fn body(self) -> Value {
        json!({
            "detail": ENVELOPE_INVALID,
            "error_fields": ["envelope"],
            "rejection_code": self.code(),
            "rejection_phase": self.phase(),
        })
    }
}

/// One line out of any refusal body: `detail`, `error`, or the first field message.
pub fn summary(v: &Value) -> String {
    for k in ["detail", "error"] {
        if let Some(s) = v.get(k).and_then(Value::as_str) {
            let mut out = s.to_string();
            if let Some(code) = v.get("rejection_code").and_then(Value::as_str) {
                out.push_str(&format!(" ({code})"));
            }
            return out;
        }
    }
    if let Some(m) = v.as_object() {
        if let Some((k, msg)) = m.iter().next() {
            let text = match msg {
                Value::Array(a) => a.first().map(summary_item).unwrap_or_default(),
                other => summary_item(other),
            };
            return format!("{k}: {text}");
        }
    }
    v.to_string()
}

fn summary_item(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_reference_shapes() {
        assert_eq!(Refusal::field("a", "b").body, json!({"a": ["b"]}));
        assert_eq!(
            Rejection::RecipientKeyUnavailable.body()["rejection_phase"],
            "recipient_key_unwrap"
        );
        assert_eq!(
            summary(&Rejection::ReplayConflict.body()),
            "Encrypted media envelope validation failed. (replay_conflict)"
        );
        assert_eq!(
            summary(&json!({"resource_rows": ["x"]})),
            "resource_rows: x"
        );
    }
}
