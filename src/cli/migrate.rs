use std::process::ExitCode;

use lxgate::db::migrate;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// List applied and pending migrations instead.
    #[arg(long)]
    status: bool,
    /// Leave ingest paused after migrating, for a deploy gate that lifts the pause once
    /// the release has passed smoke (`lxgate deploy`, services.lxgate.deployGate).
    #[arg(long)]
    hold_ingest_pause: bool,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let set = migrate::embedded();
    if a.status {
        let (cfg, client) = ctx.connect().await?;
        let newest = set.last().map_or(0, |m| m.version);
        let refused = |e| lxgate::ops::migrate::with_way_back(e, &cfg.paths.state, newest);
        for s in migrate::status(&client, &set).await.map_err(refused)? {
            let state = if s.applied { "applied" } else { "pending" };
            println!("{state} {}", s.file);
        }
        for a in migrate::check(&client, &set).await.map_err(refused)?.ahead {
            println!(
                "ahead {:04}_{} (applied by a newer release, declared compatible with this one)",
                a.version, a.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = ctx.load()?;
    let opts = lxgate::ops::migrate::Options {
        hold_pause: a.hold_ingest_pause,
    };
    let out = lxgate::ops::migrate::run(&cfg, &set, &opts).await?;
    if let Some(m) = &out.snapshot {
        println!(
            "snapshot {} taken ({} bytes, sha256 {})",
            m.id, m.bytes, m.sha256
        );
    }
    println!(
        "{} migration(s) applied, {} total",
        out.applied.len(),
        set.len()
    );
    Ok(ExitCode::SUCCESS)
}
