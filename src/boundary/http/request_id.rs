//! The id that ties one request's log lines to nginx's and to what the client saw:
//! nginx sends its `$request_id` as `X-Request-Id`; the app keeps a sane one (what a
//! proxy or a client's tracing would send) and makes a new one otherwise, so a client
//! cannot write arbitrary text into the journal through it.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id kept; nginx's are 32 hex digits, a UUID with dashes 36.
const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).expect("ids are ASCII letters, digits, '-', '_' and '.'")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The incoming id if it is sane, else a new one in nginx's form.
pub fn of(headers: &HeaderMap) -> RequestId {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(|v| RequestId(v.to_string()))
        .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().simple().to_string()))
}

fn sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn keeps_a_sane_id_and_replaces_anything_else() {
        let nginx = "0123456789abcdef0123456789abcdef";
        assert_eq!(of(&with(nginx)).to_string(), nginx);
        let uuid = "5f0c2a4e-8d3b-4c1a-9e2f-000000000001";
        assert_eq!(of(&with(uuid)).to_string(), uuid);
        for bad in ["", "a b", "x\"y", "Müller", &"a".repeat(65), "id=1;drop"] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(bad.as_bytes()) {
                h.insert(HEADER, v);
            }
            let got = of(&h).to_string();
            assert_ne!(got, bad);
            assert_eq!(got.len(), 32, "{got}");
            assert!(sane(&got));
        }
        // Two requests without an id get different ones.
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
