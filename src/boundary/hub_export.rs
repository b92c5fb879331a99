//! The site side of hub export (SPEC §8): `lxgate hub-export mark|run|list|show|retry`,
//! speaking payload schema 7.0 and `hub_media_envelope_v1` as lx-annotate 1.6.4 does
//! (`crate::hub`).
//!
//! A job is exported only after someone marks it (a `hub_exports` row): marking is the
//! operator's statement that the media's anonymization is validated, and it is what
//! sets the eligibility flags of the register body (a video's four, a report's three).
//! `run` sends every pending mark over https with the node's client certificate:
//! register, seal the media to the hub's recipient key (the envelope and ciphertext
//! kept per transfer key, so a retry sends the same bytes and the hub sees an exact
//! replay), upload, and check the hub's answer and receipt field by field. Failures
//! are classed as the reference classes them: a 400 is final (the hub's reason kept),
//! 401/403 final (authorization), a register 409 final, any other answer, a redirect
//! or no answer is retried (up to the retry budget, `LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{Config, HubExport};
use crate::crypto::keyring::MasterKeys;
use crate::crypto::signing;
use crate::hub::envelope::{self, Identity, Receipt, Sealed};
use crate::hub::keys::Recipient;
use crate::hub::wire::register::{
    ProcessingHistory, ProcessingSnapshot, Provenance, RawPdfFile, RawPdfState, RegisterBody,
    ReportRows, VideoFile, VideoRows, VideoState,
};
use crate::hub::wire::reply::summary;
use crate::hub::wire::status::{Expected, StatusBody};
use crate::hub::wire::{
    self, header as h, ResourceKind, TransferMode, TransferStatus, MAX_KEY_LEN, MEDIA_CONTENT_TYPE,
    MEDIA_ROLE_PROCESSED, PAYLOAD_SCHEMA_VERSION,
};
use crate::ingest::at_rest::{self, AtRest, Object};
use crate::progress::{Progress, Total};

mod feed;

/// Where a sender's secrets come from, in order: the systemd credentials the unit loads
/// (never in argv, the environment of other units, or the Nix store), then environment
/// variables for hosts without credentials.
pub const SECRET_CREDENTIAL: &str = "hub-node-secret";
pub const CLIENT_KEY_CREDENTIAL: &str = "hub-client-key";
pub const SECRET_ENV: &str = "LX_ANNOTATE_HUB_SOURCE_NODE_SECRET";

