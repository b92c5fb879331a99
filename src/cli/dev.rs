use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Where the local cluster, data tree and token live (kept across runs).
    #[arg(long, default_value = ".lxgate-dev")]
    state: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    lxgate::ops::dev::run(&a.state, &a.listen).await?;
    Ok(ExitCode::SUCCESS)
}
