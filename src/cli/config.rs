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
    /// Print the effective config (secrets redacted) or the error.
    Check,
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Check => println!("{}", serde_json::to_string_pretty(&ctx.load()?)?),
    }
    Ok(ExitCode::SUCCESS)
}
