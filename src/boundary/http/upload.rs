//! `POST /api/upload/`: the API boundary's own checks, then the ingest core.
//!
//! Two request shapes (README, "Upload API"):
//! - raw body, with headers `X-Filename`, `X-Kind`, optional `X-Center-Key`;
//! - `multipart/form-data` with text fields `center_key` (optional) and `kind`, then
//!   one `file` field whose filename is the original name. Text fields must come
//!   before the file: the file is streamed to storage as it arrives.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::bounds::{self, shown};
use super::{authenticate, ApiError, AppState, Source};
use crate::access::tokens::{Principal, TokenRole};
use crate::config::Role;
use crate::ingest::{self, Boundary, IngestError, Kind, NewJob};

pub async fn upload(
    State(state): State<AppState>,
    source: Source,
    req: Request,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, req.headers(), source).await?;
    if !principal.role.can_upload() {
        return Err(ApiError::forbidden(
            "viewer tokens cannot upload; use an uploader or center_admin token",
        ));
    }
    let _slot = state.uploads.admit()?;
    let limit = state.config.server.upload_max_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge { limit }.into());
    }
    let provenance_base = provenance(&principal, source, req.headers());
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_multipart);

    let (staged, name, kind, center_id) = if multipart {
        let (mut mp, head) = bounds::form(req).await?;
        let mut center_key: Option<String> = None;
        let mut kind: Option<String> = None;
        loop {
            let field = head.next_field(&mut mp).await?.ok_or_else(|| {
                ApiError::bad_request(
                    "missing_file",
                    "multipart body has no `file` field: add one with the file's bytes",
                )
            })?;
            match field.name() {
                Some("center_key") => {
                    center_key = Some(head.text(field, "center_key field").await?)
                }
                Some("kind") => kind = Some(head.text(field, "kind field").await?),
                Some("file") => {
                    let name = validate_name("file field's filename", field.file_name())?;
                    let kind = validate_kind("kind field", kind.as_deref())?;
                    let center_id = resolve_center(
                        &state,
                        &principal,
                        source,
                        center_key.as_deref(),
                        "center_key field",
                    )
                    .await?;
                    head.file_follows();
                    let staged =
                        ingest::stream::stage(&state.storage.for_kind(kind), field, limit).await?;
                    break (staged, name, kind, center_id);
                }
                _ => {}
            }
        }
    } else {
        let h = req.headers();
        let name = validate_name("X-Filename header", header_str(h, "x-filename")?.as_deref())?;
        let kind = validate_kind("X-Kind header", header_str(h, "x-kind")?.as_deref())?;
        let center_key = header_str(h, "x-center-key")?;
        let center_id = resolve_center(
            &state,
            &principal,
            source,
            center_key.as_deref(),
            "X-Center-Key header",
        )
        .await?;
        let staged = ingest::stream::stage(
            &state.storage.for_kind(kind),
            req.into_body().into_data_stream(),
            limit,
        )
        .await?;
        (staged, name, kind, center_id)
    };

    let mut prov = provenance_base;
    prov["original_name"] = serde_json::Value::String(name.clone());
    let job = NewJob {
        boundary: Boundary::Api,
        source_system: "api".into(),
        center_id,
        original_name: name,
        kind,
        idempotency_key: None,
        metadata_hash: None,
        provenance: prov,
    };
    let outcome = ingest::commit(&state.pool, &state.storage, staged, job).await?;
    let dedupe = outcome.is_dedupe();
    let mut body =
        serde_json::to_value(outcome.job()).map_err(|e| ApiError::internal("serialize", e))?;
    body["dedupe"] = serde_json::Value::Bool(dedupe);
    tracing::info!(job = %outcome.job().id, dedupe, size = outcome.job().size_bytes, "api upload");
    let status = if dedupe {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(body)).into_response())
}

/// Whether a Content-Type names multipart/form-data; media types are case-insensitive
/// (RFC 9110 §8.3.1), so `Multipart/Form-Data` is one too.
fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"))
}

