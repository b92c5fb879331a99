//! `lxgate sap-import` (SPEC §6): SAP IS-H export bundles in `import/sap_import/`
//! become preanonymized `.txt` + `.json` pairs in `import/preanonymized_import/`,
//! which the watcher then ingests. docs/sap-import.md is the operator's reference.

pub mod bundle;
pub mod convert;
pub mod sample;
pub mod sidecar;
pub mod tables;
pub mod templates;
pub mod values;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::durable::sync_dir;
use crate::ingest::settle;
use crate::progress::{Progress, Total};
pub use bundle::Limits;
pub use convert::{Center, Pair, Plan};

#[derive(Debug, serde::Serialize)]
pub struct MatchedTable {
    pub file: String,
    pub table: &'static str,
    pub encoding: &'static str,
    pub rows: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct SkippedTable {
    pub file: String,
    pub reason: String,
    pub header: Vec<String>,
}

pub struct Conversion {
    /// The matched tables' rows, in the reference's file and row order.
    pub rows: Vec<tables::Row>,
    pub matched: Vec<MatchedTable>,
    pub skipped: Vec<SkippedTable>,
    pub others: Vec<String>,
}

/// Bytes of a bundle → its rows, or the reason it is refused. Pure: no filesystem.
/// `Plan::new(&conversion.rows)` then says which pairs they become.
pub fn read_bundle(bytes: &[u8], limits: Limits) -> Result<Conversion, String> {
    let contents = bundle::read(bytes, limits).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut matched = Vec::new();
    let mut skipped = Vec::new();
    for e in &contents.tables {
        match tables::parse(e)? {
            tables::Parsed::Table {
                document_type,
                encoding,
                rows: r,
            } => {
                matched.push(MatchedTable {
                    file: e.name.clone(),
                    table: document_type,
                    encoding,
                    rows: r.len(),
                });
                rows.extend(r);
            }
            tables::Parsed::Skipped { reason, header } => skipped.push(SkippedTable {
                file: e.name.clone(),
                reason,
                header,
            }),
        }
    }
    if matched.is_empty() {
        let expected = templates::TEMPLATES
            .iter()
            .map(|t| format!("{} ({})", t.document_type, t.required.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        let seen = if skipped.is_empty() {
            "no .txt tables at all".to_string()
        } else {
            skipped
                .iter()
                .map(|s| format!("{}: [{}] ({})", s.file, s.header.join(", "), s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(format!("no supported table in the bundle. Expected a header with the columns of one of: {expected}. Headers seen: {seen}"));
    }
    Ok(Conversion {
        rows,
        matched,
        skipped,
        others: contents.others,
    })
}

struct Dirs {
    input: PathBuf,
    output: PathBuf,
    processed: PathBuf,
    failed: PathBuf,
    manifests: PathBuf,
}

/// Dot-named temp files: the watcher and the .path unit ignore them while they grow.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    crate::durable::write_atomic(&dir.join(name), &temp_of(dir, name), bytes, None)
}

/// The temp name a file of ours grows under: dot-named, so the watcher and the .path unit
/// ignore it; a pair's (`.sap_ish_*`) tells a later run a crashed run's leftovers.
fn temp_of(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!(".{file}.tmp"))
}

/// A crashed run's pair temp files (sap-import runs one instance at a time).
fn remove_leftover_temps(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(".sap_ish_") && n.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Every pair of the bundle, all or nothing: each written to its temp names (built one at
/// a time, never all in memory), one flush of the filesystem for all of them (one journal
/// commit instead of two fsyncs per pair), then renamed sidecar first, carrier last — a
/// carrier without a sidecar is a valid drop of its own, so the watcher must never see
/// one alone — and the renames made durable by one directory sync. On any failure every
/// file of this bundle is removed and the zip stays to be retried.
fn write_pairs(
    out: &Path,
    plan: &Plan,
    stems: &[String],
    center: &Center,
    progress: &Progress,
) -> Result<()> {
    let files = |stem: &str| [format!("{stem}.json"), format!("{stem}.txt")];
    let remove_all = |upto: usize| {
        for stem in &stems[..upto] {
            for f in files(stem) {
                let _ = std::fs::remove_file(temp_of(out, &f));
                let _ = std::fs::remove_file(out.join(f));
            }
        }
    };
    let mut written = 0;
    let staged = (|| -> Result<(), String> {
        for (i, stem) in stems.iter().enumerate() {
            let p = plan.pair(i, center)?; // names were checked: cannot fail here
            written = i + 1;
            for (file, bytes) in files(stem)
                .iter()
                .zip([p.sidecar.as_bytes(), p.text.as_bytes()])
            {
                let temp = temp_of(out, file);
                let _ = std::fs::remove_file(&temp);
                std::fs::File::create_new(&temp)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
                    .map_err(|e| format!("writing {}: {e}", temp.display()))?;
            }
            progress.add(2, (p.text.len() + p.sidecar.len()) as u64);
        }
        crate::durable::syncfs(out).map_err(|e| format!("flushing {}: {e}", out.display()))?;
        for stem in stems {
            for file in files(stem) {
                std::fs::rename(temp_of(out, &file), out.join(&file))
                    .map_err(|e| format!("renaming {file} into place: {e}"))?;
            }
        }
        Ok(())
    })();
    match staged {
        Ok(()) => {
            sync_dir(out);
            Ok(())
        }
        Err(e) => {
            remove_all(written);
            sync_dir(out);
            anyhow::bail!("writing pairs failed: {e}; none of this bundle's pairs were kept")
        }
    }
}

/// Stems other bundles already produced (from their manifests): a stem of ours that
/// collides gets `__<first 8 hex of our zip's sha256>`. Our own earlier manifest is
/// ignored, so a rerun over the same zip yields the same names.
fn taken_by_others(manifests: &Path, own_sha: &str) -> BTreeSet<String> {
    let mut taken = BTreeSet::new();
    for e in std::fs::read_dir(manifests).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with(own_sha) {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(e.path()).unwrap_or_default(),
        ) {
            for s in v["generated"].as_array().into_iter().flatten() {
                if let Some(s) = s.as_str() {
                    taken.insert(s.to_string());
                }
            }
        }
    }
    taken
}

fn unique_dest(dir: &Path, name: &str, sha8: &str) -> PathBuf {
    let p = dir.join(name);
    if !p.exists() {
        return p;
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "zip"));
    dir.join(format!("{stem}-{sha8}.{ext}"))
}

fn process(path: &Path, d: &Dirs, limits: Limits, center: &Center) -> Result<()> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let sha8 = &sha[..8];
    let mut manifest = serde_json::json!({
        "zip": name, "sha256": sha, "at": chrono::Utc::now().to_rfc3339(),
    });
    let conv = read_bundle(&bytes, limits);
    let result: Result<Vec<String>, String> = match &conv {
        Err(reason) => Err(reason.clone()),
        Ok(conv) => {
            manifest["matched"] = serde_json::to_value(&conv.matched).unwrap_or_default();
            manifest["skipped"] = serde_json::to_value(&conv.skipped).unwrap_or_default();
            manifest["other_entries"] = serde_json::to_value(&conv.others).unwrap_or_default();
            let plan = Plan::new(&conv.rows);
            match plan.stems() {
                Err(reason) => Err(reason),
                Ok(stems) => {
                    let taken = taken_by_others(&d.manifests, &sha);
                    let stems: Vec<String> = stems
                        .into_iter()
                        .map(|s| {
                            if taken.contains(&s) {
                                format!("{s}__{sha8}")
                            } else {
                                s
                            }
                        })
                        .collect();
                    let progress = Progress::start(
                        format!("sap-import {name}"),
                        Total {
                            files: 2 * plan.len() as u64,
                            bytes: None,
                        },
                    );
                    // Trouble writing (disk full, permissions) is not the bundle's fault:
                    // the zip stays in place to be retried.
                    write_pairs(&d.output, &plan, &stems, center, &progress)?;
                    progress.finish();
                    Ok(stems)
                }
            }
        }
    };
    match result {
        Ok(stems) => {
            manifest["generated"] = serde_json::to_value(&stems)?;
            write_atomic(
                &d.manifests,
                &format!("{sha}.json"),
                serde_json::to_string_pretty(&manifest)?.as_bytes(),
            )?;
            let dest = unique_dest(&d.processed, &name, sha8);
            std::fs::rename(path, &dest)?;
            sync_dir(&d.processed);
            tracing::info!(boundary = "sap_import", zip = %name, pairs = stems.len(), outcome = "converted", "sap-import");
        }
        Err(reason) => {
            manifest["error"] = serde_json::Value::String(reason.clone());
            write_atomic(
                &d.manifests,
                &format!("{sha}.json"),
                serde_json::to_string_pretty(&manifest)?.as_bytes(),
            )?;
            let dest = unique_dest(&d.failed, &name, sha8);
            let reason_file = PathBuf::from(format!("{}.reason", dest.display()));
            std::fs::write(&reason_file, format!("{}\n", reason.replace('\n', " ")))?;
            std::fs::rename(path, &dest)?;
            sync_dir(&d.failed);
            tracing::warn!(boundary = "sap_import", zip = %name, outcome = "failed", reason = %reason, "sap-import");
        }
    }
    Ok(())
}

/// Complete `*.zip` files in `input`, oldest first: regular, non-empty, unchanged
/// (dev, inode, size, mtime) over the settle period.
fn stable_zips(input: &Path, settle: Duration) -> Vec<PathBuf> {
    let look = || -> Vec<(PathBuf, settle::FileIdentity)> {
        let mut v: Vec<_> = std::fs::read_dir(input)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') || !n.to_ascii_lowercase().ends_with(".zip") {
                    return None;
                }
                let m = std::fs::symlink_metadata(e.path()).ok()?;
                (m.is_file() && m.len() > 0).then(|| (e.path(), settle::identity(&m)))
            })
            .collect();
        v.sort_by_key(|(p, id)| (id.3, id.4, p.clone()));
        v
    };
    let first = look();
    std::thread::sleep(settle);
    let second = look();
    first
        .into_iter()
        .filter(|f| second.contains(f))
        .map(|(p, _)| p)
        .collect()
}

