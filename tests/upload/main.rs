//! The API upload boundary over real HTTP into real PostgreSQL and storage.
#[path = "../common/mod.rs"]
mod common;
mod frontend;
mod refusals;
mod storage;

use common::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Duration;

/// Headers of a valid raw upload of `a.pdf` as a report.
const A_PDF: &[(&str, &str)] = &[("X-Filename", "a.pdf"), ("X-Kind", "report")];

struct Api {
    site: Site,
    srv: Server,
}

fn setup(role: &str, extra: &[(&str, &str)]) -> Api {
    let mut site = Site::new(role);
    for (k, v) in extra {
        site.set(k, v);
    }
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "Center A"]);
    site.ok(&["center", "add", "B", "--name", "Center B"]);
    let srv = Server::start(&site);
    Api { site, srv }
}

fn post_raw(
    api: &Api,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut r = http()
        .post(&api.srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {token}"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    call(r.send_bytes(body))
}

fn objects(api: &Api) -> Vec<std::path::PathBuf> {
    files_under(&api.site.data().join("storage/objects"))
}
fn temps(api: &Api) -> Vec<std::path::PathBuf> {
    files_under(&api.site.data().join("storage/tmp"))
}

/// A body reader that yields `total` bytes, optionally slowly, for streaming uploads.
struct Slow {
    left: u64,
    pause_every: u64,
    pause: Duration,
    sent: u64,
}
impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.left as usize).min(64 * 1024);
        buf[..n].fill(b'v');
        self.left -= n as u64;
        self.sent += n as u64;
        if self.pause_every > 0 && self.sent % self.pause_every < n as u64 {
            std::thread::sleep(self.pause);
        }
        Ok(n)
    }
}

/// Status, Retry-After and JSON body of a response, whatever its status.
fn call_retry(r: Result<ureq::Response, ureq::Error>) -> (u16, Option<String>, serde_json::Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let retry = resp.header("retry-after").map(str::to_string);
    let (s, v) = call(Ok(resp));
    (s, retry, v)
}

/// A multipart body with the parts in the given order; a part with a filename is a file.
fn post_form(
    api: &Api,
    token: &str,
    headers: &[(&str, &str)],
    parts: &[(&str, Option<&str>, &[u8])],
) -> (u16, serde_json::Value) {
    let (ct, body) = multipart(parts);
    let mut r = http()
        .post(&api.srv.url("/api/upload/"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", &ct);
    for (k, v) in headers {
        r = r.set(k, v);
    }
    call(r.send_bytes(&body))
}
