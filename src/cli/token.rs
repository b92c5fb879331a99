use std::process::ExitCode;

use clap::Subcommand;
use lxgate::access::tokens::{self, TokenRole};

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prints the token once on stdout; only its sha256 is stored.
    Create {
        #[arg(long, value_enum)]
        role: TokenRole,
        #[arg(long)]
        center: Option<String>,
        /// A label to revoke it by (default: ROLE-TIMESTAMP).
        #[arg(long = "name")]
        name: Option<String>,
    },
    Revoke {
        /// The label given at creation (--name).
        name: String,
    },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (_, client) = ctx.connect().await?;
    match a.cmd {
        Cmd::Create { role, center, name } => {
            let label = name.unwrap_or_else(|| {
                let now = chrono::Utc::now().format("%Y%m%dT%H%M%S");
                format!("{}-{now}", role.as_str())
            });
            let token =
                tokens::create_token(&client, role.as_str(), center.as_deref(), &label).await?;
            eprintln!("token {label:?} created; it is shown once:");
            println!("{token}");
        }
        Cmd::Revoke { name } => {
            tokens::revoke_token(&client, &name).await?;
            eprintln!("token {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