/// What one `run` did; the unit fails (exit 1) when anything is left failed or retrying.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    pub applied: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// Mark processed jobs for export, each made from the raw job `raw` when lxgate holds
/// it (else the media counts as preanonymized: raw hash = processed hash). Refuses
/// what the hub would refuse, with the reason.
pub async fn mark(
    config: &Config,
    client: &tokio_postgres::Client,
    jobs: &[uuid::Uuid],
    raw: Option<uuid::Uuid>,
    by: &str,
) -> Result<()> {
    let settings = config.hub_export.as_ref().ok_or_else(|| {
        anyhow!("hub export is not configured: a transfer key names this site's node; set role = \"site_node\" and [hub] export = true, node_key, …")
    })?;
    if raw.is_some() && jobs.len() != 1 {
        bail!("--raw names the raw job of one processed job: mark one job at a time with it");
    }
    let job_row = |id: uuid::Uuid| async move {
        let row = client
            .query_opt(
                "SELECT kind, status, content_hash, center_id, storage_path, original_name, stored_as
                 FROM upload_jobs WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(|| anyhow!("no upload job {id}"))?;
        let (kind, status): (String, String) = (row.get(0), row.get(1));
        if status == "error" {
            bail!("upload job {id} failed at ingest (status error); there is no media to export");
        }
        Ok::<_, anyhow::Error>((
            kind,
            row.get::<_, Option<String>>(2).unwrap_or_default(),
            row.get::<_, Option<i64>>(3),
            (
                row.get::<_, Option<String>>(4).unwrap_or_default(),
                row.get::<_, String>(5),
                at_rest::from_column(row.get(6)).unwrap_or(AtRest::Plain),
            ),
        ))
    };
    for id in jobs {
        let (kind, processed, center, (object, name, at_rest)) = job_row(*id).await?;
        let resource_kind = match kind.as_str() {
            "video" => ResourceKind::Video,
            "report" => ResourceKind::Report,
            _ => bail!("upload job {id} is a preanonymized text pair; the hub accepts video and report media only"),
        };
        let raw_hash = match raw {
            None => processed.clone(),
            Some(r) => {
                let (rkind, rhash, rcenter, _) = job_row(r).await?;
                if rkind != kind || rcenter != center {
                    bail!("raw job {r} must be a {kind} of the same center as {id}");
                }
                rhash
            }
        };
        if resource_kind == ResourceKind::Report {
            // The hub refuses a report without text; say so now, not at the first run.
            let object = config.paths.storage.join(object);
            let keys = MasterKeys::new(&config.host.master_key);
            let suffix = suffix_of(&name);
            tokio::task::spawn_blocking(move || {
                report_text(&object, at_rest, &keys, suffix.as_deref())
            })
            .await?
            .map_err(|why| anyhow!("upload job {id} cannot be exported: {why}"))?;
        }
        let key = wire::transfer_key(&settings.node_key, resource_kind, &raw_hash);
        if key.len() > MAX_KEY_LEN || !wire::valid_identifier(&key, MAX_KEY_LEN) {
            bail!("node_key {:?} makes a transfer key over {MAX_KEY_LEN} characters or outside letters, digits and . _ : -; choose a shorter node key", settings.node_key);
        }
        let n = client
            .execute(
                "INSERT INTO hub_exports (upload_job_id, transfer_key, marked_by, raw_upload_job_id)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (upload_job_id) DO NOTHING",
                &[id, &key, &by, &raw],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(d) if d.constraint() == Some("hub_exports_transfer_key_key") => anyhow!(
                    "another job is already marked under transfer key {key} (the same raw media); one raw recording is one transfer"
                ),
                _ => e.into(),
            })?;
        if n == 0 {
            tracing::info!(boundary = "hub_export", job_id = %id, "already marked for hub export");
        } else {
            tracing::info!(boundary = "hub_export", job_id = %id, by, transfer_key = %key, "marked for hub export (anonymization validated)");
        }
    }
    Ok(())
}

/// Put failed exports back in the queue (after the cause was fixed).
pub async fn retry_failed(client: &tokio_postgres::Client) -> Result<u64> {
    Ok(client
        .execute(
            "UPDATE hub_exports SET state = 'pending', retries = 0, updated_at = now() WHERE state = 'failed'",
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
    pub failure_class: Option<String>,
    pub last_error: Option<String>,
}

pub async fn list(client: &tokio_postgres::Client) -> Result<Vec<ExportRow>> {
    Ok(client
        .query(
            "SELECT upload_job_id, transfer_key, state, attempts, failure_class, last_error
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
            failure_class: r.get(4),
            last_error: r.get(5),
        })
        .collect())
}

/// One item to send, with what the hub needs to know about it.
#[derive(Debug, Clone)]
struct Item {
    job: uuid::Uuid,
    kind: ResourceKind,
    key: String,
    raw_hash: String,
    processed_hash: String,
    center: String,
    object: PathBuf,
    /// How the object is kept; a sealed one is opened with the master identity and
    /// leaves inside the transfer's own envelope, never as the site's age file.
    at_rest: AtRest,
    keys: MasterKeys,
    suffix: Option<String>,
    /// Attempts that ended in a retryable failure since the mark or the last `retry`.
    retries: i64,
}

/// The reference's failure classes (lx-annotate `HubExportFailureClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    ConfigurationRejection,
    AuthorizationDenial,
    IntegrityInconsistency,
    TransientRetry,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ConfigurationRejection => "configuration_rejection",
            FailureClass::AuthorizationDenial => "authorization_denial",
            FailureClass::IntegrityInconsistency => "integrity_inconsistency",
            FailureClass::TransientRetry => "transient_retry",
        }
    }
}

