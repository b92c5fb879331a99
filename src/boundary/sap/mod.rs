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
pub use convert::{Center, Pair};

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
    pub pairs: Vec<Pair>,
    pub matched: Vec<MatchedTable>,
    pub skipped: Vec<SkippedTable>,
    pub others: Vec<String>,
}

/// Bytes of a bundle → pairs, or the reason it is refused. Pure: no filesystem.
pub fn convert_bundle(bytes: &[u8], limits: Limits, center: &Center) -> Result<Conversion, String> {
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
        pairs: convert::pairs(&rows, center)?,
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
    let temp = dir.join(format!(".{name}.tmp"));
    crate::durable::write_atomic(&dir.join(name), &temp, bytes, None)
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
    let result: Result<Vec<String>, String> =
        convert_bundle(&bytes, limits, center).and_then(|conv| {
            manifest["matched"] = serde_json::to_value(&conv.matched).unwrap_or_default();
            manifest["skipped"] = serde_json::to_value(&conv.skipped).unwrap_or_default();
            manifest["other_entries"] = serde_json::to_value(&conv.others).unwrap_or_default();
            let taken = taken_by_others(&d.manifests, &sha);
            let mut written: Vec<String> = Vec::new();
            let progress = Progress::start(
                format!("sap-import {name}"),
                Total {
                    files: 2 * conv.pairs.len() as u64,
                    bytes: None,
                },
            );
            for p in &conv.pairs {
                let stem = if taken.contains(&p.stem) {
                    format!("{}__{sha8}", p.stem)
                } else {
                    p.stem.clone()
                };
                // The sidecar first, the carrier last: a carrier without a sidecar is a
                // valid drop of its own, so the watcher must never see this one alone.
                let res = write_atomic(&d.output, &format!("{stem}.json"), p.sidecar.as_bytes())
                    .and_then(|_| {
                        write_atomic(&d.output, &format!("{stem}.txt"), p.text.as_bytes())
                    });
                written.push(stem);
                if let Err(e) = res {
                    for s in &written {
                        let _ = std::fs::remove_file(d.output.join(format!("{s}.json")));
                        let _ = std::fs::remove_file(d.output.join(format!("{s}.txt")));
                    }
                    return Err(format!(
                        "writing pairs failed: {e}; nothing was kept, the bundle can be retried"
                    ));
                }
                progress.add(2, (p.text.len() + p.sidecar.len()) as u64);
            }
            sync_dir(&d.output);
            progress.finish();
            Ok(written)
        });
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
        for zip in stable_zips(&d.input, settle) {
            if let Err(e) = process(&zip, &d, limits, &center) {
                // I/O trouble (disk full, permissions): the zip stays and is retried.
                tracing::error!(zip = %zip.display(), error = %format!("{e:#}"), "sap-import: left in place, will retry");
            }
        }
        if once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(cfg.watcher.rescan_secs.max(1)));
    }
}
