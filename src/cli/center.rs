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
    /// Create a center (or rename an existing one).
    Add {
        key: String,
        #[arg(long)]
        name: String,
    },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (_, client) = ctx.connect().await?;
    match a.cmd {
        Cmd::Add { key, name } => {
            lxgate::access::tokens::add_center(&client, &key, &name).await?;
            eprintln!("center {key} ready");
        }
    }
    Ok(ExitCode::SUCCESS)
}
