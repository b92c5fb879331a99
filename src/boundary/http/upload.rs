//! `POST /api/upload/`: the API boundary's own checks, then the ingest core.
//!
//! Two request shapes (README, "Upload API"):
//! - raw body, with headers `X-Filename`, `X-Kind`, optional `X-Center-Key`;
//! - `multipart/form-data` as endoreg-db's upload view takes it (the lx-annotate
//!   frontend sends `file` first): one `file` field, optional text fields `center_key`,
//!   `center_name`, `source_system`, `idempotency_key` and lxgate's `kind`, in any order.
//!   Without `kind` the kind is inferred from the content, then the name. Text fields
//!   before `file` are checked before a byte is stored; after it, the staged file is
//!   dropped on a refusal. The file is staged in its kind's form at rest from the first
//!   byte (sealed kinds never reach the disk as plaintext): `kind` before `file` says
//!   which, else the first bytes and the name do.
//!
//! Both take `Idempotency-Key`: the same key with the same content answers the first job.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::bounds::{self, shown};
use super::{authenticate, ApiError, AppState, Source};
use crate::access::tokens::{Principal, TokenRole};
use crate::config::Role;
use crate::ingest::at_rest::AtRest;
use crate::ingest::file_type;
use crate::ingest::{self, Boundary, IngestError, Kind, NewJob};

