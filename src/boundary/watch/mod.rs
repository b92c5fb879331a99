//! `lxgate watch`: the drop-folder boundary (SPEC §4, §5). A second adapter over the
//! ingest core: it decides *when* a file is complete and *whether* it is acceptable;
//! the core stores it. The source is removed only after the core committed its job.

mod folder;
mod quarantine;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::ingest::{self, Boundary, IngestError, Kind, NewJob, Storage};
pub use folder::{classify, Entry, Folder, FOLDERS};

use crate::ingest::settle::{identity, FileIdentity as Identity};

struct Seen {
    id: Identity,
    since: Instant,
    first: Instant,
}

pub struct Watcher {
    cfg: Arc<Config>,
    pool: Pool,
    storage: Storage,
    seen: HashMap<PathBuf, Seen>,
    sem: Arc<Semaphore>,
}

enum Work {
    Ingest {
        folder: &'static Folder,
        carrier: PathBuf,
        sidecar: Option<PathBuf>,
    },
    Quarantine {
        files: Vec<PathBuf>,
        kind: Kind,
        reason: String,
    },
}

impl Watcher {
    pub fn new(cfg: Config) -> Result<Watcher> {
        let url = cfg.require_database_url()?.to_string();
        let pool = crate::db::pool(&url, cfg.watcher.concurrency + 2)?;
        let storage = Storage::from_config(&cfg);
        storage.prepare()?;
        std::fs::create_dir_all(cfg.paths.quarantine())?;
        let sem = Arc::new(Semaphore::new(cfg.watcher.concurrency));
        Ok(Watcher {
            cfg: Arc::new(cfg),
            pool,
            storage,
            seen: HashMap::new(),
            sem,
        })
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(self.cfg.watcher.settle_ms)
    }

    /// The wait before a settling file is looked at again.
    fn poll(&self) -> Duration {
        match self.cfg.watcher.poll_ms {
            Some(ms) => Duration::from_millis(ms),
            None => self.settle() / 2 + Duration::from_millis(10),
        }
    }

