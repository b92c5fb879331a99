//! The site side of hub export (SPEC §8): `lxgate hub-export mark|run|list`.
//!
//! A job is exported only after someone marks it (a `hub_exports` row). `run` sends every
//! pending mark to the hub over https with the node's client certificate: register the
//! transfer, upload the media if the hub still awaits it, record the hub's answer.
//! Every step is safe to repeat: the transfer key is fixed at marking, the hub answers a
//! known key with 409 and its status, and a transfer the hub has applied is never sent
//! again. Redirects are refused (a redirect could carry the node secret elsewhere).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, HubExport};
use crate::crypto::keyring::MasterKeys;
use crate::crypto::signing;
use crate::ingest::at_rest::{self, AtRest, Object};

/// Where a sender's secrets come from, in order: the systemd credentials the unit loads
/// (never in argv, the environment of other units, or the Nix store), then environment
/// variables for hosts without credentials.
pub const SECRET_CREDENTIAL: &str = "hub-node-secret";
pub const CLIENT_KEY_CREDENTIAL: &str = "hub-client-key";
pub const SECRET_ENV: &str = "LX_ANNOTATE_HUB_SOURCE_NODE_SECRET";

/// The hub's wire version of the register body (endoreg-db's payload_schema_version).
const PAYLOAD_SCHEMA_VERSION: u32 = 1;

/// What one `run` did; the unit fails (exit 1) when anything is left failed or retrying.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    pub applied: usize,
    pub retrying: usize,
    pub failed: usize,
}

pub fn transfer_key(job: uuid::Uuid) -> String {
    format!("job-{job}")
}

/// Mark jobs for export. Refuses what the hub would refuse, with the reason.
pub async fn mark(client: &tokio_postgres::Client, jobs: &[uuid::Uuid], by: &str) -> Result<()> {
    for id in jobs {
        let row = client
            .query_opt("SELECT kind, status FROM upload_jobs WHERE id = $1", &[id])
            .await?
            .ok_or_else(|| anyhow!("no upload job {id}"))?;
        let (kind, status): (String, String) = (row.get(0), row.get(1));
        if status == "error" {
            bail!("upload job {id} failed at ingest (status error); there is no media to export");
        }
        if kind == "preanonymized" {
            bail!("upload job {id} is a preanonymized text pair; the hub accepts video and report media only");
        }
        let n = client
            .execute(
                "INSERT INTO hub_exports (upload_job_id, transfer_key, marked_by)
                 VALUES ($1, $2, $3) ON CONFLICT (upload_job_id) DO NOTHING",
                &[id, &transfer_key(*id), &by],
            )
            .await?;
        if n == 0 {
            tracing::info!(job = %id, "already marked for hub export");
        } else {
            tracing::info!(job = %id, by, "marked for hub export");
        }
    }
    Ok(())
}

/// Put failed exports back in the queue (after the cause was fixed).
pub async fn retry_failed(client: &tokio_postgres::Client) -> Result<u64> {
    Ok(client
        .execute(
            "UPDATE hub_exports SET state = 'pending', updated_at = now() WHERE state = 'failed'",
            &[],
        )
        .await?)
}