/// Upload one file, as a raw body with `X-Filename` and `X-Kind`, or as a multipart form.
#[utoipa::path(
    post,
    path = "/api/upload/",
    tag = "ingest",
    security(("token" = [])),
    params(
        ("X-Filename" = Option<String>, Header, description = "Raw body: the original file name (percent-encoded UTF-8)"),
        ("X-Kind" = Option<crate::ingest::Kind>, Header, description = "Raw body: what the file is"),
        ("X-Center-Key" = Option<String>, Header, description = "Raw body: the center, default the token's"),
    ),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (super::openapi::UploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Already stored: the earlier job (`dedupe: true`)", body = super::openapi::Uploaded),
        (status = 201, description = "Stored: the new job", body = super::openapi::Uploaded),
        (status = 400, description = "Missing or invalid name, kind, center or body", body = super::error::ErrorBody),
        super::openapi::TokenRefusals,
        (status = 403, description = "A viewer token, or another center than the token's", body = super::error::ErrorBody),
        (status = 413, description = "Larger than UPLOAD_MAX_SIZE", body = super::error::ErrorBody),
        (status = 503, description = "Every upload slot is taken; see Retry-After", body = super::error::ErrorBody),
        (status = 507, description = "Managed storage is full", body = super::error::ErrorBody),
    ),
)]
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
    state.accepting()?;
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

    let idempotency_header = header_str(req.headers(), "idempotency-key")?;
    let mut source_system = "api".to_string();
    let mut idempotency_key = idempotency_header;
    let (staged, name, kind, center_id) = if multipart {
        let (mut mp, head) = bounds::form(req).await?;
        // The reference's fields; `kind` is lxgate's own (optional since the kind is
        // inferred as the reference does). Any order: the lx-annotate frontend sends
        // `file` first, lxgate's own clients send it last.
        let mut text = FormText::default();
        let mut file: Option<(ingest::Staged, String, Vec<u8>)> = None;
        let mut center_id = None;
        let mut after_file = 0;
        while let Some(field) = head.next_field(&mut mp).await? {
            if file.is_some() {
                after_file += 1;
                if after_file > FormText::FIELDS.len() {
                    return Err(ApiError::bad_request(
                        "too_many_fields",
                        "too many fields after `file`: send file, center_key, center_name, source_system, idempotency_key at most once each",
                    ));
                }
            }
            let fname = field.name().unwrap_or_default().to_string();
            if fname == "file" {
                if file.is_some() {
                    return Err(ApiError::bad_request(
                        "duplicate_file",
                        "more than one `file` field: upload one file per request",
                    ));
                }
                let name = validate_name("file field's filename", field.file_name())?;
                if text.any_center() || text.kind.is_some() {
                    // Text fields first (lxgate's order): refused before a byte is stored.
                    center_id = Some(text.center(&state, &principal, source).await?);
                }
                head.file_follows();
                // The kind decides the form at rest, and the file is staged in that form
                // from its first byte: a kind field before the file says it, else the
                // first bytes (held in memory) and the name, as inferred below.
                let (first, body) = first_bytes(field).await;
                let storage = match &text.kind {
                    Some(k) => state
                        .storage
                        .for_kind(validate_kind("kind field", Some(k))?),
                    None => match infer_kind(&first, &name) {
                        Ok(k) => state.storage.for_kind(k),
                        // Refused below unless a later kind field names one: sealed
                        // meanwhile, the form no kind forbids.
                        Err(_) => state.storage.staging_as(AtRest::Sealed),
                    },
                };
                let staged = ingest::stream::stage(&storage, body, limit).await?;
                file = Some((staged, name, first));
            } else if FormText::FIELDS.contains(&fname.as_str()) {
                let v = head.text(field, &format!("{fname} field")).await?;
                text.set(&fname, v)?;
            } else {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!(
                        "Unknown upload request field(s): {}; the fields are file, center_key, center_name, source_system, idempotency_key (and kind)",
                        shown(&fname)
                    ),
                ));
            }
        }
        let Some((staged, name, first)) = file else {
            return Err(ApiError::bad_request(
                "missing_file",
                "multipart body has no `file` field: add one with the file's bytes",
            ));
        };
        let kind = match &text.kind {
            Some(k) => validate_kind("kind field", Some(k))?,
            None => infer_kind(&first, &name)?,
        };
        let staged = in_form_of(&state, staged, kind).await?;
        let center_id = match center_id {
            Some(id) => id,
            None => text.center(&state, &principal, source).await?,
        };
        if let Some(s) = text.source_system.take() {
            source_system = s;
        }
        if idempotency_key.is_none() {
            idempotency_key = text.idempotency_key.take();
        }
        (staged, name, kind, center_id)
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
            None,
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
    if let Some(first) = idempotent_replay(
        &state,
        center_id,
        idempotency_key.as_deref(),
        &staged.sha256,
    )
    .await?
    {
        // The same key with the same content: the first job, as endoreg-db answers.
        staged.discard();
        return Ok((StatusCode::OK, axum::Json(upload_answer(&first, true)?)).into_response());
    }
    let job = NewJob {
        boundary: Boundary::Api,
        source_system,
        center_id,
        original_name: name,
        kind,
        idempotency_key,
        metadata_hash: None,
        provenance: prov,
    };
    let outcome = ingest::commit(&state.pool, &state.storage, staged, job).await?;
    let dedupe = outcome.is_dedupe();
    let body = upload_answer(outcome.job(), dedupe)?;
    tracing::info!(boundary = "api", outcome = if dedupe { "dedupe" } else { "accepted" }, job_id = %outcome.job().id, size = outcome.job().size_bytes, "api upload");
    let status = if dedupe {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(body)).into_response())
}

/// lxgate's job, plus what the lx-annotate frontend reads from endoreg-db's answer.
fn upload_answer(job: &ingest::UploadJob, dedupe: bool) -> Result<serde_json::Value, ApiError> {
    let mut body = serde_json::to_value(job).map_err(|e| ApiError::internal("serialize", e))?;
    body["dedupe"] = serde_json::Value::Bool(dedupe);
    body["upload_id"] = serde_json::Value::String(job.id.to_string());
    body["status_url"] = serde_json::Value::String(format!("/api/upload/{}/status/", job.id));
    body["message"] = "Upload job created successfully".into();
    Ok(body)
}

