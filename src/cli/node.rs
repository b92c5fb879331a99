use std::process::ExitCode;

use clap::Subcommand;
use lxgate::access::nodes;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register (or re-key) a site node owned by a center; prints its secret once.
    Add {
        key: String,
        #[arg(long)]
        center: String,
        /// Pin the node's client certificate (SHA-1 fingerprint, as nginx reports it).
        #[arg(long)]
        cert_fingerprint: Option<String>,
    },
    /// Register (or update) a site node with its secret hash from an endoreg-db hub
    /// (NetworkNode.shared_secret_hash, Django's pbkdf2_sha256$…), read from stdin: the
    /// site keeps its secret, nothing is re-issued.
    Import {
        key: String,
        #[arg(long)]
        center: String,
        /// Pin the node's client certificate (SHA-1 fingerprint, as nginx reports it).
        #[arg(long)]
        cert_fingerprint: Option<String>,
    },
    /// Forget a site node: its transfers stay, new requests are refused.
    Remove { key: String },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let (_, client) = ctx.connect().await?;
    match a.cmd {
        Cmd::Add {
            key,
            center,
            cert_fingerprint,
        } => {
            let secret = nodes::add(&client, &key, &center, cert_fingerprint.as_deref()).await?;
            eprintln!("node {key} (center {center}) registered; its secret is shown once, give it to the site as LX_ANNOTATE_HUB_SOURCE_NODE_SECRET:");
            println!("{secret}");
        }
        Cmd::Import {
            key,
            center,
            cert_fingerprint,
        } => {
            // From stdin, never argv: a hash is not the secret, but it is what guessing starts from.
            let mut hash = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut hash)?;
            nodes::import(
                &client,
                &key,
                &center,
                hash.trim(),
                cert_fingerprint.as_deref(),
            )
            .await?;
            eprintln!("node {key} (center {center}) imported with its existing secret hash");
        }
        Cmd::Remove { key } => {
            if !nodes::remove(&client, &key).await? {
                anyhow::bail!("no node {key:?}: `lxgate node add` registers one");
            }
            eprintln!("node {key} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
