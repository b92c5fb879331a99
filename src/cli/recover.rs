use std::path::PathBuf;
use std::process::ExitCode;

use lxgate::ops::recover::{self, Mode, Options};

use super::Context;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["merge", "full"])))]
pub struct Args {
    /// Copy what is missing; keep what exists.
    #[arg(long)]
    merge: bool,
    /// Target must be empty; mark it complete and rename the source to a backup.
    #[arg(long)]
    full: bool,
    #[arg(long)]
    from: PathBuf,
    /// Data root to fill (default: the configured one).
    #[arg(long)]
    to: Option<PathBuf>,
    /// Print what would be copied or skipped; touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write <data root>/logs/data_recovery_complete when done (the unit does).
    #[arg(long)]
    mark_complete: bool,
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load()?;
    let opts = Options {
        mode: if a.full { Mode::Full } else { Mode::Merge },
        source: a.from,
        target: a.to.unwrap_or_else(|| cfg.paths.data.clone()),
        dry_run: a.dry_run,
        mark_complete: a.mark_complete,
        // As root, copies belong to the service user (the unit itself runs as it).
        owner: recover::service_owner(&cfg),
    };
    let summary = recover::run(&opts)?;
    recover::print_summary(&summary);
    Ok(if summary.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