/// An `Idempotency-Key` (header, else form field) already used by this center's API
/// uploads: the same content gives that job back; other content is a 409.
async fn idempotent_replay(
    state: &AppState,
    center_id: i64,
    key: Option<&str>,
    sha256: &str,
) -> Result<Option<ingest::UploadJob>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM upload_jobs j LEFT JOIN centers c ON c.id = j.center_id \
                 WHERE j.idempotency_key = $1 AND j.center_id = $2 AND j.ingest_mode = 'api' \
                 ORDER BY j.created_at LIMIT 1",
                ingest::JOB_COLUMNS
            ),
            &[&key, &center_id],
        )
        .await
        .map_err(|e| ApiError::internal("idempotency lookup", e))?;
    let Some(row) = row else { return Ok(None) };
    let first = ingest::UploadJob::from_row(&row);
    if first.content_hash.as_deref() == Some(sha256) {
        Ok(Some(first))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this Idempotency-Key was already used for a different file: use a new key for a new file",
        ))
    }
}

/// The reference's optional text fields of a multipart upload (blank = absent).
#[derive(Default)]
struct FormText {
    center_key: Option<String>,
    center_name: Option<String>,
    source_system: Option<String>,
    idempotency_key: Option<String>,
    kind: Option<String>,
}

impl FormText {
    /// The center the form's center_key / center_name fields name (or the token's).
    async fn center(
        &self,
        state: &AppState,
        principal: &Principal,
        source: Source,
    ) -> Result<i64, ApiError> {
        resolve_center(
            state,
            principal,
            source,
            self.key(),
            self.name(),
            "center_key field",
        )
        .await
    }

    const FIELDS: &'static [&'static str] = &[
        "center_key",
        "center_name",
        "source_system",
        "idempotency_key",
        "kind",
    ];
    /// endoreg-db's limit on each field.
    const MAX_CHARS: usize = 255;

    fn set(&mut self, field: &str, v: String) -> Result<(), ApiError> {
        let v = v.trim().to_string();
        if v.chars().count() > Self::MAX_CHARS {
            return Err(ApiError::bad_request(
                "field_too_long",
                format!(
                    "the {field} field is longer than {} characters",
                    Self::MAX_CHARS
                ),
            ));
        }
        let slot = match field {
            "center_key" => &mut self.center_key,
            "center_name" => &mut self.center_name,
            "source_system" => &mut self.source_system,
            "idempotency_key" => &mut self.idempotency_key,
            _ => &mut self.kind,
        };
        *slot = Some(v).filter(|v| !v.is_empty());
        Ok(())
    }
    fn any_center(&self) -> bool {
        self.center_key.is_some() || self.center_name.is_some()
    }
    fn key(&self) -> Option<&str> {
        self.center_key.as_deref()
    }
    fn name(&self) -> Option<&str> {
        self.center_name.as_deref()
    }
}

/// The first bytes of a streamed file (in memory, nothing staged yet) for type
/// detection, and the whole stream again.
async fn first_bytes<S, E>(
    mut body: S,
) -> (
    Vec<u8>,
    impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    let mut head = Vec::new();
    let mut taken = Vec::new();
    while head.len() < file_type::SNIFF_LEN {
        match body.next().await {
            Some(Ok(b)) => {
                head.extend_from_slice(&b[..b.len().min(file_type::SNIFF_LEN - head.len())]);
                taken.push(Ok(b));
            }
            // Staging reports it, as for any broken body.
            Some(Err(e)) => {
                taken.push(Err(e));
                break;
            }
            None => break,
        }
    }
    (head, futures_util::stream::iter(taken).chain(body))
}

/// A file staged before its kind was settled (a kind field after the file), in the form
/// the policy keeps that kind in. Sealed staging is opened into plain; plain staging for
/// a kind kept sealed is refused: its plaintext has been in staging, which a client that
/// sends the kind before the file never causes.
async fn in_form_of(
    state: &AppState,
    staged: ingest::Staged,
    kind: Kind,
) -> Result<ingest::Staged, ApiError> {
    let storage = state.storage.for_kind(kind);
    if storage.at_rest() == Some(staged.at_rest()) {
        return Ok(staged);
    }
    if staged.at_rest() == AtRest::Plain {
        staged.discard();
        return Err(ApiError::bad_request(
            "kind_after_file",
            format!(
                "the kind field says {}, which is kept sealed at rest, but it came after the file, which was staged plain for the kind it looked like: send the kind field before the file",
                kind.as_str()
            ),
        ));
    }
    tokio::task::spawn_blocking(move || storage.restage(staged))
        .await
        .map_err(|e| ApiError::internal("restaging an upload", e))?
        .map_err(|e| ApiError::internal("restaging an upload", e))
}

