//! A backup is only as good as its restore, so both are one procedure here: take a
//! snapshot out of restic, open its sealed dump into a database, and hold the restored
//! objects against the restored rows (`storage audit --verify`) and the manifest.
//! `verify` does it into a scratch directory and a scratch database and throws both
//! away; `restore` does it onto this host.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::restic::{Restic, Snapshot};
use super::{describe, Manifest, DUMP_FILE, MANIFEST_FILE, TAG};
use crate::config::Config;
use crate::crypto::age::Identity;
use crate::db::dump::{self, RestoreInto};
use crate::ops::storage_audit::{self, Audit};

/// Scratch trees under `{state}/backup` start with this (restic leaves them out).
pub const SCRATCH_PREFIX: &str = "scratch-";
/// A restore stages the snapshot in the data root under this name (restic leaves it out).
pub const STAGING_PREFIX: &str = ".lxgate-restore-";

/// What a rehearsal or a restore found.
#[derive(Debug)]
pub struct Outcome {
    pub snapshot: Snapshot,
    pub manifest: Manifest,
    pub audit: Audit,
    pub seconds: f64,
}

impl Outcome {
    /// One line for the journal.
    pub fn summary(&self, what: &str) -> String {
        let newer = self.audit.orphans.len();
        format!(
            "{what}: snapshot {} ({}) in {:.1} s: {}; audit: {} objects, {} missing, {} damaged{}",
            &self.snapshot.id[..8.min(self.snapshot.id.len())],
            self.snapshot.time,
            self.seconds,
            self.manifest.summary(),
            self.audit.objects,
            self.audit.missing.len(),
            self.audit.mismatched.len(),
            if newer > 0 {
                format!("; {newer} objects newer than the dump kept (their jobs are in the next backup)")
            } else {
                String::new()
            }
        )
    }
}

pub struct VerifyOptions {
    pub snapshot: Option<String>,
    /// Where the snapshot is restored (default: a scratch directory in `{state}/backup`).
    pub scratch: Option<PathBuf>,
    /// An empty database to restore into (default: a new database next to the
    /// configured one, dropped afterwards).
    pub scratch_database: Option<String>,
    /// `restic check --read-data`: read every pack, not only the structure.
    pub read_data: bool,
}

/// `lxgate backup verify`: `restic check`, then a restore rehearsal.
pub async fn verify(cfg: &Config, r: &Restic, o: &VerifyOptions) -> Result<Outcome> {
    let start = Instant::now();
    tokio::task::block_in_place(|| r.check(o.read_data))?;
    let snapshot = tokio::task::block_in_place(|| r.snapshot(o.snapshot.as_deref(), TAG))?;
    let scratch = Scratch::new(o.scratch.as_deref(), &super::dir(cfg))?;
    let url = cfg.require_database_url()?;
    let db = match &o.scratch_database {
        Some(u) => ScratchDb::given(u),
        None => ScratchDb::create(url).await?,
    };
    let result = rehearse(cfg, r, &snapshot, scratch.path(), &db.url).await;
    db.drop(url).await;
    drop(scratch);
    let (manifest, audit) = result?;
    Ok(Outcome {
        snapshot,
        manifest,
        audit,
        seconds: start.elapsed().as_secs_f64(),
    })
}

async fn rehearse(
    cfg: &Config,
    r: &Restic,
    snapshot: &Snapshot,
    scratch: &Path,
    db_url: &str,
) -> Result<(Manifest, Audit)> {
    tokio::task::block_in_place(|| r.restore(&snapshot.id, scratch, "backup verify: restoring"))?;
    let (manifest, dump) = find_manifest(scratch, snapshot)?;
    open_dump(cfg, &manifest, &dump, db_url, RestoreInto::Empty)?;
    let client = crate::db::connect(db_url).await?;
    let storage = under(scratch, &manifest.paths.storage);
    // Sealed objects in the restored copy open with this host's master identity.
    let restored = crate::ingest::Storage::new(
        &storage,
        cfg.storage,
        crate::crypto::keyring::MasterKeys::new(&cfg.host.master_key),
    );
    let audit = storage_audit::audit(&client, &restored, true).await?;
    compare(&client, &manifest, &audit, &storage).await?;
    Ok((manifest, audit))
}

pub struct RestoreOptions {
    pub snapshot: String,
    /// Keep what the data root already holds and add what is missing.
    pub merge: bool,
}

