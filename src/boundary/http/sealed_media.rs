//! A sealed object served by the app itself: nginx cannot open age, so `GET
//! /api/media/{id}` for a sealed object streams the plaintext from here, after the same
//! authorization as a plain one, with single byte ranges (206, 416, Content-Range) as
//! nginx serves plain objects. Only the age chunks a range touches are decrypted.

use std::io::{Read, Seek, SeekFrom};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::ApiError;
use crate::byte_range::{wanted, Wanted};
use crate::ingest::at_rest::AtRest;
use crate::ingest::Storage;

/// Plaintext read per body chunk.
const CHUNK: usize = 64 * 1024;

pub async fn serve(
    storage: &Storage,
    rel: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    let storage = storage.clone();
    let rel = rel.to_string();
    tokio::task::spawn_blocking(move || {
        let opened = storage
            .open(&rel, AtRest::Sealed)
            .and_then(|mut o| Ok((o.plaintext_len()?, o)));
        let (len, mut object) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = head_tx.send(Err(e));
                return;
            }
        };
        let want = wanted(range.as_deref(), len);
        let _ = head_tx.send(Ok((len, want)));
        let (start, mut left) = match want {
            Wanted::Whole => (0, len),
            Wanted::Part(a, b) => (a, b - a + 1),
            Wanted::Unsatisfiable => return,
        };
        if let Err(e) = object.seek(SeekFrom::Start(start)) {
            let _ = body_tx.blocking_send(Err(e));
            return;
        }
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match object.read(&mut buf) {
                Ok(0) => {
                    let _ = body_tx.blocking_send(Err(std::io::Error::other(
                        "the sealed object ended before its authenticated length",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    // The client went away: stop decrypting.
                    if body_tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(object = %rel, error = %e, "a sealed object failed to open mid-stream: run lxgate storage audit --verify");
                    let _ = body_tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let (len, want) = head_rx
        .await
        .map_err(|e| ApiError::internal("open sealed media", e))?
        .map_err(|e| ApiError::internal("open sealed media", e))?;
    let body = Body::from_stream(futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        // Opened plaintext of a sealed artifact: no shared cache keeps a copy.
        .header(header::CACHE_CONTROL, "private, no-store");
    let value = |s: String| HeaderValue::from_str(&s).expect("digits and ascii");
    resp = match want {
        Wanted::Whole => resp
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, value(len.to_string())),
        Wanted::Part(a, b) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, value((b - a + 1).to_string()))
            .header(header::CONTENT_RANGE, value(format!("bytes {a}-{b}/{len}"))),
        Wanted::Unsatisfiable => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, value(format!("bytes */{len}")))
                .header(header::CONTENT_LENGTH, "0")
                .body(Body::empty())
                .expect("static parts"))
        }
    };
    resp.body(body)
        .map_err(|e| ApiError::internal("sealed media response", e))
}
