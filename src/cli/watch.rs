use std::process::ExitCode;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Ingest every complete file, then exit.
    #[arg(long)]
    once: bool,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    lxgate::boundary::watch::run(ctx.load()?, a.once).await?;
    Ok(ExitCode::SUCCESS)
}
