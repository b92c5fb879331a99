//! The release store: `<prefix>/releases/<id>/bin/lxgate`, one directory per binary,
//! and the `current` link the units run through.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// Where a deploy puts things; tests and unusual hosts move them.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Releases and the `current` link.
    pub prefix: PathBuf,
    /// systemd units.
    pub units: PathBuf,
    /// The tmpfiles.d file.
    pub tmpfiles: PathBuf,
    /// The nginx server block.
    pub nginx_site: PathBuf,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            prefix: "/opt/lxgate".into(),
            units: "/etc/systemd/system".into(),
            tmpfiles: "/etc/tmpfiles.d/lxgate.conf".into(),
            nginx_site: "/etc/nginx/sites-enabled/lxgate.conf".into(),
        }
    }
}

impl Layout {
    fn releases(&self) -> PathBuf {
        self.prefix.join("releases")
    }
    fn current_link(&self) -> PathBuf {
        self.prefix.join("current")
    }
    /// What the units run.
    pub fn current_bin(&self) -> PathBuf {
        self.current_link().join("bin/lxgate")
    }
    pub fn bin_of(&self, release: &str) -> PathBuf {
        self.releases().join(release).join("bin/lxgate")
    }
}

/// `<version>-<first 12 hex of the binary's sha256>`: the same file is the same release.
pub fn release_id(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(1)
        .filter(|_| out.status.success() && text.starts_with("lxgate "))
        .with_context(|| {
            format!(
                "{} is not an lxgate binary (--version said {text:?})",
                bin.display()
            )
        })?
        .to_string();
    Ok(format!("{version}-{}", &sha256_of(bin)?[..12]))
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Copy the binary into its release directory (once; a repeat finds it there).
pub fn install(layout: &Layout, bin: &Path) -> anyhow::Result<String> {
    let id = release_id(bin)?;
    let target = layout.bin_of(&id);
    if target.is_file() && sha256_of(&target)? == sha256_of(bin)? {
        return Ok(id);
    }
    let dir = target.parent().expect("bin/ has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = std::fs::read(bin)?;
    crate::durable::write_atomic(&target, &dir.join(".lxgate.tmp"), &bytes, Some(0o755))
        .with_context(|| format!("installing {}", target.display()))?;
    crate::durable::sync_dir(dir);
    Ok(id)
}

/// The release `current` names.
pub fn current(layout: &Layout) -> Option<String> {
    let target = std::fs::read_link(layout.current_link()).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Point `current` at `release` by renaming a new link over it.
pub fn flip(layout: &Layout, release: &str) -> anyhow::Result<()> {
    let tmp = layout.prefix.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(release), &tmp)?;
    std::fs::rename(&tmp, layout.current_link())
        .with_context(|| format!("replacing {}", layout.current_link().display()))?;
    crate::durable::sync_dir(&layout.prefix);
    Ok(())
}

/// Keep the newest `keep` releases by install time, and always those in `protect`.
pub fn prune(layout: &Layout, keep: usize, protect: &[&str]) -> Vec<String> {
    let mut all: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(layout.releases())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let t = e.metadata().ok()?.modified().ok()?;
            Some((t, e.file_name().to_string_lossy().into_owned()))
        })
        .filter(|(_, n)| !n.starts_with('.'))
        .collect();
    all.sort();
    let n = all.len();
    let mut removed = Vec::new();
    for (i, (_, name)) in all.into_iter().enumerate() {
        if i + keep >= n || protect.contains(&name.as_str()) {
            continue;
        }
        if std::fs::remove_dir_all(layout.releases().join(&name)).is_ok() {
            removed.push(name);
        }
    }
    removed
}
