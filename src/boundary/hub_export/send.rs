//! Talking to the hub: register, seal (the envelope and ciphertext kept per transfer
//! key, so a retry is an exact replay), upload, and the hub's answer and receipt checked
//! field by field and classed as the reference classes them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::body::register_body;
use super::facts::media_facts;
use super::{FailureClass, Item, Outcome, CLIENT_KEY_CREDENTIAL, SECRET_CREDENTIAL, SECRET_ENV};
use crate::config::HubExport;
use crate::crypto::signing;
use crate::hub::envelope::{self, Identity, Receipt, Sealed};
use crate::hub::keys::Recipient;
use crate::hub::wire::reply::summary;
use crate::hub::wire::status::{Expected, StatusBody};
use crate::hub::wire::{
    self, header as h, TransferMode, TransferStatus, MEDIA_CONTENT_TYPE, MEDIA_ROLE_PROCESSED,
};
use crate::ingest::at_rest::Object;

pub(super) struct Sender {
    agent: ureq::Agent,
    base: String,
    settings: HubExport,
    credential: Credential,
    recipient: Recipient,
}

/// How the sender proves it is the node.
enum Credential {
    /// The PBKDF2-derived key that signs each request (see `signing`).
    Signing([u8; 32]),
    /// The secret itself, in X-Network-Node-Secret (the reference's way).
    Secret(String),
}

/// The envelope files of one transfer: `sha256(transfer_key).{ciphertext,json}` in the
/// staging directory, as lx-annotate names them.
struct Staging {
    ciphertext: PathBuf,
    metadata: PathBuf,
}

impl Staging {
    fn new(dir: &Path, key: &str) -> Staging {
        let stem = hex::encode(Sha256::digest(key.as_bytes()));
        Staging {
            ciphertext: dir.join(format!("{stem}.ciphertext")),
            metadata: dir.join(format!("{stem}.json")),
        }
    }

    fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.metadata);
        let _ = std::fs::remove_file(&self.ciphertext);
    }
}

impl Sender {
    pub(super) fn new(s: &HubExport) -> Result<Sender> {
        let secret = node_secret(&s.node_key)?;
        let key_path = match credential(CLIENT_KEY_CREDENTIAL) {
            Some(p) => p,
            None => s.client_certificate_key.clone().ok_or_else(|| {
                anyhow!("no client certificate key: load the systemd credential {CLIENT_KEY_CREDENTIAL} or set [hub] client_certificate_key")
            })?,
        };
        let tls = tls_config(&s.ca_file, &s.client_certificate, &key_path)?;
        // As lx-annotate's `requests(timeout=…)`: the longest wait for the next bytes,
        // not for the whole request (a 50 GiB upload takes longer than any bound).
        let timeout = Duration::from_secs(s.request_timeout_seconds);
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .redirects(0)
            .timeout_connect(timeout.min(Duration::from_secs(15)))
            .timeout_read(timeout)
            .timeout_write(timeout)
            .build();
        let credential = if s.sign_requests {
            // Slow on purpose (PBKDF2); once per run.
            Credential::Signing(crate::access::nodes::signing_key(&s.node_key, &secret))
        } else {
            Credential::Secret(secret)
        };
        let recipient = Recipient::from_file(&s.recipient_public_key_file).with_context(|| {
            format!(
                "reading the hub's recipient key {}: it must be the PEM public key `lxgate keys hub-recipient` printed on the hub, in an absolute regular file",
                s.recipient_public_key_file.display()
            )
        })?;
        std::fs::create_dir_all(&s.envelope_staging_dir).with_context(|| {
            format!(
                "creating the envelope staging directory {}",
                s.envelope_staging_dir.display()
            )
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &s.envelope_staging_dir,
                std::fs::Permissions::from_mode(0o700),
            )?;
        }
        Ok(Sender {
            agent,
            base: s.url.clone(),
            settings: s.clone(),
            credential,
            recipient,
        })
    }

