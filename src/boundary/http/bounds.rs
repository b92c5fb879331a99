//! What one upload request may cost the server: text fields capped while they stream,
//! a cap on everything in a form before its file, a bound on uploads staged at once,
//! and refused bodies read to their end so nginx passes the refusal on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Text fields (`kind`, `center_key`, `media_role`, …) are short words.
pub const TEXT_FIELD_MAX: usize = 1024;

/// Everything a form may hold before its `file` part: the preamble, part headers, text
/// fields and parts we skip. multer buffers a part header until it ends, so without
/// this a single endless header would be held in memory.
pub const FORM_HEAD_MAX: u64 = 64 * 1024;

/// How much of a client's value an error message repeats.
const SHOWN_MAX: usize = 32;

/// A client's value as an error message may show it: quoted and escaped as names are
/// (one rule, `ingest::name::escaped`), at most a short prefix, with its full length.
pub fn shown(value: &str) -> String {
    let prefix = crate::ingest::name::escaped(value, SHOWN_MAX);
    if value.chars().nth(SHOWN_MAX).is_some() {
        format!("{prefix} ({} bytes)", value.len())
    } else {
        prefix
    }
}

/// Open a multipart body whose parts before the file are bounded (FORM_HEAD_MAX):
/// read its fields through the returned `FormHead`.
pub async fn form(req: Request) -> Result<(Multipart, FormHead), ApiError> {
    let head = FormHead(Arc::new(HeadBudget {
        file: AtomicBool::new(false),
        exceeded: AtomicBool::new(false),
    }));
    let (parts, body) = req.into_parts();
    let metered = Metered {
        inner: body.into_data_stream(),
        seen: 0,
        head: head.0.clone(),
    };
    let req = Request::from_parts(parts, Body::from_stream(metered));
    Ok((Multipart::from_request(req, &()).await?, head))
}

/// The bounds of one form, shared with its body.
#[derive(Clone)]
pub struct FormHead(Arc<HeadBudget>);

struct HeadBudget {
    file: AtomicBool,
    exceeded: AtomicBool,
}

impl FormHead {
    pub async fn next_field<'a>(
        &self,
        multipart: &'a mut Multipart,
    ) -> Result<Option<Field<'a>>, ApiError> {
        multipart
            .next_field()
            .await
            .map_err(|e| self.0.refusal().unwrap_or_else(|| e.into()))
    }

    /// From here on the bytes are the file's, bounded by the upload limit instead.
    pub fn file_follows(&self) {
        self.0.file.store(true, Ordering::Relaxed);
    }

    /// A text field's value, read chunk by chunk and refused past TEXT_FIELD_MAX bytes;
    /// `what` names it in the refusal.
    pub async fn text(&self, mut field: Field<'_>, what: &str) -> Result<String, ApiError> {
        let mut value = Vec::new();
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.0.refusal().unwrap_or_else(|| e.into())),
            };
            if value.len() + chunk.len() > TEXT_FIELD_MAX {
                return Err(ApiError::bad_request(
                    "field_too_long",
                    format!("the {what} is longer than {TEXT_FIELD_MAX} bytes: send the short value the API documents"),
                ));
            }
            value.extend_from_slice(&chunk);
        }
        String::from_utf8(value).map_err(|_| {
            ApiError::bad_request("bad_field", format!("the {what} is not UTF-8 text"))
        })
    }
}

impl HeadBudget {
    fn refusal(&self) -> Option<ApiError> {
        self.exceeded.load(Ordering::Relaxed).then(|| {
            ApiError::bad_request(
                "form_too_large",
                format!("the form's parts before `file` exceed {FORM_HEAD_MAX} bytes: send the short text fields, then the file"),
            )
        })
    }
}

/// The body under a Form: fails once the parts before the file pass FORM_HEAD_MAX
/// (a chunk that starts below the cap passes whole, so memory stays within one chunk).
struct Metered {
    inner: BodyDataStream,
    seen: u64,
    head: Arc<HeadBudget>,
}

