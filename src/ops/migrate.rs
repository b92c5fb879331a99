//! `lxgate migrate` on a host (issue 18). When migrations are pending on a database
//! that holds data, ingest is paused (crate::ingest::pause) and a sealed snapshot is
//! taken (crate::db::snapshot) under the migrator's lock before the first migration
//! runs; a failed snapshot means nothing is migrated. The pause is lifted at the end
//! unless a deploy gate holds it (`hold_pause`, or a window someone else opened).

use crate::config::Config;
use crate::crypto::age::Identity;
use crate::db::migrate::{self, Ahead, MigrateError, Migration};
use crate::db::snapshot::{self, Manifest};
use crate::ingest::pause;

#[derive(Debug, Default)]
pub struct Options {
    /// Leave the ingest pause in place after migrating: a gate (`lxgate deploy`, the
    /// NixOS deploy gate) lifts it once the release has passed smoke.
    pub hold_pause: bool,
}

#[derive(Debug)]
pub struct Outcome {
    pub applied: Vec<String>,
    pub snapshot: Option<Manifest>,
    pub ahead: Vec<Ahead>,
}

/// Migrate the database to `set`, taking a snapshot first when there is something to
/// lose.
pub async fn run(config: &Config, set: &[Migration], opts: &Options) -> anyhow::Result<Outcome> {
    let url = config.require_database_url()?.to_string();
    let mut client = crate::db::connect(&url).await?;
    let state = config.paths.state.clone();
    let newest = set.last().map_or(0, |m| m.version);
    let mut opened = false;
    let mut taken: Option<Manifest> = None;
    let result = {
        let (opened, taken) = (&mut opened, &mut taken);
        let (state, url) = (state.clone(), url.clone());
        let key = config.host.master_key.clone();
        let keep = config.db.keep_snapshots;
        migrate::run_after(&mut client, set, |schema| {
            // An empty database has nothing a rollback could lose.
            let from = schema.current;
            async move {
                if from == 0 {
                    return Ok(());
                }
                *opened = pause::open(&state, "migrate", "migrations pending").map_err(|e| {
                    MigrateError::Before(format!(
                        "pausing ingest ({}): {e}; the state root's deploy/ must be writable by the service user (nix/contract.toml)",
                        pause::marker(&state).display()
                    ))
                })?;
                let recipient = Identity::from_file(&key)
                    .map_err(|e| {
                        MigrateError::Before(format!(
                            "the snapshot is sealed to the master identity, which cannot be read ({}: {e}); run lxgate-keys.service (lxgate keys ensure) and make sure this user is in the keys group",
                            key.display()
                        ))
                    })?
                    .recipient();
                let m = tokio::task::spawn_blocking(move || {
                    snapshot::take(&url, &recipient, &state, from, newest, keep)
                })
                .await
                .expect("snapshot task")
                .map_err(|e| {
                    MigrateError::Before(format!(
                        "the snapshot before migrating failed: {e}. Fix the cause and run lxgate migrate again"
                    ))
                })?;
                tracing::info!(id = %m.id, from, to = newest, bytes = m.bytes, sha256 = %m.sha256, "snapshot taken before migrating");
                *taken = Some(m);
                Ok(())
            }
        })
        .await
    };
    if opened && !opts.hold_pause {
        if let Err(e) = pause::close(&state) {
            tracing::error!(error = %e, marker = %pause::marker(&state).display(), "could not lift the ingest pause: remove the marker by hand");
        }
    }
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => return Err(with_way_back(e, &state, newest)),
    };
    let ahead = migrate::check(&client, set).await?.ahead;
    if !ahead.is_empty() {
        let versions: Vec<i64> = ahead.iter().map(|a| a.version).collect();
        tracing::warn!(?versions, "the database has migrations from a newer release, declared compatible with this one; nothing to do");
    }
    Ok(Outcome {
        applied,
        snapshot: taken,
        ahead,
    })
}

/// A refusal that only a restore fixes names the snapshot to restore.
pub fn with_way_back(e: MigrateError, state: &std::path::Path, newest: i64) -> anyhow::Error {
    if !e.needs_restore() {
        return anyhow::Error::new(e);
    }
    let hint = match snapshot::way_back(state, newest) {
        Some(m) => format!(
            "the snapshot to restore is {} (taken {} by {}, schema {}): stop lxgate's units, then `lxgate snapshot restore {}`",
            m.id, m.taken_at, m.release, m.from, m.id
        ),
        None => format!(
            "no snapshot in {} gives back a schema this release knows; run the newer release",
            snapshot::dir(state).display()
        ),
    };
    anyhow::Error::new(e).context(hint)
}
