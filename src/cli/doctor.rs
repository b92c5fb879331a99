use std::path::PathBuf;
use std::process::ExitCode;

use lxgate::ops::doctor;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Check a tree under this prefix instead of / (tests, images).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let checks = doctor::run(&ctx.settings()?, &ctx.env, &a.root).await;
    Ok(doctor::report(&checks, a.json))
}