impl Stream for Metered {
    type Item = Result<Bytes, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.head.file.load(Ordering::Relaxed) && self.seen > FORM_HEAD_MAX {
            self.head.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("form head too large"))));
        }
        let next = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            self.seen += chunk.len() as u64;
        }
        next
    }
}

/// Uploads staged at once, across the upload API and hub media: each holds a temp file,
/// a staging thread and a few chunks of memory.
#[derive(Clone)]
pub struct Uploads(Arc<Semaphore>);

impl Uploads {
    pub fn new(max: usize) -> Uploads {
        Uploads(Arc::new(Semaphore::new(max.max(1))))
    }

    /// A slot for one upload, or 503 (with Retry-After) when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(
                "the server is receiving as many uploads as it takes at once ([server] max_uploads); retry after the time in Retry-After",
            )
        })
    }
}

/// Middleware for routes that take large bodies, with the route's body limit as state:
/// whatever the handler left unread is read and dropped before the answer goes out.
/// What nginx forwards to a location without large bodies (the contract's
/// `small_body_max`, an nginx size such as `1m`); the app reads a refused body of that
/// size before it answers.
pub fn small_body() -> u64 {
    nginx_size(crate::contract::CONTRACT.default_of("small_body_max"))
        .expect("nix/contract.toml: small_body_max is an nginx size (e.g. 1m)")
}

/// An nginx size: bytes, or a number with k, m or g (either case).
fn nginx_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// nginx passes a refusal (401, 403, 413, …) on only once it has sent the whole body;
/// answering mid-body makes it report 502 and the client retry what cannot pass.
/// The rest is read up to twice the limit in all (a sender of a legitimate size that
/// is refused, or one that overshot the limit, still hears why) and never waits
/// longer than the body read timeout for a stalled sender.
pub async fn read_to_end(State(limit): State<u64>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let (back, returned) = tokio::sync::oneshot::channel();
    let tracked = Returning {
        inner: Some(body.into_data_stream()),
        seen: 0,
        back: Some(back),
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from_stream(tracked)))
        .await;
    if let Ok((mut rest, mut seen)) = returned.await {
        let budget = limit.saturating_mul(2);
        while seen <= budget {
            match rest.next().await {
                Some(Ok(chunk)) => seen += chunk.len() as u64,
                _ => break,
            }
        }
    }
    resp
}

/// A body that hands back its unread rest (and how much was read) when dropped early.
struct Returning {
    inner: Option<BodyDataStream>,
    seen: u64,
    back: Option<tokio::sync::oneshot::Sender<(BodyDataStream, u64)>>,
}

impl Stream for Returning {
    type Item = Result<Bytes, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => self.seen += chunk.len() as u64,
            // Ended or broken: nothing left to hand back.
            Poll::Ready(_) => self.inner = None,
            Poll::Pending => {}
        }
        next
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(rest), Some(back)) = (self.inner.take(), self.back.take()) {
            let _ = back.send((rest, self.seen));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sizes_read_as_nginx_reads_them() {
        assert_eq!(nginx_size("1m"), Some(1 << 20));
        assert_eq!(nginx_size("50G"), Some(50 << 30));
        assert_eq!(nginx_size("4096"), Some(4096));
        assert_eq!(nginx_size("1t"), None);
        assert_eq!(nginx_size("m"), None);
        assert_eq!(small_body(), 1 << 20);
    }

    #[test]
    fn shown_keeps_a_short_prefix() {
        assert_eq!(shown("video"), "\"video\"");
        let long = "x".repeat(10_000);
        let s = shown(&long);
        assert!(s.len() < 60, "{s}");
        assert!(s.contains("10000 bytes"));
        // Never cuts inside a character; like names, anything but printable ASCII is
        // escaped, so a value cannot steer the message it appears in.
        assert!(shown(&"é".repeat(100)).starts_with("\"\\u{e9}\\u{e9}"));
        assert_eq!(shown("a\u{202e}b"), "\"a\\u{202e}b\"");
    }
}
