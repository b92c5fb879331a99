//! `lxgate keys ensure`: the root one-shot behind lxgate-keys.service. Creates the age
//! master identity if absent (root:<keys group> 0640) and refuses a key with any other
//! mode or owner, saying how to fix it. The service itself never creates keys.
//!
//! `lxgate keys rotate` (root): re-seal every sealed object to a new identity. The new
//! identity is written first beside the key (`<key>.next`, same owner and mode); from
//! then on new objects are sealed to it and objects open with either identity, so
//! nothing is unreadable at any point. Each object is re-sealed into a temp file,
//! checked against its content hash (its name), fsynced and renamed over the old one:
//! it is always whole and sealed to one of the two. A run killed anywhere is resumed
//! by running it again (objects already moved are recognised by their header). Only
//! once every object opens with the new identity, under the exclusive storage lock
//! (no ingest commits meanwhile), is the old key retired to `<key>.retired-<time>`,
//! root-only, and the new one renamed into place.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::crypto::age::{self, Identity, Recipient};
use crate::ingest::{Storage, STORAGE_LOCK};
use crate::ops::doctor::Accounts;
use crate::progress::{Progress, Total};

/// A new age X25519 identity string (`AGE-SECRET-KEY-1…`), zeroized when dropped.
pub fn new_identity() -> crate::crypto::age::SecretString {
    crate::crypto::age::Identity::generate().to_secret_string()
}

pub fn ensure(key: &Path, group: &str) -> Result<&'static str> {
    let gid = Accounts::load(Path::new("/")).gid(group).with_context(|| {
        format!(
            "group {group} does not exist: create it (groupadd --system {group}) or set keys_group"
        )
    })?;
    if let Ok(m) = std::fs::symlink_metadata(key) {
        let mode = m.permissions().mode() & 0o7777;
        if !m.is_file() || mode != 0o640 || m.uid() != 0 || m.gid() != gid {
            bail!(
                "{} has mode {mode:04o} uid {} gid {}; it must be a file owned root:{group} with mode 0640 \
                 (the service reads it through the {group} group: 0400 root:root locks it out). \
                 Fix: chown root:{group} {0} && chmod 0640 {0}",
                key.display(),
                m.uid(),
                m.gid()
            );
        }
        return Ok("present");
    }
    write_identity(key, Some(gid), "lxgate keys ensure")?;
    crate::audit::key_operation("master_key_created", &key.display().to_string(), None);
    Ok("created")
}

/// `lxgate dev`: the master identity, created if absent, owned by whoever runs dev
/// (0600; there is no keys group on a developer's machine).
pub fn ensure_own(key: &Path) -> Result<()> {
    if key.exists() {
        return Ok(());
    }
    write_identity(key, None, "lxgate dev")
}

/// A new identity at `key`, root:`gid` 0640 (None: the caller's own, 0600), whole or
/// not at all (temp file, fsync, rename, fsync of the directory).
fn write_identity(key: &Path, gid: Option<u32>, by: &str) -> Result<()> {
    let dir = key.parent().context("key path has no directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        key.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "# created by {by}: {}", chrono::Utc::now().to_rfc3339())?;
    writeln!(
        f,
        "{}",
        crate::crypto::age::ExposeSecret::expose_secret(&new_identity())
    )?;
    f.sync_all()?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&tmp, Some(0), Some(gid))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    }
    std::fs::rename(&tmp, key)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn sync_dir_of(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p.parent().unwrap_or(Path::new("/")))?.sync_all()
}

/// What a finished rotation did.
#[derive(Debug, serde::Serialize)]
pub struct Rotation {
    /// Objects re-sealed by this run.
    pub resealed: u64,
    /// Sealed objects that already opened with the new identity (an earlier run).
    pub already: u64,
    /// The recipient every sealed object is now sealed to.
    pub recipient: String,
    /// Where the old identity went (root-only); None when a run only finished the last
    /// rename.
    pub retired: Option<std::path::PathBuf>,
}

