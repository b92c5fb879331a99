//! The transport and node gates every transfer request passes, in the reference's
//! order: https, the proxy's mTLS attestation, the node's key and secret (or an lxgate
//! signature, when both ends enable signing), the pinned certificate, the owning center.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::super::error::ApiError;
use super::super::{AppState, Source};
use super::{forbidden, header};
use crate::access::nodes::{self, Node};
use crate::crypto::signing;
use crate::hub::wire::header as h;
use crate::hub::wire::reply;

/// What a signature covers (lxgate-to-lxgate HMAC signing, optional both ends).
pub(super) struct Req<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) transfer_key: &'a str,
    pub(super) body_sha256: Option<String>,
}

/// The transport and node gates, in the reference's order, for a transfer whose source
/// is `source_node_key` at `source_center_id`: https, the proxy's mTLS attestation, the
/// node's key and secret (or an lxgate signature), lxgate's pinned certificate, the
/// owning center. Refusals go to the audit log.
pub(super) async fn gate(
    state: &AppState,
    hs: &HeaderMap,
    source: Source,
    source_node_key: &str,
    source_center_id: i64,
    r: Req<'_>,
) -> Result<Result<Node, Response>, ApiError> {
    let result = gate_checks(state, hs, source, source_node_key, source_center_id, r).await?;
    if let Err(resp) = &result {
        let claimed: Option<String> = header(hs, h::NODE_KEY).map(|k| k.chars().take(64).collect());
        crate::audit::Event {
            event: "auth_failed",
            outcome: if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                "rate_limited"
            } else {
                "refused"
            },
            principal: claimed.as_deref(),
            source: Some(&source.label()),
            reason: Some("forbidden"),
            ..Default::default()
        }
        .emit();
    }
    Ok(result)
}

async fn gate_checks(
    state: &AppState,
    hs: &HeaderMap,
    source: Source,
    source_node_key: &str,
    source_center_id: i64,
    r: Req<'_>,
) -> Result<Result<Node, Response>, ApiError> {
    let t = &state.config.hub_receiver;
    if t.require_secure_transport && header(hs, "x-forwarded-proto") != Some("https") {
        return Ok(Err(forbidden(reply::INSECURE_TRANSPORT)));
    }
    if t.require_mtls && header(hs, &t.mtls_meta_key) != Some(t.mtls_meta_value.as_str()) {
        return Ok(Err(forbidden(reply::NO_MTLS)));
    }
    let key = header(hs, h::NODE_KEY).unwrap_or("");
    if key.is_empty() || key != source_node_key {
        return Ok(Err(forbidden(reply::BAD_CREDENTIALS)));
    }
    // Before any hash: an unsigned request costs ~25 ms of PBKDF2.
    if let Err(e) = state.rate_limits.hub.check(source.0) {
        return Ok(Err(e.into_response()));
    }
    let client = state.pool.get().await?;
    let node = if let Some(signature) = header(hs, signing::SIGNATURE) {
        match check_signature(&client, hs, key, signature, &r).await? {
            Ok(n) => n,
            Err(resp) => return Ok(Err(resp)),
        }
    } else if let Some(secret) = header(hs, h::NODE_SECRET).filter(|s| !s.is_empty()) {
        if t.require_signed_requests {
            return Ok(Err(forbidden(
                "this hub accepts only signed transfer requests (X-Lxgate-Signature): run lxgate hub-export with [hub] sign_requests = true",
            )));
        }
        match nodes::authenticate(&client, key, secret).await? {
            Some(n) => n,
            None => return Ok(Err(forbidden(reply::BAD_CREDENTIALS))),
        }
    } else {
        return Ok(Err(forbidden(reply::BAD_CREDENTIALS)));
    };
    if let Some(pinned) = &node.cert_fingerprint {
        let presented = header(hs, "x-client-cert-fingerprint").map(nodes::normalize_fingerprint);
        if presented.as_deref() != Some(pinned.as_str()) {
            tracing::warn!(node = %node.key, "client certificate does not match the pinned fingerprint");
            return Ok(Err(forbidden(
                "this node's client certificate is not the one pinned for it: use the node's own certificate, or re-pin with `lxgate node add`",
            )));
        }
    }
    if node.center_id != source_center_id {
        return Ok(Err(forbidden(reply::OUT_OF_SCOPE)));
    }
    Ok(Ok(node))
}

/// A signed request (lxgate senders with `sign_requests`): fresh, its declared body
/// hash true where the body is known, signed with the node's key, seen once.
async fn check_signature(
    client: &tokio_postgres::Client,
    hs: &HeaderMap,
    key: &str,
    signature: &str,
    r: &Req<'_>,
) -> Result<Result<Node, Response>, ApiError> {
    let refuse = |msg: String| Ok(Err(forbidden(&msg)));
    let Some(timestamp) = header(hs, signing::TIMESTAMP).and_then(|v| v.parse::<i64>().ok()) else {
        return refuse("a signed request needs X-Lxgate-Timestamp (unix seconds)".into());
    };
    let now = chrono::Utc::now().timestamp();
    if !signing::fresh(timestamp, now) {
        return refuse(format!(
            "the request's timestamp is {} s away from the hub's clock (allowed: {} s); check the site's time (NTP)",
            signing::skew(timestamp, now),
            signing::WINDOW_SECS
        ));
    }
    let nonce = header(hs, signing::NONCE);
    if nonce.is_some_and(|n| !signing::valid_nonce(n)) {
        return refuse("X-Lxgate-Nonce must be 16 to 64 hex digits, new for every request".into());
    }
    let Some(declared) = header(hs, signing::CONTENT_SHA256).map(str::to_ascii_lowercase) else {
        return refuse("a signed request needs X-Lxgate-Content-Sha256".into());
    };
    if r.body_sha256
        .as_ref()
        .is_some_and(|actual| *actual != declared)
    {
        return refuse(
            "the body does not hash to X-Lxgate-Content-Sha256: it changed after signing".into(),
        );
    }
    let signed = signing::Signed {
        method: r.method,
        path: r.path,
        timestamp,
        transfer_key: r.transfer_key,
        body_sha256: &declared,
        nonce,
    };
    Ok(match nodes::authenticate_signed(client, key, &signed, signature).await? {
        nodes::SignedAuth::Node(n, sig) => {
            if !crate::access::replay::first_use(client, &n.key, &sig, timestamp).await? {
                Err(forbidden(
                    "this signed request was already accepted once: sign every request anew, with a new X-Lxgate-Nonce (lxgate hub-export does)",
                ))
            } else {
                Ok(n)
            }
        }
        nodes::SignedAuth::Refused => Err(forbidden(reply::BAD_CREDENTIALS)),
        nodes::SignedAuth::NotSigningCapable => Err(forbidden(&format!(
            "node {key:?} was registered before signed requests: re-key it on the hub with `lxgate node add {key} --center …` and give the site the new secret"
        ))),
    })
}
