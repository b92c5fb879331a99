//! The hub-transfer receiver (SPEC §8), speaking payload schema 7.0 as endoreg-db
//! 1.6.2–1.6.5 does (`crate::hub::wire`): `POST /api/media/hub/transfers/` registers,
//! `POST …/{key}/media/` takes the processed media as a `hub_media_envelope_v1`
//! ciphertext and stores its plaintext through the one ingest core, `GET …/{key}/status/`
//! reports. Answers and their order are the reference's: register validates the body
//! (400) before the transport and node gates (403); status and media answer 404 for an
//! unknown key before them. 201 is a new transfer, 200 only an exact replay, 409 any
//! other reuse of a key.
//!
//! The app trusts the proxy headers only because it listens where nothing but nginx
//! reaches it and nginx overwrites any client-supplied copy (nix/contract.toml).

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{AppState, Source};
use crate::access::nodes::Node;
use crate::crypto::signing;
use crate::hub::wire::register::{self, Provenance, RegisterBody};
use crate::hub::wire::reply::{self, Refusal};
use crate::hub::wire::{decision, TransferStatus};

mod gates;
mod media;
mod row;

// The handler and the OpenAPI path item utoipa generates beside it.
pub use media::{__path_media, media};

use gates::{gate, Req};
use row::{load, site_node, Transfer};

fn header<'a>(hs: &'a HeaderMap, name: &str) -> Option<&'a str> {
    hs.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn refused(r: Refusal) -> Response {
    answer(StatusCode::BAD_REQUEST, r.body)
}

fn forbidden(detail: &str) -> Response {
    answer(StatusCode::FORBIDDEN, reply::detail(detail))
}

fn not_found() -> Response {
    answer(StatusCode::NOT_FOUND, reply::detail(reply::NOT_FOUND))
}

fn wire_str<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The provenance the hub keeps: the site's, with node, center, mode and policies
/// overwritten by what the hub resolved (as endoreg-db does).
fn kept_provenance(b: &RegisterBody, p: &Provenance, target: &str, center: &str) -> Value {
    let mut p = p.clone();
    p.source_node_key = Some(b.source_node_key.clone());
    p.target_node_key = Some(target.into());
    p.source_center_key = Some(center.into());
    p.transfer_mode = Some(b.transfer_mode.as_str().into());
    p.processing_policy = Some(wire_str(&b.processing_policy));
    p.cleanup_policy = Some(wire_str(&b.cleanup_policy));
    if p.entrypoint.is_none() {
        p.entrypoint = Some("transfer".into());
    }
    serde_json::to_value(p).expect("provenance serializes")
}

