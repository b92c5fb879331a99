//! Reading UploadJobs and protected media, scoped to the caller's center.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Instant;
use uuid::Uuid;

use super::{authenticate, bearer_hash, caller, unknown_token, ApiError, AppState, Source};
use crate::access::media::{self, Caller, MediaObject, Refusal, Stored};
use crate::access::tokens::Principal;
use crate::ingest::{self, UploadJob, JOB_COLUMNS};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    status: Option<String>,
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    kind: Option<String>,
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    ingest_mode: Option<String>,
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    center_key: Option<String>,
    /// At most this many, newest first (1-1000, default 100).
    limit: Option<i64>,
}

/// UploadJobs the token's center may see, newest first.
#[utoipa::path(
    get,
    path = "/api/upload-jobs/",
    tag = "ingest",
    security(("token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The jobs", body = [crate::ingest::UploadJob]),
        (status = 400, description = "An unknown parameter, a limit that is not a number, or a control character in a filter", body = super::error::ErrorBody),
        super::openapi::TokenRefusals,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<UploadJob>>, ApiError> {
    let p = authenticate(&state, &headers, source).await?;
    let Query(q) = q?;
    for (name, value) in [
        ("status", &q.status),
        ("kind", &q.kind),
        ("ingest_mode", &q.ingest_mode),
        ("center_key", &q.center_key),
    ] {
        // PostgreSQL refuses NUL in text; a filter with control characters matches
        // nothing anyway.
        if value
            .as_deref()
            .is_some_and(|v| v.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                "bad_filter",
                format!("the `{name}` filter contains a control character (such as NUL): send plain text"),
            ));
        }
    }
    let scope: Option<i64> = p.center.as_ref().map(|(id, _)| *id);
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let client = state.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM upload_jobs j LEFT JOIN centers c ON c.id = j.center_id
                 WHERE ($1::bigint IS NULL OR j.center_id = $1)
                   AND ($2::text IS NULL OR j.status = $2)
                   AND ($3::text IS NULL OR j.kind = $3)
                   AND ($4::text IS NULL OR j.ingest_mode = $4)
                   AND ($5::text IS NULL OR c.center_key = $5)
                 ORDER BY j.created_at DESC LIMIT $6"
            ),
            &[
                &scope,
                &q.status,
                &q.kind,
                &q.ingest_mode,
                &q.center_key,
                &limit,
            ],
        )
        .await?;
    Ok(Json(rows.iter().map(UploadJob::from_row).collect()))
}

async fn visible_job(
    state: &AppState,
    headers: &HeaderMap,
    source: Source,
    id: &str,
) -> Result<(UploadJob, Principal), ApiError> {
    let p = authenticate(state, headers, source).await?;
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found())?;
    let job = ingest::get_job(&state.pool, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let client = state.pool.get().await?;
    let center_id: Option<i64> = client
        .query_one("SELECT center_id FROM upload_jobs WHERE id = $1", &[&id])
        .await?
        .get(0);
    if !p.sees_center(center_id) {
        return Err(cross_center(&p, id, source));
    }
    Ok((job, p))
}

/// A job of another center: audited, and answered as if it did not exist.
fn cross_center(p: &Principal, job: Uuid, source: Source) -> ApiError {
    crate::audit::Event {
        event: "cross_center",
        outcome: "refused",
        principal: Some(&p.label),
        center: p.center.as_ref().map(|(_, k)| k.as_str()),
        job: Some(&job.to_string()),
        source: Some(&source.label()),
        reason: Some("a job of another center"),
        ..Default::default()
    }
    .emit();
    ApiError::not_found()
}

/// One UploadJob.
#[utoipa::path(
    get,
    path = "/api/upload-jobs/{id}",
    tag = "ingest",
    security(("token" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The job", body = crate::ingest::UploadJob),
        (status = 400, description = "The path is not valid UTF-8", body = super::error::ErrorBody),
        super::openapi::TokenRefusals,
        (status = 404, description = "No such job for this token", body = super::error::ErrorBody),
    ),
)]
pub async fn get_one(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UploadJob>, ApiError> {
    let Path(id) = id?;
    Ok(Json(visible_job(&state, &headers, source, &id).await?.0))
}

/// The one authorization decision of `GET /api/media/{id}`: the caller's token, the job
/// and the center rule, in one database round trip, or none when the same token was
/// allowed the same job within `[server] token_recheck_secs`. The object and how it is
/// stored, or the refusal, audited: 401 for no valid token, 404 for a job that does not
/// exist, has no object, or belongs to a center the caller does not see.
///
/// `media_download` is audited when access is decided, not for each range request a
/// player sends on the strength of that decision: one line per token, job and window.
/// The line cost the app about a fifth of its CPU per request (scripts/bench/media), and
/// more in journald; nginx's access log still has every request.
pub async fn authorize_media(
    state: &AppState,
    headers: &HeaderMap,
    source: Source,
    id: &str,
) -> Result<(Principal, MediaObject), ApiError> {
    let Ok(job) = id.parse::<Uuid>() else {
        // Still 401 for a bad token, before the 404.
        authenticate(state, headers, source).await?;
        return Err(ApiError::not_found());
    };
    let hash = bearer_hash(headers, source)?;
    if let Some((allowed, _)) = state.media_decisions.get(&(hash, job)) {
        return Ok(allowed);
    }
    let caller = caller(state, hash, source)?;
    // An answer is as old as the oldest question behind it.
    let (asked, unverified) = match &caller {
        Caller::Known(_, asked) => (*asked, false),
        Caller::Unverified(_) => (Instant::now(), true),
    };
    let client = state.pool.get().await?;
    let decision = media::decide(&client, caller, job).await?;
    drop(client);
    let confirmed = match &decision {
        Ok((p, _)) | Err(Refusal::NoSuchJob(p) | Refusal::OtherCenter(p)) => Some(p),
        Err(Refusal::UnknownToken) => None,
    };
    if let (true, Some(p)) = (unverified, confirmed) {
        state.verified.insert(hash, p, asked);
    }
    match decision {
        Ok(allowed) => {
            state.media_decisions.insert((hash, job), &allowed, asked);
            let (p, object) = &allowed;
            crate::audit::Event {
                event: "media_download",
                outcome: "ok",
                principal: Some(&p.label),
                center: object.center_key.as_deref(),
                job: Some(&object.job.to_string()),
                source: Some(&source.label()),
                ..Default::default()
            }
            .emit();
            Ok(allowed)
        }
        Err(Refusal::UnknownToken) => Err(unknown_token(source)),
        Err(Refusal::NoSuchJob(_)) => Err(ApiError::not_found()),
        Err(Refusal::OtherCenter(p)) => Err(cross_center(&p, job, source)),
    }
}

/// A job as endoreg-db's `UploadJobStatusSerializer` shapes it, for the lx-annotate
/// frontend's polling. Fields lxgate has no value for (no SensitiveMeta, no text
/// extraction, no LLM jobs) are always null; they are kept so the frontend finds them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UploadJobStatus {
    /// The job's status (as in UploadJob)
    status: String,
    error_detail: Option<String>,
    sensitive_meta_id: Option<i64>,
    id: Uuid,
    source_center_key: Option<String>,
    source_system: String,
    ingest_mode: String,
    text: Option<String>,
    anonymized_text: Option<String>,
    report_llm_job: Option<i64>,
}

