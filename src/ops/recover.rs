//! `lxgate recover`: move a legacy repo-local `data/` tree into the data root (SPEC §7).
//!
//! The merge is per file, as lx-annotate's `recover_runtime_data` does it: directories
//! that exist in the target are descended into (tmpfiles creates `storage/`, `import/`
//! and `logs/` before recovery runs, so skipping them would skip the data), every
//! missing entry is copied, and only an existing file is left alone and logged.
//!
//! Operators read the journal to know what happened, so the log lines below are part
//! of the contract: `copying SRC -> DST` (each new entry), `WARNING: destination
//! already exists, skipping: PATH` (each existing file), `target env file already
//! exists, leaving as source of truth: PATH`, `copied env file SRC -> DST`.
//!
//! Crash safety: every new file *and* every new directory subtree is assembled under a
//! temp name beside its final name (`.lxgate-recover-NAME.tmp`), made durable by one
//! syncfs of the target filesystem per batch, then renamed (and the renames made
//! durable by a second syncfs). A SIGKILL leaves only temp names, which the next run
//! removes and rebuilds; an existing final file is always complete, so "exists → skip"
//! stays correct, and an existing directory is simply descended into again.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::durable::{self, sync_dir};
use crate::progress::{tree_size, Progress, Total};

const TEMP_PREFIX: &str = ".lxgate-recover-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Merge,
    Full,
}

pub struct Options {
    pub mode: Mode,
    pub source: PathBuf,
    pub target: PathBuf,
    pub dry_run: bool,
    pub mark_complete: bool,
    /// (uid, gid) to give copied entries when running as root.
    pub owner: Option<(u32, u32)>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub links: u64,
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
}

fn temp_for(dst: &Path) -> PathBuf {
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    dst.with_file_name(format!("{TEMP_PREFIX}{name}.tmp"))
}

/// Everything written under a temp subtree becomes durable in one flush of its
/// filesystem before the subtree is renamed: one journal commit per top-level entry
/// instead of one per file, which is what lets a durable copy keep up with `cp -a`.
fn syncfs(p: &Path) -> Result<()> {
    crate::durable::syncfs(p).with_context(|| format!("flushing {} to disk", p.display()))
}

/// Start writing a finished file back now, without waiting: the disk works while the
/// next files are copied, and the later syncfs has little left to do.
/// Unsafe (like the SIGHUP disposition in ops::deploy): rustix has no sync_file_range, and the alternatives
/// are not the same request (fdatasync waits for the disk; fadvise(DONTNEED) also
/// drops the page cache).
#[allow(unsafe_code)]
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open descriptor borrowed for the duration of the call, and
    // sync_file_range takes no pointers; it is advisory and a failure changes nothing
    // we rely on (the later syncfs makes the data durable).
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Regular files, and their bytes, that a merge would copy: entries missing in the
/// target, looking inside directories that exist on both sides.
fn to_copy(src: &Path, dst: &Path) -> Result<Total> {
    let mut total = Total {
        files: 0,
        bytes: Some(0),
    };
    for e in
        fs::read_dir(src).with_context(|| format!("source {} is not readable", src.display()))?
    {
        let e = e?;
        let d = dst.join(e.file_name());
        let (files, bytes) = match fs::symlink_metadata(&d) {
            Ok(dm) if dm.is_dir() && e.file_type()?.is_dir() => {
                let t = to_copy(&e.path(), &d)?;
                (t.files, t.bytes.unwrap_or(0))
            }
            Ok(_) => (0, 0),
            Err(_) => tree_size(&e.path()),
        };
        total.files += files;
        total.bytes = total.bytes.map(|b| b + bytes);
    }
    Ok(total)
}

/// Free bytes on the filesystem that holds `p` (or its nearest existing ancestor).
pub fn free_bytes(p: &Path) -> Result<u64> {
    let mut at = p.to_path_buf();
    while !at.exists() {
        if !at.pop() {
            bail!("no existing ancestor of {}", p.display());
        }
    }
    let s = rustix::fs::statvfs(&at)?;
    Ok(s.f_bavail * s.f_frsize)
}