/// How one item ended.
#[derive(Debug)]
enum Outcome {
    Applied,
    /// The network, the hub's state, or a proxy: the next run tries again.
    Retry(String),
    /// Will not succeed by retrying: the operator looks, then `hub-export retry`.
    Failed(FailureClass, String),
}

const ITEMS: &str =
    "SELECT e.upload_job_id, e.transfer_key, COALESCE(r.content_hash, j.content_hash),
        j.content_hash, c.center_key, j.storage_path, j.original_name, j.stored_as,
        e.retries::int8, j.kind
     FROM hub_exports e
     JOIN upload_jobs j ON j.id = e.upload_job_id
     LEFT JOIN upload_jobs r ON r.id = e.raw_upload_job_id
     JOIN centers c ON c.id = j.center_id";

fn item(config: &Config, r: &tokio_postgres::Row) -> Item {
    let name: String = r.get(6);
    Item {
        job: r.get(0),
        kind: match r.get::<_, String>(9).as_str() {
            "report" => ResourceKind::Report,
            // `mark` lets nothing but videos and reports in.
            _ => ResourceKind::Video,
        },
        key: r.get(1),
        raw_hash: r.get(2),
        processed_hash: r.get(3),
        center: r.get(4),
        object: config.paths.storage.join(r.get::<_, String>(5)),
        at_rest: at_rest::from_column(r.get(7)).unwrap_or(AtRest::Plain),
        keys: MasterKeys::new(&config.host.master_key),
        suffix: suffix_of(&name),
        retries: r.get(8),
    }
}

/// Send every pending export once.
pub async fn run(config: &Config, client: &tokio_postgres::Client) -> Result<RunSummary> {
    let settings = config.hub_export.clone().ok_or_else(|| {
        anyhow!("hub export is not configured: set role = \"site_node\" and [hub] export = true, url, node_key, target_node_key, ca_file, client_certificate, recipient_public_key_file")
    })?;
    let sender = Arc::new(Sender::new(&settings)?);
    let rows = client
        .query(
            &format!("{ITEMS} WHERE e.state = 'pending' ORDER BY e.marked_at"),
            &[],
        )
        .await?;
    let mut summary = RunSummary::default();
    let items: Vec<Item> = rows.iter().map(|r| item(config, r)).collect();
    // Measured by the stored objects; a missing one counts 0 and fails in `send`.
    let sizes: Vec<u64> = items
        .iter()
        .map(|i| std::fs::metadata(&i.object).map_or(0, |m| m.len()))
        .collect();
    let progress = Progress::start(
        "hub export",
        Total {
            files: items.len() as u64,
            bytes: Some(sizes.iter().sum()),
        },
    );
    for (item, size) in items.into_iter().zip(sizes) {
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
                Outcome::Failed(..) => "failed",
            },
            principal: Some(&settings.node_key),
            center: Some(&item.center),
            job: Some(&item.job.to_string()),
            transfer: Some(&item.key),
            ..Default::default()
        }
        .emit();
        // Owned reasons: the arms run inside `suspend` (the bar lifts for their lines).
        let (state, class, error): (&str, Option<FailureClass>, Option<String>) =
            progress.suspend(|| match &outcome {
            Outcome::Applied => {
                summary.applied += 1;
                tracing::info!(boundary = "hub_export", outcome = "applied", job_id = %item.job, transfer_key = %item.key, "applied at the hub");
                ("applied", None, None)
            }
            Outcome::Retry(why) if item.retries + 1 >= settings.max_retries as i64 => {
                // lx-annotate's budget: no redispatch once retry_count reaches it. The
                // envelope stays staged, so `hub-export retry` replays the same bytes.
                summary.failed += 1;
                let given_up = format!(
                    "{why}; gave up after {} attempts that failed this way (LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES = {}); fix the cause, then `lxgate hub-export retry`",
                    item.retries + 1,
                    settings.max_retries
                );
                tracing::error!(boundary = "hub_export", outcome = "failed", job_id = %item.job, transfer_key = %item.key, class = FailureClass::TransientRetry.as_str(), "export failed: {given_up}");
                (
                    "failed",
                    Some(FailureClass::TransientRetry),
                    Some(given_up),
                )
            }
            Outcome::Retry(why) => {
                summary.retrying += 1;
                tracing::warn!(boundary = "hub_export", outcome = "retrying", job_id = %item.job, transfer_key = %item.key, "not sent, will retry: {why}");
                (
                    "pending",
                    Some(FailureClass::TransientRetry),
                    Some(why.clone()),
                )
            }
            Outcome::Failed(class, why) => {
                summary.failed += 1;
                tracing::error!(boundary = "hub_export", outcome = "failed", job_id = %item.job, transfer_key = %item.key, class = class.as_str(), "export failed: {why}");
                ("failed", Some(*class), Some(why.clone()))
            }
        });
        progress.add(1, size);
        client
            .execute(
                "UPDATE hub_exports SET state = $2, attempts = attempts + 1, failure_class = $3,
                     last_error = $4, retries = retries + $5, updated_at = now()
                 WHERE upload_job_id = $1",
                &[
                    &item.job,
                    &state,
                    &class.map(FailureClass::as_str),
                    &error,
                    &i32::from(matches!(outcome, Outcome::Retry(_))),
                ],
            )
            .await?;
    }
    progress.finish();
    Ok(summary)
}

