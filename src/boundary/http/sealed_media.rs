//! A sealed object served by the app itself: nginx cannot open age, so `GET
//! /api/media/{id}` for a sealed object streams the plaintext from here, after the same
//! authorization as a plain one, with single byte ranges (206, 416, Content-Range) as
//! nginx serves plain objects. Only the age chunks a range touches are decrypted.

use std::io::{Read, Seek, SeekFrom};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::ApiError;
use crate::ingest::at_rest::AtRest;
use crate::ingest::Storage;

/// What a Range header asks of a representation `len` bytes long (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// No Range, several ranges, or a Range to ignore: the whole body, 200.
    Whole,
    /// One satisfiable range, first and last byte inclusive: 206.
    Part(u64, u64),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.map(str::trim) else {
        return Wanted::Whole;
    };
    let Some((unit, set)) = spec.split_once('=') else {
        return Wanted::Whole;
    };
    // Several ranges get the whole body, which RFC 9110 allows (nginx's default too).
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => Wanted::Whole,
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if len == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(len.saturating_sub(n), len - 1),
        },
        (first, "") => match num(first) {
            None => Wanted::Whole,
            Some(a) if a >= len => Wanted::Unsatisfiable,
            Some(a) => Wanted::Part(a, len - 1),
        },
        (first, last) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    Wanted::Unsatisfiable
                } else {
                    Wanted::Part(a, b.min(len - 1))
                }
            }
            // last < first is an invalid range-spec: the header is ignored.
            _ => Wanted::Whole,
        },
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        let w = |r: &str| wanted(Some(r), 100);
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(w("bytes=0-0"), Wanted::Part(0, 0));
        assert_eq!(w("bytes=40-59"), Wanted::Part(40, 59));
        assert_eq!(w("bytes=99-99"), Wanted::Part(99, 99));
        assert_eq!(w("bytes=90-"), Wanted::Part(90, 99));
        assert_eq!(w("bytes=90-500"), Wanted::Part(90, 99));
        assert_eq!(w("bytes=-1"), Wanted::Part(99, 99));
        assert_eq!(w("bytes=-500"), Wanted::Part(0, 99));
        assert_eq!(w("Bytes=1-2"), Wanted::Part(1, 2));
        assert_eq!(w("bytes=100-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=100-200"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert_eq!(w(ignored), Wanted::Whole, "{ignored}");
        }
    }
}
