//! Errors as clients see them: JSON `{code, message}`. Built only from text we wrote,
//! never from paths or OS/database error strings (those go to the log).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unauthorized() -> ApiError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing, unknown or revoked bearer token: send Authorization: Bearer <token> with a valid token (lxgate token create)",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// Not found and not permitted look the same to the caller.
    pub fn not_found() -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such resource for this token",
        )
    }
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; the error is logged, retry later or ask the operator",
        )
    }
    pub fn too_many_requests(what: &str, retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many {what} from this address: retry after {retry_after} s"),
            )
        }
    }
    /// The body for an error response that something other than a handler made (a
    /// method not allowed, a rejection we do not map): built from the status alone.
    pub fn from_status(status: StatusCode) -> ApiError {
        let (code, message) = match status {
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this endpoint does not accept this method (the Allow header names those it does); see the README for the API",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "too_large",
                "the request body is larger than this endpoint accepts",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "the Content-Type is not one this endpoint accepts; see the README for the API",
            ),
            StatusCode::NOT_FOUND => ("no_route", "no such endpoint; see the README for the API"),
            s if s.is_server_error() => (
                "internal",
                "the server failed; the error is logged, retry later or ask the operator",
            ),
            _ => (
                "bad_request",
                "the request is malformed; see the README for the API",
            ),
        };
        Self::new(status, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        use crate::ingest::IngestError as E;
        match e {
            E::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload exceeds the limit of {limit} bytes (UPLOAD_MAX_SIZE); split it or ask the operator to raise the limit"),
            ),
            E::Empty => ApiError::bad_request("empty_body", "the upload is empty: send the file's bytes as the body"),
            E::Source(_) => ApiError::bad_request("incomplete_body", "the upload ended early; send it again"),
            E::Sealed(why) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsealable",
                format!("the media does not open with this hub's age key ({why}): seal it to the recipient `lxgate keys recipient` prints on the hub"),
            ),
            E::Io(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => {
                tracing::error!(error = %e, "storage full");
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", "managed storage is full; retry later or ask the operator")
            }
            other => ApiError::internal("ingest failed", other),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::internal("database", e)
    }
}
impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::internal("database pool", e)
    }
}
impl From<axum::extract::multipart::MultipartRejection> for ApiError {
    fn from(e: axum::extract::multipart::MultipartRejection) -> Self {
        ApiError::bad_request(
            "bad_multipart",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}
impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        ApiError::bad_request(
            "bad_multipart",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}
/// A rejection's own text, escaped and short: it may repeat what the client sent.
fn rejection_detail(text: &str) -> String {
    crate::ingest::name::escaped(text, 200)
}
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(
            "bad_query",
            format!(
                "the query string is not valid ({}): see the README for the parameters",
                rejection_detail(&e.body_text())
            ),
        )
    }
}
impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request(
            "bad_path",
            format!(
                "the path is not valid ({}): percent-encode UTF-8",
                rejection_detail(&e.body_text())
            ),
        )
    }
}
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let status = e.status();
        let mut err = ApiError::from_status(status);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            err.message =
                "the request body is larger than this endpoint accepts (2 MB for JSON requests)"
                    .into();
        } else if !status.is_server_error() {
            err.message = "the request body could not be read; send it again".into();
        }
        err
    }
}
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::internal("database", e)
    }
}

/// Every error answer's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, for programs: `unauthenticated`, `not_found`, `too_large`, `rate_limited`, ...
    code: &'static str,
    /// For people: what is wrong and what to do.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        // Busy (every upload slot taken) or not ready yet: both pass in seconds.
        let retry_after = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(5));
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// Every error leaves as JSON `{code, message}`: a non-JSON error response (axum's
/// method-not-allowed, a rejection no handler maps) gets a body from its status; its
/// headers (`Allow`, `Retry-After`) stay.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let (fresh, body) = ApiError::from_status(status).into_response().into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(fresh.headers);
    Response::from_parts(parts, body)
}
