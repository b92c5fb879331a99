use std::process::ExitCode;

use clap::Subcommand;
use lxgate::boundary::hub_export;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mark upload jobs for export. Marking states that their media's anonymization is
    /// validated (it sets the eligibility flags the hub requires): lxgate sends what
    /// it is told to and never decides that itself.
    Mark {
        #[arg(required = true)]
        jobs: Vec<uuid::Uuid>,
        /// The raw job the processed media was made from, if lxgate holds it; without
        /// it the media counts as preanonymized (raw hash = processed hash).
        #[arg(long)]
        raw: Option<uuid::Uuid>,
        /// Who marks (kept with the mark).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Send every pending mark once; exit 1 when any is left failed or retrying.
    Run,
    /// The register body `run` sends for a marked job (payload schema 7.0), as JSON.
    Show { job: uuid::Uuid },
    /// Marks and how far each got.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put failed exports back in the queue once their cause is fixed.
    Retry,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (cfg, client) = ctx.connect().await?;
    match a.cmd {
        Cmd::Mark { jobs, raw, by } => hub_export::mark(&cfg, &client, &jobs, raw, &by).await?,
        Cmd::Show { job } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&hub_export::show(&cfg, &client, job).await?)?
            )
        }
        Cmd::Run => {
            let s = hub_export::run(&cfg, &client).await?;
            eprintln!(
                "hub export: {} applied, {} to retry, {} failed",
                s.applied, s.retrying, s.failed
            );
            if s.retrying + s.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::List { json } => {
            let rows = hub_export::list(&client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!(
                        "{}  {:<8} attempts={} {} {}",
                        r.upload_job_id,
                        r.state,
                        r.attempts,
                        r.failure_class.unwrap_or_default(),
                        r.last_error.unwrap_or_default()
                    );
                }
            }
        }
        Cmd::Retry => {
            let n = hub_export::retry_failed(&client).await?;
            eprintln!("{n} failed export(s) queued again");
        }
    }
    Ok(ExitCode::SUCCESS)
}