pub fn run(
    cfg: &Config,
    once: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
) -> Result<()> {
    let import = cfg.paths.import();
    let d = Dirs {
        input: input.unwrap_or_else(|| import.join("sap_import")),
        output: output.unwrap_or_else(|| import.join("preanonymized_import")),
        processed: import.join("sap_import_processed"),
        failed: import.join("sap_import_failed"),
        manifests: cfg.paths.logs().join("sap_import"),
    };
    for dir in [&d.output, &d.processed, &d.failed, &d.manifests] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    remove_leftover_temps(&d.output);
    let center_key = cfg
        .sap_import
        .center_key
        .clone()
        .or_else(|| cfg.server.default_center.clone())
        .context(
            "no center for SAP sidecars: set [sap_import] center_key or LX_ANNOTATE_DEFAULT_CENTER",
        )?;
    // Like the reference's `--center_name`: written only when set.
    let center_name = cfg.sap_import.center_name.clone().unwrap_or_default();
    let center = Center {
        key: &center_key,
        name: &center_name,
    };
    let limits = Limits::from_settings(&cfg.sap_import);
    let settle = Duration::from_millis(cfg.watcher.settle_ms);
    loop {
        let mut left = 0;
        for zip in stable_zips(&d.input, settle) {
            if let Err(e) = process(&zip, &d, limits, &center) {
                // I/O trouble (disk full, permissions): the zip stays and is retried.
                tracing::error!(zip = %zip.display(), error = %format!("{e:#}"), "sap-import: left in place, will retry");
                left += 1;
            }
        }
        if once {
            anyhow::ensure!(
                left == 0,
                "{left} bundle(s) could not be converted for lack of disk space or permissions and were left in {} to retry; the log above says why",
                d.input.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(cfg.watcher.rescan_secs.max(1)));
    }
}
