//! Prometheus counters. Series are labelled by route pattern, never by raw path, so
//! their number stays bounded.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use crate::ingest::Boundary;

#[derive(Default)]
struct Registry {
    requests: BTreeMap<(String, u16), u64>,
    latency_sum: BTreeMap<String, f64>,
    ingested: BTreeMap<(&'static str, &'static str), u64>,
    bytes: BTreeMap<&'static str, u64>,
}

fn reg() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

pub fn record_request(route: &str, status: u16, secs: f64) {
    let mut r = reg().lock().unwrap();
    *r.requests.entry((route.to_string(), status)).or_default() += 1;
    *r.latency_sum.entry(route.to_string()).or_default() += secs;
}

pub fn record_ingest(b: Boundary, dedupe: bool, bytes: u64) {
    let mut r = reg().lock().unwrap();
    let outcome = if dedupe { "dedupe" } else { "created" };
    *r.ingested.entry((b.as_str(), outcome)).or_default() += 1;
    if !dedupe {
        *r.bytes.entry(b.as_str()).or_default() += bytes;
    }
}

/// Render the registry plus job counts (by status and boundary) read from the database.
pub fn render(jobs: &[(String, String, i64)]) -> String {
    let r = reg().lock().unwrap();
    let mut out = String::new();
    out.push_str("# TYPE lxgate_http_requests_total counter\n");
    for ((route, status), n) in &r.requests {
        out.push_str(&format!(
            "lxgate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE lxgate_http_request_seconds_sum counter\n");
    for (route, s) in &r.latency_sum {
        out.push_str(&format!(
            "lxgate_http_request_seconds_sum{{route=\"{route}\"}} {s:.6}\n"
        ));
    }
    out.push_str("# TYPE lxgate_ingest_total counter\n");
    for ((b, o), n) in &r.ingested {
        out.push_str(&format!(
            "lxgate_ingest_total{{boundary=\"{b}\",outcome=\"{o}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE lxgate_ingest_bytes_total counter\n");
    for (b, n) in &r.bytes {
        out.push_str(&format!(
            "lxgate_ingest_bytes_total{{boundary=\"{b}\"}} {n}\n"
        ));
    }
    out.push_str("# TYPE lxgate_upload_jobs gauge\n");
    for (status, boundary, n) in jobs {
        out.push_str(&format!(
            "lxgate_upload_jobs{{status=\"{status}\",boundary=\"{boundary}\"}} {n}\n"
        ));
    }
    out
}
