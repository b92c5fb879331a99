//! `lxgate storage audit` and `lxgate storage quarantine-orphans`: managed storage
//! against the UploadJob rows that account for it.
//!
//! On a medical-data host every object in storage must be accounted for by a job row,
//! and every row must find its object. The ingest order (object placed, then row
//! inserted) means a crash between the two leaves an *orphan*: patient data nobody can
//! find through the application. The audit reports orphans, missing objects and size
//! mismatches; quarantining moves orphans out of storage into `quarantine/` with a
//! reason, never deleting them.
//!
//! Sealed objects (`.age`) are checked against the exact length their header and the
//! recorded plaintext size give; `--verify` opens them with the master identities and
//! hashes the plaintext, so a sealed object that no longer opens is reported damaged.
//!
//! Concurrency with a running ingest: `ingest::commit` holds the shared storage lock
//! (a PostgreSQL advisory lock) from before it places an object until its row is
//! committed; quarantining takes the lock exclusively, so it never moves an object an
//! ingest is about to point a new row at.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ingest::at_rest::{self, AtRest};
use crate::ingest::{Storage, STORAGE_LOCK};
use crate::progress::{Progress, Total};

#[derive(Debug, Serialize)]
pub struct Orphan {
    pub path: String,
    pub size: u64,
    pub age_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct Missing {
    pub job: String,
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct Mismatch {
    pub job: String,
    pub path: String,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Audit {
    pub objects: u64,
    pub object_bytes: u64,
    pub rows: u64,
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    pub mismatched: Vec<Mismatch>,
}

impl Audit {
    /// Missing or damaged objects are lost data; orphans are unaccounted data.
    pub fn is_damaged(&self) -> bool {
        !self.missing.is_empty() || !self.mismatched.is_empty()
    }
}

struct Row {
    job: String,
    path: String,
    hash: String,
    size: i64,
    at_rest: Option<AtRest>,
}

async fn rows(client: &tokio_postgres::Client) -> Result<Vec<Row>> {
    let rs = client
        .query(
            "SELECT id::text, storage_path, content_hash, size_bytes, stored_as FROM upload_jobs
             WHERE status <> 'error' AND storage_path IS NOT NULL
             UNION ALL
             -- A preanonymized pair's sidecar object: its hash is metadata_hash; its size
             -- is not recorded (-1: checked by --verify only).
             SELECT id::text, sidecar_path, metadata_hash, -1, stored_as FROM upload_jobs
             WHERE status <> 'error' AND sidecar_path IS NOT NULL",
            &[],
        )
        .await
        .context("reading upload_jobs")?;
    Ok(rs
        .iter()
        .map(|r| Row {
            job: r.get(0),
            path: r.get(1),
            hash: r.get(2),
            size: r.get(3),
            at_rest: at_rest::from_column(r.get(4)),
        })
        .collect())
}

/// Objects on disk: relative path → (size, mtime).
pub fn objects(storage: &Path) -> Result<BTreeMap<String, (u64, SystemTime)>> {
    let mut out = BTreeMap::new();
    let root = storage.join("objects");
    let fan = match fs::read_dir(&root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for d in fan {
        let d = d?;
        if !d.file_type()?.is_dir() {
            continue;
        }
        for f in
            fs::read_dir(d.path()).with_context(|| format!("reading {}", d.path().display()))?
        {
            let f = f?;
            let m = f.metadata()?;
            if m.is_file() {
                let rel = format!(
                    "objects/{}/{}",
                    d.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                out.insert(rel, (m.len(), m.modified()?));
            }
        }
    }
    Ok(out)
}

/// The plaintext's sha256 (a sealed object is opened with the master identities).
fn sha256_object(storage: &Storage, rel: &str, at_rest: AtRest) -> Result<String, String> {
    let mut object = storage.open(rel, at_rest).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut object, &mut h).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            "the sealed payload does not decrypt: altered or truncated".to_string()
        }
        _ => e.to_string(),
    })?;
    Ok(hex::encode(h.finalize()))
}

/// The size a row's object must have on disk: its plaintext size, or for a sealed
/// object the age file that holds exactly that plaintext.
/// None when the size is not recorded (a sidecar).
fn expected_size(path: &Path, r: &Row) -> Result<Option<u64>> {
    let Ok(plain) = u64::try_from(r.size) else {
        return Ok(None);
    };
    match r.at_rest {
        Some(AtRest::Plain) | None => Ok(Some(plain)),
        Some(AtRest::Sealed) => {
            let mut f = std::io::BufReader::new(fs::File::open(path)?);
            crate::crypto::age::expected_len(&mut f, plain)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    }
}

/// Compare storage with the rows. `verify` re-hashes every referenced object, opening
/// sealed ones.
pub async fn audit(
    client: &tokio_postgres::Client,
    storage: &Storage,
    verify: bool,
) -> Result<Audit> {
    let rows = rows(client).await?;
    let on_disk = objects(storage.root())?;
    let now = SystemTime::now();
    let mut a = Audit {
        objects: on_disk.len() as u64,
        object_bytes: on_disk.values().map(|(s, _)| s).sum(),
        rows: rows.iter().filter(|r| r.size >= 0).count() as u64,
        ..Audit::default()
    };
    let referenced: BTreeSet<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    for (path, (size, mtime)) in &on_disk {
        if !referenced.contains(path.as_str()) {
            a.orphans.push(Orphan {
                path: path.clone(),
                size: *size,
                age_secs: now.duration_since(*mtime).unwrap_or_default().as_secs(),
            });
        }
    }
    // Re-hashing every object is the long part: a bar on a terminal, a summary line.
    let progress = if verify {
        let (files, bytes) = referenced
            .iter()
            .filter_map(|p| on_disk.get(*p))
            .fold((0, 0), |(f, b), (size, _)| (f + 1, b + size));
        Progress::start(
            "storage audit --verify",
            Total {
                files,
                bytes: Some(bytes),
            },
        )
    } else {
        Progress::hidden("storage audit")
    };
    // A deduplicated object is shared by several rows: check each object once.
    let mut checked = BTreeSet::new();
    for r in &rows {
        let Some((size, _)) = on_disk.get(&r.path) else {
            a.missing.push(Missing {
                job: r.job.clone(),
                path: r.path.clone(),
            });
            continue;
        };
        let damaged = |problem: String| Mismatch {
            job: r.job.clone(),
            path: r.path.clone(),
            problem,
        };
        let expected = match expected_size(&storage.root().join(&r.path), r) {
            Ok(n) => n.unwrap_or(*size),
            Err(e) => {
                a.mismatched
                    .push(damaged(format!("not a sealed object: {e}")));
                continue;
            }
        };
        if *size != expected {
            a.mismatched.push(damaged(match r.at_rest {
                Some(AtRest::Sealed) => format!(
                    "{size} bytes on disk, {expected} expected for the {} plaintext bytes recorded",
                    r.size
                ),
                _ => format!("{size} bytes on disk, {} recorded", r.size),
            }));
        } else if verify && checked.insert(r.path.clone()) {
            let at_rest = r.at_rest.unwrap_or(AtRest::Plain);
            let got = sha256_object(storage, &r.path, at_rest);
            progress.add(1, *size);
            match got {
                Ok(got) if got == r.hash => {}
                Ok(got) => a.mismatched.push(damaged(format!(
                    "content sha256 {got}, recorded {}",
                    r.hash
                ))),
                Err(why) => a.mismatched.push(damaged(why)),
            }
        }
    }
    if verify {
        progress.finish();
    }
    Ok(a)
}

pub fn print(a: &Audit, storage: &Path) {
    for o in &a.orphans {
        println!(
            "WARNING: orphan object (no UploadJob row): {} ({} bytes, {} s old)",
            storage.join(&o.path).display(),
            o.size,
            o.age_secs
        );
    }
    for m in &a.missing {
        println!(
            "ERROR: job {} has no object: {} is missing; restore it from backup",
            m.job,
            storage.join(&m.path).display()
        );
    }
    for m in &a.mismatched {
        println!(
            "ERROR: job {} object {} is damaged: {}; restore it from backup",
            m.job,
            storage.join(&m.path).display(),
            m.problem
        );
    }
    println!(
        "{} objects ({} bytes), {} job rows: {} orphans, {} missing, {} damaged",
        a.objects,
        a.object_bytes,
        a.rows,
        a.orphans.len(),
        a.missing.len(),
        a.mismatched.len()
    );
    if !a.orphans.is_empty() {
        println!("orphans hold data no job accounts for: move them aside with `lxgate storage quarantine-orphans`");
    }
}

/// Where an orphan goes, and why: `quarantine/orphaned-objects/<sha256>` + `.reason`.
fn quarantine_path(quarantine: &Path, rel: &str) -> PathBuf {
    let name: String = rel.trim_start_matches("objects/").replace('/', "");
    quarantine.join("orphaned-objects").join(name)
}

/// Move orphans older than `min_age` (younger ones may be an ingest between its
/// object and its row) into quarantine. Holds the storage lock exclusively meanwhile.
pub async fn quarantine_orphans(
    client: &tokio_postgres::Client,
    storage: &Storage,
    quarantine: &Path,
    min_age: Duration,
    dry_run: bool,
) -> Result<Vec<PathBuf>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&STORAGE_LOCK])
        .await?;
    let result = quarantine_locked(client, storage, quarantine, min_age, dry_run).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&STORAGE_LOCK])
        .await?;
    result
}

