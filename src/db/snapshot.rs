//! Snapshots of the lxgate database taken before a migration (issue 18): a sealed dump
//! (`db::dump`, never plaintext on disk) in `<state>/snapshots/ID.dump.age` beside its
//! manifest `ID.json`, which names the schema before and after (from/to migration),
//! the release that took it, when, and the sealed file's sha256 and size. The manifest
//! is written after the dump is complete, so a dump without one is debris of an
//! interrupted run and never offered for a restore.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::dump::{self, DumpError, RestoreInto};
use crate::crypto::age::{Identity, Recipient};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no snapshot {0} in the snapshot directory; `lxgate snapshot list` shows those there are"
    )]
    NotFound(String),
    #[error("snapshot {id}: its file no longer has the sha256 its manifest recorded ({recorded}, now {now}); it was changed or damaged, pick another (`lxgate snapshot list`)")]
    Changed {
        id: String,
        recorded: String,
        now: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] super::DbError),
}

/// What a snapshot is, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub id: String,
    /// The newest applied migration when it was taken (what a restore gives back).
    pub from: i64,
    /// The newest migration the release that took it was about to apply.
    pub to: i64,
    /// `lxgate --version` of the release that took it.
    pub release: String,
    pub taken_at: DateTime<Utc>,
    /// Of the sealed file, as written.
    pub sha256: String,
    pub bytes: u64,
}

pub fn dir(state: &Path) -> PathBuf {
    state.join("snapshots")
}

fn sealed_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.dump.age"))
}

fn manifest_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// Every complete snapshot, oldest first. A manifest that cannot be read is skipped
/// with a warning: one damaged file must not hide the others.
pub fn list(state: &Path) -> Result<Vec<Manifest>, SnapshotError> {
    let dir = dir(state);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
        {
            Ok(m) if sealed_path(&dir, &m.id).is_file() => out.push(m),
            Ok(m) => {
                tracing::warn!(id = %m.id, "snapshot manifest without its sealed file; skipped")
            }
            Err(error) => {
                tracing::warn!(file = %name, %error, "unreadable snapshot manifest; skipped")
            }
        }
    }
    out.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
    Ok(out)
}

pub fn find(state: &Path, id: &str) -> Result<Manifest, SnapshotError> {
    list(state)?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| SnapshotError::NotFound(id.to_string()))
}

/// The snapshot that gives back a schema a binary knowing migrations up to
/// `newest_known` runs on: the newest one taken from such a schema.
pub fn way_back(state: &Path, newest_known: i64) -> Option<Manifest> {
    list(state)
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.from <= newest_known)
}

/// Seal the database at `url` into a new snapshot and write its manifest; then keep
/// the newest `keep` (this one always among them). Blocking: pg_dump runs meanwhile.
pub fn take(
    url: &str,
    to_recipient: &Recipient,
    state: &Path,
    from: i64,
    to: i64,
    keep: usize,
) -> Result<Manifest, SnapshotError> {
    let dir = dir(state);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let now = Utc::now();
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let id = (1..)
        .map(|n| {
            if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            }
        })
        .find(|id| !manifest_path(&dir, id).exists() && !sealed_path(&dir, id).exists())
        .expect("an unused name");
    let sealed = sealed_path(&dir, &id);
    let written = dump::dump_sealed(url, to_recipient, &sealed)?;
    let m = Manifest {
        id: id.clone(),
        from,
        to,
        release: format!("lxgate {}", env!("CARGO_PKG_VERSION")),
        taken_at: now,
        sha256: written.sha256,
        bytes: written.bytes,
    };
    let path = manifest_path(&dir, &id);
    let bytes = serde_json::to_vec_pretty(&m).expect("a manifest serialises");
    crate::durable::write_atomic(
        &path,
        &dir.join(format!(".{id}.json.tmp")),
        &bytes,
        Some(0o640),
    )
    .map_err(io("writing", &path))?;
    crate::durable::sync_dir(&dir);
    prune(state, keep);
    Ok(m)
}

