//! The one ingest core (SPEC §4): every accepted file, whichever boundary it came
//! through, becomes an object in managed storage and one UploadJob row here.
//!
//! Order of effects, so a crash anywhere leaves the source in place and at worst an
//! orphan object (`lxgate storage audit` finds it): stream into `storage/tmp/` while
//! hashing → fsync → open a transaction holding the shared storage lock → rename to
//! `storage/objects/ab/cdef…` → fsync the directory → insert the row (unique center +
//! content + sidecar: a repeat is a dedupe) → commit → only then does the boundary
//! answer 201 or remove its source. This module knows nothing of HTTP or inotify.
//!
//! Each kind is staged in its form at rest (nix/contract.toml [storage]): sealed kinds
//! are hashed as plaintext and sealed to the master identity in the same pass, and the
//! row records how its object is stored (`stored_as`, `sealed_to`).

pub mod at_rest;
pub mod file_type;
pub mod name;
pub mod pause;
pub mod settle;
pub mod sidecar;
pub mod staging;
pub mod stream;

use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

pub use staging::{Staged, StagedWriter, Storage};

/// The advisory-lock key that serialises object removal against ingest commits
/// ("lxgate storage" in ASCII, so it is recognisable in pg_locks). Commits hold it
/// shared; `lxgate storage quarantine-orphans` takes it exclusively.
pub const STORAGE_LOCK: i64 = 0x6c78_6761_7465_5354;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    Api,
    Watcher,
    HubTransfer,
}

impl Boundary {
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Api => "api",
            Boundary::Watcher => "watcher",
            Boundary::HubTransfer => "hub_transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Video,
    Report,
    Preanonymized,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "video" => Some(Kind::Video),
            "report" => Some(Kind::Report),
            "preanonymized" => Some(Kind::Preanonymized),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Report => "report",
            Kind::Preanonymized => "preanonymized",
        }
    }
}

/// What a boundary knows about a file before the core stores it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub boundary: Boundary,
    pub source_system: String,
    pub center_id: i64,
    pub original_name: String,
    pub kind: Kind,
    pub idempotency_key: Option<String>,
    /// sha256 of a sidecar that travels with the file: part of the dedupe identity.
    pub metadata_hash: Option<String>,
    pub provenance: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UploadJob {
    pub id: Uuid,
    pub ingest_mode: String,
    pub source_system: String,
    pub center_key: Option<String>,
    pub original_name: String,
    pub kind: String,
    pub size_bytes: i64,
    pub content_hash: Option<String>,
    pub idempotency_key: Option<String>,
    pub storage_path: Option<String>,
    pub status: String,
    pub error_detail: Option<String>,
    pub provenance: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// `plain` or `age` (sealed to the master identity).
    pub stored_as: String,
}

pub const JOB_COLUMNS: &str =
    "j.id, j.ingest_mode, j.source_system, c.center_key, j.original_name, j.kind, \
    j.size_bytes, j.content_hash, j.idempotency_key, j.storage_path, j.status, j.error_detail, \
    j.provenance, j.created_at, j.updated_at, j.stored_as";

