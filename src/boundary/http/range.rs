//! Media served by the app itself (`serve_media_directly`, no nginx in front): one
//! byte range per request, which is what video players seek with. Behind nginx the
//! `X-Accel-Redirect` path gets ranges from nginx instead.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Want {
    /// No usable range (absent, not bytes, several ranges, malformed): the whole body.
    /// RFC 9110 lets a server ignore a Range it does not support.
    Whole,
    /// Inclusive first and last byte.
    Part(u64, u64),
    /// Starts at or after the end: 416.
    Unsatisfiable,
}

pub fn parse(value: Option<&str>, len: u64) -> Want {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Want::Whole;
    };
    if spec.contains(',') {
        return Want::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Want::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => Want::Unsatisfiable,
            Some(_) if len == 0 => Want::Unsatisfiable,
            Some(n) => Want::Part(len.saturating_sub(n), len - 1),
            None => Want::Whole,
        },
        (first, last) => {
            let Some(first) = num(first) else {
                return Want::Whole;
            };
            let last = if last.is_empty() {
                Some(u64::MAX)
            } else {
                num(last)
            };
            match last {
                None => Want::Whole,
                Some(last) if last < first => Want::Whole,
                Some(_) if first >= len => Want::Unsatisfiable,
                Some(last) => Want::Part(first, last.min(len - 1)),
            }
        }
    }
}

/// Stream `path` (or the part of it the request's Range names).
pub async fn serve_file(path: &Path, headers: &HeaderMap) -> std::io::Result<Response> {
    let mut file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, first, count) = match parse(range, len) {
        Want::Whole => (StatusCode::OK, 0, len),
        Want::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Want::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    file.seek(std::io::SeekFrom::Start(first)).await?;
    let stream =
        futures_util::stream::unfold((file.take(count), count), |(mut f, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(buf)),
                        (f, left - n as u64),
                    ))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let v = format!("bytes {first}-{}/{len}", first + count - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&v).expect("ascii"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_a_player_sends() {
        assert_eq!(parse(None, 100), Want::Whole);
        assert_eq!(parse(Some("bytes=0-"), 100), Want::Part(0, 99));
        assert_eq!(parse(Some("bytes=10-19"), 100), Want::Part(10, 19));
        assert_eq!(parse(Some("bytes=90-200"), 100), Want::Part(90, 99));
        assert_eq!(parse(Some("bytes=-10"), 100), Want::Part(90, 99));
        assert_eq!(parse(Some("bytes=-500"), 100), Want::Part(0, 99));
        assert_eq!(parse(Some("bytes=100-"), 100), Want::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Want::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Want::Unsatisfiable);
    }

    #[test]
    fn ranges_it_ignores() {
        for v in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(Some(v), 100), Want::Whole, "{v}");
        }
    }
}
