//! Progress of long operator work (recover, SAP import, and whatever else copies many
//! files or bytes; deploy, which goes through named steps): on a terminal, one bar on
//! stderr with bytes, files, rate and ETA (or the step under way); anywhere else (a
//! pipe, a file, the journal) no bar at all, and one summary line in the log when the
//! work is done. Safe to share between copy threads.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// What the work is measured by: the bar follows bytes when their total is known up
/// front, else files.
#[derive(Debug, Clone, Copy)]
pub struct Total {
    pub files: u64,
    pub bytes: Option<u64>,
}

pub struct Progress {
    what: String,
    bar: Option<ProgressBar>,
    by_bytes: bool,
    /// Counting named steps (`step`), not files.
    steps: bool,
    files: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    start: Instant,
}

/// What was done, for the caller's own summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub files: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Progress {
    /// Start measuring `what` (shown before the bar and in the summary line); a bar only
    /// when stderr is a terminal.
    pub fn start(what: impl Into<String>, total: Total) -> Progress {
        let what = what.into();
        let files = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let by_bytes = total.bytes.is_some();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.bytes.unwrap_or(total.files)),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(style(by_bytes, total.files, files.clone(), bytes.clone()));
            bar.set_prefix(what.clone());
            bar
        });
        Progress {
            what,
            bar,
            by_bytes,
            steps: false,
            files,
            bytes,
            start: Instant::now(),
        }
    }

    /// Counts, draws nothing and logs nothing (a dry run).
    pub fn hidden(what: impl Into<String>) -> Progress {
        Progress {
            what: what.into(),
            bar: None,
            by_bytes: false,
            steps: false,
            files: Arc::default(),
            bytes: Arc::default(),
            start: Instant::now(),
        }
    }

    /// Work measured in named steps, about `total` of them (a rollback adds some): the
    /// bar shows the step under way and the time spent.
    pub fn steps(what: impl Into<String>, total: u64) -> Progress {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.clone());
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        Progress {
            what,
            bar,
            by_bytes: false,
            steps: true,
            files: Arc::default(),
            bytes: Arc::default(),
            start: Instant::now(),
        }
    }

    /// The previous step is done and `name` begins.
    pub fn step(&self, name: &str) {
        let done = self.files.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            if done > 0 {
                bar.inc(1);
            }
            if bar.length().is_some_and(|len| bar.position() >= len) {
                bar.inc_length(1);
            }
            bar.set_message(name.to_string());
        }
        tracing::debug!(step = name, "{}", self.what);
    }

    /// `files` more files and `bytes` more bytes done.
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(if self.by_bytes { bytes } else { files });
        }
    }

    /// `files` and `bytes` done in all, for work measured from outside (what has
    /// arrived on disk) rather than counted as it goes.
    pub fn set(&self, files: u64, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(if self.by_bytes { bytes } else { files });
        }
    }

    /// Run `f` (which prints) with the bar, if any, lifted off the terminal and redrawn
    /// below what `f` printed.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Stop: the bar stays on the terminal in its final state; the log gets one line.
    pub fn finish(self) -> Done {
        self.finish_as("")
    }

    /// `finish`, with how the work ended (`deployed`, `rolled back`) in the summary.
    pub fn finish_as(self, outcome: &str) -> Done {
        if let Some(bar) = &self.bar {
            if self.steps {
                bar.set_position(bar.length().unwrap_or(0));
                bar.set_message(outcome.to_string());
            }
            bar.finish();
            // indicatif leaves the cursor on the bar's line: what is logged next starts
            // on a line of its own.
            eprintln!();
        }
        let done = Done {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed: self.start.elapsed(),
        };
        let secs = done.elapsed.as_secs_f64();
        if self.steps {
            tracing::info!(
                steps = done.files,
                secs = (secs * 10.0).round() / 10.0,
                "{}: {outcome}, {} steps in {secs:.1} s",
                self.what,
                done.files,
            );
            return done;
        }
        tracing::info!(
            files = done.files,
            bytes = done.bytes,
            secs = (secs * 10.0).round() / 10.0,
            "{}: {} files, {} in {secs:.1} s ({}/s)",
            self.what,
            done.files,
            HumanBytes(done.bytes),
            HumanBytes((done.bytes as f64 / secs.max(0.001)) as u64),
        );
        done
    }
}

fn style(
    by_bytes: bool,
    total_files: u64,
    files: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> ProgressStyle {
    let template = if by_bytes {
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {files} files {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{prefix} [{bar:30}] {files} files {written} {written_per_sec} ETA {eta}"
    };
    let start = Instant::now();
    let written = bytes.clone();
    ProgressStyle::with_template(template)
        .expect("the template is valid")
        .progress_chars("=> ")
        .with_key(
            "files",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/{total_files}", files.load(Ordering::Relaxed));
            },
        )
        .with_key(
            "written",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", HumanBytes(written.load(Ordering::Relaxed)));
            },
        )
        .with_key(
            "written_per_sec",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let rate = bytes.load(Ordering::Relaxed) as f64 / secs;
                let _ = write!(w, "{}/s", HumanBytes(rate as u64));
            },
        )
}

/// Regular files under `p` and their bytes (symlinks not followed): the size of work
/// before a copy, or what a copy by another program has written so far.
pub fn tree_size(p: &std::path::Path) -> (u64, u64) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| tree_size(&e.path()))
            .fold((0, 0), |(f, b), (f2, b2)| (f + f2, b + b2)),
        Ok(m) if m.is_file() => (1, m.len()),
        _ => (0, 0),
    }
}
