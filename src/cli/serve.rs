use std::process::ExitCode;

use super::Context;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    lxgate::boundary::http::serve(ctx.load()?).await?;
    Ok(ExitCode::SUCCESS)
}
