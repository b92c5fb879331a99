//! Reading UploadJobs and protected media, scoped to the caller's center.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::{authenticate, ApiError, AppState, Source};
use crate::access::tokens::Principal;
use crate::ingest::{self, UploadJob, JOB_COLUMNS};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    ingest_mode: Option<String>,
    center_key: Option<String>,
    limit: Option<i64>,
}

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
        crate::audit::Event {
            event: "cross_center",
            outcome: "refused",
            principal: Some(&p.label),
            center: p.center.as_ref().map(|(_, k)| k.as_str()),
            job: Some(&job.id.to_string()),
            source: Some(&source.label()),
            reason: Some("a job of another center"),
            ..Default::default()
        }
        .emit();
        return Err(ApiError::not_found());
    }
    Ok((job, p))
}

pub async fn get_one(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<UploadJob>, ApiError> {
    let Path(id) = id?;
    Ok(Json(visible_job(&state, &headers, source, &id).await?.0))
}

/// No body: nginx serves the file from its `internal` /protected_media/ location with
/// byte ranges. With `serve_media_directly` (dev, no nginx) the app streams it. A sealed
/// object is always streamed by the app (sealed_media.rs).
pub async fn media(
    State(state): State<AppState>,
    source: Source,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let (job, p) = visible_job(&state, &headers, source, &id).await?;
    let rel = job.storage_path.ok_or_else(ApiError::not_found)?;
    crate::audit::Event {
        event: "media_download",
        outcome: "ok",
        principal: Some(&p.label),
        center: job.center_key.as_deref(),
        job: Some(&job.id.to_string()),
        source: Some(&source.label()),
        ..Default::default()
    }
    .emit();
    // nginx cannot open age: a sealed object is opened and streamed by the app.
    if job.stored_as == crate::ingest::at_rest::column(crate::ingest::at_rest::AtRest::Sealed) {
        return super::sealed_media::serve(&state.storage, &rel, &headers).await;
    }
    if state.config.server.serve_media_directly {
        return serve_file(&state.storage.root().join(&rel), headers).await;
    }
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
