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
        held: AtomicBool::new(false),
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
    /// The meter held back bytes past FORM_HEAD_MAX. multer reads ahead greedily, so this
    /// alone is no refusal: the form is too large only if the parser then still cannot
    /// go on with what it already holds.
    held: AtomicBool,
}

impl FormHead {
    pub async fn next_field<'a>(
        &self,
        multipart: &'a mut Multipart,
    ) -> Result<Option<Field<'a>>, ApiError> {
        self.bounded(multipart.next_field()).await
    }

    /// From here on the bytes are the file's, bounded by the upload limit instead.
    pub fn file_follows(&self) {
        self.0.file.store(true, Ordering::Relaxed);
        self.0.held.store(false, Ordering::Relaxed);
    }

    /// A text field's value, read chunk by chunk and refused past TEXT_FIELD_MAX bytes;
    /// `what` names it in the refusal.
    pub async fn text(&self, mut field: Field<'_>, what: &str) -> Result<String, ApiError> {
        let mut value = Vec::new();
        loop {
            let chunk = match self.bounded(field.chunk()).await? {
                Some(c) => c,
                None => break,
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

    /// Drives one step of the parser. When it waits for more bytes while the meter holds
    /// them back, the parts before the file need more than FORM_HEAD_MAX: refused, at the
    /// same point however the bytes were split into chunks on the way.
    async fn bounded<T, E: Into<ApiError>>(
        &self,
        step: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ApiError> {
        let mut step = std::pin::pin!(step);
        std::future::poll_fn(|cx| match step.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(Into::into)),
            Poll::Pending if self.0.held.load(Ordering::Relaxed) => {
                Poll::Ready(Err(ApiError::bad_request(
                    "form_too_large",
                    format!("the form's parts before `file` exceed {FORM_HEAD_MAX} bytes: send the short text fields, then the file"),
                )))
            }
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

/// The body under a Form: past FORM_HEAD_MAX, and until the file part begins, it yields
/// nothing more (a chunk that starts below the cap passes whole, so memory stays within
/// one chunk). Its Pending registers no waker on purpose: the only poller is the handler's
/// own step, which `FormHead::bounded` turns into a refusal or which `file_follows` lets
/// through on the next poll.
struct Metered {
    inner: BodyDataStream,
    seen: u64,
    head: Arc<HeadBudget>,
}

impl Stream for Metered {
    type Item = Result<Bytes, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.head.file.load(Ordering::Relaxed) && self.seen > FORM_HEAD_MAX {
            self.head.held.store(true, Ordering::Relaxed);
            return Poll::Pending;
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

    const BOUNDARY: &str = "XyZ";

    fn part_head(name: &str, file: Option<&str>) -> Vec<u8> {
        let disp = match file {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        format!("--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n").into_bytes()
    }

    /// A form whose bytes arrive as `chunks`, split at the given sizes.
    async fn open(body: Vec<u8>, sizes: &[usize]) -> (Multipart, FormHead) {
        let mut chunks = Vec::new();
        let mut rest = Bytes::from(body);
        for &n in sizes {
            chunks.push(Ok::<_, std::io::Error>(rest.split_to(n.min(rest.len()))));
        }
        chunks.push(Ok(rest));
        let req = Request::builder()
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        match form(req).await {
            Ok(f) => f,
            Err(e) => panic!("{}", e.message),
        }
    }

    /// The text fields, then a 300 KB file: however the bytes are chunked (one chunk
    /// holding the fields and most of the file, as a reused upstream connection delivers
    /// them), the form is accepted and the file read whole.
    #[tokio::test]
    async fn a_form_with_short_fields_passes_whatever_the_chunking() {
        let mut body = Vec::new();
        body.extend(part_head("center_key", None));
        body.extend(b"A\r\n");
        body.extend(part_head("kind", None));
        body.extend(b"video\r\n");
        body.extend(part_head("file", Some("a.mp4")));
        body.extend(vec![7u8; 300_000]);
        body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        for sizes in [&[250_000usize][..], &[100, 70_000, 70_000], &[8192; 40]] {
            let (mut mp, head) = open(body.clone(), sizes).await;
            for want in ["center_key", "kind"] {
                let f = head.next_field(&mut mp).await.unwrap().unwrap();
                assert_eq!(f.name(), Some(want));
                head.text(f, want).await.unwrap();
            }
            let mut file = head.next_field(&mut mp).await.unwrap().unwrap();
            assert_eq!(file.name(), Some("file"));
            head.file_follows();
            let mut n = 0;
            while let Some(c) = file.chunk().await.unwrap() {
                n += c.len();
            }
            assert_eq!(n, 300_000, "{sizes:?}");
        }
    }

    /// A part header that never ends is refused once the parser needs more than
    /// FORM_HEAD_MAX to go on, however it is chunked.
    #[tokio::test]
    async fn an_endless_part_header_is_refused_at_the_form_head_cap() {
        let mut body =
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\nX-Pad: ")
                .into_bytes();
        body.extend(vec![b'a'; 1_000_000]);
        for sizes in [&[8192usize; 130][..], &[500_000]] {
            let (mut mp, head) = open(body.clone(), sizes).await;
            let Err(e) = head.next_field(&mut mp).await else {
                panic!("{sizes:?}: an endless header was accepted");
            };
            assert_eq!(e.code, "form_too_large", "{sizes:?}: {}", e.message);
        }
    }
}