#[derive(Debug, Serialize)]
pub struct ExportRow {
    pub upload_job_id: uuid::Uuid,
    pub transfer_key: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn list(client: &tokio_postgres::Client) -> Result<Vec<ExportRow>> {
    Ok(client
        .query(
            "SELECT upload_job_id, transfer_key, state, attempts, last_error
             FROM hub_exports ORDER BY marked_at",
            &[],
        )
        .await?
        .iter()
        .map(|r| ExportRow {
            upload_job_id: r.get(0),
            transfer_key: r.get(1),
            state: r.get(2),
            attempts: r.get(3),
            last_error: r.get(4),
        })
        .collect())
}

/// One item to send, with what the hub needs to know about it.
#[derive(Debug, Clone)]
struct Item {
    job: uuid::Uuid,
    key: String,
    kind: String,
    hash: String,
    size: i64,
    center: String,
    object: PathBuf,
    /// How the object is kept; a sealed one is opened with the master identity and
    /// leaves as plaintext inside the transfer's own protection.
    at_rest: AtRest,
    keys: MasterKeys,
    extension: String,
}

/// How one item ended.
#[derive(Debug)]
enum Outcome {
    Applied,
    /// Worth retrying as is: the network, the hub, or configuration the operator fixes.
    Retry(String),
    /// Will not succeed by retrying: the operator looks, then `hub-export retry`.
    Failed(String),
}

/// Send every pending export once.
pub async fn run(config: &Config, client: &tokio_postgres::Client) -> Result<RunSummary> {
    let settings = config.hub_export.clone().ok_or_else(|| {
        anyhow!("hub export is not configured: set role = \"site_node\" and [hub] export = true, url, node_key, target_node_key, ca_file, client_certificate")
    })?;
    let sender = Arc::new(Sender::new(&settings)?);
    let rows = client
        .query(
            "SELECT e.upload_job_id, e.transfer_key, j.kind, j.content_hash, j.size_bytes,
                    c.center_key, j.storage_path, j.original_name, j.stored_as
             FROM hub_exports e
             JOIN upload_jobs j ON j.id = e.upload_job_id
             JOIN centers c ON c.id = j.center_id
             WHERE e.state = 'pending' ORDER BY e.marked_at",
            &[],
        )
        .await?;
    let mut summary = RunSummary::default();
    for r in rows {
        let name: String = r.get(7);
        let item = Item {
            job: r.get(0),
            key: r.get(1),
            kind: r.get(2),
            hash: r.get(3),
            size: r.get(4),
            center: r.get(5),
            object: config.paths.storage.join(r.get::<_, String>(6)),
            at_rest: at_rest::from_column(r.get(8)).unwrap_or(AtRest::Plain),
            keys: MasterKeys::new(&config.host.master_key),
            extension: extension_of(&name),
        };
        let s = sender.clone();
        let it = item.clone();
        let outcome = tokio::task::spawn_blocking(move || s.send(&it))
            .await
            .map_err(|e| anyhow!("export task: {e}"))?;
        crate::audit::Event {
            event: "export",
            outcome: match &outcome {
                Outcome::Applied => "ok",
                Outcome::Retry(_) => "retry",
                Outcome::Failed(_) => "failed",
            },
            principal: Some(&settings.node_key),
            center: Some(&item.center),
            job: Some(&item.job.to_string()),
            transfer: Some(&item.key),
            ..Default::default()
        }
        .emit();
        let (state, error) = match &outcome {
            Outcome::Applied => {
                summary.applied += 1;
                tracing::info!(job = %item.job, transfer = %item.key, "applied at the hub");
                ("applied", None)
            }
            Outcome::Retry(why) => {
                summary.retrying += 1;
                tracing::warn!(job = %item.job, transfer = %item.key, "not sent, will retry: {why}");
                ("pending", Some(why.as_str()))
            }
            Outcome::Failed(why) => {
                summary.failed += 1;
                tracing::error!(job = %item.job, transfer = %item.key, "export failed: {why}");
                ("failed", Some(why.as_str()))
            }
        };
        client
            .execute(
                "UPDATE hub_exports SET state = $2, attempts = attempts + 1, last_error = $3,
                     updated_at = now() WHERE upload_job_id = $1",
                &[&item.job, &state, &error],
            )
            .await?;
    }
    Ok(summary)
}

/// The hub sees no original file name (it may name a patient): only the job id and the
/// extension, which tells the hub's ingest what the media is.
fn extension_of(name: &str) -> String {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.len() <= 8 && e.bytes().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
        .unwrap_or_default()
}

struct Sender {
    agent: ureq::Agent,
    base: String,
    node_key: String,
    target: String,
    credential: Credential,
    seal_to: Option<crate::crypto::age::Recipient>,
}

/// How the sender proves it is the node.
enum Credential {
    /// The PBKDF2-derived key that signs each request (see `signing`).
    Signing([u8; 32]),
    /// The secret itself, in X-Network-Node-Secret (endoreg-db hubs).
    Secret(String),
}

impl Sender {
    fn new(s: &HubExport) -> Result<Sender> {
        let secret = node_secret(&s.node_key)?;
        let key_path = match credential(CLIENT_KEY_CREDENTIAL) {
            Some(p) => p,
            None => s.client_certificate_key.clone().ok_or_else(|| {
                anyhow!("no client certificate key: load the systemd credential {CLIENT_KEY_CREDENTIAL} or set [hub] client_certificate_key")
            })?,
        };
        let tls = tls_config(&s.ca_file, &s.client_certificate, &key_path)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .redirects(0)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .build();
        let credential = if s.sign_requests {
            // Slow on purpose (PBKDF2); once per run.
            Credential::Signing(crate::access::nodes::signing_key(&s.node_key, &secret))
        } else {
            Credential::Secret(secret)
        };
        let seal_to = s
            .hub_recipient
            .as_deref()
            .map(crate::crypto::age::Recipient::parse)
            .transpose()?;
        Ok(Sender {
            agent,
            base: s.url.clone(),
            node_key: s.node_key.clone(),
            target: s.target_node_key.clone(),
            credential,
            seal_to,
        })
    }

