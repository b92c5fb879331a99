use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use lxgate::ops::storage_audit;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report orphan objects (no job row), missing objects and size mismatches; exit 1
    /// when an object is missing or damaged.
    Audit {
        #[arg(long)]
        json: bool,
        /// Also re-hash every referenced object (reads all of storage; sealed objects
        /// are opened with the master identity, so run it where the key is readable).
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

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (cfg, client) = ctx.connect().await?;
    let storage = lxgate::ingest::Storage::from_config(&cfg);
    match a.cmd {
        Cmd::Audit { json, verify } => {
            let audit = storage_audit::audit(&client, &storage, verify).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                storage_audit::print(&audit, &cfg.paths.storage);
            }
            if audit.is_damaged() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::QuarantineOrphans {
            older_than,
            dry_run,
        } => {
            let moved = storage_audit::quarantine_orphans(
                &client,
                &storage,
                &cfg.paths.quarantine(),
                Duration::from_secs(older_than),
                dry_run,
            )
            .await?;
            if !dry_run {
                eprintln!("{} orphan object(s) quarantined", moved.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
