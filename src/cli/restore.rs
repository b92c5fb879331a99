use std::process::ExitCode;

use lxgate::ops::backup::rehearse;

use super::backup::Repository;
use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    repo: Repository,
    /// The snapshot to restore (`restic snapshots --tag lxgate`; `latest` for the newest).
    #[arg(long)]
    snapshot: String,
    /// Keep what the data root already holds and add what is missing (default: refuse a
    /// data root that holds any file).
    #[arg(long)]
    merge: bool,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load()?;
    let r = a.repo.locate(&cfg, ctx)?;
    let o = rehearse::restore(
        &cfg,
        &r,
        &rehearse::RestoreOptions {
            snapshot: a.snapshot,
            merge: a.merge,
        },
    )
    .await?;
    println!("{}", o.summary("restored"));
    println!("start the units: systemctl start lxgate.service lxgate-watcher.service");
    Ok(ExitCode::SUCCESS)
}