    /// A request to the hub with the node's credential: signed over `transfer_key` and
    /// the body's sha256, or with the secret.
    fn request(
        &self,
        method: &str,
        path: &str,
        transfer_key: &str,
        body_sha256: &str,
    ) -> ureq::Request {
        let r = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("X-Network-Node-Key", &self.node_key)
            .set("Accept", "application/json");
        match &self.credential {
            Credential::Secret(secret) => r.set("X-Network-Node-Secret", secret),
            Credential::Signing(key) => {
                let timestamp = chrono::Utc::now().timestamp();
                // The hub accepts each signature once; the nonce tells retries apart.
                let nonce = signing::new_nonce();
                // The hub sees the path of the full URL, base path included.
                let full = url_path(&self.base, path);
                let signature = signing::Signed {
                    method,
                    path: &full,
                    timestamp,
                    transfer_key,
                    body_sha256,
                    nonce: Some(&nonce),
                }
                .sign(key);
                r.set(signing::TIMESTAMP, &timestamp.to_string())
                    .set(signing::NONCE, &nonce)
                    .set(signing::CONTENT_SHA256, body_sha256)
                    .set(signing::SIGNATURE, &signature)
            }
        }
    }

    fn send(&self, item: &Item) -> Outcome {
        let register = json!({
            "transfer_key": item.key,
            "source_node_key": self.node_key,
            "target_node_key": self.target,
            "source_center_key": item.center,
            "resource_kind": item.kind,
            "resource_hash": item.hash,
            "payload_schema_version": PAYLOAD_SCHEMA_VERSION,
            "metadata": [
                {"key": "size_bytes", "value": item.size},
                {"key": "source_upload_job_id", "value": item.job},
            ],
        });
        let body = serde_json::to_vec(&register).expect("json");
        let answer = hub_answer(
            self.request(
                "POST",
                "/api/media/hub/transfers/",
                &item.key,
                &signing::sha256_hex(&body),
            )
            .set("Content-Type", "application/json")
            .send_bytes(&body),
            "registering",
        );
        let status = match answer {
            Ok((201 | 409, v)) if v.get("transfer_status").is_some() => v,
            Ok((409, v)) => {
                return Outcome::Failed(format!(
                    "the hub refused transfer key {}: {}",
                    item.key,
                    detail(&v)
                ))
            }
            Ok((code, v)) => return classify(code, &v, "registering"),
            Err(why) => return Outcome::Retry(why),
        };
        if let Some(end) = settled(&status) {
            return end;
        }
        match self.upload(item) {
            Ok((code, v)) => {
                settled(&v).unwrap_or_else(|| classify(code, &v, "uploading the media"))
            }
            Err(why) => Outcome::Retry(why),
        }
    }

