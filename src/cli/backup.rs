use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lxgate::ops::backup::{self, rehearse, restic};

use super::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which repository, and the files holding its secrets. Default: [backup] repository,
/// the unit's credentials restic-password and restic-env, else RESTIC_PASSWORD_FILE.
#[derive(clap::Args, Clone)]
pub struct Repository {
    /// The restic repository (default: [backup] repository).
    #[arg(long)]
    repository: Option<String>,
    /// File holding the repository password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// KEY=VALUE file with the backend's credentials (AWS_*, B2_*, ...).
    #[arg(long)]
    env_file: Option<PathBuf>,
}

impl Repository {
    pub fn locate(
        &self,
        cfg: &lxgate::config::Config,
        ctx: &Context,
    ) -> anyhow::Result<restic::Restic> {
        let access = restic::Access {
            repository: self.repository.clone(),
            password_file: self.password_file.clone(),
            env_file: self.env_file.clone(),
        };
        Ok(restic::Restic::locate(
            &access,
            cfg.backup.repository.as_deref(),
            &ctx.env,
        )?)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the sealed database dump and its manifest to <state root>/backup, where
    /// restic picks them up (the NixOS module's backupPrepareCommand).
    Prepare,
    /// Prepare, then `restic backup` of the state root (without keys) and the data root,
    /// then `restic forget --prune` (lxgate-backup.service).
    Run {
        #[command(flatten)]
        repo: Repository,
    },
    /// `restic check`, then a restore rehearsal into a scratch directory and database:
    /// the dump opens, every restored object matches its job, counts match the manifest.
    Verify {
        #[command(flatten)]
        repo: Repository,
        /// Snapshot ID (default: the newest lxgate snapshot).
        #[arg(long)]
        snapshot: Option<String>,
        /// Directory for the scratch restore (default: <state root>/backup).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// An empty database to restore into (default: a new one, dropped afterwards;
        /// needs CREATEDB).
        #[arg(long)]
        scratch_database: Option<String>,
        /// Also read every pack of the repository (`restic check --read-data`).
        #[arg(long)]
        read_data: bool,
    },
}

pub async fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load()?;
    match a.cmd {
        Cmd::Prepare => {
            let m = backup::prepare(&cfg).await?;
            println!("backup prepared: {}", m.summary());
            if m.objects_not_in_dump > 0 {
                println!(
                    "{} objects in storage have no job in this dump (ingested after it, or orphans): restic keeps them, the next backup's dump describes them",
                    m.objects_not_in_dump
                );
            }
        }
        Cmd::Run { repo } => {
            let r = repo.locate(&cfg, ctx)?;
            let run = backup::run(&cfg, &r).await?;
            println!(
                "backup done: snapshot {} of {} files ({} bytes, {} bytes new); {}",
                run.snapshot.snapshot,
                run.snapshot.files,
                run.snapshot.bytes,
                run.snapshot.added,
                run.manifest.summary()
            );
            if run.snapshot.vanished > 0 {
                println!(
                    "{} files vanished while restic read them (drops ingested meanwhile; the next backup has them in storage)",
                    run.snapshot.vanished
                );
            }
        }
        Cmd::Verify {
            repo,
            snapshot,
            scratch,
            scratch_database,
            read_data,
        } => {
            let r = repo.locate(&cfg, ctx)?;
            let o = rehearse::verify(
                &cfg,
                &r,
                &rehearse::VerifyOptions {
                    snapshot,
                    scratch,
                    scratch_database,
                    read_data,
                },
            )
            .await?;
            println!("{}", o.summary("restore rehearsal passed"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
