//! Errors as clients see them: JSON `{code, message}`. Built only from text we wrote,
//! never from paths or OS/database error strings (those go to the log).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
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
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::internal("database", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Busy (every upload slot taken) or not ready yet: both pass in seconds.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        resp
    }
}
