//! What a deploy writes down so that a kill at any point can be finished by the same
//! command: `<state>/deploy/in-progress.json` while a deploy (Debian release or NixOS
//! generation) has not ended, and `<state>/deploy/history.jsonl`, one line per outcome.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

/// One line of `<state>/deploy/history.jsonl`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub from: Option<String>,
    pub to: String,
    /// `deployed`, `rolled_back`, or `failed` (the rollback did not finish either).
    pub outcome: String,
    pub reason: Option<String>,
    /// The snapshot restored during a rollback.
    pub restored: Option<String>,
}

/// `<state>/deploy/in-progress.json`: a deploy that has not ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Journal {
    pub started: DateTime<Utc>,
    pub from: Option<String>,
    pub to: String,
    pub rolling_back: bool,
    pub reason: Option<String>,
    /// The snapshot the rollback restores, once decided: a restore empties the schema
    /// before it loads, so after a kill mid-restore the previous release would find an
    /// empty database it "runs on", and only this record says to restore again.
    #[serde(default)]
    pub restore: Option<String>,
    /// A NixOS deploy: the system generation it started from, which its rollback
    /// switches back to. None for a Debian release deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

fn deploy_dir(state: &Path) -> PathBuf {
    state.join("deploy")
}

fn journal_path(state: &Path) -> PathBuf {
    deploy_dir(state).join("in-progress.json")
}

pub fn history(state: &Path) -> Vec<Entry> {
    std::fs::read_to_string(deploy_dir(state).join("history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn in_progress(state: &Path) -> Option<Journal> {
    serde_json::from_slice(&std::fs::read(journal_path(state)).ok()?).ok()
}

pub fn record(state: &Path, e: &Entry) -> anyhow::Result<()> {
    let dir = deploy_dir(state);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("history.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(e)?)?;
    f.sync_all()?;
    Ok(())
}

pub(crate) fn write_journal(state: &Path, j: &Journal) -> anyhow::Result<()> {
    let dir = deploy_dir(state);
    std::fs::create_dir_all(&dir)?;
    let path = journal_path(state);
    crate::durable::write_atomic(
        &path,
        &dir.join(".in-progress.json.tmp"),
        &serde_json::to_vec_pretty(j)?,
        Some(0o640),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    crate::durable::sync_dir(&dir);
    Ok(())
}

pub(crate) fn end_journal(state: &Path) {
    let _ = std::fs::remove_file(journal_path(state));
    crate::durable::sync_dir(&deploy_dir(state));
}