pub fn run(o: &Options) -> Result<Summary> {
    let src_meta = fs::metadata(&o.source)
        .with_context(|| format!("source {} is not readable", o.source.display()))?;
    if !src_meta.is_dir() {
        bail!("source {} is not a directory", o.source.display());
    }
    if o.mode == Mode::Full {
        if o.target.join(".migration-complete").exists() {
            println!(
                "full migration already completed into {} ({}); nothing to do",
                o.target.display(),
                o.target.join(".migration-complete").display()
            );
            return Ok(Summary::default());
        }
        let nonempty = fs::read_dir(&o.target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if nonempty {
            bail!("target {} is not empty: --full only copies into an empty data root; use --merge to add what is missing", o.target.display());
        }
    }
    // Preflight: refuse before copying anything.
    let total = to_copy(&o.source, &o.target)?;
    let need = total.bytes.unwrap_or(0);
    let required = need + need / 20 + 128 * 1024 * 1024;
    let free = free_bytes(&o.target)?;
    if free < required {
        bail!(
            "not enough space on the target: {free} bytes free, {required} needed (1.05 x {need} bytes to copy + 128 MiB); free space or grow the volume, then rerun"
        );
    }
    if !o.dry_run {
        fs::create_dir_all(&o.target)?;
    }
    let mut s = Summary::default();
    let p = if o.dry_run {
        Progress::hidden("recover")
    } else {
        Progress::start("recover", total)
    };
    let mut batch = Batch::default();
    let result = merge_dir(o, &p, &o.source, &o.target, &mut s, &mut batch)
        .and_then(|()| batch.flush(o, &p, &mut s));
    if let Err(e) = result {
        s.errors.push(format!("{e:#}"));
    }
    if !o.dry_run {
        p.finish();
    }
    if o.dry_run {
        env_file(o, true)?;
        return Ok(s);
    }
    if o.mode == Mode::Full {
        let ts = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        if !s.errors.is_empty() {
            let aside = PathBuf::from(format!("{}.failed-migration-{ts}", o.target.display()));
            fs::rename(&o.target, &aside)?;
            eprintln!(
                "full migration failed; partial target moved to {}; source left as it was",
                aside.display()
            );
            return Ok(s);
        }
        let backup = PathBuf::from(format!("{}.migration-backup-{ts}", o.source.display()));
        // The reference's marker (key=value lines), so either tool recognises the other's.
        let marker = format!(
            "source_backup={}\nsource_repo={}\ncompleted_at={}\n",
            backup.display(),
            legacy_repo(&o.source).display(),
            chrono::Utc::now().to_rfc3339(),
        );
        write_atomic(
            &o.target.join(".migration-complete"),
            marker.as_bytes(),
            0o640,
        )?;
        fs::rename(&o.source, &backup)
            .with_context(|| format!("renaming the source to {}", backup.display()))?;
        println!("source renamed to {}", backup.display());
    }
    env_file(o, false)?;
    if o.mark_complete && s.errors.is_empty() {
        let logs = o.target.join("logs");
        fs::create_dir_all(&logs)?;
        // key=value as lx-annotate's recover_runtime_data writes and reads it.
        write_atomic(
            &logs.join("data_recovery_complete"),
            format!("completed_at={}\n", chrono::Utc::now().to_rfc3339()).as_bytes(),
            0o640,
        )?;
    }
    Ok(s)
}

/// The legacy checkout the data tree came from (`<repo>/data`): where its env file is.
fn legacy_repo(source: &Path) -> &Path {
    source.parent().unwrap_or(Path::new("/"))
}

/// Copies waiting for one flush: regular files still to be written under their temp
/// names, and temp subtrees already written, all renamed after one syncfs.
#[derive(Default)]
struct Batch {
    files: Vec<(PathBuf, PathBuf)>,
    subtrees: Vec<(PathBuf, PathBuf)>,
    bytes: u64,
}

impl Batch {
    /// Bounds the temp names a crash can leave and the memory of the plan.
    const MAX_FILES: usize = 2048;
    const MAX_BYTES: u64 = 1 << 30;

    fn full(&self) -> bool {
        self.files.len() + self.subtrees.len() >= Self::MAX_FILES || self.bytes >= Self::MAX_BYTES
    }

    /// Write the files (4 threads), one syncfs for all of it, the renames, and one more
    /// syncfs so the new names are durable too: two flushes of the filesystem per batch
    /// instead of an fsync per file and directory.
    fn flush(&mut self, o: &Options, p: &Progress, s: &mut Summary) -> Result<()> {
        if self.files.is_empty() && self.subtrees.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut self.files);
        let subtrees = std::mem::take(&mut self.subtrees);
        self.bytes = 0;
        let jobs: Vec<(PathBuf, PathBuf)> = files
            .iter()
            .map(|(from, to)| (from.clone(), temp_for(to)))
            .collect();
        let results = copy_files_parallel(o, p, &jobs);
        syncfs(&o.target)?;
        for (((from, to), (_, tmp)), r) in files.iter().zip(&jobs).zip(results) {
            match r.and_then(|n| {
                fs::rename(tmp, to).with_context(|| format!("renaming into {}", to.display()))?;
                Ok(n)
            }) {
                Ok(n) => {
                    s.files += 1;
                    s.bytes += n;
                }
                Err(err) => {
                    let _ = fs::remove_file(tmp);
                    p.suspend(|| eprintln!("ERROR: {}: {err:#}", from.display()));
                    s.errors.push(format!("{}: {err:#}", from.display()));
                }
            }
        }
        for (tmp, to) in subtrees {
            fs::rename(&tmp, &to).with_context(|| format!("renaming into {}", to.display()))?;
        }
        syncfs(&o.target)
    }
}