/// Re-seal every sealed object to a new identity and retire the old one; resumable.
pub async fn rotate(client: &tokio_postgres::Client, storage: &Storage) -> Result<Rotation> {
    let keys = storage.keys().clone();
    let key = keys.path().to_path_buf();
    let next = keys.next_path();
    // A run killed between retiring a key and locking it leaves it readable by the
    // keys group: every run locks every retired key first.
    lock_retired(&key)?;
    if !key.exists() && next.exists() {
        // Killed between retiring the old key and renaming the new one into place.
        std::fs::rename(&next, &key)?;
        sync_dir_of(&key)?;
        let recipient = Identity::from_file(&key)?.recipient().to_string();
        crate::audit::key_operation("master_key_rotated", &key.display().to_string(), None);
        return Ok(Rotation {
            resealed: 0,
            already: 0,
            recipient,
            retired: None,
        });
    }
    let current = std::fs::symlink_metadata(&key).with_context(|| {
        format!(
            "no master identity at {}: nothing to rotate (lxgate keys ensure creates one)",
            key.display()
        )
    })?;
    if !next.exists() {
        write_identity(&next, Some(current.gid()), "lxgate keys rotate")?;
        tracing::info!(next = %next.display(), "new master identity written; new objects are sealed to it");
    }
    let new = Identity::from_file(&next)
        .map_err(|e| anyhow!("reading the new identity {}: {e}", next.display()))?;
    let to = new.recipient();

    // The bulk, while ingest goes on (new objects are already sealed to the new key).
    let mut tally = move_all(storage, &new, &to, "keys rotate: re-sealing").await?;
    // The rest under the exclusive storage lock: commits that staged to the old key
    // before the new one existed are in, and no other commit runs until the old key is
    // gone (a commit checks its recipient is still current).
    client
        .execute("SELECT pg_advisory_lock($1)", &[&STORAGE_LOCK])
        .await?;
    let finished = async {
        let last = move_all(storage, &new, &to, "keys rotate: under the storage lock").await?;
        tally.0 += last.0;
        client
            .execute(
                "UPDATE upload_jobs SET sealed_to = $1, updated_at = now()
                 WHERE sealed_to IS NOT NULL AND sealed_to <> $1",
                &[&to.to_string()],
            )
            .await?;
        retire(&key, &next)
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&STORAGE_LOCK])
        .await?;
    let retired = finished?;
    crate::audit::key_operation("master_key_rotated", &key.display().to_string(), None);
    Ok(Rotation {
        resealed: tally.0,
        already: tally.1.saturating_sub(tally.0),
        recipient: to.to_string(),
        retired: Some(retired),
    })
}

/// Every sealed object on disk opens with `new` afterwards; (re-sealed, seen). Refuses
/// to go on past an object that does not open or does not hash to its name: the old
/// key must stay until that object is restored or quarantined.
async fn move_all(
    storage: &Storage,
    new: &Identity,
    to: &Recipient,
    what: &str,
) -> Result<(u64, u64)> {
    let objects: Vec<(String, u64)> = crate::ops::storage_audit::objects(storage.root())?
        .into_iter()
        .filter(|(rel, _)| rel.ends_with(".age"))
        .map(|(rel, (size, _))| (rel, size))
        .collect();
    let identities = storage.keys().identities()?;
    // Re-sealing reads and writes every sealed byte: a bar on a terminal, a summary line.
    let progress = Progress::start(
        what,
        Total {
            files: objects.len() as u64,
            bytes: Some(objects.iter().map(|(_, size)| size).sum()),
        },
    );
    let mut resealed = 0;
    let mut damaged = Vec::new();
    for (rel, size) in &objects {
        match reseal(storage, rel, new, to, &identities) {
            Ok(true) => resealed += 1,
            Ok(false) => {}
            Err(e) => damaged.push(format!("{rel}: {e:#}")),
        }
        progress.add(1, *size);
    }
    progress.finish();
    if !damaged.is_empty() {
        bail!(
            "{} sealed object(s) could not be re-sealed, so the old identity stays (both open every other object):\n  {}\n\
             check them with `lxgate storage audit --verify`, restore them from backup or move them aside, then rerun `lxgate keys rotate`",
            damaged.len(),
            damaged.join("\n  ")
        );
    }
    Ok((resealed, objects.len() as u64))
}

