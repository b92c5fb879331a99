//! Argument parsing and dispatch only; the logic lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lxgate::config::{self, Config, FileConfig};

#[derive(Parser)]
#[command(
    name = "lxgate",
    version,
    about = "Runtime boundary for clinic patient media"
)]
struct Cli {
    /// Settings file (TOML). Missing file = error, never a silent default.
    #[arg(long, global = true, env = "LXGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP ingest, protected media, health (lxgate.service).
    Serve,
    /// Drop-folder watcher (lxgate-watcher.service).
    Watch {
        /// Ingest every complete file, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Apply pending database migrations (lxgate-migrate.service).
    Migrate {
        /// List applied and pending migrations instead.
        #[arg(long)]
        status: bool,
    },
    /// Inspect the effective configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Manage centers.
    Center {
        #[command(subcommand)]
        cmd: CenterCmd,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Local PostgreSQL + data tree + serve, for development.
    Dev {
        #[arg(long, default_value = ".lxgate-dev")]
        state: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Write tmpfiles, unit and nginx files for a plain (non-NixOS) host.
    Render {
        /// all | tmpfiles | systemd | nginx | inputs
        what: String,
        /// Output directory; without it the files go to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Absolute path of the lxgate binary the units run.
        #[arg(long)]
        bin: Option<String>,
    },
    /// Check this host against the runtime contract.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Check a tree under this prefix instead of / (tests, images).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// After a deploy: everything doctor checks, an age-sealed round trip through managed
    /// storage, and a static file fetched from nginx over TLS. Exit 1 on any failure.
    Smoke {
        #[arg(long)]
        json: bool,
        /// CA bundle that must verify nginx's certificate (default: the system's).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// nginx's TLS port on this host.
        #[arg(long, default_value_t = 443)]
        port: u16,
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Convert SAP IS-H bundles into preanonymized pairs (lxgate-sap-import.service).
    SapImport {
        /// Convert what is there, then exit (the .path unit runs this).
        #[arg(long)]
        once: bool,
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge (or fully move) a legacy data directory into the data root.
    Recover {
        /// Copy what is missing; keep what exists.
        #[arg(long, conflicts_with = "full")]
        merge: bool,
        /// Target must be empty; mark it complete and rename the source to a backup.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        from: PathBuf,
        /// Data root to fill (default: the configured one).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Print what would be copied or skipped; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write <data root>/logs/data_recovery_complete when done (the unit does).
        #[arg(long)]
        mark_complete: bool,
    },
    /// Site nodes a hub accepts transfers from.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Site → hub export: mark jobs, send what is marked (lxgate-hub-export.service).
    #[command(name = "hub-export")]
    HubExport {
        #[command(subcommand)]
        cmd: HubExportCmd,
    },
    /// Managed storage against the UploadJob rows: audit, quarantine orphans.
    Storage {
        #[command(subcommand)]
        cmd: StorageCmd,
    },
    /// Master key handling (lxgate-keys.service, runs as root).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Register (or re-key) a site node owned by a center; prints its secret once.
    Add {
        key: String,
        #[arg(long)]
        center: String,
        /// Pin the node's client certificate (SHA-1 fingerprint, as nginx reports it).
        #[arg(long)]
        cert_fingerprint: Option<String>,
    },
    /// Forget a site node: its transfers stay, new requests are refused.
    Remove { key: String },
}

#[derive(Subcommand)]
enum HubExportCmd {
    /// Mark upload jobs for export. Marking states that their media is anonymized and
    /// processed: lxgate sends what it is told to and never decides that itself.
    Mark {
        #[arg(required = true)]
        jobs: Vec<uuid::Uuid>,
        /// Who marks (kept with the mark).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Send every pending mark once; exit 1 when any is left failed or retrying.
    Run,
    /// Marks and how far each got.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put failed exports back in the queue once their cause is fixed.
    Retry,
}

#[derive(Subcommand)]
enum StorageCmd {
    /// Report orphan objects (no job row), missing objects and size mismatches; exit 1
    /// when an object is missing or damaged.
    Audit {
        #[arg(long)]
        json: bool,
        /// Also re-hash every referenced object (reads all of storage).
        #[arg(long)]
        verify: bool,
    },
    /// Move orphan objects into quarantine/orphaned-objects/ with a .reason file.
    QuarantineOrphans {
        /// Leave orphans younger than this many seconds (an ingest may be recording them).
        #[arg(long, default_value_t = 3600)]
        older_than: u64,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective config (secrets redacted) or the error.
    Check,
}

#[derive(Subcommand)]
enum CenterCmd {
    Add {
        key: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Prints the token once on stdout; only its sha256 is stored.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        center: Option<String>,
        #[arg(long = "name")]
        name: Option<String>,
    },
    Revoke {
        /// The label given at creation (--name).
        name: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print the master identity's age recipient (age1…), for sites that seal media to
    /// this hub ([hub] hub_recipient).
    Recipient {
        /// Identity file (default: the configured master key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    Ensure {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        group: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LXGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lxgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = config::process_env();
    let load = || Config::resolve(cli.config.as_deref(), &env);
    match cli.cmd {
        Cmd::Serve => lxgate::http::serve(load()?).await?,
        Cmd::Watch { once } => lxgate::watch::run(load()?, once).await?,
        Cmd::Migrate { status } => {
            let cfg = load()?;
            let mut client = lxgate::db::connect(cfg.require_database_url()?).await?;
            let set = lxgate::db::migrate::embedded();
            if status {
                for s in lxgate::db::migrate::status(&client, &set).await? {
                    println!(
                        "{} {}",
                        if s.applied { "applied" } else { "pending" },
                        s.file
                    );
                }
            } else {
                let ran = lxgate::db::migrate::run(&mut client, &set).await?;
                println!("{} migration(s) applied, {} total", ran.len(), set.len());
            }
        }
        Cmd::Config {
            cmd: ConfigCmd::Check,
        } => {
            let cfg = load()?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
        }
        Cmd::Center {
            cmd: CenterCmd::Add { key, name },
        } => {
            let cfg = load()?;
            let client = lxgate::db::connect(cfg.require_database_url()?).await?;
            lxgate::auth::add_center(&client, &key, &name).await?;
            eprintln!("center {key} ready");
        }
        Cmd::Token { cmd } => {
            let cfg = load()?;
            let client = lxgate::db::connect(cfg.require_database_url()?).await?;
            match cmd {
                TokenCmd::Create { role, center, name } => {
                    let label = name.unwrap_or_else(|| {
                        format!("{role}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"))
                    });
                    let token =
                        lxgate::auth::create_token(&client, &role, center.as_deref(), &label)
                            .await?;
                    eprintln!("token {label:?} created; it is shown once:");
                    println!("{token}");
                }
                TokenCmd::Revoke { name } => {
                    lxgate::auth::revoke_token(&client, &name).await?;
                    eprintln!("token {name:?} revoked");
                }
            }
        }
        Cmd::Dev { state, listen } => lxgate::dev::run(&state, &listen).await?,
        Cmd::Render { what, out, bin } => {
            let file = FileConfig::load(cli.config.as_deref())?;
            let inputs = lxgate::render::Inputs::from_settings(&file, bin.as_deref());
            let files = lxgate::render::select(&inputs, &what)?;
            match out {
                Some(dir) => {
                    for (rel, text) in &files {
                        let p = dir.join(rel);
                        std::fs::create_dir_all(p.parent().expect("relative file path"))?;
                        std::fs::write(&p, text)?;
                    }
                    eprintln!("wrote {} file(s) under {}", files.len(), dir.display());
                }
                None => {
                    for (rel, text) in &files {
                        if files.len() > 1 {
                            println!("### {rel}");
                        }
                        print!("{text}");
                    }
                }
            }
        }
        Cmd::Doctor { json, root } => {
            let file = FileConfig::load(cli.config.as_deref())?;
            let checks = lxgate::doctor::run(&file, &env, &root).await;
            lxgate::doctor::print(&checks, json);
            if checks.iter().any(|c| !c.ok) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Smoke {
            json,
            ca,
            port,
            root,
        } => {
            let file = FileConfig::load(cli.config.as_deref())?;
            let opts = lxgate::smoke::Options { ca, port };
            let checks = lxgate::smoke::run(&file, &env, &root, &opts).await;
            lxgate::doctor::print(&checks, json);
            if checks.iter().any(|c| !c.ok) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::SapImport {
            once,
            input,
            output,
        } => lxgate::sap::run(&load()?, once, input, output)?,
        Cmd::Recover {
            merge,
            full,
            from,
            to,
            dry_run,
            mark_complete,
        } => {
            if merge == full {
                anyhow::bail!(
                    "say --merge (copy what is missing) or --full (into an empty data root)"
                );
            }
            let cfg = load()?;
            let target = to.unwrap_or_else(|| cfg.data_dir.clone());
            // As root, copies belong to the service user (the unit itself runs as it).
            let owner = lxgate::recover::service_owner(&cfg);
            let opts = lxgate::recover::Options {
                mode: if full {
                    lxgate::recover::Mode::Full
                } else {
                    lxgate::recover::Mode::Merge
                },
                source: from,
                target,
                dry_run,
                mark_complete,
                owner,
            };
            let summary = lxgate::recover::run(&opts)?;
            lxgate::recover::print_summary(&summary);
            if !summary.errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Node { cmd } => {
            let cfg = load()?;
            let client = lxgate::db::connect(cfg.require_database_url()?).await?;
            match cmd {
                NodeCmd::Add {
                    key,
                    center,
                    cert_fingerprint,
                } => {
                    let secret = lxgate::hub::nodes::add(
                        &client,
                        &key,
                        &center,
                        cert_fingerprint.as_deref(),
                    )
                    .await?;
                    eprintln!("node {key} (center {center}) registered; its secret is shown once, give it to the site as LX_ANNOTATE_HUB_SOURCE_NODE_SECRET:");
                    println!("{secret}");
                }
                NodeCmd::Remove { key } => {
                    if !lxgate::hub::nodes::remove(&client, &key).await? {
                        anyhow::bail!("no node {key:?}");
                    }
                    eprintln!("node {key} removed");
                }
            }
        }
        Cmd::HubExport { cmd } => {
            let cfg = load()?;
            let client = lxgate::db::connect(cfg.require_database_url()?).await?;
            use lxgate::hub::export;
            match cmd {
                HubExportCmd::Mark { jobs, by } => export::mark(&client, &jobs, &by).await?,
                HubExportCmd::Run => {
                    let s = export::run(&cfg, &client).await?;
                    eprintln!(
                        "hub export: {} applied, {} to retry, {} failed",
                        s.applied, s.retrying, s.failed
                    );
                    if s.retrying + s.failed > 0 {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                HubExportCmd::List { json } => {
                    let rows = export::list(&client).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        for r in rows {
                            println!(
                                "{}  {:<8} attempts={} {}",
                                r.upload_job_id,
                                r.state,
                                r.attempts,
                                r.last_error.unwrap_or_default()
                            );
                        }
                    }
                }
                HubExportCmd::Retry => {
                    let n = export::retry_failed(&client).await?;
                    eprintln!("{n} failed export(s) queued again");
                }
            }
        }
        Cmd::Storage { cmd } => {
            let cfg = load()?;
            let client = lxgate::db::connect(cfg.require_database_url()?).await?;
            match cmd {
                StorageCmd::Audit { json, verify } => {
                    let a = lxgate::storage_audit::audit(&client, &cfg.storage_dir, verify).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&a)?);
                    } else {
                        lxgate::storage_audit::print(&a, &cfg.storage_dir);
                    }
                    if a.is_damaged() {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                StorageCmd::QuarantineOrphans {
                    older_than,
                    dry_run,
                } => {
                    let moved = lxgate::storage_audit::quarantine_orphans(
                        &client,
                        &cfg.storage_dir,
                        &cfg.data_dir.join("quarantine"),
                        std::time::Duration::from_secs(older_than),
                        dry_run,
                    )
                    .await?;
                    if !dry_run {
                        eprintln!("{} orphan object(s) quarantined", moved.len());
                    }
                }
            }
        }
        Cmd::Keys {
            cmd: KeysCmd::Recipient { key },
        } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let file = FileConfig::load(cli.config.as_deref())?;
                    PathBuf::from(
                        lxgate::render::Inputs::from_settings(&file, None).get("master_key"),
                    )
                }
            };
            let id = lxgate::age::Identity::from_file(&key).map_err(|e| {
                anyhow::anyhow!("reading the master identity {}: {e}", key.display())
            })?;
            println!("{}", id.recipient());
        }
        Cmd::Keys {
            cmd: KeysCmd::Ensure { key, group },
        } => {
            let what = lxgate::keys::ensure(&key, &group)?;
            eprintln!("master key {}: {what}", key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