    /// The media as multipart/form-data with a known length, streamed from storage (no
    /// chunked encoding: nginx passes a sized body through without buffering it).
    fn upload(&self, item: &Item) -> Result<(u16, Value), String> {
        let (len, file) = Object::open(&item.object, item.at_rest, &item.keys)
            .and_then(|mut o| Ok((o.plaintext_len()?, o)))
            .map_err(|e| {
                format!(
                    "opening the stored object {}: {e}; run `lxgate storage audit --verify`",
                    item.object.display()
                )
            })?;
        let boundary = format!("lxgate-{}", uuid::Uuid::new_v4().simple());
        let sealed_field = if self.seal_to.is_some() {
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"media_encryption\"\r\n\r\nage\r\n")
        } else {
            String::new()
        };
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"media_role\"\r\n\r\nprocessed\r\n\
             {sealed_field}--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            item.job, item.extension
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        // Sealed media is encrypted on a thread while it is sent: nothing but ciphertext
        // leaves the site, and no sealed copy is written to disk.
        type Sealer = std::thread::JoinHandle<std::io::Result<()>>;
        let (media, media_len, sealer): (Box<dyn Read + Send>, u64, Option<Sealer>) =
            match &self.seal_to {
                None => (Box::new(file), len, None),
                Some(to) => {
                    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
                    let mut file = file;
                    let sealing = crate::crypto::age::Sealing::start(to, ChannelWriter(tx))
                        .map_err(|e| format!("sealing the media: {e}"))?;
                    let sealed_len = sealing.sealed_len(len);
                    let sealer = std::thread::spawn(move || sealing.seal_from(&mut file));
                    (
                        Box::new(crate::crypto::age::ChunkReader::new(rx.into_iter())),
                        sealed_len,
                        Some(sealer),
                    )
                }
            };
        let total = head.len() as u64 + media_len + tail.len() as u64;
        let body = std::io::Cursor::new(head.into_bytes())
            .chain(media)
            .chain(std::io::Cursor::new(tail.into_bytes()));
        let answer = hub_answer(
            self.request(
                "POST",
                &format!("/api/media/hub/transfers/{}/media/", item.key),
                &item.key,
                // For media the signature covers the file's sha256 (the hub checks it).
                &item.hash,
            )
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .set("Content-Length", &total.to_string())
            .send(body),
            "uploading the media",
        );
        if let Some(s) = sealer {
            match s.join() {
                Ok(Ok(())) => {}
                // A broken pipe means the hub stopped reading; its answer says why.
                Ok(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(format!("sealing the media: {e}"))
                }
                Ok(Err(_)) => {}
                Err(_) => return Err("sealing the media panicked".into()),
            }
        }
        answer
    }
}

/// The sending end of a sealed stream.
struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
        })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Status and JSON body of any HTTP answer; Err for no answer or a redirect.
fn hub_answer(r: Result<ureq::Response, ureq::Error>, what: &str) -> Result<(u16, Value), String> {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Err(format!("{what}: no answer from the hub: {t}"))
        }
    };
    let code = resp.status();
    if (300..400).contains(&code) {
        let to = resp
            .header("location")
            .unwrap_or("(no Location)")
            .to_string();
        return Err(format!(
            "{what}: the hub answered a redirect ({code} to {to}); redirects are refused, set [hub] url to the hub's own https address"
        ));
    }
    let text = resp.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "detail": text.trim() }));
    Ok((code, v))
}

