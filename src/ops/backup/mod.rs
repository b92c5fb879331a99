//! `lxgate backup`: backups that agree with themselves, made with restic.
//!
//! A backup is two things that must describe each other: the database (which says what
//! each file is) and managed storage (the files). `prepare` dumps the database first,
//! sealed with age to the master recipient while it streams, into `{state}/backup`, with
//! a manifest of what the dump holds; restic reads storage only afterwards. Objects are
//! never removed while their row exists (SPEC §4: object first, then the row), so every
//! job in the dump finds its object in the same snapshot. Objects ingested after the dump
//! are in the snapshot too, without a row: they are reported, kept, and described by the
//! next backup's dump, never lost.
//!
//! The master key is not in the backup (`{state}/keys` is excluded): without it the dump
//! does not open, so it is kept safe separately (README, "Backups").

pub mod rehearse;
pub mod restic;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::age::Identity;
use crate::ops::storage_audit;

/// The tag on every snapshot lxgate makes; verify and restore pick among these.
pub const TAG: &str = "lxgate";
pub const DUMP_FILE: &str = "lxgate.dump.age";
pub const MANIFEST_FILE: &str = "manifest.json";
/// Manifests this lxgate reads; a newer one is refused by name.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where `prepare` writes, inside the state root (contract directory `backup`).
pub fn dir(cfg: &Config) -> PathBuf {
    cfg.paths.state.join("backup")
}

/// What one dump holds, written beside it and read back by verify and restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub lxgate_version: String,
    /// The age recipient the dump is sealed to: the master identity that opens it.
    pub recipient: String,
    pub dump: crate::db::dump::SealedDump,
    pub jobs: JobCounts,
    /// Distinct objects the dump's jobs point at, and their bytes.
    pub objects: u64,
    pub object_bytes: u64,
    /// Objects already on disk that no job in the dump points at: ingests that committed
    /// after the dump (or orphans). restic takes them too; the next dump describes them.
    pub objects_not_in_dump: u64,
    /// Jobs in the dump whose object was absent when the dump was taken (the live
    /// storage was already damaged: `lxgate storage audit`).
    pub missing_at_backup: u64,
    /// The host's paths when the dump was taken; a restore maps them onto its own.
    pub paths: ManifestPaths,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCounts {
    /// Every row of upload_jobs, error rows included.
    pub total: u64,
    /// Rows that point at an object (status other than error).
    pub with_object: u64,
    /// The newest job (by created_at, then id), if any.
    pub newest: Option<NewestJob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewestJob {
    pub id: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPaths {
    pub state: PathBuf,
    pub data: PathBuf,
    pub storage: PathBuf,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the backup manifest {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text).with_context(|| {
            format!(
                "the backup manifest {} is not one lxgate wrote (format {MANIFEST_FORMAT})",
                path.display()
            )
        })?;
        anyhow::ensure!(
            m.format <= MANIFEST_FORMAT,
            "the backup manifest {} has format {}, newer than this lxgate reads ({MANIFEST_FORMAT}): restore with the lxgate version that made it ({})",
            path.display(),
            m.format,
            m.lxgate_version
        );
        Ok(m)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} jobs ({} with an object), {} objects ({} bytes), dump {} bytes sha256 {}",
            self.jobs.total,
            self.jobs.with_object,
            self.objects,
            self.object_bytes,
            self.dump.bytes,
            &self.dump.sha256[..12.min(self.dump.sha256.len())]
        )
    }
}

/// The counts of one database state, as `prepare` records them and verify and restore
/// compare them: taken inside the transaction whose snapshot is dumped.
pub struct Described {
    pub jobs: JobCounts,
    /// storage_path → size of every object a job points at.
    pub referenced: std::collections::BTreeMap<String, u64>,
}

pub async fn describe(client: &impl tokio_postgres::GenericClient) -> Result<Described> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status <> 'error' AND storage_path IS NOT NULL)
             FROM upload_jobs",
            &[],
        )
        .await
        .context("counting upload_jobs")?;
    let (total, with_object): (i64, i64) = (row.get(0), row.get(1));
    let newest = client
        .query_opt(
            "SELECT id::text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
             FROM upload_jobs ORDER BY created_at DESC, id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| NewestJob {
            id: r.get(0),
            created_at: r.get(1),
        });
    let referenced = client
        .query(
            "SELECT DISTINCT storage_path, size_bytes FROM upload_jobs
             WHERE status <> 'error' AND storage_path IS NOT NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    Ok(Described {
        jobs: JobCounts {
            total: total as u64,
            with_object: with_object as u64,
            newest,
        },
        referenced,
    })
}

