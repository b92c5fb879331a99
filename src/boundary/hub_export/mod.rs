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

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::crypto::keyring::MasterKeys;
use crate::hub::wire::{self, ResourceKind, MAX_KEY_LEN};
use crate::ingest::at_rest::{self, AtRest};
use crate::progress::{Progress, Total};

mod body;
mod facts;
mod feed;
mod send;

use body::register_body;
use facts::{media_facts, suffix_of};
pub use facts::{report_text, video_facts, VideoFacts};
use send::Sender;

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