/// The types endoreg-db's upload view accepts, and the kind each becomes.
const ACCEPTED_TYPES: &str = "application/pdf (report); video/mp4, video/avi, video/quicktime, video/x-msvideo, video/x-ms-wmv (video)";

/// The kind of an upload without a `kind` field, as endoreg-db decides it: the
/// content's type first (its magic bytes), else the name; only PDF and the listed video
/// types are accepted.
fn infer_kind(head: &[u8], name: &str) -> Result<Kind, ApiError> {
    let mime = file_type::sniff(head).or_else(|| file_type::from_name(name));
    match mime {
        Some("application/pdf") => Ok(Kind::Report),
        Some(
            "video/mp4" | "video/avi" | "video/quicktime" | "video/x-msvideo" | "video/x-ms-wmv",
        ) => Ok(Kind::Video),
        other => Err(ApiError::bad_request(
            "unsupported_type",
            format!(
                "Unsupported file type: {}. Accepted: {ACCEPTED_TYPES}",
                other.unwrap_or("unknown")
            ),
        )),
    }
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
    name: Option<&str>,
    what: &str,
) -> Result<i64, ApiError> {
    if let Some(name) = name {
        return resolve_center_by_name(state, p, source, key, name).await;
    }
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
        (Some((_, own)), Some(_)) => Err(cross_center(p, source, own)),
        (Some((id, _)), None) => Ok(*id),
        (None, Some(k)) => {
            debug_assert_eq!(p.role, TokenRole::SuperAdmin);
            let client = state.pool.get().await?;
            crate::access::tokens::center_id(&client, k)
                .await
                .map_err(|e| ApiError::internal("center lookup", e))?
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "unknown_center",
                        format!("no center {}: create it with `lxgate center add`", shown(k)),
                    )
                })
        }
        (None, None) => {
            let Some(default) = state.config.server.default_center.as_deref() else {
                return Err(ApiError::bad_request(
                    "missing_center_key",
                    format!("{what} is missing and no default center is configured (LX_ANNOTATE_DEFAULT_CENTER)"),
                ));
            };
            // A key, else a center name, as endoreg-db reads LX_ANNOTATE_DEFAULT_CENTER.
            let client = state.pool.get().await?;
            let m = crate::access::tokens::center_by_key_or_name(&client, default)
                .await
                .map_err(|e| ApiError::internal("center lookup", e))?;
            match m {
                crate::access::tokens::CenterMatch::Found(id) => Ok(id),
                _ => Err(ApiError::bad_request(
                    "unknown_center",
                    format!("{what} is missing and the default center (LX_ANNOTATE_DEFAULT_CENTER) names no single center: ask the operator to fix it, or name the center"),
                )),
            }
        }
    }
}

/// A scoped token naming another center: audited, then 403.
fn cross_center(p: &Principal, source: Source, own: &str) -> ApiError {
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
    ApiError::forbidden(format!(
        "this token belongs to center {own:?} and cannot upload for another center; use that center's token"
    ))
}

/// `center_name` (with or without `center_key`), by endoreg-db's rule for declared
/// centers; a scoped token may only name its own center.
async fn resolve_center_by_name(
    state: &AppState,
    p: &Principal,
    source: Source,
    key: Option<&str>,
    name: &str,
) -> Result<i64, ApiError> {
    let client = state.pool.get().await?;
    let declared = crate::access::tokens::declared_center(&client, key, Some(name))
        .await
        .map_err(|e| ApiError::internal("center lookup", e))?;
    let id = match declared {
        Ok(Some(id)) => id,
        _ => {
            return Err(ApiError::bad_request(
                "unknown_center",
                "center_key/center_name name no single center (or two different ones): create it with `lxgate center add` or send its center_key",
            ))
        }
    };
    match &p.center {
        Some((own, _)) if *own == id => Ok(id),
        Some((_, own)) => Err(cross_center(p, source, own)),
        None => Ok(id),
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
