//! `quarantine/`: rejected drops with `NAME.reason`, plus an UploadJob with status
//! `error` whose provenance records where the files went.

use std::path::PathBuf;

use deadpool_postgres::Pool;

use crate::config::Config;
use crate::durable::sync_dir;
use crate::ingest::{self, Boundary, Kind, Rejected};

/// Move `files` (carrier first, sidecar with it) into quarantine. Links, FIFOs and
/// directories move by rename: never opened, never followed.
pub async fn put(
    cfg: &Config,
    pool: &Pool,
    files: &[PathBuf],
    kind: Kind,
    center_id: Option<i64>,
    reason: &str,
) {
    let q = cfg.paths.quarantine();
    let tag = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut moved = Vec::new();
    let first_name = files
        .first()
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason_line = reason.replace('\n', " ");
    let reason_file = q.join(format!("{tag}-{first_name}.reason"));
    if let Err(e) = std::fs::write(&reason_file, format!("{reason_line}\n")) {
        tracing::error!(error = %e, "cannot write to quarantine; the files stay in place");
        return;
    }
    let mut size = 0i64;
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = q.join(format!("{tag}-{name}"));
        size += std::fs::symlink_metadata(f)
            .map(|m| m.len() as i64)
            .unwrap_or(0);
        match std::fs::rename(f, &dest) {
            Ok(()) => moved.push(dest),
            Err(e) => {
                tracing::error!(file = %f.display(), error = %e, "cannot move into quarantine")
            }
        }
    }
    sync_dir(&q);
    tracing::warn!(boundary = "watcher", file = ?files.first().map(|f| f.display().to_string()).unwrap_or_default(), outcome = "quarantined", reason = %reason_line, "watcher");
    let rejected = Rejected {
        boundary: Boundary::Watcher,
        center_id,
        // A refused name is recorded escaped: the job list must not carry it raw.
        original_name: ingest::name::validate(&first_name)
            .unwrap_or_else(|_| ingest::name::escaped_prefix(&first_name)),
        kind,
        size,
        detail: reason_line.clone(),
        provenance: serde_json::json!({
            "boundary": "watcher",
            "source_paths": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "quarantined": moved.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "reason_file": reason_file.display().to_string(),
        }),
    };
    if let Err(e) = ingest::record_error(pool, &rejected).await {
        tracing::error!(error = %e, "quarantined, but the error job could not be recorded");
    }
}