    /// One pass over every watched folder: returns how many files are still waiting,
    /// as (not yet settled, half of a pair within its timeout).
    pub async fn scan(&mut self) -> (usize, usize) {
        let now = Instant::now();
        let mut work = Vec::new();
        let mut waiting = 0;
        let mut lone_halves = 0;
        let mut present = std::collections::HashSet::new();
        for folder in FOLDERS {
            let dir = self.cfg.paths.import().join(folder.name);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                tracing::error!(dir = %dir.display(), "watched folder missing: run systemd-tmpfiles --create (lxgate doctor names it)");
                continue;
            };
            let mut stable_pairs: HashMap<String, (Option<PathBuf>, Vec<PathBuf>)> = HashMap::new();
            // A burst of 100k drops is worked off in slices of `max_per_scan`, so memory
            // does not grow with the burst; what is left counts as still waiting.
            for (considered, e) in rd.flatten().enumerate() {
                if considered == self.cfg.watcher.max_per_scan {
                    waiting += 1;
                    break;
                }
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                match classify(folder, &name, &meta) {
                    Entry::Ignored => continue,
                    Entry::Reject(reason) => {
                        work.push(Work::Quarantine {
                            files: vec![path],
                            kind: folder.kind,
                            reason,
                        });
                        continue;
                    }
                    Entry::Candidate { is_sidecar, stem } => {
                        present.insert(path.clone());
                        let id = identity(&meta);
                        let seen = self.seen.entry(path.clone()).or_insert(Seen {
                            id,
                            since: now,
                            first: now,
                        });
                        if seen.id != id {
                            seen.id = id;
                            seen.since = now;
                        }
                        let stable =
                            meta.size() > 0 && now.duration_since(seen.since) >= self.settle();
                        if !stable {
                            waiting += 1;
                            continue;
                        }
                        if !folder.paired {
                            work.push(Work::Ingest {
                                folder,
                                carrier: path,
                                sidecar: None,
                            });
                            continue;
                        }
                        let slot = stable_pairs.entry(stem).or_default();
                        if is_sidecar {
                            slot.1.push(path);
                        } else {
                            slot.0 = Some(path);
                        }
                    }
                }
            }
            let timeout = Duration::from_secs(self.cfg.watcher.pair_timeout_secs);
            for (stem, (carrier, mut sidecars)) in stable_pairs {
                sidecars.sort_by_key(|p| sidecar_rank(p));
                match (carrier, sidecars.len()) {
                    (Some(c), 0) => {
                        // The sidecar is optional (as in endoreg-db), but one that exists
                        // and is still settling, or lies beyond this scan's slice, is
                        // waited for: a carrier must never be stored without it.
                        if sidecar_on_disk(&dir, &stem) {
                            lone_halves += 1;
                            continue;
                        }
                        work.push(Work::Ingest {
                            folder,
                            carrier: c,
                            sidecar: None,
                        });
                    }
                    (Some(c), 1) => work.push(Work::Ingest {
                        folder,
                        carrier: c,
                        sidecar: sidecars.pop(),
                    }),
                    (Some(c), _) => {
                        let listed = sidecars
                            .iter()
                            .filter_map(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(", ");
                        let reason = format!(
                            "more than one sidecar for the carrier ({listed}): keep one and drop the pair again"
                        );
                        let mut files = vec![c];
                        files.extend(sidecars);
                        work.push(Work::Quarantine {
                            files,
                            kind: folder.kind,
                            reason,
                        });
                    }
                    (None, _) => {
                        let half = sidecars.swap_remove(0);
                        let first = self.seen.get(&half).map(|s| s.first).unwrap_or(now);
                        if now.duration_since(first) < timeout {
                            lone_halves += 1;
                            continue;
                        }
                        let name = half
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned();
                        let reason = format!(
                            "sidecar {name} waited {}s for its carrier ({stem}.txt, {stem}.pdf or {stem}.mp4); drop the carrier, then the sidecar",
                            timeout.as_secs()
                        );
                        work.push(Work::Quarantine {
                            files: vec![half],
                            kind: folder.kind,
                            reason,
                        });
                    }
                }
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        self.run_work(work).await;
        (waiting, lone_halves)
    }

    async fn run_work(&mut self, work: Vec<Work>) {
        let mut set = tokio::task::JoinSet::new();
        for w in work {
            let permit = self
                .sem
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let (cfg, pool, storage) = (self.cfg.clone(), self.pool.clone(), self.storage.clone());
            set.spawn(async move {
                let _permit = permit;
                match w {
                    Work::Ingest {
                        folder,
                        carrier,
                        sidecar,
                    } => ingest_one(&cfg, &pool, &storage, folder, carrier, sidecar).await,
                    Work::Quarantine {
                        files,
                        kind,
                        reason,
                    } => {
                        quarantine::put(&cfg, &pool, &files, kind, None, &reason).await;
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }
}

async fn ingest_one(
    cfg: &Config,
    pool: &Pool,
    storage: &Storage,
    folder: &'static Folder,
    carrier: PathBuf,
    sidecar: Option<PathBuf>,
) {
    let name = carrier
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut files = vec![carrier.clone()];
    files.extend(sidecar.clone());
    let parsed = match &sidecar {
        None => None,
        Some(s) => match crate::ingest::sidecar::load(s) {
            Ok(v) => Some(v),
            Err(reason) => {
                quarantine::put(cfg, pool, &files, folder.kind, None, &reason).await;
                return;
            }
        },
    };
    let declared = |k: &str| parsed.as_ref().and_then(|p| p.text(k)).map(str::to_string);
    let center_id = match pool.get().await {
        Ok(c) => match drop_center(
            &c,
            declared("center_key").as_deref(),
            declared("center_name").as_deref(),
            cfg.server.default_center.as_deref(),
        )
        .await
        {
            Ok(DropCenter::Id(id)) => id,
            Ok(DropCenter::Refused(reason)) => {
                let reason = format!("{reason}; then drop the files again");
                quarantine::put(cfg, pool, &files, folder.kind, None, &reason).await;
                return;
            }
            Ok(DropCenter::NoneConfigured) => {
                return tracing::error!(file = %carrier.display(), "no center: the sidecar names none and LX_ANNOTATE_DEFAULT_CENTER is unset; left in place");
            }
            Err(e) => return tracing::warn!(error = %e, "center lookup failed; retrying later"),
        },
        Err(e) => return tracing::warn!(error = %e, "database unavailable; retrying later"),
    };
    let kept = storage.for_kind(folder.kind);
    let staged = {
        let storage = kept.clone();
        let carrier = carrier.clone();
        let sidecar = sidecar.clone();
        // The sidecar is an object of its own, kept like its carrier.
        tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let side = match &sidecar {
                Some(s) => Some(ingest::stream::stage_file(&storage, s)?.0),
                None => None,
            };
            let (staged, id) = ingest::stream::stage_file(&storage, &carrier)?;
            Ok((staged, id, side))
        })
        .await
    };
    let (staged, id, side) = match staged {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return tracing::warn!(file = %carrier.display(), error = %e, "not ingested yet; retrying later")
        }
        Err(e) => return tracing::error!(error = %e, "staging task failed"),
    };
    let job = NewJob {
        boundary: Boundary::Watcher,
        source_system: "watcher".into(),
        center_id,
        original_name: name.clone(),
        kind: folder.kind,
        idempotency_key: Some(format!("{}:{}:{}", carrier.display(), id.3, id.2)),
        metadata_hash: parsed.as_ref().map(|p| p.sha256.clone()),
        provenance: serde_json::json!({
            "boundary": "watcher",
            "folder": folder.name,
            "source_path": carrier.display().to_string(),
            "sidecar_file": sidecar.as_ref().and_then(|s| s.file_name()).map(|n| n.to_string_lossy().into_owned()),
            "sidecar": parsed.as_ref().map(|p| shown_sidecar(&p.value, kept.at_rest())),
            "sidecar_unknown_keys": parsed.as_ref().map(|p| &p.unknown_keys),
        }),
    };
    match ingest::commit_pair(pool, storage, staged, side, job).await {
        Ok(outcome) => {
            // Committed: now, and only now, the drop may leave the import folder.
            for f in &files {
                if let Err(e) = std::fs::remove_file(f) {
                    tracing::warn!(file = %f.display(), error = %e, "stored, but the source could not be removed");
                }
            }
            if let Some(dir) = carrier.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            let outcome_s = if outcome.is_dedupe() {
                "dedupe"
            } else {
                "accepted"
            };
            tracing::info!(boundary = "watcher", file = %carrier.display(), outcome = outcome_s, job_id = %outcome.job().id, sha256 = outcome.job().content_hash.as_deref().unwrap_or(""), "watcher");
        }
        Err(IngestError::Empty) => {}
        Err(e) if e.is_retryable() => {
            tracing::warn!(file = %carrier.display(), error = %e, "not ingested; left in place, retrying later")
        }
        Err(e) => tracing::error!(file = %carrier.display(), error = %e, "ingest failed"),
    }
}

/// What of a sidecar the job's provenance (plain in the database) shows: all of it when
/// preanonymized pairs are kept plain; when they are sealed, only its keys and the
/// fields that identify no patient (its text and identifiers stay in the sealed object).
fn shown_sidecar(
    v: &serde_json::Value,
    at_rest: Option<ingest::at_rest::AtRest>,
) -> serde_json::Value {
    if at_rest != Some(ingest::at_rest::AtRest::Sealed) {
        return v.clone();
    }
    let keys: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let mut shown = serde_json::json!({ "keys": keys, "sealed": true });
    for k in [
        "center_key",
        "center_name",
        "source_system",
        "source_document_type",
    ] {
        if let Some(x) = v.get(k) {
            shown[k] = x.clone();
        }
    }
    shown
}

/// endoreg-db's order of sidecar suffixes: `.json`, `.yaml`, `.yml`.
fn sidecar_rank(p: &std::path::Path) -> usize {
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    crate::ingest::sidecar::SIDECAR_SUFFIXES
        .iter()
        .position(|s| *s == ext)
        .unwrap_or(usize::MAX)
}

/// Whether a sidecar for `stem` exists in `dir`, settled or not.
fn sidecar_on_disk(dir: &std::path::Path, stem: &str) -> bool {
    crate::ingest::sidecar::SIDECAR_SUFFIXES.iter().any(|x| {
        [x.to_string(), x.to_ascii_uppercase()]
            .iter()
            .any(|x| std::fs::symlink_metadata(dir.join(format!("{stem}.{x}"))).is_ok())
    })
}

enum DropCenter {
    Id(i64),
    Refused(String),
    NoneConfigured,
}

/// The center of a drop: the one its sidecar declares, else the default center (a key,
/// else a name, as endoreg-db's `resolve_local_center` reads `LX_ANNOTATE_DEFAULT_CENTER`).
async fn drop_center(
    c: &tokio_postgres::Client,
    key: Option<&str>,
    name: Option<&str>,
    default: Option<&str>,
) -> Result<DropCenter, crate::access::tokens::AuthError> {
    use crate::access::tokens::{self, CenterMatch};
    match tokens::declared_center(c, key, name).await? {
        Ok(Some(id)) => return Ok(DropCenter::Id(id)),
        Err(reason) => return Ok(DropCenter::Refused(reason)),
        Ok(None) => {}
    }
    let Some(default) = default else {
        return Ok(DropCenter::NoneConfigured);
    };
    let m = tokens::center_by_key_or_name(c, default).await?;
    Ok(match (&m, tokens::default_center_problem(default, &m)) {
        (CenterMatch::Found(id), _) => DropCenter::Id(*id),
        (_, Some(reason)) => DropCenter::Refused(reason),
        (_, None) => DropCenter::NoneConfigured,
    })
}

/// Run until SIGTERM (or, with `once`, until nothing is left but files still waiting
/// for a pair).
pub async fn run(cfg: Config, once: bool) -> Result<()> {
    let rescan = Duration::from_secs(cfg.watcher.rescan_secs.max(1));
    let dirs: Vec<PathBuf> = FOLDERS
        .iter()
        .map(|f| cfg.paths.import().join(f.name))
        .collect();
    let state = cfg.paths.state.clone();
    let mut w = Watcher::new(cfg)?;
    if once {
        if let Some(window) = crate::ingest::pause::current(&state) {
            anyhow::bail!(
                "ingest is paused since {} ({}: {}); drops stay in place: run again when the deploy is over",
                window.since, window.by, window.reason
            );
        }
        loop {
            // Decided from this scan's own classification: files that were still
            // settling when it looked are looked at again, however long the work took.
            let (unsettled, _lone_halves) = w.scan().await;
            if unsettled == 0 {
                return Ok(());
            }
            tokio::time::sleep(w.poll()).await;
        }
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let _guard = {
        use notify::Watcher as _;
        let wake = wake.clone();
        let mut nw = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            wake.notify_one()
        })?;
        for d in &dirs {
            if let Err(e) = nw.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::error!(dir = %d.display(), error = %e, "cannot watch; relying on periodic rescans");
            }
        }
        nw
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    crate::systemd::spawn_watchdog();
    // Type=notify: ready once the folders are watched, as the first scan starts.
    crate::systemd::ready();
    let mut paused = false;
    loop {
        // A deploy window: drops stay where they are until it closes. The marker lies
        // outside the watched folders, so its removal wakes nothing; poll it.
        if crate::ingest::pause::is_paused(&state) {
            if !paused {
                tracing::warn!("ingest paused for a deploy: drops stay in place until it is over");
                paused = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = term.recv() => return Ok(()),
            }
        }
        if paused {
            tracing::info!("deploy over: ingesting drops again");
            paused = false;
        }
        let (unsettled, lone_halves) = w.scan().await;
        let next = if unsettled + lone_halves > 0 {
            w.poll()
        } else {
            rescan
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
            _ = term.recv() => return Ok(()),
        }
    }
}
