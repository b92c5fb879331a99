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

use std::sync::Mutex;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{upload, AppState, Source};
use crate::access::nodes::{self, Node};
use crate::crypto::signing;
use crate::hub::envelope::{Envelope, Identity, Opening, Receipt};
use crate::hub::keys::Keyring;
use crate::hub::wire::register::{self, Provenance, RegisterBody};
use crate::hub::wire::reply::{self, Refusal, Rejection};
use crate::hub::wire::rows;
use crate::hub::wire::status::StatusBody;
use crate::hub::wire::{
    decision, header as h, ResourceKind, TransferMode, TransferStatus, CASE_RESOLUTION_UNRESOLVED,
    CLEANUP_NOT_REQUESTED, MAX_ENVELOPE_HEADER_BYTES, MEDIA_CONTENT_TYPE, MEDIA_ROLE_PROCESSED,
};
use crate::ingest::{self, Boundary, Kind, NewJob};

mod gates;
mod row;

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

/// Transfers whose media is being received in this process: a second upload of the
/// same key meanwhile is a 409, as endoreg-db's lease makes it.
static RECEIVING: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Lease(String);

impl Lease {
    fn take(key: &str) -> Option<Lease> {
        let mut set = RECEIVING.lock().unwrap_or_else(|e| e.into_inner());
        if set.iter().any(|k| k == key) {
            return None;
        }
        set.push(key.to_string());
        Some(Lease(key.to_string()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        RECEIVING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| *k != self.0);
    }
}

async fn set_status(
    state: &AppState,
    key: &str,
    status: TransferStatus,
    decision: &str,
    detail: &str,
) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    client
        .execute(
            "UPDATE transfers SET transfer_status = $2, processing_decision = $3, detail = $4,
                 updated_at = now() WHERE transfer_key = $1",
            &[&key, &status.as_str(), &decision, &detail],
        )
        .await?;
    Ok(())
}

fn envelope_refused(r: Rejection) -> Response {
    answer(StatusCode::BAD_REQUEST, r.body())
}