/// The register body `run` would send for a marked job (`hub-export show`).
pub async fn show(
    config: &Config,
    client: &tokio_postgres::Client,
    job: uuid::Uuid,
) -> Result<Value> {
    let settings = config
        .hub_export
        .as_ref()
        .ok_or_else(|| anyhow!("hub export is not configured"))?;
    let r = client
        .query_opt(&format!("{ITEMS} WHERE e.upload_job_id = $1"), &[&job])
        .await?
        .ok_or_else(|| {
            anyhow!(
                "upload job {job} is not marked for hub export (`lxgate hub-export mark {job}`)"
            )
        })?;
    let item = item(config, &r);
    let facts = tokio::task::spawn_blocking({
        let item = item.clone();
        move || media_facts(&item)
    })
    .await?
    .map_err(|why| anyhow!("upload job {job}: {why}"))?;
    Ok(serde_json::to_value(register_body(settings, &item, facts))?)
}

/// The hub sees no original file name (it may name a patient): only its suffix.
fn suffix_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.len() <= 8 && e.bytes().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
}

/// What `ffprobe` tells about a video: fps, duration, frame count, width, height.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoFacts {
    pub fps: Option<f64>,
    pub duration: Option<f64>,
    pub frame_count: Option<u64>,
    pub width: Option<u64>,
    pub height: Option<u64>,
}

/// `ffprobe` on the stored object; None when it is no video ffprobe can read (the hub
/// takes nulls for these fields; lx-annotate fills them, and so does lxgate when it can).
/// A sealed object is opened for ffprobe alone through a loopback feed (feed.rs): no
/// plaintext on disk, and ffprobe can seek, which an MP4 with its index at the end needs.
pub fn video_facts(object: &Path, at_rest: AtRest, keys: &MasterKeys) -> Option<VideoFacts> {
    let ffprobe = |input: &std::ffi::OsStr| {
        let mut c = std::process::Command::new("ffprobe");
        c.args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=width,height,avg_frame_rate,nb_frames,nb_read_packets,duration:format=duration",
            "-of",
            "json",
        ])
        .arg(input);
        c
    };
    let out = match at_rest {
        AtRest::Plain => ffprobe(object.as_os_str())
            .stdin(std::process::Stdio::null())
            .output(),
        AtRest::Sealed => feed::run_with_feed(&|| Object::open(object, at_rest, keys), |url| {
            ffprobe(url.as_ref())
        }),
    }
    .map_err(|e| {
        tracing::warn!("ffprobe does not run ({e}); video facts are sent empty: install ffmpeg")
    })
    .ok()?;
    if !out.status.success() {
        tracing::warn!(object = %object.display(), "ffprobe cannot read this media; video facts are sent empty");
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let stream = v["streams"].get(0)?;
    let num = |x: &Value| -> Option<f64> {
        x.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| x.as_f64())
    };
    let fps = stream["avg_frame_rate"].as_str().and_then(|r| {
        let (n, d) = r.split_once('/')?;
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (d > 0.0).then(|| n / d)
    });
    let frames = num(&stream["nb_frames"]).or_else(|| num(&stream["nb_read_packets"]));
    Some(VideoFacts {
        fps: fps.filter(|f| f.is_finite() && *f >= 0.0),
        duration: num(&stream["duration"])
            .or_else(|| num(&v["format"]["duration"]))
            .filter(|d| d.is_finite() && *d >= 0.0),
        frame_count: frames.filter(|f| *f >= 0.0).map(|f| f as u64),
        width: stream["width"].as_u64().filter(|w| *w >= 1),
        height: stream["height"].as_u64().filter(|h| *h >= 1),
    })
}