    /// A request to the hub with the node's credential: the secret header, or signed
    /// over `transfer_key` and the body's sha256.
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
            .set(h::NODE_KEY, &self.settings.node_key)
            .set("Accept", "application/json");
        match &self.credential {
            Credential::Secret(secret) => r.set(h::NODE_SECRET, secret),
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

    fn identity(&self, item: &Item) -> Identity {
        Identity {
            transfer_key: item.key.clone(),
            source_node_key: self.settings.node_key.clone(),
            source_center_key: item.center.clone(),
            target_node_key: self.settings.target_node_key.clone(),
            resource_kind: item.kind.as_str().into(),
            resource_hash: item.raw_hash.clone(),
            processed_media_hash: item.processed_hash.clone(),
        }
    }

    fn expected<'a>(&'a self, item: &'a Item) -> Expected<'a> {
        Expected {
            transfer_key: &item.key,
            source_node_key: &self.settings.node_key,
            target_node_key: &self.settings.target_node_key,
            source_center_key: &item.center,
            resource_kind: item.kind.as_str(),
            resource_hash: &item.raw_hash,
            processed_media_hash: &item.processed_hash,
            transfer_mode: TransferMode::MetadataAndProcessedMedia.as_str(),
        }
    }

    /// This transfer's envelope: the persisted one when a run already sealed it (and
    /// it still matches), else the media sealed now, ciphertext first, then its record.
    fn prepare(&self, item: &Item) -> std::result::Result<Sealed, String> {
        let st = Staging::new(&self.settings.envelope_staging_dir, &item.key);
        let id = self.identity(item);
        if st.ciphertext.exists() || st.metadata.exists() {
            let kept: Option<Sealed> = std::fs::read(&st.metadata)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let ok = kept.as_ref().is_some_and(|k| {
                k.envelope.identity_mismatches(&id).is_empty()
                    && k.envelope.recipient_key_id == self.recipient.id()
                    && file_sha256(&st.ciphertext).ok()
                        == Some((k.ciphertext_sha256.clone(), k.ciphertext_size))
            });
            if ok {
                return Ok(kept.expect("checked"));
            }
            // Half-written or for another key: sealed afresh (the hub has not applied
            // it, or its receipt would name this envelope).
            st.cleanup();
        }
        let (size, mut file) = Object::open(&item.object, item.at_rest, &item.keys)
            .and_then(|mut o| Ok((o.plaintext_len()?, o)))
            .map_err(|e| {
                format!(
                    "opening the stored object {}: {e}; run `lxgate storage audit --verify`",
                    item.object.display()
                )
            })?;
        let tmp = st.ciphertext.with_extension("ciphertext.tmp");
        let sealed = (|| -> std::result::Result<Sealed, envelope::SealError> {
            let mut out = std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode_0600()
                    .open(&tmp)?,
            );
            let sealed = envelope::seal(&mut file, size, &mut out, &id, &self.recipient)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(sealed)
        })();
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    envelope::SealError::Changed(_) => format!(
                        "the stored object no longer hashes to {} (the hash it was ingested with): check it with `lxgate storage audit --verify`",
                        item.processed_hash
                    ),
                    other => format!("sealing the media: {other}"),
                });
            }
        };
        std::fs::rename(&tmp, &st.ciphertext).map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(&sealed).expect("serializes");
        crate::durable::write_atomic(
            &st.metadata,
            &st.metadata.with_extension("json.tmp"),
            &json,
            Some(0o600),
        )
        .map_err(|e| e.to_string())?;
        crate::durable::sync_dir(&self.settings.envelope_staging_dir);
        Ok(sealed)
    }

    pub(super) fn send(&self, item: &Item) -> Outcome {
        let staging = Staging::new(&self.settings.envelope_staging_dir, &item.key);
        let outcome = self.send_once(item);
        // Terminal either way: the envelope is no longer needed (a retry after the
        // operator's fix seals anew, as lx-annotate does).
        if !matches!(outcome, Outcome::Retry(_)) {
            staging.cleanup();
        }
        outcome
    }

    fn send_once(&self, item: &Item) -> Outcome {
        let sealed = match self.prepare(item) {
            Ok(s) => s,
            Err(why) => return Outcome::Failed(FailureClass::ConfigurationRejection, why),
        };
        let facts = match media_facts(item) {
            Ok(f) => f,
            Err(why) => return Outcome::Failed(FailureClass::ConfigurationRejection, why),
        };
        let body = serde_json::to_vec(&register_body(&self.settings, item, facts)).expect("json");
        let answer = hub_answer(
            self.request(
                "POST",
                wire::TRANSFERS_PATH,
                &item.key,
                &signing::sha256_hex(&body),
            )
            .set("Content-Type", "application/json")
            .send_bytes(&body),
            "registering",
        );
        let status = match answer {
            Err(why) => return Outcome::Retry(why),
            Ok((409, _)) => {
                return Outcome::Failed(
                    FailureClass::IntegrityInconsistency,
                    format!("registering: the hub holds transfer key {} for a different payload (canonical replay conflict)", item.key),
                )
            }
            Ok((code, v)) if !(200..300).contains(&code) => return classify(code, &v, "registering"),
            Ok((_, v)) => v,
        };
        if let Some(end) = self.settle(item, &sealed, &status, "registering") {
            return end;
        }
        let file = match std::fs::File::open(
            Staging::new(&self.settings.envelope_staging_dir, &item.key).ciphertext,
        ) {
            Ok(f) => f,
            Err(e) => return Outcome::Retry(format!("opening the sealed media: {e}")),
        };
        let answer = hub_answer(
            self.request(
                "POST",
                &wire::media_path(&item.key),
                &item.key,
                &sealed.ciphertext_sha256,
            )
            .set("Content-Type", MEDIA_CONTENT_TYPE)
            .set("Content-Length", &sealed.ciphertext_size.to_string())
            .set(h::MEDIA_ROLE, MEDIA_ROLE_PROCESSED)
            .set(h::MEDIA_ENVELOPE, &sealed.envelope.to_header())
            .send(std::io::BufReader::with_capacity(envelope::CHUNK, file)),
            "uploading the media",
        );
        match answer {
            Err(why) => Outcome::Retry(why),
            Ok((code, v)) if !(200..300).contains(&code) => {
                classify(code, &v, "uploading the media")
            }
            Ok((_, v)) => self
                .settle(item, &sealed, &v, "uploading the media")
                .unwrap_or_else(|| {
                    Outcome::Retry(format!(
                    "uploading the media: the hub answered status {:?}; the next run asks again",
                    v.get("transfer_status")
                ))
                }),
        }
    }

    /// The sender's checks on a 2xx answer (lx-annotate `_validate_remote_transfer_status`
    /// and the receipt checks), and what its status means. None: upload the media.
    fn settle(&self, item: &Item, sealed: &Sealed, v: &Value, what: &str) -> Option<Outcome> {
        let integrity = |why: String| {
            Some(Outcome::Failed(
                FailureClass::IntegrityInconsistency,
                format!("{what}: {why}"),
            ))
        };
        let Ok(status) = serde_json::from_value::<StatusBody>(v.clone()) else {
            return integrity("the hub's answer is not a transfer status".into());
        };
        let wrong = status.mismatches(&self.expected(item));
        if !wrong.is_empty() {
            return integrity(format!(
                "the hub acknowledged another transfer: {} differ",
                wrong.join(", ")
            ));
        }
        match status.status() {
            Some(TransferStatus::AwaitingMedia) => None,
            Some(TransferStatus::Applied) => Some(match status.receipt() {
                None => Outcome::Failed(
                    FailureClass::IntegrityInconsistency,
                    format!("{what}: the hub says applied without an envelope receipt"),
                ),
                Some(Err(e)) => Outcome::Failed(
                    FailureClass::IntegrityInconsistency,
                    format!("{what}: the hub's envelope receipt is malformed: {e}"),
                ),
                Some(Ok(r)) => receipt_outcome(&r, sealed, what),
            }),
            Some(TransferStatus::Failed) => Some(Outcome::Failed(
                FailureClass::ConfigurationRejection,
                format!(
                    "{what}: the hub failed the transfer: {}",
                    status.status_detail
                ),
            )),
            Some(TransferStatus::Inconsistent) => integrity(format!(
                "the hub marked the transfer inconsistent: {}",
                status.status_detail
            )),
            _ => Some(Outcome::Retry(format!(
                "{what}: the hub reports {}; the next run asks again",
                status.transfer_status
            ))),
        }
    }
}