/// Entries of `src` missing under `dst` are copied; directories on both sides are
/// merged the same way, one level down; any other existing entry is kept and logged.
fn merge_dir(
    o: &Options,
    p: &Progress,
    src: &Path,
    dst: &Path,
    s: &mut Summary,
    batch: &mut Batch,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    // One listing instead of a stat per source entry; a missing dst (dry run) is empty.
    let mut present = std::collections::HashSet::new();
    for e in fs::read_dir(dst).into_iter().flatten().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            // Left by an interrupted run: rebuilt below if its source is still there.
            if !o.dry_run {
                let p = e.path();
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
            continue;
        }
        present.insert(name);
    }
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        let ft = e.file_type()?;
        if present.contains(&name) {
            // symlink_metadata: a link in the target is never followed out of it.
            let both_dirs = ft.is_dir() && fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
            if both_dirs {
                if let Err(err) = merge_dir(o, p, &from, &to, s, batch) {
                    p.suspend(|| eprintln!("ERROR: {}: {err:#}", from.display()));
                    s.errors.push(format!("{}: {err:#}", from.display()));
                }
            } else {
                p.suspend(|| {
                    println!(
                        "WARNING: destination already exists, skipping: {}",
                        to.display()
                    )
                });
                s.skipped.push(to.display().to_string());
            }
            continue;
        }
        if o.dry_run {
            println!("would copy {} -> {}", from.display(), to.display());
            continue;
        }
        p.suspend(|| println!("copying {} -> {}", from.display(), to.display()));
        if ft.is_file() {
            batch.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            batch.files.push((from, to));
        } else {
            let tmp = temp_for(&to);
            match copy_new(o, p, &from, &tmp, s) {
                Ok(()) => batch.subtrees.push((tmp, to)),
                Err(err) => {
                    let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
                    p.suspend(|| eprintln!("ERROR: {}: {err:#}", from.display()));
                    s.errors.push(format!("{}: {err:#}", from.display()));
                }
            }
        }
        if batch.full() {
            batch.flush(o, p, s)?;
        }
    }
    Ok(())
}

/// Copy `from` (not followed if a link) to the new path `to`. A directory's failing
/// children are reported and skipped; the directory itself still lands.
fn copy_new(o: &Options, p: &Progress, from: &Path, to: &Path, s: &mut Summary) -> Result<()> {
    let m = fs::symlink_metadata(from)?;
    let ft = m.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from)?;
        std::os::unix::fs::symlink(&target, to)?;
        set_link_mtime(to, &m)?;
        chown(o, to, true)?;
        s.links += 1;
    } else if ft.is_dir() {
        fs::create_dir(to)?;
        let mut children: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        let (files, rest): (Vec<_>, Vec<_>) = children
            .into_iter()
            .partition(|c| c.file_type().map(|t| t.is_file()).unwrap_or(false));
        let jobs: Vec<(PathBuf, PathBuf)> = files
            .iter()
            .map(|c| (c.path(), to.join(c.file_name())))
            .collect();
        let results = copy_files_parallel(o, p, &jobs);
        for c in rest {
            let dest = to.join(c.file_name());
            let r = copy_new(o, p, &c.path(), &dest, s);
            note_child(s, p, &c.path(), &dest, r);
        }
        for (c, r) in files.iter().zip(results) {
            let dest = to.join(c.file_name());
            match r {
                Ok(n) => {
                    s.files += 1;
                    s.bytes += n;
                }
                Err(e) => note_child(s, p, &c.path(), &dest, Err(e)),
            }
        }
        fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        chown(o, to, false)?;
        let d = File::open(to)?;
        d.set_times(
            FileTimes::new()
                .set_modified(m.modified()?)
                .set_accessed(m.accessed()?),
        )?;
        s.dirs += 1;
    } else if ft.is_file() {
        s.bytes += copy_file(o, p, from, to)?;
        s.files += 1;
    } else {
        bail!("not a regular file, directory or symlink (FIFO, socket or device): not copied; move it by hand if it matters");
    }
    Ok(())
}

/// A failed child is reported and removed; its directory still lands.
fn note_child(s: &mut Summary, p: &Progress, from: &Path, dest: &Path, r: Result<()>) {
    if let Err(err) = r {
        let _ = fs::remove_file(dest);
        p.suspend(|| eprintln!("ERROR: {}: {err:#}", from.display()));
        s.errors.push(format!("{}: {err:#}", from.display()));
    }
}