fn header_str(h: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
            .map_err(|_| {
                ApiError::bad_request(
                    "bad_header",
                    format!(
                        "{name} is not valid text: send ASCII (percent-encode other characters)"
                    ),
                )
            }),
    }
}

/// Percent-decode a name as sent over HTTP, then the ingest core's name rule.
pub(super) fn validate_name(what: &str, name: Option<&str>) -> Result<String, ApiError> {
    let refuse = |e: ingest::name::NameError| {
        let code = match e {
            ingest::name::NameError::Missing => "missing_filename",
            _ => "bad_filename",
        };
        ApiError::bad_request(code, format!("{what} {e}"))
    };
    let raw = name.unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            ApiError::bad_request(
                "bad_filename",
                format!("{what} is not UTF-8 once percent-decoded: percent-encode the name's UTF-8 bytes"),
            )
        })?;
    ingest::name::validate(&decoded).map_err(refuse)
}

fn validate_kind(what: &str, kind: Option<&str>) -> Result<Kind, ApiError> {
    let k = kind.ok_or_else(|| {
        ApiError::bad_request(
            "missing_kind",
            format!("{what} is missing: one of video, report, preanonymized"),
        )
    })?;
    Kind::parse(k).ok_or_else(|| {
        ApiError::bad_request(
            "bad_kind",
            format!(
                "{what} {} is not a kind: one of video, report, preanonymized",
                shown(k)
            ),
        )
    })
}

/// The role rules of SPEC §5, decided before a single byte is stored.
async fn resolve_center(
    state: &AppState,
    p: &Principal,
    source: Source,
    key: Option<&str>,
    what: &str,
) -> Result<i64, ApiError> {
    if key.is_some_and(|k| !crate::access::tokens::valid_center_key(k)) {
        return Err(ApiError::bad_request(
            "unknown_center",
            format!("{what} is not a center key: letters, digits, '_', '.', '-' (max 64)"),
        ));
    }
    let hub = state.config.role == Role::CentralHub;
    if hub && key.is_none() {
        return Err(ApiError::bad_request(
            "missing_center_key",
            format!("{what} is required on a central hub: name the center the file belongs to"),
        ));
    }
    match (&p.center, key) {
        (Some((id, own)), Some(k)) if k == own => Ok(*id),
        (Some((_, own)), Some(_)) => {
            crate::audit::Event {
                event: "cross_center",
                outcome: "refused",
                principal: Some(&p.label),
                center: Some(own),
                source: Some(&source.label()),
                reason: Some("upload for another center"),
                ..Default::default()
            }
            .emit();
            Err(ApiError::forbidden(format!(
                "this token belongs to center {own:?} and cannot upload for another center; use that center's token"
            )))
        }
        (Some((id, _)), None) => Ok(*id),
        (None, k) => {
            debug_assert_eq!(p.role, TokenRole::SuperAdmin);
            let k = match k.map(str::to_string).or_else(|| state.config.server.default_center.clone()) {
                Some(k) => k,
                None => {
                    return Err(ApiError::bad_request(
                        "missing_center_key",
                        format!("{what} is missing and no default center is configured (LX_ANNOTATE_DEFAULT_CENTER)"),
                    ))
                }
            };
            let client = state.pool.get().await?;
            crate::access::tokens::center_id(&client, &k)
                .await
                .map_err(|e| ApiError::internal("center lookup", e))?
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "unknown_center",
                        format!(
                            "no center {}: create it with `lxgate center add`",
                            shown(&k)
                        ),
                    )
                })
        }
    }
}

fn provenance(p: &Principal, source: Source, h: &HeaderMap) -> serde_json::Value {
    serde_json::json!({
        "boundary": "api",
        "token_label": p.label,
        "token_role": p.role.as_str(),
        "remote_addr": source.0.map(|ip| ip.to_string()),
        "user_agent": h.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(user_agent),
    })
}

/// Longest User-Agent kept in provenance, in characters: it is echoed in every list.
const USER_AGENT_CHARS: usize = 256;

/// A User-Agent as stored: control characters dropped, at most `USER_AGENT_CHARS`.
fn user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_CHARS)
        .collect()
}
