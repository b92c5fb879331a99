//! `lxgate recover`: move a legacy repo-local `data/` tree into the data root (SPEC §7).
//!
//! Operators read the journal to know what happened, so the log lines below are part
//! of the contract: `copying SRC -> DST`, `WARNING: destination already exists,
//! skipping: PATH`, `target env file already exists, leaving as source of truth: PATH`.
//!
//! Crash safety: every new file *and* every new directory subtree is assembled under a
//! temp name beside its final name (`.lxgate-recover-NAME.tmp`), made durable (a file
//! by its own fsync, a subtree by one syncfs of the target filesystem), then renamed.
//! A SIGKILL leaves only temp names, which the next run removes and rebuilds; an
//! existing final name is always complete, so "exists → skip" stays correct.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::durable::{self, sync_dir};
use crate::progress::{Progress, Total};

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
    let f = File::open(p).with_context(|| format!("opening {} to flush it", p.display()))?;
    rustix::fs::syncfs(&f).with_context(|| format!("flushing {} to disk", p.display()))
}

/// Start writing a finished file back now, without waiting: the disk works while the
/// next files are copied, and the later syncfs has little left to do.
/// The one unsafe call in lxgate: rustix has no sync_file_range, and the alternatives
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

/// Regular files, and their bytes, that a merge would copy (entries missing in the target).
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
        if fs::symlink_metadata(&d).is_ok() {
            continue;
        }
        let (files, bytes) = tree_size(&e.path());
        total.files += files;
        total.bytes = total.bytes.map(|b| b + bytes);
    }
    Ok(total)
}

/// Regular files under `p` and their bytes.
fn tree_size(p: &Path) -> (u64, u64) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| tree_size(&e.path()))
            .fold((0, 0), |(f, b), (f2, b2)| (f + f2, b + b2)),
        Ok(m) if m.is_file() => (1, m.len()),
        _ => (0, 0),
    }
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
    let result = merge_dir(o, &p, &o.source, &o.target, true, &mut s);
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
        let marker = serde_json::json!({
            "completed_at": chrono::Utc::now().to_rfc3339(),
            "source": o.source.display().to_string(),
            "files": s.files, "bytes": s.bytes, "dirs": s.dirs, "links": s.links,
        });
        write_atomic(
            &o.target.join(".migration-complete"),
            serde_json::to_string_pretty(&marker)?.as_bytes(),
            0o640,
        )?;
        let backup = PathBuf::from(format!("{}.migration-backup-{ts}", o.source.display()));
        fs::rename(&o.source, &backup)
            .with_context(|| format!("renaming the source to {}", backup.display()))?;
        println!("source renamed to {}", backup.display());
    }
    env_file(o, false)?;
    if o.mark_complete && s.errors.is_empty() {
        let logs = o.target.join("logs");
        fs::create_dir_all(&logs)?;
        write_atomic(
            &logs.join("data_recovery_complete"),
            format!("{}\n", chrono::Utc::now().to_rfc3339()).as_bytes(),
            0o640,
        )?;
    }
    Ok(s)
}

/// Entries of `src` missing under `dst` are copied; existing ones are skipped whole.
fn merge_dir(
    o: &Options,
    p: &Progress,
    src: &Path,
    dst: &Path,
    top: bool,
    s: &mut Summary,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        if fs::symlink_metadata(&to).is_ok() {
            p.suspend(|| {
                println!(
                    "WARNING: destination already exists, skipping: {}",
                    to.display()
                )
            });
            s.skipped.push(to.display().to_string());
            continue;
        }
        if o.dry_run {
            println!("would copy {} -> {}", from.display(), to.display());
            continue;
        }
        if top {
            p.suspend(|| println!("copying {} -> {}", from.display(), to.display()));
        }
        let tmp = temp_for(&to);
        if fs::symlink_metadata(&tmp).is_ok() {
            // Left by an interrupted run: rebuild it.
            let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
        }
        let copied = copy_new(o, p, &from, &tmp, s).and_then(|()| match e.file_type() {
            Ok(t) if t.is_dir() => syncfs(&tmp),
            _ => Ok(()),
        });
        match copied {
            Ok(()) => {
                fs::rename(&tmp, &to).with_context(|| format!("renaming into {}", to.display()))?;
                sync_dir(dst);
            }
            Err(err) => {
                let _ = fs::remove_dir_all(&tmp).or_else(|_| fs::remove_file(&tmp));
                p.suspend(|| eprintln!("ERROR: {}: {err:#}", from.display()));
                s.errors.push(format!("{}: {err:#}", from.display()));
            }
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
        // Regular files are copied by a few threads at once: each ends in an fsync, and
        // overlapping them is most of what keeps a durable copy near `cp -a` speed.
        let (files, rest): (Vec<_>, Vec<_>) = children
            .into_iter()
            .partition(|c| c.file_type().map(|t| t.is_file()).unwrap_or(false));
        let results = copy_files_parallel(o, p, &files, to);
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
        s.bytes += copy_file(o, p, from, to, Durability::Alone)?;
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

/// When a copied file's bytes are known to be on disk.
#[derive(Clone, Copy)]
enum Durability {
    /// Renamed into place by itself: fsynced here.
    Alone,
    /// Inside a temp subtree: flushed with the whole subtree before its rename.
    WithSubtree,
}

/// Content, mode, times, owner.
fn copy_file(o: &Options, p: &Progress, from: &Path, to: &Path, d: Durability) -> Result<u64> {
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
    match d {
        Durability::Alone => out.sync_all()?,
        Durability::WithSubtree => start_writeback(&out),
    }
    chown(o, to, false)?;
    p.add(1, n);
    Ok(n)
}

const COPY_THREADS: usize = 4;

fn copy_files_parallel(
    o: &Options,
    p: &Progress,
    files: &[fs::DirEntry],
    to: &Path,
) -> Vec<Result<u64>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<u64>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..COPY_THREADS.min(files.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = files.get(i) else { break };
                let r = copy_file(
                    o,
                    p,
                    &c.path(),
                    &to.join(c.file_name()),
                    Durability::WithSubtree,
                );
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

/// `.env.systemd` in the state root (the data root's parent): kept if present, else
/// written with the data-dir variables pointing at the target.
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
    let t = o.target.display();
    let text = format!(
        "LX_ANNOTATE_ENCRYPTED_DATA_DIR={t}\nLX_ANNOTATE_DATA_DIR={t}\nDATA_DIR={t}\nSTORAGE_DIR={t}/storage\n"
    );
    if dry {
        println!("would write env file {}", env.display());
        return Ok(());
    }
    write_atomic(&env, text.as_bytes(), 0o640)?;
    println!("wrote env file {}", env.display());
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