fn receipt_outcome(r: &Receipt, sealed: &Sealed, what: &str) -> Outcome {
    let wrong = r.mismatches(sealed);
    if wrong.is_empty() {
        Outcome::Applied
    } else {
        Outcome::Failed(
            FailureClass::IntegrityInconsistency,
            format!(
                "{what}: the hub's receipt is not for the envelope this site sent: {} differ",
                wrong.join(", ")
            ),
        )
    }
}

/// Hex sha256 and size of a file.
fn file_sha256(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; envelope::CHUNK];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
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

/// A refusal, classed as lx-annotate classes it: 400 is final (the hub's reason, and
/// its rejection code, kept), 401/403 final (authorization), everything else retried.
fn classify(code: u16, v: &Value, what: &str) -> Outcome {
    let why = format!("{what}: hub answered {code}: {}", summary(v));
    match code {
        400 => Outcome::Failed(FailureClass::ConfigurationRejection, why),
        401 | 403 => Outcome::Failed(FailureClass::AuthorizationDenial, why),
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
    fn failures_are_classed_as_the_reference_classes_them() {
        let v = json!({"detail": "Encrypted media envelope validation failed.", "rejection_code": "recipient_key_unavailable"});
        match classify(400, &v, "t") {
            Outcome::Failed(FailureClass::ConfigurationRejection, why) => {
                assert!(why.contains("recipient_key_unavailable"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(403, &v, "t"),
            Outcome::Failed(FailureClass::AuthorizationDenial, _)
        ));
        assert!(matches!(
            classify(401, &v, "t"),
            Outcome::Failed(FailureClass::AuthorizationDenial, _)
        ));
        assert!(
            matches!(classify(409, &v, "t"), Outcome::Retry(_)),
            "a media 409 is retried"
        );
        assert!(matches!(classify(502, &v, "t"), Outcome::Retry(_)));
        assert!(matches!(classify(413, &v, "t"), Outcome::Retry(_)));
    }
}