impl UploadJob {
    pub fn from_row(r: &tokio_postgres::Row) -> UploadJob {
        UploadJob {
            id: r.get(0),
            ingest_mode: r.get(1),
            source_system: r.get(2),
            center_key: r.get(3),
            original_name: r.get(4),
            kind: r.get(5),
            size_bytes: r.get(6),
            content_hash: r.get(7),
            idempotency_key: r.get(8),
            storage_path: r.get(9),
            status: r.get(10),
            error_detail: r.get(11),
            provenance: r.get(12),
            created_at: r.get(13),
            updated_at: r.get(14),
            stored_as: r.get(15),
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Created(UploadJob),
    /// Same center and content already stored: the existing job, no second copy.
    Dedupe(UploadJob),
}

impl Outcome {
    pub fn job(&self) -> &UploadJob {
        match self {
            Outcome::Created(j) | Outcome::Dedupe(j) => j,
        }
    }
    pub fn is_dedupe(&self) -> bool {
        matches!(self, Outcome::Dedupe(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("body exceeds the upload limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("empty file: nothing to store")]
    Empty,
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error("the upload stream broke off: {0}")]
    Source(String),
    #[error("the sealed media does not open: {0}")]
    Sealed(String),
}

impl IngestError {
    /// Disk full and similar: the source stays where it is and is retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IngestError::Io(_) | IngestError::Db(_))
    }
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> Self {
        IngestError::Db(crate::db::DbError::Query(e))
    }
}
impl From<deadpool_postgres::PoolError> for IngestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        IngestError::Db(e.into())
    }
}

/// Place a staged object and record its job. The object rename happens before the
/// row so a row never points at a missing file.
pub async fn commit(
    pool: &Pool,
    storage: &Storage,
    staged: Staged,
    job: NewJob,
) -> Result<Outcome, IngestError> {
    commit_pair(pool, storage, staged, None, job).await
}

/// `commit` for a preanonymized carrier with its sidecar, which is stored as an object
/// of its own (in the same form) and recorded in the row (`sidecar_path`). The sidecar
/// must hash to the job's metadata_hash.
pub async fn commit_pair(
    pool: &Pool,
    storage: &Storage,
    staged: Staged,
    sidecar: Option<Staged>,
    job: NewJob,
) -> Result<Outcome, IngestError> {
    if staged.size == 0 {
        staged.discard();
        return Err(IngestError::Empty);
    }
    if let Some(s) = &sidecar {
        if job.metadata_hash.as_deref() != Some(s.sha256.as_str()) {
            return Err(IngestError::Io(std::io::Error::other(
                "the sidecar changed while it was read; it is read again on the next pass",
            )));
        }
    }
    let sidecar_rel = sidecar.as_ref().map(Staged::object_rel);
    let hash = staged.sha256.clone();
    let size = staged.size as i64;
    let rel = staged.object_rel();
    let stored_as = at_rest::column(staged.at_rest());
    let mut sealed_to = staged.sealed_to.as_ref().map(|r| r.to_string());
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Shared with every other commit, exclusive to orphan quarantining and to the end of
    // a key rotation: the object we place (or find already there) stays put, and stays
    // sealed to a key the host has, until our row points at it.
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&STORAGE_LOCK])
        .await?;
    let metadata_hash = job.metadata_hash.clone().unwrap_or_default();
    // A dedupe places nothing: the content may be stored in another form (the same
    // bytes as a plain video and a sealed report), whose path this object's is not.
    if let Some(row) = existing_job(&tx, job.center_id, &hash, &metadata_hash).await? {
        staged.discard();
        drop(sidecar);
        tx.commit().await?;
        return Ok(Outcome::Dedupe(UploadJob::from_row(&row)));
    }
    let existed = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            // A rotation that began while this file was staged may be finishing: an
            // object sealed to the identity it retires would not open afterwards.
            let staged_to = staged.sealed_to.iter().chain(sidecar.iter().flat_map(|s| &s.sealed_to));
            for to in staged_to {
                let now = storage.keys().sealing_recipient().map_err(std::io::Error::other)?;
                if &now != to {
                    return Err(std::io::Error::other(
                        "the master identity was rotated while this file was staged; store it again",
                    ));
                }
            }
            if let Some(s) = sidecar {
                storage.place(s)?;
            }
            storage.place(staged)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??
    };
    if existed && sealed_to.is_some() {
        // The same content stored before: its file keeps the recipient it was sealed to
        // (a rotation in progress may not have reached it yet).
        if let Some(r) = tx
            .query_opt(
                "SELECT sealed_to FROM upload_jobs WHERE storage_path = $1 AND sealed_to IS NOT NULL LIMIT 1",
                &[&rel],
            )
            .await?
        {
            sealed_to = r.get(0);
        }
    }
    let id = Uuid::new_v4();
    let inserted = tx
        .query_opt(
            "INSERT INTO upload_jobs (id, ingest_mode, source_system, center_id, original_name, kind,
                 size_bytes, content_hash, idempotency_key, storage_path, status, provenance, metadata_hash,
                 stored_as, sealed_to, sidecar_path)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'stored', $11, $12, $13, $14, $15)
             ON CONFLICT (center_id, content_hash, metadata_hash) WHERE status <> 'error' DO NOTHING
             RETURNING id",
            &[
                &id,
                &job.boundary.as_str(),
                &job.source_system,
                &job.center_id,
                &job.original_name,
                &job.kind.as_str(),
                &size,
                &hash,
                &job.idempotency_key,
                &rel,
                &job.provenance,
                &metadata_hash,
                &stored_as,
                &sealed_to,
                &sidecar_rel,
            ],
        )
        .await?;
    let row = existing_job(&tx, job.center_id, &hash, &metadata_hash)
        .await?
        .ok_or_else(|| std::io::Error::other("the job row vanished inside its transaction"))?;
    tx.commit().await?;
    let stored = UploadJob::from_row(&row);
    Ok(if inserted.is_some() {
        Outcome::Created(stored)
    } else {
        Outcome::Dedupe(stored)
    })
}

/// The stored job of this center, content and sidecar, if there is one.
async fn existing_job(
    tx: &deadpool_postgres::Transaction<'_>,
    center_id: i64,
    hash: &str,
    metadata_hash: &str,
) -> Result<Option<tokio_postgres::Row>, IngestError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {JOB_COLUMNS} FROM upload_jobs j LEFT JOIN centers c ON c.id = j.center_id
                 WHERE j.center_id = $1 AND j.content_hash = $2 AND j.metadata_hash = $3 AND j.status <> 'error'"
            ),
            &[&center_id, &hash, &metadata_hash],
        )
        .await?)
}

/// A file a boundary refused (quarantined): recorded as a job with status `error`.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub boundary: Boundary,
    pub center_id: Option<i64>,
    pub original_name: String,
    pub kind: Kind,
    pub size: i64,
    pub detail: String,
    /// Must name where the file went (the quarantined paths).
    pub provenance: serde_json::Value,
}

pub async fn record_error(pool: &Pool, r: &Rejected) -> Result<Uuid, IngestError> {
    let client = pool.get().await?;
    let id = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO upload_jobs (id, ingest_mode, source_system, center_id, original_name, kind,
                 size_bytes, status, error_detail, provenance)
             VALUES ($1, $2, 'lxgate', $3, $4, $5, $6, 'error', $7, $8)",
            &[&id, &r.boundary.as_str(), &r.center_id, &r.original_name, &r.kind.as_str(), &r.size, &r.detail, &r.provenance],
        )
        .await?;
    Ok(id)
}

pub async fn get_job(pool: &Pool, id: Uuid) -> Result<Option<UploadJob>, IngestError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM upload_jobs j LEFT JOIN centers c ON c.id = j.center_id WHERE j.id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(UploadJob::from_row))
}