fn detail(v: &Value) -> String {
    ["detail", "message", "code"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// A transfer the hub has decided on: applied, or inconsistent (the media it got does
/// not hash to what the site registered, so the site's own copy is suspect).
fn settled(v: &Value) -> Option<Outcome> {
    match v.get("transfer_status").and_then(Value::as_str) {
        Some("applied") => Some(Outcome::Applied),
        Some("inconsistent") => Some(Outcome::Failed(format!(
            "the hub marked the transfer inconsistent: {}; check this object with `lxgate storage audit --verify`",
            detail(v)
        ))),
        _ => None,
    }
}

/// An unexpected answer: a bad request will not get better by retrying; everything else
/// (credentials, certificate pinning, the hub being down) is fixed by an operator or
/// time, and the next run tries again.
fn classify(code: u16, v: &Value, what: &str) -> Outcome {
    let why = format!("{what}: hub answered {code}: {}", detail(v));
    // Only lxgate's (or endoreg-db's) own JSON refusal is final; a proxy's 400 is
    // usually a certificate problem the operator fixes.
    let from_app =
        v.get("code").is_some_and(|c| c != "incomplete_body") || v.get("transfer_status").is_some();
    match code {
        400 | 413 | 422 if from_app => Outcome::Failed(why),
        _ => Outcome::Retry(why),
    }
}

/// The path part of `base` + `path` (`https://hub/x` + `/api/…` → `/x/api/…`).
fn url_path(base: &str, path: &str) -> String {
    let after_scheme = base.split_once("://").map_or(base, |(_, r)| r);
    let prefix = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    format!("{prefix}{path}")
}

fn credential(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = Path::new(&dir).join(name);
    p.exists().then_some(p)
}

/// The node secret: credential, then `…_SECRET_<NODEKEY>[_FILE]`, then `…_SECRET[_FILE]`.
fn node_secret(node_key: &str) -> Result<String> {
    let read = |p: &Path| -> Result<String> {
        let s = std::fs::read_to_string(p)
            .with_context(|| format!("reading the hub node secret from {}", p.display()))?;
        Ok(s.trim().to_string())
    };
    if let Some(p) = credential(SECRET_CREDENTIAL) {
        return nonempty(read(&p)?, &p.display().to_string());
    }
    let suffix: String = node_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    for var in [format!("{SECRET_ENV}_{suffix}"), SECRET_ENV.to_string()] {
        if let Ok(v) = std::env::var(&var) {
            return nonempty(v.trim().to_string(), &var);
        }
        let file_var = format!("{var}_FILE");
        if let Some(p) = std::env::var_os(&file_var) {
            return nonempty(read(Path::new(&p))?, &file_var);
        }
    }
    bail!("no hub node secret: load the systemd credential {SECRET_CREDENTIAL} (the secret `lxgate node add` printed on the hub), or set {SECRET_ENV}_{suffix}_FILE")
}

fn nonempty(s: String, from: &str) -> Result<String> {
    if s.is_empty() {
        bail!("the hub node secret from {from} is empty");
    }
    Ok(s)
}

fn tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let roots = crate::crypto::tls::roots(ca, "the hub CA")?;
    let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the client certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the client certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "the client certificate file {} holds no certificate",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the client certificate key {}", key.display()))?;
    crate::crypto::tls::client(roots)?
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            anyhow!(
                "the client certificate {} cannot be used with its key: {e}. It must be an X.509 v3 certificate (issued with extensions, e.g. extendedKeyUsage=clientAuth) for that key",
                cert.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_path_includes_the_base_path() {
        assert_eq!(url_path("https://hub:8443", "/api/x/"), "/api/x/");
        assert_eq!(url_path("https://hub/lx", "/api/x/"), "/lx/api/x/");
    }

    #[test]
    fn the_hub_sees_the_extension_never_the_name() {
        assert_eq!(extension_of("Mueller_Hans_1961.MP4"), ".mp4");
        assert_eq!(extension_of("no-extension"), "");
        assert_eq!(extension_of("x.a b"), "");
    }

    #[test]
    fn permanent_and_passing_failures_are_told_apart() {
        let v = json!({"code": "bad_transfer", "message": "x"});
        assert!(matches!(classify(422, &v, "t"), Outcome::Failed(_)));
        let proxy = json!({"detail": "<html>400 The SSL certificate error</html>"});
        assert!(matches!(classify(400, &proxy, "t"), Outcome::Retry(_)));
        assert!(matches!(classify(403, &v, "t"), Outcome::Retry(_)));
        assert!(matches!(classify(502, &v, "t"), Outcome::Retry(_)));
    }
}
