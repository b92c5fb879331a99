//! The command line: one file per command, each with its typed `Args` and its `run`.

mod backup;
mod center;
mod completions;
mod config;
mod deploy;
mod dev;
mod doctor;
mod hub_export;
mod keys;
mod man;
mod migrate;
mod node;
mod openapi;
mod recover;
mod render;
mod restore;
mod sap_import;
mod serve;
mod smoke;
mod snapshot;
mod storage;
mod token;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lxgate::config::{Config, Env, FileConfig};

#[derive(Parser)]
#[command(
    name = "lxgate",
    version,
    about = "Runtime boundary for clinic patient media"
)]
pub struct Cli {
    /// Settings file (TOML). Missing file = error, never a silent default.
    #[arg(long, global = true, env = "LXGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP ingest, protected media, health (lxgate.service).
    Serve(serve::Args),
    /// Drop-folder watcher (lxgate-watcher.service).
    Watch(watch::Args),
    /// Apply pending database migrations (lxgate-migrate.service); a sealed snapshot of
    /// the database is taken first.
    Migrate(migrate::Args),
    /// Debian hosts: install a release, flip to it, check it, roll back on failure.
    Deploy(deploy::Args),
    /// The database snapshots taken before migrations: list, take, restore.
    Snapshot(snapshot::Args),
    /// Inspect the effective configuration.
    Config(config::Args),
    /// Manage centers.
    Center(center::Args),
    /// Manage API tokens.
    Token(token::Args),
    /// Local PostgreSQL + data tree + serve, for development.
    Dev(dev::Args),
    /// Write tmpfiles, unit and nginx files for a plain (non-NixOS) host.
    Render(render::Args),
    /// Check this host against the runtime contract.
    Doctor(doctor::Args),
    /// After a deploy: everything doctor checks, an age-sealed round trip through managed
    /// storage, and a static file fetched from nginx over TLS. Exit 1 on any failure.
    Smoke(smoke::Args),
    /// Convert SAP IS-H bundles into preanonymized pairs (lxgate-sap-import.service).
    SapImport(sap_import::Args),
    /// Merge (or fully move) a legacy data directory into the data root.
    Recover(recover::Args),
    /// Site nodes a hub accepts transfers from.
    Node(node::Args),
    /// Site → hub export: mark jobs, send what is marked (lxgate-hub-export.service).
    #[command(name = "hub-export")]
    HubExport(hub_export::Args),
    /// Managed storage against the UploadJob rows: audit, quarantine orphans.
    Storage(storage::Args),
    /// Master key handling (lxgate-keys.service, runs as root).
    Keys(keys::Args),
    /// Backups with restic: prepare (sealed dump + manifest), run, verify (a restore
    /// rehearsal).
    Backup(backup::Args),
    /// Restore a backup snapshot onto this host (units stopped, empty data root and
    /// database unless --merge).
    Restore(restore::Args),
    /// Shell completions on stdout (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Man pages, one per command, into a directory.
    Man(man::Args),
    /// The HTTP API's OpenAPI 3.1 description on stdout (as served at /api/openapi.json).
    Openapi(openapi::Args),
}

impl Cli {
    /// The log filter when `LXGATE_LOG` is unset: the watcher honours an lx-annotate env
    /// file's `WATCHER_LOG_LEVEL` (config resolution refuses a value it does not know).
    pub fn default_log_filter(&self) -> &'static str {
        match self.cmd {
            Cmd::Watch(_) => std::env::var("WATCHER_LOG_LEVEL")
                .ok()
                .and_then(|v| lxgate::config::watcher_log_filter(&v))
                .unwrap_or("info"),
            _ => "info",
        }
    }
}

/// What every command may need: where the settings come from, and the environment.
pub struct Context {
    config: Option<PathBuf>,
    env: Env,
}

impl Context {
    /// The resolved configuration (file, then environment).
    fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::resolve(self.config.as_deref(), &self.env)?)
    }

    /// The settings file alone, for doctor and smoke: they resolve it themselves so that
    /// a configuration error becomes a failed check, not an early exit.
    fn settings(&self) -> anyhow::Result<FileConfig> {
        Ok(FileConfig::load(self.config.as_deref())?)
    }

    /// The resolved configuration and a database connection.
    async fn connect(&self) -> anyhow::Result<(Config, tokio_postgres::Client)> {
        let cfg = self.load()?;
        let client = lxgate::db::connect(cfg.require_database_url()?).await?;
        Ok((cfg, client))
    }
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let ctx = Context {
            config: self.config,
            env: lxgate::config::process_env(),
        };
        match self.cmd {
            Cmd::Serve(a) => serve::run(a, &ctx).await,
            Cmd::Watch(a) => watch::run(a, &ctx).await,
            Cmd::Migrate(a) => migrate::run(a, &ctx).await,
            Cmd::Deploy(a) => deploy::run(a, &ctx),
            Cmd::Snapshot(a) => snapshot::run(a, &ctx).await,
            Cmd::Config(a) => config::run(a, &ctx),
            Cmd::Center(a) => center::run(a, &ctx).await,
            Cmd::Token(a) => token::run(a, &ctx).await,
            Cmd::Dev(a) => dev::run(a).await,
            Cmd::Render(a) => render::run(a, &ctx),
            Cmd::Doctor(a) => doctor::run(a, &ctx).await,
            Cmd::Smoke(a) => smoke::run(a, &ctx).await,
            Cmd::SapImport(a) => sap_import::run(a, &ctx),
            Cmd::Recover(a) => recover::run(a, &ctx),
            Cmd::Node(a) => node::run(a, &ctx).await,
            Cmd::HubExport(a) => hub_export::run(a, &ctx).await,
            Cmd::Storage(a) => storage::run(a, &ctx).await,
            Cmd::Keys(a) => keys::run(a, &ctx).await,
            Cmd::Backup(a) => backup::run(a, &ctx).await,
            Cmd::Restore(a) => restore::run(a, &ctx).await,
            Cmd::Completions(a) => completions::run(a),
            Cmd::Man(a) => man::run(a),
            Cmd::Openapi(a) => openapi::run(a),
        }
    }
}
