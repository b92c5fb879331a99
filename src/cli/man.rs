use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write lxgate.1 and one lxgate-COMMAND.1 per command into (created).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating {}: choose a writable --out", a.out.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &a.out)
        .with_context(|| format!("writing man pages into {}", a.out.display()))?;
    println!("man pages written to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
