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
    /// Mark upload jobs for export. Marking states that their media is anonymized and
    /// processed: lxgate sends what it is told to and never decides that itself.
    Mark {
        #[arg(required = true)]
        jobs: Vec<uuid::Uuid>,
        /// Who marks (kept with the mark).
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Send every pending mark once; exit 1 when any is left failed or retrying.
    Run,
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
        Cmd::Mark { jobs, by } => hub_export::mark(&client, &jobs, &by).await?,
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
                        "{}  {:<8} attempts={} {}",
                        r.upload_job_id,
                        r.state,
                        r.attempts,
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