/// One job's status, in the shape the lx-annotate frontend polls.
#[utoipa::path(
    get,
    path = "/api/upload/{id}/status/",
    tag = "ingest",
    security(("token" = [])),
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses(
        (status = 200, description = "The job's status", body = UploadJobStatus),
        (status = 400, description = "The path is not valid UTF-8", body = super::error::ErrorBody),
        super::openapi::TokenRefusals,
        (status = 404, description = "No such job for this token", body = super::error::ErrorBody),
    ),
)]
pub async fn status(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UploadJobStatus>, ApiError> {
    let Path(id) = id?;
    let (job, _) = visible_job(&state, &headers, source, &id).await?;
    Ok(Json(UploadJobStatus {
        status: job.status,
        error_detail: job.error_detail,
        sensitive_meta_id: None,
        id: job.id,
        source_center_key: job.center_key,
        source_system: job.source_system,
        ingest_mode: job.ingest_mode,
        text: None,
        anonymized_text: None,
        report_llm_job: None,
    }))
}

/// A stored job's media. A plain object: behind nginx the answer is an internal redirect
/// that nginx serves with byte ranges; without nginx (`serve_media_directly`) the app
/// serves it. A sealed object is always streamed by the app (sealed_media.rs), after the
/// same authorization.
#[utoipa::path(
    get,
    path = "/api/media/{id}",
    tag = "media",
    security(("token" = [])),
    params(
        ("id" = String, Path, description = "The job's id (a UUID)"),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=START-END`"),
    ),
    responses(
        (status = 200, description = "The media", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested byte range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "The path is not valid UTF-8", body = super::error::ErrorBody),
        super::openapi::TokenRefusals,
        (status = 404, description = "No such job for this token, or nothing stored", body = super::error::ErrorBody),
        (status = 416, description = "The range lies outside the media"),
    ),
)]
pub async fn media(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let (_, object) = authorize_media(&state, &headers, source, &id).await?;
    let rel = object.storage_path;
    match object.stored {
        // nginx cannot open age: a sealed object is opened and streamed by the app.
        Stored::Sealed => super::sealed_media::serve(&state.storage, &rel, &headers).await,
        Stored::Plain if state.config.server.serve_media_directly => {
            serve_file(&state.storage.root().join(&rel), headers).await
        }
        Stored::Plain => x_accel(&rel),
    }
}

/// The answer nginx turns into the object itself: its path under /protected_media/,
/// each segment percent-encoded.
fn x_accel(rel: &str) -> Result<Response, ApiError> {
    let encoded: String = rel
        .split('/')
        .map(|seg| {
            percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    let target = HeaderValue::from_str(&format!("/protected_media/{encoded}"))
        .map_err(|e| ApiError::internal("header", e))?;
    Ok((
        StatusCode::OK,
        [
            ("x-accel-redirect", target),
            (
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            ),
        ],
    )
        .into_response())
}

/// The app serves the object itself (tower-http's ServeFile): single byte ranges with
/// 206/416 and Content-Range, which is what video players seek with. Several ranges at
/// once get the whole body, as RFC 9110 allows.
async fn serve_file(path: &std::path::Path, headers: HeaderMap) -> Result<Response, ApiError> {
    // A job whose object is gone is a storage fault (`lxgate storage audit`), not a
    // missing resource: ServeFile would answer it with a bare 404.
    if !path.is_file() {
        return Err(ApiError::internal(
            "open media",
            std::io::Error::new(std::io::ErrorKind::NotFound, "stored object missing"),
        ));
    }
    let mut req = axum::http::Request::new(axum::body::Body::empty());
    *req.headers_mut() = headers;
    let resp = tower_http::services::ServeFile::new(path)
        .ignore_multi_range_requests(true)
        .try_call(req)
        .await
        .map_err(|e| ApiError::internal("open media", e))?;
    Ok(resp.map(axum::body::Body::new))
}