/// Remove all but the newest `keep` snapshots, and dumps an interrupted run left
/// without a manifest. Failures are logged: a full snapshot directory is the
/// operator's to see, not a reason to refuse the migration that just got its snapshot.
pub fn prune(state: &Path, keep: usize) {
    let dir = dir(state);
    let Ok(all) = list(state) else { return };
    let keep_ids: Vec<&str> = all
        .iter()
        .rev()
        .take(keep.max(1))
        .map(|m| m.id.as_str())
        .collect();
    for m in all.iter().filter(|m| !keep_ids.contains(&m.id.as_str())) {
        for p in [sealed_path(&dir, &m.id), manifest_path(&dir, &m.id)] {
            if let Err(error) = std::fs::remove_file(&p) {
                tracing::warn!(file = %p.display(), %error, "could not remove an old snapshot");
            }
        }
        tracing::info!(id = %m.id, "old snapshot removed");
    }
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // A dump without its manifest, or one cut short by a kill (db::dump's
        // partial file): debris of an interrupted run.
        let orphan = name
            .strip_suffix(".dump.age")
            .is_some_and(|id| !manifest_path(&dir, id).exists());
        if orphan || (name.starts_with('.') && name.contains(".partial-")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    crate::durable::sync_dir(&dir);
}

/// Where a restore goes.
pub enum Target<'a> {
    /// The database the snapshot came from (DATABASE_URL), with lxgate's units stopped.
    Same,
    /// Another, empty database on the same server, for checking a snapshot.
    Scratch(&'a str),
}

/// Restore a snapshot. Into the same database: refused while other sessions use it
/// (stop the units first); every table, view, sequence and type in its `public`
/// schema is dropped (a newer migration may have made objects the snapshot knows
/// nothing of), then the snapshot is loaded in one transaction. A load that fails
/// leaves the schema empty: run the restore again.
pub async fn restore(
    url: &str,
    identity: Identity,
    state: &Path,
    id: &str,
    target: Target<'_>,
) -> Result<Manifest, SnapshotError> {
    let m = find(state, id)?;
    let sealed = sealed_path(&dir(state), &m.id);
    let now = {
        let path = sealed.clone();
        tokio::task::spawn_blocking(move || dump::sha256_file(&path))
            .await
            .expect("hashing task")
            .map_err(io("reading", &sealed))?
    };
    if now != m.sha256 {
        return Err(SnapshotError::Changed {
            id: m.id,
            recorded: m.sha256,
            now,
        });
    }
    let into_url = match target {
        Target::Same => {
            let c = super::connect(url).await?;
            let others: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await?
                .get(0);
            if others > 0 {
                return Err(SnapshotError::Refused(format!(
                    "{others} other session(s) use the database: stop lxgate.service, lxgate-watcher.service and the timers' units first (systemctl stop 'lxgate*'), then restore"
                )));
            }
            c.batch_execute(EMPTY_PUBLIC).await?;
            url.to_string()
        }
        Target::Scratch(db) => {
            let scratch = super::with_dbname(url, db)?;
            let c = super::connect(&scratch).await?;
            let used: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public'",
                    &[],
                )
                .await?
                .get(0);
            if used > 0 {
                return Err(SnapshotError::Refused(format!(
                    "the scratch database {db} is not empty: name a new, empty database (createdb)"
                )));
            }
            scratch
        }
    };
    tokio::task::spawn_blocking(move || {
        dump::restore_sealed(&sealed, &identity, &into_url, RestoreInto::Empty)
    })
    .await
    .expect("restore task")?;
    Ok(m)
}

/// Drops what lives in `public`, in one transaction (the restore follows).
const EMPTY_PUBLIC: &str = "DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    LOOP
        EXECUTE format(CASE WHEN r.relkind IN ('v') THEN 'DROP VIEW IF EXISTS public.%I CASCADE'
                            WHEN r.relkind = 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS public.%I CASCADE'
                            WHEN r.relkind = 'f' THEN 'DROP FOREIGN TABLE IF EXISTS public.%I CASCADE'
                            ELSE 'DROP TABLE IF EXISTS public.%I CASCADE' END, r.relname);
    END LOOP;
    FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'S'
    LOOP
        EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.relname);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c', 'r')
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
    LOOP
        EXECUTE format('DROP TYPE IF EXISTS public.%I CASCADE', r.typname);
    END LOOP;
END $$";
