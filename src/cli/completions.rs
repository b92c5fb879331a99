use std::process::ExitCode;

use clap::CommandFactory;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// The script on stdout, generated from the same definitions that parse the arguments,
/// so it never lags behind a new command.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "lxgate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