async fn quarantine_locked(
    client: &tokio_postgres::Client,
    storage: &Storage,
    quarantine: &Path,
    min_age: Duration,
    dry_run: bool,
) -> Result<Vec<PathBuf>> {
    let a = audit(client, storage, false).await?;
    let storage = storage.root();
    let mut moved = Vec::new();
    let dir = quarantine.join("orphaned-objects");
    for o in a.orphans.iter().filter(|o| o.age_secs >= min_age.as_secs()) {
        let from = storage.join(&o.path);
        let to = quarantine_path(quarantine, &o.path);
        if dry_run {
            println!("would move {} -> {}", from.display(), to.display());
            continue;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let reason = format!(
            "object {} had no UploadJob row (found {}; {} bytes, {} s old).\n\
             An ingest was likely interrupted between storing the object and recording it.\n\
             Its content hash is the file name. Re-ingest it if it belongs to an upload, else delete it by hand.\n",
            from.display(),
            chrono::Utc::now().to_rfc3339(),
            o.size,
            o.age_secs
        );
        // The reason first: a moved object is never without its explanation.
        let reason_path = to.with_file_name(format!(
            "{}.reason",
            to.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::write(&reason_path, reason)
            .with_context(|| format!("writing {}", reason_path.display()))?;
        fs::rename(&from, &to).with_context(|| {
            format!(
                "moving {} to {} (quarantine must be on the storage filesystem)",
                from.display(),
                to.display()
            )
        })?;
        fs::File::open(&dir)?.sync_all()?;
        if let Some(parent) = from.parent() {
            fs::File::open(parent)?.sync_all()?;
        }
        println!("moved {} -> {}", from.display(), to.display());
        moved.push(to);
    }
    let skipped = a.orphans.len() - moved.len();
    if !dry_run && skipped > 0 {
        println!(
            "{skipped} orphan(s) younger than {} s left in place (an ingest may still be recording them)",
            min_age.as_secs()
        );
    }
    Ok(moved)
}
