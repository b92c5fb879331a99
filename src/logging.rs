//! Where log lines go, filtered by `LXGATE_LOG` (default `info`, `EnvFilter` syntax):
//! - under systemd, when stderr is the journal stream systemd connected
//!   (`JOURNAL_STREAM` names its device and inode), to journald directly, one entry per
//!   event with its fields as journal fields: `JOB_ID`, `TRANSFER_KEY`, `BOUNDARY`,
//!   `OUTCOME`, `REQUEST_ID`, `ROUTE`, ..., so `journalctl JOB_ID=<id>` finds one job's
//!   story across the units;
//! - anywhere else (a terminal, a pipe, a file; or stderr redirected by the unit), plain
//!   text to stderr.
//!
//! Records from crates that log through `log` rather than `tracing` (rustls, ureq) are
//! bridged in: without the bridge a refused TLS handshake with the hub left nothing in
//! the journal but the final error.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The filter when `LXGATE_LOG` is unset: `info`, or what the command asked for
/// (`lxgate watch` honours an lx-annotate env file's `WATCHER_LOG_LEVEL`).
static DEFAULT_FILTER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Install the process-wide subscriber; call once, first thing in `main`. `default` is
/// the filter when `LXGATE_LOG` is unset.
pub fn init(default: &'static str) {
    let _ = DEFAULT_FILTER.set(default);
    if !stderr_is_the_journal(std::env::var("JOURNAL_STREAM").ok().as_deref()) {
        return init_with(std::io::stderr);
    }
    match tracing_journald::layer() {
        Ok(journal) => {
            // Field names as written in the code, upper-cased: no `F_` prefix, so the
            // names the runbook gives (`JOB_ID=`) are the ones to type.
            let journal = journal.with_field_prefix(None).with_priority_mappings(
                tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                },
            );
            tracing_subscriber::registry()
                .with(filter())
                .with(journal)
                .init();
        }
        Err(e) => {
            init_with(std::io::stderr);
            tracing::warn!(error = %e, "the journal socket does not answer; logging plain text to stderr instead");
        }
    }
}

/// As `init`'s plain text, writing to `writer` (tests capture the output this way).
pub fn init_with<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(writer)
        .with_ansi(false)
        .init();
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("LXGATE_LOG")
        .unwrap_or_else(|_| (*DEFAULT_FILTER.get().unwrap_or(&"info")).into())
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` for a unit whose stdout or stderr is
/// the journal; children inherit it even when their stderr goes elsewhere, so it counts
/// only if it names our stderr.
fn stderr_is_the_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)] // dev_t and ino_t are u64 on some targets only
    let (our_dev, our_ino) = (stderr.st_dev as u64, stderr.st_ino as u64);
    dev.parse::<u64>() == Ok(our_dev) && ino.parse::<u64>() == Ok(our_ino)
}