/// Content, mode, times, owner. Durable only with the batch's syncfs, which comes
/// before the file gets its final name.
fn copy_file(o: &Options, p: &Progress, from: &Path, to: &Path) -> Result<u64> {
    let m = fs::symlink_metadata(from)?;
    let mut input = File::open(from)?;
    let mut out = File::create_new(to)?;
    let n = std::io::copy(&mut input, &mut out)?;
    out.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
    out.set_times(
        FileTimes::new()
            .set_modified(m.modified()?)
            .set_accessed(m.accessed()?),
    )?;
    start_writeback(&out);
    chown(o, to, false)?;
    p.add(1, n);
    Ok(n)
}

const COPY_THREADS: usize = 4;

/// `(from, to)` pairs copied by a few threads at once: overlapping the reads, writes
/// and writeback of many small files is most of what keeps a durable copy near `cp -a`.
fn copy_files_parallel(o: &Options, p: &Progress, jobs: &[(PathBuf, PathBuf)]) -> Vec<Result<u64>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<u64>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..COPY_THREADS.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((from, to)) = jobs.get(i) else { break };
                let r = copy_file(o, p, from, to);
                results.lock().expect("no panics while held")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("threads joined")
        .into_iter()
        .map(|r| r.expect("every index visited"))
        .collect()
}

fn chown(o: &Options, p: &Path, link: bool) -> Result<()> {
    if let Some((uid, gid)) = o.owner {
        if link {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        } else {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

fn set_link_mtime(p: &Path, m: &fs::Metadata) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    durable::write_atomic(path, &temp_for(path), bytes, Some(mode))?;
    sync_dir(path.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// The path keys lx-annotate's migration rewrites to the new data root; the rest of a
/// legacy env file (database, secrets, role) is carried over as it was.
pub const ENV_PATH_KEYS: &[&str] = &[
    "LX_ANNOTATE_ENCRYPTED_DATA_DIR",
    "DATA_DIR",
    "LX_ANNOTATE_DATA_DIR",
    "STORAGE_DIR",
    "IO_DIR",
];

/// The legacy env file's text with every path key pointing at `target` (a key it lacks
/// is appended), as lx-annotate's migration renders it.
pub fn rewrite_env(legacy: &str, target: &Path) -> String {
    let t = target.display();
    let mut seen = Vec::new();
    let mut out: Vec<String> = legacy
        .lines()
        .map(|line| match line.split_once('=') {
            Some((k, _)) if ENV_PATH_KEYS.contains(&k) => {
                seen.push(k);
                format!("{k}={t}")
            }
            _ => line.to_string(),
        })
        .collect();
    out.extend(
        ENV_PATH_KEYS
            .iter()
            .filter(|k| !seen.contains(k))
            .map(|k| format!("{k}={t}")),
    );
    out.join("\n") + "\n"
}

/// `.env.systemd` in the state root (the data root's parent): kept if present; else the
/// legacy checkout's `.env.systemd` carried over with its paths rewritten, or, without
/// one, only the path keys.
fn env_file(o: &Options, dry: bool) -> Result<()> {
    let state = o.target.parent().unwrap_or(Path::new("/"));
    let env = state.join(".env.systemd");
    if env.exists() {
        println!(
            "target env file already exists, leaving as source of truth: {}",
            env.display()
        );
        return Ok(());
    }
    let legacy = legacy_repo(&o.source).join(".env.systemd");
    let text = match fs::read_to_string(&legacy) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading the legacy env file {}; make it readable to the recovery, or write {} yourself",
                    legacy.display(),
                    env.display()
                )
            })
        }
    };
    if dry {
        match &text {
            Some(_) => println!(
                "would copy env file {} -> {}",
                legacy.display(),
                env.display()
            ),
            None => println!("would write env file {}", env.display()),
        }
        return Ok(());
    }
    let rendered = rewrite_env(text.as_deref().unwrap_or(""), &o.target);
    // The legacy file can hold the database password: 0640, as the unit's group reads it.
    write_atomic(&env, rendered.as_bytes(), 0o640)?;
    chown(o, &env, false)?;
    match text {
        Some(_) => println!("copied env file {} -> {}", legacy.display(), env.display()),
        None => {
            println!("source env file does not exist: {}", legacy.display());
            println!("created minimal env file at: {}", env.display());
        }
    }
    Ok(())
}

pub fn print_summary(s: &Summary) {
    println!(
        "recovery summary: copied {} files ({} bytes), {} directories, {} symlinks; skipped {} existing paths; {} errors",
        s.files, s.bytes, s.dirs, s.links, s.skipped.len(), s.errors.len()
    );
}

/// The service account's (uid, gid) when running as root; None otherwise.
pub fn service_owner(cfg: &crate::config::Config) -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let acc = crate::ops::doctor::Accounts::load(Path::new("/"));
    Some((acc.uid(&cfg.host.user)?, acc.gid(&cfg.host.group)?))
}