/// Deletes a temp file unless it was renamed into place.
struct TempFile(Option<std::path::PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Hashes the plaintext on its way into the new sealed file.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Re-seal one object to `to` unless `new` already opens it. True when re-sealed.
fn reseal(
    storage: &Storage,
    rel: &str,
    new: &Identity,
    to: &Recipient,
    identities: &[Identity],
) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let path = storage.root().join(rel);
    let file = std::fs::File::open(&path)?;
    let meta = file.metadata()?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024 + 16, file);
    if age::opens_with(new, &mut reader)? {
        return Ok(false);
    }
    reader.seek(SeekFrom::Start(0))?;
    // `_claim` until the rename: a `prepare` elsewhere must not take the file before.
    let (out, tmp_path, _claim) = storage.temp_file("rotate-")?;
    let mut tmp = TempFile(Some(tmp_path.clone()));
    // The object keeps its owner and mode: rotation runs as root, the service reads it.
    std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()))?;
    out.set_permissions(std::fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))?;
    let mut sink = Hashing {
        inner: age::Sealing::start(to, out)?,
        hasher: sha2::Digest::new(),
    };
    age::decrypt_any(identities, &mut reader, &mut sink)?;
    let got = hex::encode(sha2::Digest::finalize(sink.hasher));
    let named: String = rel
        .trim_start_matches("objects/")
        .trim_end_matches(".age")
        .replace('/', "");
    if got != named {
        bail!("its plaintext hashes to {got}, not to its name: the object is damaged");
    }
    let out = sink.inner.finish()?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp_path, &path)?;
    tmp.0 = None;
    sync_dir_of(&path)?;
    Ok(true)
}

/// Every `<key>.retired-*` beside the key: root:root 0400.
fn lock_retired(key: &Path) -> Result<()> {
    let mut prefix = key.file_name().unwrap_or_default().to_os_string();
    prefix.push(".retired-");
    let prefix = prefix.to_string_lossy().into_owned();
    let Some(dir) = key.parent() else {
        return Ok(());
    };
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            std::os::unix::fs::chown(e.path(), Some(0), Some(0))?;
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o400))?;
        }
    }
    Ok(())
}

/// The old key leaves: renamed aside root-only, then the new one takes its name. A crash
/// between the two renames leaves only `<key>.next`, which the service reads and the
/// next run renames into place.
fn retire(key: &Path, next: &Path) -> Result<std::path::PathBuf> {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".retired-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    let retired = key.with_file_name(name);
    std::fs::rename(key, &retired)?;
    std::os::unix::fs::chown(&retired, Some(0), Some(0))?;
    std::fs::set_permissions(&retired, std::fs::Permissions::from_mode(0o400))?;
    std::fs::rename(next, key)?;
    sync_dir_of(key)?;
    Ok(retired)
}

/// `lxgate keys hub-recipient --out FILE`: a new X25519 recipient key for
/// `hub_media_envelope_v1`, written as PKCS#8 PEM with mode 0600 (never readable by
/// anyone else, not even for a moment); the public key PEM to give every site. An
/// existing file is never overwritten: a lost key loses every envelope sealed to it.
pub fn hub_recipient(out: &Path) -> Result<String> {
    if std::fs::symlink_metadata(out).is_ok() {
        bail!(
            "{} exists; a recipient key is never overwritten. Print its public key with `lxgate keys hub-recipient --public {0}`, or choose a new file and add it to the keyring (ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES)",
            out.display()
        );
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key = crate::hub::keys::RecipientKey::generate();
    let tmp = dir.join(format!(
        ".{}.tmp",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(key.to_pem().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, out)?;
    crate::durable::sync_dir(dir);
    let public = key.public();
    crate::audit::key_operation("hub_recipient_created", &public.id(), None);
    Ok(public.to_pem())
}

/// The public key PEM (and key id) of an existing recipient private key file.
pub fn hub_recipient_public(key: &Path) -> Result<(String, String)> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?,
    );
    let k = crate::hub::keys::RecipientKey::from_pem(&text)
        .with_context(|| format!("{} is not a hub recipient key", key.display()))?;
    let p = k.public();
    Ok((p.to_pem(), p.id()))
}
