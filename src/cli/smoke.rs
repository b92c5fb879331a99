use std::path::PathBuf;
use std::process::ExitCode;

use lxgate::ops::{doctor, smoke};

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// CA bundle that must verify nginx's certificate (default: the system's).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// nginx's TLS port on this host.
    #[arg(long, default_value_t = 443)]
    port: u16,
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let opts = smoke::Options {
        ca: a.ca,
        port: a.port,
    };
    let checks = smoke::run(&ctx.settings()?, &ctx.env, &a.root, &opts).await;
    Ok(doctor::report(&checks, a.json))
}
