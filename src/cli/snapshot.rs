use std::process::ExitCode;

use clap::Subcommand;
use lxgate::crypto::age::Identity;
use lxgate::db::snapshot::{self, Target};

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The snapshots `lxgate migrate` took, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take a snapshot now (before maintenance by hand); `lxgate migrate` takes its own.
    Take,
    /// Restore snapshot ID into the database (stop lxgate's units first), or into an
    /// empty scratch database on the same server to check it.
    Restore {
        id: String,
        /// An empty database on the same server, e.g. one made with `createdb`.
        #[arg(long, value_name = "DB")]
        into_scratch: Option<String>,
    },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load()?;
    match a.cmd {
        Cmd::List { json } => {
            let all = snapshot::list(&cfg.paths.state)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!(
                    "no snapshots in {}",
                    snapshot::dir(&cfg.paths.state).display()
                );
            }
            for m in all.iter().filter(|_| !json) {
                println!(
                    "{}  taken {}  schema {} -> {}  by {}  {} bytes  sha256 {}",
                    m.id,
                    m.taken_at.format("%Y-%m-%d %H:%M:%SZ"),
                    m.from,
                    m.to,
                    m.release,
                    m.bytes,
                    m.sha256
                );
            }
        }
        Cmd::Take => {
            let url = cfg.require_database_url()?.to_string();
            let client = lxgate::db::connect(&url).await?;
            let current = lxgate::db::migrate::check(&client, &lxgate::db::migrate::embedded())
                .await?
                .current;
            let recipient = master(&cfg)?.recipient();
            let (state, keep) = (cfg.paths.state.clone(), cfg.db.keep_snapshots);
            let m = tokio::task::spawn_blocking(move || {
                snapshot::take(&url, &recipient, &state, current, current, keep)
            })
            .await??;
            println!(
                "snapshot {} taken ({} bytes, sha256 {})",
                m.id, m.bytes, m.sha256
            );
        }
        Cmd::Restore { id, into_scratch } => {
            let url = cfg.require_database_url()?;
            let identity = master(&cfg)?;
            let target = match &into_scratch {
                Some(db) => Target::Scratch(db),
                None => Target::Same,
            };
            let m = snapshot::restore(url, identity, &cfg.paths.state, &id, target).await?;
            match into_scratch {
                Some(db) => println!("snapshot {} restored into {db} (schema {})", m.id, m.from),
                None => println!(
                    "snapshot {} restored (schema {}); start the release that runs on it",
                    m.id, m.from
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Snapshots are sealed to, and opened with, the master identity.
fn master(cfg: &lxgate::config::Config) -> anyhow::Result<Identity> {
    Identity::from_file(&cfg.host.master_key).map_err(|e| {
        anyhow::anyhow!(
            "snapshots are sealed to the master identity, which cannot be read ({}: {e}); run this as root or a member of the keys group",
            cfg.host.master_key.display()
        )
    })
}
