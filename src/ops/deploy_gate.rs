//! The NixOS health gate (issue 18, `services.lxgate.deployGate`): a oneshot unit
//! ordered after lxgate's units runs `lxgate deploy gate` after each switch that changed
//! lxgate. Smoke passes: ingest resumes (the migrate unit held the pause). Smoke fails:
//! lxgate's units stop, the snapshot this switch's migration took is restored when the
//! previous generation's lxgate refuses the schema, the system profile is set back to
//! the previous generation and its `switch-to-configuration switch` runs in a transient
//! unit, followed by this gate in `--after-rollback` mode, which smokes the previous
//! generation and only then resumes ingest.
//!
//! From deploy-rs (src/bin/activate.rs, facts only): its rollback sets the profile back
//! (`nix-env -p PROFILE --rollback`) and runs the previous generation's activation; its
//! activator ignores SIGHUP so it outlives its ssh session. Here the switch back runs in
//! a transient unit (`systemd-run`) for the same reason: it stops the gate's own unit,
//! which must not take the switch down with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use chrono::Utc;

use crate::config::Config;
use crate::ingest::pause;
use crate::ops::deploy::{self, Entry, Options};

const PROFILE: &str = "/nix/var/nix/profiles/system";

/// `system-N-link` generations of the system profile, oldest first.
fn generations() -> Vec<(u64, PathBuf)> {
    let dir = Path::new(PROFILE).parent().expect("profile dir");
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("system-")?
                .strip_suffix("-link")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The lxgate binary a system generation runs (its migrate unit's ExecStart).
fn lxgate_of(system: &Path) -> anyhow::Result<PathBuf> {
    let unit = system.join("etc/systemd/system/lxgate-migrate.service");
    let text =
        std::fs::read_to_string(&unit).with_context(|| format!("reading {}", unit.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .with_context(|| format!("{} has no ExecStart", unit.display()))
}

pub fn gate(cfg: &Config, opts: &Options, after_rollback: bool) -> anyhow::Result<()> {
    let state = cfg.paths.state.clone();
    let current = std::fs::read_link("/run/current-system")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // This generation's binary: the gate runs from the package the unit names.
    let smoke = deploy::smoke(cfg, &std::env::current_exe()?, opts);
    match smoke {
        Ok(()) => {
            pause::close(&state)?;
            deploy::record(
                &state,
                &Entry {
                    at: Utc::now(),
                    from: None,
                    to: current,
                    outcome: if after_rollback { "rolled_back" } else { "deployed" }.into(),
                    reason: after_rollback.then(|| "the previous generation passed smoke".into()),
                    restored: None,
                },
            )?;
            Ok(())
        }
        Err(e) if after_rollback => Err(e.context(
            "the previous generation fails smoke too; ingest stays paused: fix the host, then `systemctl restart lxgate-deploy-gate`",
        )),
        Err(e) => {
            let reason = format!("{e:#}");
            tracing::error!(%reason, "deploy gate: smoke failed, rolling back to the previous generation");
            rollback(cfg, &reason)?;
            bail!("smoke failed ({reason}); rolling back to the previous generation (journalctl -u 'lxgate-rollback-*')")
        }
    }
}

fn rollback(cfg: &Config, reason: &str) -> anyhow::Result<()> {
    let state = cfg.paths.state.clone();
    let gens = generations();
    let now = std::fs::read_link(PROFILE).context("reading the system profile")?;
    let idx = gens
        .iter()
        .position(|(_, p)| p.file_name() == now.file_name())
        .context("the system profile names no generation")?;
    let Some((_, prev_link)) = idx.checked_sub(1).and_then(|i| gens.get(i)) else {
        bail!("no previous generation to roll back to");
    };
    let prev = std::fs::canonicalize(prev_link)?;
    // Taken by this generation's migration: after its link was made.
    let since: chrono::DateTime<Utc> = std::fs::symlink_metadata(&gens[idx].1)?.modified()?.into();
    let old = lxgate_of(&prev)?;
    let units = ["lxgate.service", "lxgate-watcher.service"];
    let _ = Command::new("systemctl").arg("stop").args(units).status();
    let runs_on_it = deploy::as_service(cfg, &old, &["migrate", "--status"])
        .status()
        .is_ok_and(|s| s.success());
    let mut restored = None;
    if !runs_on_it {
        let snap = crate::db::snapshot::list(&state)?
            .into_iter()
            .rev()
            .find(|m| m.taken_at >= since)
            .context("the previous generation cannot run on the database and this switch took no snapshot; restore one by hand (`lxgate snapshot list`)")?;
        deploy::run(
            "restoring the snapshot",
            &mut deploy::as_service(cfg, &old, &["snapshot", "restore", &snap.id]),
        )?;
        restored = Some(snap.id);
    }
    deploy::run(
        "setting the system profile back",
        Command::new("nix-env")
            .args(["-p", PROFILE, "--set"])
            .arg(&prev),
    )?;
    let me = std::env::current_exe()?;
    let script = format!(
        "{}/bin/switch-to-configuration switch; exec {} --config {} deploy gate --after-rollback",
        prev.display(),
        me.display(),
        cfg.host.config
    );
    deploy::run(
        "starting the switch back",
        Command::new("systemd-run")
            .args(["--no-block", "--collect"])
            .arg(format!(
                "--unit=lxgate-rollback-{}",
                Utc::now().format("%Y%m%dT%H%M%S")
            ))
            .args(["/bin/sh", "-c", &script]),
    )?;
    deploy::record(
        &state,
        &Entry {
            at: Utc::now(),
            from: Some(prev.display().to_string()),
            to: std::fs::canonicalize(&now)
                .unwrap_or(now)
                .display()
                .to_string(),
            outcome: "rolling_back".into(),
            reason: Some(reason.to_string()),
            restored,
        },
    )?;
    Ok(())
}