/// `lxgate restore`: the snapshot's database and files onto this (fresh) host.
pub async fn restore(cfg: &Config, r: &Restic, o: &RestoreOptions) -> Result<Outcome> {
    let start = Instant::now();
    refuse_running_units()?;
    if !o.merge {
        if let Some(f) = first_file(&cfg.paths.data) {
            bail!(
                "the data root {} is not empty ({} is there): restore fills a fresh host. Restore onto an empty data root, or pass --merge to keep what is there and add what is missing",
                cfg.paths.data.display(),
                f.display()
            );
        }
    }
    let url = cfg.require_database_url()?;
    let client = crate::db::connect(url).await?;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await?
        .get(0);
    if tables > 0 {
        let jobs: i64 = client
            .query_opt(
                "SELECT count(*) FROM upload_jobs WHERE to_regclass('public.upload_jobs') IS NOT NULL",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get(0));
        if jobs > 0 {
            bail!(
                "the database holds {jobs} upload jobs: restore needs a database without jobs (a fresh host, after `lxgate migrate` at most). Drop and recreate it (dropdb lxgate && createdb -O lxgate lxgate) and retry"
            );
        }
    }
    let snapshot = tokio::task::block_in_place(|| r.snapshot(Some(&o.snapshot), TAG))?;
    // Staged on the data root's filesystem, so objects move into place by rename.
    remove_leftover_staging(&cfg.paths.data);
    let staging = Scratch::new_named(&cfg.paths.data, STAGING_PREFIX)?;
    tokio::task::block_in_place(|| r.restore(&snapshot.id, staging.path(), "restore"))?;
    let (manifest, dump) = find_manifest(staging.path(), &snapshot)?;
    let into = if tables > 0 {
        // Only the schema `lxgate migrate` made, no rows: the dump's replaces it.
        RestoreInto::Replace
    } else {
        RestoreInto::Empty
    };
    open_dump(cfg, &manifest, &dump, url, into)?;

    // Files: the snapshot's data root onto this host's, then the rest of its state root
    // (the data root inside it, in the default layout, is then already in place).
    let m = &manifest.paths;
    let nested = m.data.starts_with(&m.state);
    let same_layout =
        m.data.strip_prefix(&m.state).ok() == cfg.paths.data.strip_prefix(&cfg.paths.state).ok();
    let mut pairs = vec![(under(staging.path(), &m.data), cfg.paths.data.clone())];
    if !nested || same_layout {
        pairs.push((under(staging.path(), &m.state), cfg.paths.state.clone()));
    } else {
        tracing::warn!(
            "the snapshot's data root lay inside its state root and this host's does not: only the data root is restored; copy staticfiles and the env file from the snapshot by hand if needed"
        );
    }
    // restic does not fsync what it restores: one flush before anything gets its name.
    tokio::task::block_in_place(|| -> Result<()> {
        syncfs(staging.path())?;
        let owner = crate::ops::recover::service_owner(cfg);
        let mut placed = Placed::default();
        for (from, to) in &pairs {
            if from.exists() {
                place_tree(from, to, owner, &mut placed)?;
                syncfs(to)?;
            }
        }
        if placed.skipped > 0 {
            println!(
                "{} files already on this host were kept, not replaced (--merge)",
                placed.skipped
            );
        }
        tracing::info!(
            files = placed.files,
            skipped = placed.skipped,
            "restored files placed"
        );
        Ok(())
    })?;
    drop(staging);
    let audit =
        storage_audit::audit(&client, &crate::ingest::Storage::from_config(cfg), true).await?;
    compare(&client, &manifest, &audit, &cfg.paths.storage).await?;
    // A restore replaces what the host holds: the audit trail records it.
    crate::audit::Event {
        event: "backup_restored",
        outcome: "ok",
        source: Some("cli"),
        reason: Some(&format!("snapshot {}", snapshot.id)),
        ..Default::default()
    }
    .emit();
    Ok(Outcome {
        snapshot,
        manifest,
        audit,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `path` (absolute, as on the backed-up host) inside a tree restic restored at `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The manifest and dump of a restored snapshot: in `<state root>/backup`, the state root
/// being one of the snapshot's paths.
fn find_manifest(root: &Path, s: &Snapshot) -> Result<(Manifest, PathBuf)> {
    for p in &s.paths {
        let dir = under(root, p).join("backup");
        let m = dir.join(MANIFEST_FILE);
        if m.is_file() {
            return Ok((Manifest::read(&m)?, dir.join(DUMP_FILE)));
        }
    }
    bail!(
        "snapshot {} holds no lxgate backup manifest (backup/{MANIFEST_FILE} under {:?}): it was not made by `lxgate backup run` (or the prepare step failed); pick another with `restic snapshots --tag {TAG}`",
        s.id,
        s.paths
    )
}

/// Check the dump against its manifest, then restore it into `url`.
fn open_dump(
    cfg: &Config,
    m: &Manifest,
    dump_path: &Path,
    url: &str,
    into: RestoreInto,
) -> Result<()> {
    let got = dump::sha256_file(dump_path)
        .with_context(|| format!("reading the dump {}", dump_path.display()))?;
    if got != m.dump.sha256 {
        bail!(
            "the dump {} does not match its manifest (sha256 {got}, manifest {}): this snapshot's dump is damaged; verify or restore an older snapshot",
            dump_path.display(),
            m.dump.sha256
        );
    }
    let identity = Identity::from_file(&cfg.host.master_key).map_err(|e| {
        anyhow::anyhow!(
            "reading the master identity {}: {e}. The dump is sealed to {}; put that identity (kept safe apart from the backup) at this path",
            cfg.host.master_key.display(),
            m.recipient
        )
    })?;
    if identity.recipient().to_string() != m.recipient {
        bail!(
            "the master identity {} is not the one this dump is sealed to ({}, this key is {}): put the identity that was the master key when the backup was made at this path",
            cfg.host.master_key.display(),
            m.recipient,
            identity.recipient()
        );
    }
    tokio::task::block_in_place(|| dump::restore_sealed(dump_path, &identity, url, into))?;
    Ok(())
}

/// The restored rows against the manifest, and the restored objects against the rows.
async fn compare(
    client: &tokio_postgres::Client,
    m: &Manifest,
    audit: &Audit,
    storage: &Path,
) -> Result<()> {
    let d = describe(client).await?;
    let mut wrong = Vec::new();
    if d.jobs != m.jobs {
        wrong.push(format!(
            "jobs: restored {:?}, manifest {:?}",
            d.jobs, m.jobs
        ));
    }
    let bytes: u64 = d.referenced.values().sum();
    if (d.referenced.len() as u64, bytes) != (m.objects, m.object_bytes) {
        wrong.push(format!(
            "objects: restored rows point at {} ({bytes} bytes), manifest {} ({} bytes)",
            d.referenced.len(),
            m.objects,
            m.object_bytes
        ));
    }
    if audit.is_damaged() {
        let first: Vec<String> = audit
            .missing
            .iter()
            .map(|x| format!("job {} has no object {}", x.job, x.path))
            .chain(
                audit
                    .mismatched
                    .iter()
                    .map(|x| format!("job {} object {}: {}", x.job, x.path, x.problem)),
            )
            .take(5)
            .collect();
        wrong.push(format!(
            "{} missing and {} damaged objects under {} (first: {})",
            audit.missing.len(),
            audit.mismatched.len(),
            storage.display(),
            first.join("; ")
        ));
    }
    if !wrong.is_empty() {
        bail!(
            "the restored backup does not agree with itself: {}. Do not rely on this snapshot; verify an older one and check the host's storage (`lxgate storage audit --verify`)",
            wrong.join("; ")
        );
    }
    Ok(())
}

/// Restoring under running units would race them for the database and storage.
fn refuse_running_units() -> Result<()> {
    if !Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let running: Vec<&str> = ["lxgate.service", "lxgate-watcher.service"]
        .into_iter()
        .filter(|u| {
            std::process::Command::new("systemctl")
                .args(["is-active", "--quiet", u])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !running.is_empty() {
        bail!(
            "{} running: stop it first (systemctl stop {}); restore while they ingest would mix two hosts' data",
            running.join(" and "),
            running.join(" ")
        );
    }
    Ok(())
}

/// Any regular file or link below `dir`: the skeleton tmpfiles makes is only directories
/// (a staging tree a killed restore left is not the host's data).
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => return Some(e.path()),
                Err(_) => {}
            }
        }
    }
    None
}

/// A staging tree a killed restore left behind: ours, so removed before the next.
fn remove_leftover_staging(data: &Path) {
    for e in std::fs::read_dir(data).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn syncfs(p: &Path) -> Result<()> {
    crate::durable::syncfs(p).with_context(|| format!("flushing {} to disk", p.display()))
}

#[derive(Default)]
struct Placed {
    files: u64,
    skipped: u64,
}

/// Move every entry of the tree `from` to the same place under `to`, keeping what `to`
/// already has (existing directories are descended into, existing files kept). Within
/// one filesystem a file moves by rename; across filesystems it is copied under a temp
/// name, fsynced, then renamed, so a name never shows half a file.
fn place_tree(from: &Path, to: &Path, owner: Option<(u32, u32)>, p: &mut Placed) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !to.exists() {
        let m = std::fs::symlink_metadata(from)?;
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.permissions().mode()))?;
        chown(to, owner)?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .collect::<std::result::Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            place_tree(&src, &dst, owner, p)?;
            continue;
        }
        if std::fs::symlink_metadata(&dst).is_ok() {
            p.skipped += 1;
            continue;
        }
        match std::fs::rename(&src, &dst) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                copy_across(&src, &dst, t.is_symlink())?
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("moving {} to {}", src.display(), dst.display()))
            }
        }
        chown(&dst, owner)?;
        p.files += 1;
    }
    Ok(())
}

fn copy_across(src: &Path, dst: &Path, link: bool) -> Result<()> {
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dst.with_file_name(format!("{STAGING_PREFIX}{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    if link {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, &tmp)?;
    } else {
        let m = std::fs::metadata(src)?;
        std::fs::copy(src, &tmp)
            .with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
        let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        f.set_times(std::fs::FileTimes::new().set_modified(m.modified()?))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display()))?;
    Ok(())
}

/// As root, what is restored belongs to the service account (restic restores the
/// numeric owners of the backed-up host, which need not exist here).
fn chown(p: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the service account", p.display()))?;
    }
    Ok(())
}

/// A scratch directory, removed when dropped.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(given: Option<&Path>, default_parent: &Path) -> Result<Scratch> {
        let parent = given.unwrap_or(default_parent);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(parent)
            .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
        Ok(Scratch { dir })
    }

    fn new_named(parent: &Path, prefix: &str) -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        Ok(Scratch { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The database a rehearsal restores into: made here (and dropped after), or given.
struct ScratchDb {
    url: String,
    made: Option<String>,
}

impl ScratchDb {
    fn given(url: &str) -> ScratchDb {
        ScratchDb {
            url: url.to_string(),
            made: None,
        }
    }

    async fn create(url: &str) -> Result<ScratchDb> {
        let name = format!("lxgate_rehearsal_{}", uuid::Uuid::new_v4().simple());
        let client = crate::db::connect(url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating the scratch database {name}: {e}. The rehearsal needs CREATEDB for lxgate's database role (ALTER ROLE lxgate CREATEDB), or pass --scratch-database with an empty database"
                )
            })?;
        Ok(ScratchDb {
            url: with_dbname(url, &name),
            made: Some(name),
        })
    }

    async fn drop(self, admin_url: &str) {
        let Some(name) = self.made else { return };
        let dropped = async {
            let c = crate::db::connect(admin_url).await?;
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = dropped {
            tracing::warn!(database = %name, error = %e, "the scratch database was not dropped; drop it by hand");
        }
    }
}

/// `url` with its database replaced: a later `dbname` wins in both spellings.
fn with_dbname(url: &str, name: &str) -> String {
    if url.contains("://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_database_url_names_only_the_new_database() {
        for url in [
            "host=/run/postgresql dbname=lxgate user=lxgate",
            "postgres://lxgate@%2Frun%2Fpostgresql/lxgate",
            "postgresql://u:p@localhost:5433/lxgate?sslmode=disable",
        ] {
            let cfg = crate::db::parse_url(&with_dbname(url, "scratch_1")).unwrap();
            assert_eq!(cfg.get_dbname(), Some("scratch_1"), "{url}");
            let orig = crate::db::parse_url(url).unwrap();
            assert_eq!(cfg.get_user(), orig.get_user(), "{url}");
            assert_eq!(cfg.get_hosts(), orig.get_hosts(), "{url}");
        }
    }

    #[test]
    fn a_tmpfiles_skeleton_counts_as_empty() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("import/video_import")).unwrap();
        std::fs::create_dir_all(d.path().join("storage")).unwrap();
        assert_eq!(first_file(d.path()), None);
        std::fs::write(d.path().join("import/video_import/a.mp4"), "x").unwrap();
        assert_eq!(
            first_file(d.path()),
            Some(d.path().join("import/video_import/a.mp4"))
        );
    }
}
