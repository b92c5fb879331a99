use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the master identity's age recipient (age1…), for sites that seal media to
    /// this hub ([hub] hub_recipient).
    Recipient {
        /// Identity file (default: the configured master key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Re-seal every sealed object to a new master identity, then retire the old one
    /// (root-only, kept beside the key for backups sealed to it). Crash-safe: run it
    /// again after an interruption and it carries on.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// Create a hub recipient key for media envelopes (X25519, PKCS#8 PEM, mode 0600)
    /// and print its public key, which every site's
    /// LX_ANNOTATE_HUB_EXPORT_RECIPIENT_PUBLIC_KEY_FILE holds. With --public, print the
    /// public key of an existing one.
    HubRecipient {
        /// Where to write the new private key (never overwritten).
        #[arg(long, conflicts_with = "public", required_unless_present = "public")]
        out: Option<PathBuf>,
        /// An existing private key file to print the public key of.
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Create the master identity root:GROUP 0640 if absent; refuse a wrong mode.
    Ensure {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        group: String,
    },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Cmd::Recipient { key } => {
            let key = match key {
                Some(k) => k,
                None => ctx.load()?.host.master_key,
            };
            let id = lxgate::crypto::age::Identity::from_file(&key).map_err(|e| {
                anyhow::anyhow!("reading the master identity {}: {e}", key.display())
            })?;
            println!("{}", id.recipient());
        }
        Cmd::Rotate { json } => {
            let (cfg, client) = ctx.connect().await?;
            let storage = lxgate::ingest::Storage::from_config(&cfg);
            let done = lxgate::ops::keys::rotate(&client, &storage).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "every sealed object opens with {} ({} re-sealed now, {} earlier)",
                    done.recipient, done.resealed, done.already
                );
                if let Some(old) = &done.retired {
                    println!(
                        "the old identity is retired to {} (root only): keep it while backups sealed to it exist, then delete it",
                        old.display()
                    );
                }
            }
        }
        Cmd::HubRecipient { out, public } => {
            let (pem, id) = match (out, public) {
                (Some(out), _) => {
                    let pem = lxgate::ops::keys::hub_recipient(&out)?;
                    let id = lxgate::hub::keys::Recipient::from_pem(&pem)?.id();
                    eprintln!(
                        "hub recipient key written to {} (mode 0600); add it to ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES",
                        out.display()
                    );
                    (pem, id)
                }
                (None, Some(key)) => lxgate::ops::keys::hub_recipient_public(&key)?,
                (None, None) => unreachable!("clap requires one"),
            };
            eprintln!("recipient_key_id {id}");
            print!("{pem}");
        }
        Cmd::Ensure { key, group } => {
            let what = lxgate::ops::keys::ensure(&key, &group)?;
            eprintln!("master key {}: {what}", key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