/// Register a transfer (hub role): a payload schema 7.0 body (src/hub/wire).
#[utoipa::path(
    post,
    path = "/api/media/hub/transfers/",
    tag = "hub",
    security(("node_key" = [], "node_secret" = []), ("node_key" = [], "node_signature" = [])),
    request_body = super::openapi::TransferRegistration,
    responses(
        (status = 201, description = "Registered; send the media next", body = super::openapi::TransferStatus),
        (status = 200, description = "An exact replay of an earlier registration: its status", body = super::openapi::TransferStatus),
        (status = 409, description = "The transfer key was used for another payload", body = super::openapi::Refusal),
        super::openapi::NodeRefusals,
        (status = 413, description = "The body is larger than a registration can be", body = super::error::ErrorBody),
        (status = 503, description = "Ingest is paused for an upgrade; see Retry-After", body = super::error::ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    source: Source,
    uri: Uri,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let hub = &state.config.hub_receiver;
    if !hub.enabled {
        return Ok(not_found());
    }
    let body = body?;
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(answer(
                StatusCode::BAD_REQUEST,
                reply::detail(&format!("JSON parse error - {e}")),
            ))
        }
    };
    let b = match register::parse(&raw) {
        Ok(b) => b,
        Err(r) => return Ok(refused(r)),
    };
    let Some((node_center_id, node_center_key)) = site_node(&state, &b.source_node_key).await?
    else {
        return Ok(refused(Refusal::field(
            "source_node_key",
            format!(
                "Unknown active source_node_key: {}",
                crate::ingest::name::bare_or_escaped(&b.source_node_key)
            ),
        )));
    };
    if let Err(r) = b.check_scope(&raw) {
        return Ok(refused(r));
    }
    // This hub is the only central_hub it knows: blank names it, anything else is unknown.
    let target = if b.target_node_key.is_empty() {
        hub.node_key.clone()
    } else {
        b.target_node_key.clone()
    };
    if target != hub.node_key {
        return Ok(refused(Refusal::field(
            "target_node_key",
            format!(
                "Unknown active target_node_key: {}",
                crate::ingest::name::bare_or_escaped(&target)
            ),
        )));
    }
    let center = if b.source_center_key.is_empty() {
        node_center_key.clone()
    } else {
        b.source_center_key.clone()
    };
    if center != node_center_key {
        let client = state.pool.get().await?;
        let known = client
            .query_opt("SELECT 1 FROM centers WHERE center_key = $1", &[&center])
            .await?
            .is_some();
        return Ok(refused(Refusal::field(
            "source_center_key",
            if known {
                "source_center_key must match the authenticated source node owning center"
                    .to_string()
            } else {
                format!(
                    "Unknown center_key: {}",
                    crate::ingest::name::bare_or_escaped(&center)
                )
            },
        )));
    }
    if let Err(r) = b.check_rows() {
        return Ok(refused(r));
    }
    let node = match gate(
        &state,
        &headers,
        source,
        &b.source_node_key,
        node_center_id,
        Req {
            method: "POST",
            path: uri.path(),
            transfer_key: &b.transfer_key,
            body_sha256: Some(signing::sha256_hex(&body)),
        },
    )
    .await?
    {
        Ok(n) => n,
        Err(resp) => return Ok(resp),
    };
    // A deploy window: nothing new is accepted that a rollback could discard.
    state.accepting()?;
    // endoreg-db checks provenance at the model save: after the gates, as `{error, details}`.
    let provenance: Provenance =
        match serde_json::from_value(raw.get("provenance").cloned().unwrap_or_else(|| json!({}))) {
            Ok(p) => p,
            Err(e) => {
                return Ok(refused(Refusal::payload_invalid(
                    json!({ "provenance": [format!("provenance: {e}")] }),
                )))
            }
        };
    let kept = kept_provenance(&b, &provenance, &target, &center);
    let snapshot = serde_json::to_value(&b.processing_snapshot).expect("serializes");
    let status = TransferStatus::AwaitingMedia.as_str();
    let client = state.pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO transfers (transfer_key, source_node_key, target_node_key, source_center_key,
                 resource_kind, resource_hash, payload_schema_version, transfer_status,
                 transfer_mode, processing_policy, processing_intent, cleanup_policy,
                 processing_decision, resource_rows, processing_snapshot, provenance)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (transfer_key) DO NOTHING",
            &[
                &b.transfer_key,
                &b.source_node_key,
                &target,
                &center,
                &b.resource_kind.as_str(),
                &b.resource_hash,
                &b.payload_schema_version,
                &status,
                &b.transfer_mode.as_str(),
                &wire_str(&b.processing_policy),
                &wire_str(&b.processing_intent),
                &wire_str(&b.cleanup_policy),
                &decision::WAIT_FOR_MISSING_MEDIA,
                &b.resource_rows,
                &snapshot,
                &kept,
            ],
        )
        .await?;
    drop(client);
    let t = load(&state, &b.transfer_key)
        .await?
        .ok_or_else(|| ApiError::internal("a transfer vanished", &b.transfer_key))?;
    let label = source.label();
    let audit = |event, outcome, reason| crate::audit::Event {
        event,
        outcome,
        principal: Some(&node.key),
        center: Some(&node.center_key),
        transfer: Some(&b.transfer_key),
        source: Some(&label),
        reason,
        ..Default::default()
    };
    if inserted == 1 {
        audit("transfer_registered", "ok", None).emit();
        return Ok(answer(StatusCode::CREATED, t.json()));
    }
    // Exact replay: every registered field equal, provenance in its kept form.
    let exact = t.source_node_key == b.source_node_key
        && t.target_node_key == target
        && t.kind == b.resource_kind.as_str()
        && t.resource_hash == b.resource_hash
        && t.source_center_key == center
        && t.transfer_mode == b.transfer_mode.as_str()
        && t.processing_policy == wire_str(&b.processing_policy)
        && t.processing_intent == wire_str(&b.processing_intent)
        && t.cleanup_policy == wire_str(&b.cleanup_policy)
        && t.schema == b.payload_schema_version
        && t.resource_rows == b.resource_rows
        && t.processing_snapshot == snapshot
        && t.provenance == kept;
    if exact {
        return Ok(answer(StatusCode::OK, t.json()));
    }
    audit("transfer_conflict", "refused", Some("transfer_key reused")).emit();
    Ok(answer(StatusCode::CONFLICT, reply::key_conflict()))
}

/// The transfer and its authenticated node, or the answer that ends the request.
async fn known_transfer(
    state: &AppState,
    headers: &HeaderMap,
    source: Source,
    key: &str,
    r: Req<'_>,
) -> Result<Result<(Transfer, Node), Response>, ApiError> {
    if !state.config.hub_receiver.enabled {
        return Ok(Err(not_found()));
    }
    let Some(t) = load(state, key).await? else {
        return Ok(Err(not_found()));
    };
    let Some(center_id) = t.center_id else {
        return Ok(Err(forbidden(reply::OUT_OF_SCOPE)));
    };
    Ok(
        match gate(state, headers, source, &t.source_node_key, center_id, r).await? {
            Ok(n) => Ok((t, n)),
            Err(resp) => Err(resp),
        },
    )
}

/// A transfer's status (hub role), with the envelope receipt once applied.
#[utoipa::path(
    get,
    path = "/api/media/hub/transfers/{key}/status/",
    tag = "hub",
    security(("node_key" = [], "node_secret" = []), ("node_key" = [], "node_signature" = [])),
    params(("key" = String, Path, description = "The transfer key")),
    responses(
        (status = 200, description = "The transfer's state", body = super::openapi::TransferStatus),
        super::openapi::NodeRefusals,
    ),
)]
pub async fn status(
    State(state): State<AppState>,
    source: Source,
    uri: Uri,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key?;
    let r = Req {
        method: "GET",
        path: uri.path(),
        transfer_key: &key,
        body_sha256: Some(signing::sha256_hex(b"")),
    };
    Ok(
        match known_transfer(&state, &headers, source, &key, r).await? {
            Ok((t, _)) => answer(StatusCode::OK, t.json()),
            Err(resp) => resp,
        },
    )
}