/// `lxgate backup prepare`: the sealed dump and its manifest in `{state}/backup`.
pub async fn prepare(cfg: &Config) -> Result<Manifest> {
    let url = cfg.require_database_url()?.to_string();
    let identity = Identity::from_file(&cfg.host.master_key).map_err(|e| {
        anyhow::anyhow!(
            "reading the master identity {}: {e}. The dump is sealed to it: create it with lxgate-keys.service (`lxgate keys ensure`)",
            cfg.host.master_key.display()
        )
    })?;
    let recipient = identity.recipient();
    drop(identity);
    let dir = dir(cfg);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut client = crate::db::connect(&url).await?;
    // One snapshot for the counts and the dump: the manifest describes exactly the dump,
    // while ingest goes on.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    let described = describe(&tx).await?;
    let out = dir.join(DUMP_FILE);
    let dump = {
        let (url, out) = (url.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            crate::db::dump::dump_sealed_at(&url, &recipient, &out, Some(&snapshot))
                .map(|d| (d, recipient))
        })
        .await?
    };
    tx.commit().await?;
    let (dump, recipient) = dump?;

    // Only now, after the dump, what storage holds: an object a dumped row points at was
    // placed before its row committed, so it is here.
    let on_disk = storage_audit::objects(&cfg.paths.storage)?;
    let referenced: BTreeSet<&str> = described.referenced.keys().map(String::as_str).collect();
    let missing = referenced
        .iter()
        .filter(|p| !on_disk.contains_key(**p))
        .count() as u64;
    let not_in_dump = on_disk
        .keys()
        .filter(|p| !referenced.contains(p.as_str()))
        .count() as u64;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_at: chrono::Utc::now().to_rfc3339(),
        lxgate_version: env!("CARGO_PKG_VERSION").to_string(),
        recipient: recipient.to_string(),
        dump,
        jobs: described.jobs,
        objects: described.referenced.len() as u64,
        object_bytes: described.referenced.values().sum(),
        objects_not_in_dump: not_in_dump,
        missing_at_backup: missing,
        paths: ManifestPaths {
            state: cfg.paths.state.clone(),
            data: cfg.paths.data.clone(),
            storage: cfg.paths.storage.clone(),
        },
    };
    let path = dir.join(MANIFEST_FILE);
    crate::durable::write_atomic(
        &path,
        &dir.join(format!(".{MANIFEST_FILE}.tmp")),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
        Some(0o640),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    crate::durable::sync_dir(&dir);
    if missing > 0 {
        tracing::warn!(
            missing,
            "jobs in the dump have no object in storage: the live storage is damaged; run `lxgate storage audit`"
        );
    }
    Ok(manifest)
}

/// What restic reads: the state root (the dump is inside it) and the data root when it
/// lives elsewhere; storage is always inside the data root.
pub fn paths(cfg: &Config) -> Vec<PathBuf> {
    let mut out = vec![cfg.paths.state.clone()];
    if !cfg.paths.data.starts_with(&cfg.paths.state) {
        out.push(cfg.paths.data.clone());
    }
    out
}

/// What restic leaves out: the master key (kept safe separately), ingest temp files,
/// and the scratch trees of rehearsals and restores.
pub fn excludes(cfg: &Config) -> Vec<String> {
    let d = dir(cfg);
    vec![
        cfg.paths.state.join("keys").display().to_string(),
        cfg.host.master_key.display().to_string(),
        cfg.paths.storage.join("tmp").display().to_string(),
        d.join(format!("{}*", rehearse::SCRATCH_PREFIX))
            .display()
            .to_string(),
        // A dump being written (db::dump names it `.<name>.partial-<pid>`).
        d.join(".*.partial-*").display().to_string(),
        cfg.paths
            .data
            .join(format!("{}*", rehearse::STAGING_PREFIX))
            .display()
            .to_string(),
    ]
}

/// What one `lxgate backup run` did.
pub struct Run {
    pub manifest: Manifest,
    pub snapshot: restic::BackupSummary,
}

/// `lxgate backup run`: prepare, then `restic backup`, then `restic forget --prune`.
pub async fn run(cfg: &Config, r: &restic::Restic) -> Result<Run> {
    let manifest = prepare(cfg).await?;
    let (paths, excludes) = (paths(cfg), excludes(cfg));
    // restic runs for minutes: off the async workers.
    let snapshot = tokio::task::block_in_place(|| r.backup(&paths, &excludes, TAG))?;
    let b = &cfg.backup;
    tokio::task::block_in_place(|| {
        r.forget_prune(
            TAG,
            [
                ("daily", b.keep_daily),
                ("weekly", b.keep_weekly),
                ("monthly", b.keep_monthly),
            ],
        )
    })
    .context("the snapshot was made, but pruning old ones failed")?;
    Ok(Run { manifest, snapshot })
}
