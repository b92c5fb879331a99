//! The deploy window (issue 18): from the start of a migration until the new release
//! has passed its checks, no boundary takes new files, so a rollback that restores the
//! database snapshot never discards an accepted file or job row.
//!
//! The window is a marker file, `<state>/deploy/ingest-paused`, not a database flag: a
//! snapshot restore rewrites the database but must not lift the pause, and every
//! release, old or new, reads the same file. Its content says who holds it and since
//! when; whoever opened the window closes it (`lxgate migrate` its own, `lxgate
//! deploy` and the NixOS gate theirs). The upload API and the transfer receiver answer
//! 503 with `Retry-After` while it exists; the watcher leaves drops where they are.

use std::path::{Path, PathBuf};

/// Seconds a client is told to wait before it tries again.
pub const RETRY_AFTER_SECS: u64 = 30;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// What opened it: `migrate`, `deploy`, `deploy-gate`.
    pub by: String,
    pub since: chrono::DateTime<chrono::Utc>,
    pub reason: String,
}

pub fn marker(state: &Path) -> PathBuf {
    state.join("deploy").join("ingest-paused")
}

/// The open window, if any. A marker that cannot be read still pauses: a half-written
/// or foreign file must not let ingest through during a deploy.
pub fn current(state: &Path) -> Option<Window> {
    let path = marker(state);
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Window {
            by: "unknown".into(),
            since: chrono::Utc::now(),
            reason: format!("unreadable marker {}", path.display()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(Window {
            by: "unknown".into(),
            since: chrono::Utc::now(),
            reason: format!("marker {} exists but cannot be read", path.display()),
        }),
    }
}

pub fn is_paused(state: &Path) -> bool {
    current(state).is_some()
}

/// Open the window unless one is open; true when this call opened it (and so must
/// close it).
pub fn open(state: &Path, by: &str, reason: &str) -> std::io::Result<bool> {
    let path = marker(state);
    if path.exists() {
        return Ok(false);
    }
    let dir = path.parent().expect("marker has a parent");
    std::fs::create_dir_all(dir)?;
    let w = Window {
        by: by.into(),
        since: chrono::Utc::now(),
        reason: reason.into(),
    };
    let bytes = serde_json::to_vec_pretty(&w).expect("a window serialises");
    crate::durable::write_atomic(&path, &dir.join(".ingest-paused.tmp"), &bytes, Some(0o640))?;
    crate::durable::sync_dir(dir);
    tracing::warn!(
        by,
        reason,
        "ingest paused: uploads and transfers answer 503, drops stay in place"
    );
    Ok(true)
}

/// Close the window (whoever holds it).
pub fn close(state: &Path) -> std::io::Result<()> {
    let path = marker(state);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                crate::durable::sync_dir(dir);
            }
            tracing::info!("ingest resumed");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_opener_owns_the_window_and_an_unreadable_marker_pauses() {
        let dir = tempfile::tempdir().unwrap();
        assert!(current(dir.path()).is_none());
        assert!(open(dir.path(), "deploy", "release 2").unwrap());
        assert!(!open(dir.path(), "migrate", "0005").unwrap());
        assert_eq!(current(dir.path()).unwrap().by, "deploy");
        close(dir.path()).unwrap();
        assert!(!is_paused(dir.path()));
        std::fs::write(marker(dir.path()), b"not json").unwrap();
        assert!(is_paused(dir.path()));
        close(dir.path()).unwrap();
        close(dir.path()).unwrap();
    }
}
