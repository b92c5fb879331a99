use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use lxgate::ops::deploy::{self, Entry, Layout, Options};
use lxgate::ops::deploy_gate::Nixos;

use super::Context;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The new lxgate binary. Run as root; a rerun after an interruption finishes the job.
    #[arg(long)]
    release: Option<PathBuf>,
    /// CA bundle that verifies nginx's certificate, for smoke.
    #[arg(long)]
    smoke_ca: Option<PathBuf>,
    /// nginx's TLS port, for smoke.
    #[arg(long, default_value_t = 443)]
    smoke_port: u16,
    /// Releases kept under PREFIX/releases (the current and the previous always).
    #[arg(long, default_value_t = 5)]
    keep: usize,
    /// Where releases and the `current` link live.
    #[arg(long, default_value = "/opt/lxgate")]
    prefix: PathBuf,
    /// NixOS: run nixos-rebuild with the arguments after `--`, then smoke; on failure
    /// restore the snapshot if the previous generation needs it and activate the
    /// previous system generation. Run as root.
    #[arg(long, conflicts_with = "release")]
    nixos: bool,
    /// The nixos-rebuild program (`--nixos`).
    #[arg(long, default_value = "nixos-rebuild", requires = "nixos")]
    nixos_rebuild: OsString,
    /// The system profile whose generations `--nixos` and the gate switch between.
    #[arg(long, default_value = "/nix/var/nix/profiles/system")]
    system_profile: PathBuf,
    /// Arguments for nixos-rebuild (`--nixos`), e.g. `-- switch --flake .#host`.
    #[arg(last = true, requires = "nixos")]
    rebuild_args: Vec<OsString>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The current release, a deploy in progress, and the history with the reason for
    /// each rollback.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "/opt/lxgate")]
        prefix: PathBuf,
    },
    /// NixOS (lxgate-deploy-gate.service, as root): smoke after a switch; on failure
    /// restore the snapshot if needed and switch back to the previous generation.
    Gate {
        /// Run by the switch back: smoke the previous generation, then resume ingest.
        #[arg(long)]
        after_rollback: bool,
        #[arg(long)]
        smoke_ca: Option<PathBuf>,
        #[arg(long, default_value_t = 443)]
        smoke_port: u16,
        /// The system profile whose previous generation a rollback activates.
        #[arg(long, default_value = "/nix/var/nix/profiles/system")]
        system_profile: PathBuf,
    },
}

pub fn run(a: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let cfg = ctx.load()?;
    if let Some(Cmd::Gate {
        after_rollback,
        smoke_ca,
        smoke_port,
        system_profile,
    }) = a.cmd
    {
        let opts = Options {
            release: PathBuf::new(),
            smoke_ca,
            smoke_port,
            keep: a.keep,
        };
        let nixos = Nixos {
            profile: system_profile,
        };
        lxgate::ops::deploy_gate::gate(&cfg, &opts, &nixos, after_rollback)?;
        println!("lxgate passed smoke; ingest resumed");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Cmd::Status { json, prefix }) = a.cmd {
        let layout = Layout {
            prefix,
            ..Layout::default()
        };
        let current = deploy::current(&layout);
        let history = deploy::history(&cfg.paths.state);
        let progress = deploy::in_progress(&cfg.paths.state);
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "current": current, "in_progress": progress, "history": history,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!("current: {}", current.as_deref().unwrap_or("none"));
        if let Some(j) = progress {
            let what = if j.rolling_back {
                "rolling back"
            } else {
                "deploying"
            };
            println!(
                "in progress since {}: {what} {} (run the deploy again to finish)",
                j.started, j.to
            );
        }
        for e in history {
            println!(
                "{}  {:<11} {} -> {}{}{}",
                e.at.format("%Y-%m-%d %H:%M:%SZ"),
                e.outcome,
                e.from.as_deref().unwrap_or("none"),
                e.to,
                e.restored
                    .map(|s| format!("  restored snapshot {s}"))
                    .unwrap_or_default(),
                e.reason
                    .map(|r| format!("  reason: {r}"))
                    .unwrap_or_default(),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.nixos {
        if a.rebuild_args.is_empty() {
            anyhow::bail!(
                "name what nixos-rebuild does: lxgate deploy --nixos -- switch [--flake ...]"
            );
        }
        let opts = Options {
            release: PathBuf::new(),
            smoke_ca: a.smoke_ca,
            smoke_port: a.smoke_port,
            keep: a.keep,
        };
        let nixos = Nixos {
            profile: a.system_profile,
        };
        let mut rebuild = vec![a.nixos_rebuild];
        rebuild.extend(a.rebuild_args);
        let entry = lxgate::ops::deploy_gate::deploy_nixos(&cfg, &opts, &nixos, &rebuild)?;
        return Ok(verdict(&entry, &entry.to));
    }
    let Some(release) = a.release else {
        anyhow::bail!(
            "name the new binary: lxgate deploy --release PATH (or `lxgate deploy status`)"
        );
    };
    let layout = Layout {
        prefix: a.prefix,
        ..Layout::default()
    };
    let opts = Options {
        release,
        smoke_ca: a.smoke_ca,
        smoke_port: a.smoke_port,
        keep: a.keep,
    };
    let done = deploy::deploy(&cfg, &layout, &opts)?;
    Ok(verdict(&done.entry, &done.release))
}

/// What a deploy ended with, on stdout; failure unless deployed (or already current).
fn verdict(entry: &Entry, release: &str) -> ExitCode {
    match entry.outcome.as_str() {
        "deployed" => {
            println!("deployed {release}");
            ExitCode::SUCCESS
        }
        "current" => {
            println!("release {release} is already current");
            ExitCode::SUCCESS
        }
        _ => {
            println!(
                "rolled back to {}{}: {}",
                entry.from.as_deref().unwrap_or(release),
                entry
                    .restored
                    .as_deref()
                    .map(|s| format!(" (snapshot {s} restored)"))
                    .unwrap_or_default(),
                entry.reason.as_deref().unwrap_or("")
            );
            ExitCode::FAILURE
        }
    }
}
