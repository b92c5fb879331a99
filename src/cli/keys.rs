use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the master identity's age recipient (age1…), for sites that seal media to
    /// this hub ([hub] hub_recipient).
    Recipient {
        /// Identity file (default: the configured master key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Create the master identity root:GROUP 0640 if absent; refuse a wrong mode.
    Ensure {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        group: String,
    },
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Recipient { key } => {
            let key = match key {
                Some(k) => k,
                None => ctx.load()?.host.master_key,
            };
            let id = lxgate::crypto::age::Identity::from_file(&key).map_err(|e| {
                anyhow::anyhow!("reading the master identity {}: {e}", key.display())
            })?;
            println!("{}", id.recipient());
        }
        Cmd::Ensure { key, group } => {
            let what = lxgate::ops::keys::ensure(&key, &group)?;
            eprintln!("master key {}: {what}", key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