/// Deliver a registered transfer's media (hub role): the hub_media_envelope_v1
/// ciphertext as application/octet-stream, the envelope in X-Hub-Media-Envelope.
#[utoipa::path(
    post,
    path = "/api/media/hub/transfers/{key}/media/",
    tag = "hub",
    security(("node_key" = [], "node_secret" = []), ("node_key" = [], "node_signature" = [])),
    params(("key" = String, Path, description = "The transfer key")),
    request_body(content(("application/octet-stream"))),
    responses(
        (status = 200, description = "Applied (or applied before): the media is an UploadJob", body = super::openapi::TransferStatus),
        (status = 409, description = "Not awaiting media", body = super::openapi::Refusal),
        super::openapi::NodeRefusals,
        (status = 413, description = "Larger than the hub's limit", body = super::error::ErrorBody),
        (status = 415, description = "Not application/octet-stream", body = super::openapi::Refusal),
        (status = 503, description = "Every upload slot is taken, or ingest is paused; see Retry-After", body = super::error::ErrorBody),
        (status = 507, description = "Managed storage is full", body = super::error::ErrorBody),
    ),
)]
pub async fn media(
    State(state): State<AppState>,
    source: Source,
    key: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(key) = key?;
    let path = req.uri().path().to_string();
    let hs = req.headers().clone();
    let envelope_text = header(&hs, h::MEDIA_ENVELOPE).unwrap_or("").to_string();
    let r = Req {
        method: "POST",
        path: &path,
        transfer_key: &key,
        // The signature covers the envelope's ciphertext as the header names it.
        body_sha256: None,
    };
    let (t, node) = match known_transfer(&state, &hs, source, &key, r).await? {
        Ok(x) => x,
        Err(resp) => return Ok(resp),
    };
    state.accepting()?;
    let content_type = header(&hs, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if content_type != MEDIA_CONTENT_TYPE {
        let shown = if content_type.is_empty() {
            "missing".to_string()
        } else {
            content_type
        };
        return Ok(answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reply::detail(&format!(
                "Unsupported media type {} in request.",
                crate::ingest::name::escaped_prefix(&shown)
            )),
        ));
    }
    let size = header(&hs, "content-length").and_then(|v| v.parse::<u64>().ok());
    let Some(size) = size.filter(|s| *s > 0) else {
        return Ok(refused(Refusal::media(
            "content_length",
            "A positive fixed ciphertext length is required.",
        )));
    };
    if header(&hs, h::MEDIA_ROLE)
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some(MEDIA_ROLE_PROCESSED)
    {
        return Ok(refused(Refusal::media(
            "media_role",
            "Only anonymized processed media may be uploaded for transfers.",
        )));
    }
    if envelope_text.is_empty() {
        return Ok(refused(Refusal::media(
            "envelope",
            "A typed recipient-encrypted media envelope is required; plaintext uploads are prohibited.",
        )));
    }
    if envelope_text.len() > MAX_ENVELOPE_HEADER_BYTES {
        return Ok(refused(Refusal::media(
            "envelope",
            "Hub media envelope metadata exceeds the header limit.",
        )));
    }
    let limit = state.config.hub_receiver.max_media_size;
    if limit == 0 || size > limit {
        return Ok(refused(Refusal::media(
            "file",
            "Uploaded media exceeds the configured size limit.",
        )));
    }
    let status = TransferStatus::parse(&t.status);
    if status == Some(TransferStatus::Inconsistent) {
        return Ok(refused(Refusal::media(
            "detail",
            "Media cannot be attached to an inconsistent or rejected transfer.",
        )));
    }
    if t.transfer_mode != TransferMode::MetadataAndProcessedMedia.as_str() {
        return Ok(refused(Refusal::media(
            "detail",
            "Processed media upload requires metadata_and_processed_media transfer mode.",
        )));
    }
    let envelope = match Envelope::parse(&envelope_text) {
        Ok(e) => e,
        Err(r) => return Ok(envelope_refused(r)),
    };
    if !envelope.identity_mismatches(&t.identity()).is_empty() {
        return Ok(envelope_refused(Rejection::IdentityMismatch));
    }
    if size != envelope.plaintext_size {
        return Ok(envelope_refused(Rejection::CiphertextSizeMismatch));
    }
    let Some(_lease) = Lease::take(&key) else {
        let mut body = t.json();
        body["detail"] = json!(reply::MEDIA_IN_PROGRESS);
        return Ok(answer(StatusCode::CONFLICT, body));
    };
    let files = state.config.hub_receiver.recipient_key_files.clone();
    let keyring = match tokio::task::spawn_blocking(move || Keyring::load(&files, true)).await {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            tracing::error!("the hub's recipient keys do not load: {e}");
            return Ok(envelope_refused(
                Rejection::RecipientKeyConfigurationInvalid,
            ));
        }
        Err(e) => return Err(ApiError::internal("loading the recipient keys", e)),
    };
    let opening = match Opening::start(&envelope, &keyring) {
        Ok(o) => o,
        Err(r) => return Ok(envelope_refused(r)),
    };
    let _slot = state.uploads.admit()?;
    let kind = if t.kind == "report" {
        Kind::Report
    } else {
        Kind::Video
    };
    // Decrypted on the way into staging: the ingest core hashes the plaintext and stores
    // it in the form the policy keeps this kind in (a report sealed to the hub's master
    // identity), and nothing is committed until the tag checked out.
    let opening = std::sync::Arc::new(Mutex::new(Some(opening)));
    let o = opening.clone();
    // The plaintext's first bytes name a report's type: the wire's report rows carry no
    // suffix. Read only once the tag checked out.
    let head = std::sync::Arc::new(Mutex::new(Vec::new()));
    let h = head.clone();
    let body = req.into_body().into_data_stream().map(move |chunk| {
        chunk.map(|c| {
            let mut buf = bytes::BytesMut::from(&c[..]);
            if let Some(o) = o.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                o.update(&mut buf);
            }
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let want = upload::SNIFF_LEN.saturating_sub(h.len()).min(buf.len());
            h.extend_from_slice(&buf[..want]);
            buf.freeze()
        })
    });
    let staged = ingest::stream::stage(&state.storage.for_kind(kind), Box::pin(body), size).await;
    let opening = opening
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the opening is taken once");
    let staged = match staged {
        Ok(s) => s,
        Err(ingest::IngestError::TooLarge { .. }) => {
            return Ok(envelope_refused(Rejection::CiphertextSizeMismatch))
        }
        Err(ingest::IngestError::Source(why)) => {
            tracing::warn!(boundary = "transfer", outcome = "refused", transfer_key = %key, "the media body broke off: {why}");
            return Ok(envelope_refused(Rejection::StreamIncomplete));
        }
        Err(e) => return Err(e.into()),
    };
    let opened = match opening.finish() {
        Ok(o) => o,
        Err(r) => {
            staged.discard();
            tracing::warn!(boundary = "transfer", outcome = "refused", transfer_key = %key, node = %node.key, code = r.code(), "media envelope refused");
            return Ok(envelope_refused(r));
        }
    };
    // A signed upload (lxgate senders) declared the ciphertext's hash; the signature
    // checked out in the gate, so the header is the site's own statement.
    if header(&hs, signing::SIGNATURE).is_some()
        && header(&hs, signing::CONTENT_SHA256).map(str::to_ascii_lowercase)
            != Some(opened.ciphertext_sha256.clone())
    {
        staged.discard();
        return Ok(forbidden(
            "the ciphertext does not hash to X-Lxgate-Content-Sha256: it changed after signing",
        ));
    }
    if status == Some(TransferStatus::Applied) {
        staged.discard();
        let exact = t
            .receipt
            .as_ref()
            .and_then(|r| serde_json::from_value::<Receipt>(r.clone()).ok())
            .is_some_and(|r| {
                r.envelope_fingerprint_sha256 == opened.fingerprint
                    && r.ciphertext_sha256 == opened.ciphertext_sha256
                    && r.ciphertext_size == opened.ciphertext_size
            });
        if exact {
            return Ok(answer(StatusCode::OK, t.json()));
        }
        let detail = "Applied Hub media transfer received a conflicting envelope replay; the previously authenticated artifact was preserved";
        set_status(
            &state,
            &key,
            TransferStatus::Inconsistent,
            decision::MARK_INCONSISTENT,
            detail,
        )
        .await?;
        let t = load(&state, &key).await?.expect("the transfer exists");
        let mut body = t.json();
        body["detail"] = json!(detail);
        return Ok(answer(StatusCode::CONFLICT, body));
    }
    let suffix = if kind == Kind::Report {
        // What a report is, as the upload decides it: its content, a PDF by its magic
        // bytes; anything else lx-annotate sends as a report is a text report.
        let head = head.lock().unwrap_or_else(|e| e.into_inner());
        match upload::sniff_mime(&head) {
            Some("application/pdf") => ".pdf",
            _ => ".txt",
        }
        .to_string()
    } else {
        t.resource_rows["video_file"]["suffix"]
            .as_str()
            .filter(|s| {
                s.len() <= 9
                    && s.starts_with('.')
                    && s[1..].bytes().all(|c| c.is_ascii_alphanumeric())
            })
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| ".mp4".into())
    };
    let job = NewJob {
        boundary: Boundary::HubTransfer,
        source_system: format!("hub:{}", node.key),
        center_id: node.center_id,
        // The hub sees no original file name (it may name a patient): the processed hash.
        original_name: format!("{}{suffix}", t.processed_media_hash()),
        kind,
        idempotency_key: Some(key.clone()),
        metadata_hash: None,
        provenance: json!({
            "boundary": "hub_transfer",
            "transfer_key": key,
            "transfer_id": t.id,
            "source_node_key": node.key,
            "target_node_key": t.target_node_key,
            "payload_schema_version": t.schema,
            "resource_hash": t.resource_hash,
            "envelope_fingerprint_sha256": opened.fingerprint,
            "client_cert_fingerprint": header(&hs, "x-client-cert-fingerprint"),
        }),
    };
    match ingest::commit(&state.pool, &state.storage, staged, job).await {
        Ok(outcome) => {
            let id = outcome.job().id;
            let receipt = Receipt::for_envelope(
                &envelope,
                &opened,
                &t.id.to_string(),
                decision::SKIP_PRESERVED_STATE,
            );
            let client = state.pool.get().await?;
            client
                .execute(
                    "UPDATE transfers SET transfer_status = 'applied', processing_decision = $2,
                         detail = '', upload_job_id = $3, envelope_receipt = $4, updated_at = now()
                     WHERE transfer_key = $1",
                    &[
                        &key,
                        &decision::SKIP_PRESERVED_STATE,
                        &id,
                        &serde_json::to_value(&receipt).expect("serializes"),
                    ],
                )
                .await?;
            drop(client);
            tracing::info!(boundary = "transfer", outcome = "applied", transfer_key = %key, job_id = %id, dedupe = outcome.is_dedupe(), "hub transfer applied");
            crate::audit::Event {
                event: "transfer_applied",
                outcome: "ok",
                principal: Some(&node.key),
                center: Some(&node.center_key),
                job: Some(&id.to_string()),
                transfer: Some(&key),
                source: Some(&source.label()),
                ..Default::default()
            }
            .emit();
            let t = load(&state, &key).await?.expect("the transfer exists");
            Ok(answer(StatusCode::OK, t.json()))
        }
        Err(e) => {
            let err: ApiError = e.into();
            let detail = format!("storing the media failed on the hub: {}", err.message);
            set_status(
                &state,
                &key,
                TransferStatus::Failed,
                decision::WAIT_FOR_MISSING_MEDIA,
                &detail,
            )
            .await?;
            Err(err)
        }
    }
}
