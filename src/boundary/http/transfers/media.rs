//! `POST …/{key}/media/`: a registered transfer's processed media, as a
//! `hub_media_envelope_v1` ciphertext, decrypted on its way into staging and committed
//! through the one ingest core only once the GCM tag checked out.

use std::sync::{Arc, Mutex};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::json;

use super::super::error::ApiError;
use super::super::{AppState, Source};
use super::gates::Req;
use super::row::load;
use super::{answer, forbidden, header, known_transfer, refused};
use crate::crypto::signing;
use crate::hub::envelope::{Envelope, Opening, Receipt};
use crate::hub::keys::Keyring;
use crate::hub::wire::reply::{self, Refusal, Rejection};
use crate::hub::wire::{
    decision, header as h, TransferMode, TransferStatus, MAX_ENVELOPE_HEADER_BYTES,
    MEDIA_CONTENT_TYPE, MEDIA_ROLE_PROCESSED,
};
use crate::ingest::{self, file_type, Boundary, Kind, NewJob};

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
        (status = 200, description = "Applied (or applied before): the media is an UploadJob", body = crate::boundary::http::openapi::TransferStatus),
        (status = 409, description = "Not awaiting media", body = crate::boundary::http::openapi::Refusal),
        crate::boundary::http::openapi::NodeRefusals,
        (status = 413, description = "Larger than the hub's limit", body = crate::boundary::http::error::ErrorBody),
        (status = 415, description = "Not application/octet-stream", body = crate::boundary::http::openapi::Refusal),
        (status = 503, description = "Every upload slot is taken, or ingest is paused; see Retry-After", body = crate::boundary::http::error::ErrorBody),
        (status = 507, description = "Managed storage is full", body = crate::boundary::http::error::ErrorBody),
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
    let opening = Arc::new(Mutex::new(Some(opening)));
    let o = opening.clone();
    // The plaintext's first bytes name a report's type: the wire's report rows carry no
    // suffix. Read only once the tag checked out.
    let head = Arc::new(Mutex::new(Vec::new()));
    let h = head.clone();
    let body = req.into_body().into_data_stream().map(move |chunk| {
        chunk.map(|c| {
            let mut buf = bytes::BytesMut::from(&c[..]);
            if let Some(o) = o.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                o.update(&mut buf);
            }
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let want = file_type::SNIFF_LEN.saturating_sub(h.len()).min(buf.len());
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
        // What a report is, as the upload decides it: by its content.
        let head = head.lock().unwrap_or_else(|e| e.into_inner());
        file_type::report_suffix(&head).to_string()
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
