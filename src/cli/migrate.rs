use std::process::ExitCode;

use lxgate::db::migrate;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    /// List applied and pending migrations instead.
    #[arg(long)]
    status: bool,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (_, mut client) = ctx.connect().await?;
    let set = migrate::embedded();
    if a.status {
        for s in migrate::status(&client, &set).await? {
            let state = if s.applied { "applied" } else { "pending" };
            println!("{state} {}", s.file);
        }
    } else {
        let ran = migrate::run(&mut client, &set).await?;
        println!("{} migration(s) applied, {} total", ran.len(), set.len());
    }
    Ok(ExitCode::SUCCESS)
}
