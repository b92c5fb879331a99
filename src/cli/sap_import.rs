use std::path::PathBuf;
use std::process::ExitCode;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Convert what is there, then exit (the .path unit runs this).
    #[arg(long)]
    once: bool,
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    lxgate::boundary::sap::run(&ctx.load()?, a.once, a.input, a.output)?;
    Ok(ExitCode::SUCCESS)
}
