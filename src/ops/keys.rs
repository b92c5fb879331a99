//! `lxgate keys ensure`: the root one-shot behind lxgate-keys.service. Creates the age
//! master identity if absent (root:<keys group> 0640) and refuses a key with any other
//! mode or owner, saying how to fix it. The service itself never creates keys.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::ops::doctor::Accounts;

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
    writeln!(
        f,
        "# created by lxgate keys ensure: {}",
        chrono::Utc::now().to_rfc3339()
    )?;
    writeln!(
        f,
        "{}",
        crate::crypto::age::ExposeSecret::expose_secret(&new_identity())
    )?;
    f.sync_all()?;
    std::os::unix::fs::chown(&tmp, Some(0), Some(gid))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))?;
    std::fs::rename(&tmp, key)?;
    std::fs::File::open(dir)?.sync_all()?;
    crate::audit::key_operation("master_key_created", &key.display().to_string(), None);
    Ok("created")
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