/// What the register body says about the media beyond its hashes.
#[derive(Debug, Clone, PartialEq)]
enum Facts {
    /// `ffprobe`'s, or none when it cannot read the media (the hub takes nulls).
    Video(Option<VideoFacts>),
    /// The report's text, `raw_pdf_file.anonymized_text` (never blank).
    Report(String),
}

fn media_facts(item: &Item) -> std::result::Result<Facts, String> {
    Ok(match item.kind {
        ResourceKind::Report => Facts::Report(report_text(
            &item.object,
            item.at_rest,
            &item.keys,
            item.suffix.as_deref(),
        )?),
        _ => Facts::Video(video_facts(&item.object, item.at_rest, &item.keys)),
    })
}

/// The text of a report: a text report (`.txt`, as lx-annotate takes them) is its own
/// text; a PDF's is its text layer, read by `pdftotext` (poppler-utils) from a pipe, so
/// a report sealed at rest is opened in memory and never written out in the clear.
/// Marking stated the report anonymized, so this is the anonymized text the hub
/// requires. A report without text (a scan without a text layer) cannot be sent: the
/// hub refuses a blank one.
pub fn report_text(
    path: &Path,
    at_rest: AtRest,
    keys: &MasterKeys,
    suffix: Option<&str>,
) -> std::result::Result<String, String> {
    let unreadable = |e: &dyn std::fmt::Display| {
        format!(
            "reading the stored report {}: {e}; run `lxgate storage audit --verify`",
            path.display()
        )
    };
    let mut object = Object::open(path, at_rest, keys).map_err(|e| unreadable(&e))?;
    let text = if suffix == Some(".txt") {
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).map_err(|e| unreadable(&e))?;
        String::from_utf8(bytes).map_err(|_| {
            "the text report is not UTF-8; the hub takes its text as JSON: convert it to UTF-8 and ingest it again".to_string()
        })?
    } else {
        let mut child = std::process::Command::new("pdftotext")
            .args(["-q", "-enc", "UTF-8", "-", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("pdftotext does not run ({e}): install poppler-utils; a report's text goes to the hub as raw_pdf_file.anonymized_text")
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        // Fed from a thread: pdftotext may answer before it has read everything.
        let (fed, out) = std::thread::scope(|s| {
            let feeder = s.spawn(move || std::io::copy(&mut object, &mut stdin).map(drop));
            let out = child.wait_with_output();
            (feeder.join().expect("the feeder does not panic"), out)
        });
        let out = out.map_err(|e| format!("pdftotext: {e}"))?;
        match fed {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(unreadable(&e)),
            _ => {}
        }
        if !out.status.success() {
            return Err(format!(
                "pdftotext cannot read the stored report {} (exit {}): is it a PDF?",
                path.display(),
                out.status.code().unwrap_or(-1)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // NUL is not text, and the hub refuses it in JSON.
    let text = text.replace('\0', "");
    if text.trim().is_empty() {
        return Err("the report has no text (a scanned PDF without a text layer?); the hub requires its anonymized text (raw_pdf_file.anonymized_text must not be blank): export a PDF with a text layer".into());
    }
    Ok(text.trim().to_string())
}

/// The 7.0 register body for a video or report lxgate holds. Marking stated the
/// anonymization validated: that sets the eligibility flags, and nothing else does.
fn register_body(s: &HubExport, item: &Item, facts: Facts) -> RegisterBody {
    let rows = match facts {
        Facts::Video(f) => serde_json::to_value(video_rows(item, f.unwrap_or_default())),
        Facts::Report(text) => serde_json::to_value(report_rows(item, text)),
    }
    .expect("rows serialize");
    RegisterBody {
        transfer_key: item.key.clone(),
        source_node_key: s.node_key.clone(),
        target_node_key: s.target_node_key.clone(),
        source_center_key: item.center.clone(),
        resource_kind: item.kind,
        resource_hash: item.raw_hash.clone(),
        transfer_mode: TransferMode::MetadataAndProcessedMedia,
        processing_policy: Default::default(),
        processing_intent: Default::default(),
        cleanup_policy: Default::default(),
        payload_schema_version: PAYLOAD_SCHEMA_VERSION.into(),
        resource_rows: rows,
        processing_snapshot: ProcessingSnapshot {
            sender_processing_success: Some(true),
        },
        provenance: Provenance {
            entrypoint: Some("lxgate_sender".into()),
            source_node_key: Some(s.node_key.clone()),
            target_node_key: Some(s.target_node_key.clone()),
            source_center_key: Some(item.center.clone()),
            transfer_mode: Some(TransferMode::MetadataAndProcessedMedia.as_str().into()),
            processing_policy: Some("preserve_processing_state".into()),
            cleanup_policy: Some("retain_all".into()),
            ..Provenance::default()
        },
    }
}

/// A report's rows as lx-annotate builds them (`_build_report_rows`): the raw hash
/// with the text, the three flags a report needs (no segments to remove), and its
/// processing history under the raw hash.
fn report_rows(item: &Item, anonymized_text: String) -> ReportRows {
    ReportRows {
        raw_pdf_file: RawPdfFile {
            pdf_hash: item.raw_hash.clone(),
            anonymized_text,
            ..RawPdfFile::default()
        },
        raw_pdf_state: Some(RawPdfState {
            sensitive_meta_processed: Some(true),
            anonymized: Some(true),
            anonymization_validated: Some(true),
            processed_file_sha256: Some(item.processed_hash.clone()),
            ..RawPdfState::default()
        }),
        processing_history: Some(ProcessingHistory {
            file_hash: Some(item.raw_hash.clone()),
            success: Some(true),
        }),
        ..ReportRows::default()
    }
}

fn video_rows(item: &Item, f: VideoFacts) -> VideoRows {
    VideoRows {
        video_file: VideoFile {
            raw_video_hash: item.raw_hash.clone(),
            processed_video_hash: Some(item.processed_hash.clone()),
            fps: f.fps,
            duration: f.duration,
            frame_count: f.frame_count,
            width: f.width,
            height: f.height,
            suffix: item.suffix.clone(),
        },
        video_state: Some(VideoState {
            anonymized: Some(true),
            sensitive_meta_processed: Some(true),
            anonymization_validated: Some(true),
            outside_segments_removed: Some(true),
            processed_file_sha256: Some(item.processed_hash.clone()),
            ..VideoState::default()
        }),
        processing_history: Some(ProcessingHistory {
            file_hash: Some(item.processed_hash.clone()),
            success: Some(true),
        }),
        ..VideoRows::default()
    }
}

struct Sender {
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
    fn new(s: &HubExport) -> Result<Sender> {
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

    fn send(&self, item: &Item) -> Outcome {
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
    fn the_hub_sees_the_suffix_never_the_name() {
        assert_eq!(suffix_of("Mueller_Hans_1961.MP4").as_deref(), Some(".mp4"));
        assert_eq!(suffix_of("no-extension"), None);
        assert_eq!(suffix_of("x.a b"), None);
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
