//! Where log lines go: stderr (journald under systemd), filtered by `LXGATE_LOG`
//! (default `info`, `EnvFilter` syntax). Records from crates that log through `log`
//! rather than `tracing` (rustls, ureq) are bridged in: without the bridge a refused TLS
//! handshake with the hub left nothing in the journal but the final error.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Install the process-wide subscriber; call once, first thing in `main`.
pub fn init() {
    init_with(std::io::stderr);
}

/// As `init`, writing to `writer` (tests capture the output this way).
pub fn init_with<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("LXGATE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(writer)
        .with_ansi(false)
        .init();
}
