//! The NixOS health gate (issue 18), in two forms that share what happens after a
//! failed smoke (`roll_back`):
//! - `services.lxgate.deployGate`: a oneshot unit ordered after lxgate's units runs
//!   `lxgate deploy gate` after each switch that changed lxgate;
//! - `lxgate deploy --nixos -- <nixos-rebuild arguments>`: runs nixos-rebuild, then
//!   gates the generation it made, interactively.
//!
//! Smoke passes: ingest resumes (the migrate unit held the pause). Smoke fails: lxgate's
//! units stop, the snapshot the failed generation's migration took is restored when the
//! previous generation's lxgate refuses the schema, the system profile is switched back
//! to the previous generation and its `switch-to-configuration switch` runs; the
//! previous generation is smoked and only then does ingest resume.
//!
//! From deploy-rs (src/bin/activate.rs, facts only): its rollback switches the profile
//! back (`nix-env -p PROFILE --rollback`, which makes no new generation), deletes the
//! failed generation and runs the previous one's activation; its activator ignores
//! SIGHUP so it outlives its ssh session. Here the failed generation is kept (the
//! operator reads it; garbage collection removes it later), and the profile is switched
//! to the generation number the gate names rather than "the one before", so a repeat
//! does not walk further back. From the gate unit the switch back runs in a transient
//! unit (`systemd-run`): the switch stops the gate's own unit, which must not take the
//! switch down with it. `deploy --nixos` is no unit of the system and waits for it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::ingest::pause;
use crate::ops::deploy::{self, Entry, Journal, Options};
use crate::progress::Progress;

/// Where this host keeps its system generations; tests point it at a directory of
/// their own.
#[derive(Debug, Clone)]
pub struct Nixos {
    /// The system profile: `<dir>/<name>` links to `<dir>/<name>-N-link`.
    pub profile: PathBuf,
}

impl Default for Nixos {
    fn default() -> Nixos {
        Nixos {
            profile: "/nix/var/nix/profiles/system".into(),
        }
    }
}

/// A system generation: its number and its `<name>-N-link`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    number: u64,
    link: PathBuf,
}

impl Nixos {
    /// The profile's generations, oldest first.
    fn generations(&self) -> Vec<Generation> {
        let dir = self.profile.parent().expect("the profile has a directory");
        let name = self.profile.file_name().expect("the profile has a name");
        let prefix = format!("{}-", name.to_string_lossy());
        let mut v: Vec<Generation> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let number = file
                    .strip_prefix(&prefix)?
                    .strip_suffix("-link")?
                    .parse()
                    .ok()?;
                Some(Generation {
                    number,
                    link: e.path(),
                })
            })
            .collect();
        v.sort_by_key(|g| g.number);
        v
    }

    /// The generation the profile names now.
    fn current(&self) -> anyhow::Result<Generation> {
        let now = std::fs::read_link(&self.profile)
            .with_context(|| format!("reading the system profile {}", self.profile.display()))?;
        self.generations()
            .into_iter()
            .find(|g| g.link.file_name() == now.file_name())
            .with_context(|| {
                format!(
                    "the system profile {} names no generation",
                    self.profile.display()
                )
            })
    }

    /// The generation before `g`.
    fn before(&self, g: &Generation) -> anyhow::Result<Generation> {
        self.generations()
            .into_iter()
            .rev()
            .find(|p| p.number < g.number)
            .context("no previous generation to roll back to")
    }
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

/// A generation that runs the gate unit: its switch has gated it already.
fn has_gate_unit(system: &Path) -> bool {
    system
        .join("etc/systemd/system/lxgate-deploy-gate.service")
        .exists()
}

/// How the previous generation's `switch-to-configuration switch` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwitchBack {
    /// From the gate unit, which the switch stops: in a transient unit, followed by
    /// `deploy gate --after-rollback`.
    Detached,
    /// From `deploy --nixos`: here, waiting for it, then smoke on what it started.
    Here,
}

/// Smoke passed: ingest resumes, and the history says why.
fn passed(cfg: &Config, system: String, after_rollback: bool) -> anyhow::Result<Entry> {
    pause::close(&cfg.paths.state)?;
    let entry = Entry {
        at: Utc::now(),
        from: None,
        to: system,
        outcome: if after_rollback {
            "rolled_back"
        } else {
            "deployed"
        }
        .into(),
        reason: after_rollback.then(|| "the previous generation passed smoke".into()),
        restored: None,
    };
    deploy::record(&cfg.paths.state, &entry)?;
    deploy::end_journal(&cfg.paths.state);
    Ok(entry)
}

fn system_of(g: &Generation) -> String {
    std::fs::canonicalize(&g.link)
        .unwrap_or_else(|_| g.link.clone())
        .display()
        .to_string()
}

/// `lxgate deploy gate`, in lxgate-deploy-gate.service after a switch.
pub fn gate(
    cfg: &Config,
    opts: &Options,
    nixos: &Nixos,
    after_rollback: bool,
) -> anyhow::Result<()> {
    let current = std::fs::read_link("/run/current-system")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // This generation's binary: the gate runs from the package the unit names.
    match deploy::smoke(cfg, &std::env::current_exe()?, opts) {
        Ok(()) => passed(cfg, current, after_rollback).map(drop),
        Err(e) if after_rollback => Err(e.context(
            "the previous generation fails smoke too; ingest stays paused: fix the host, then `systemctl restart lxgate-deploy-gate`",
        )),
        Err(e) => {
            let reason = format!("{e:#}");
            tracing::error!(%reason, "deploy gate: smoke failed, rolling back to the previous generation");
            let failed = nixos.current()?;
            let to = nixos.before(&failed)?;
            // Taken by this generation's migration: after its link was made.
            let since: DateTime<Utc> = std::fs::symlink_metadata(&failed.link)?.modified()?.into();
            roll_back(
                cfg,
                opts,
                nixos,
                &Failure {
                    failed: system_of(&failed),
                    to: &to,
                    since,
                    reason: &reason,
                    restore: None,
                },
                SwitchBack::Detached,
                &Progress::hidden("deploy gate"),
            )?;
            bail!("smoke failed ({reason}); rolling back to the previous generation (journalctl -u 'lxgate-rollback-*')")
        }
    }
}

/// What failed and where to go back to.
struct Failure<'a> {
    /// The failed generation's system.
    failed: String,
    to: &'a Generation,
    /// Snapshots taken since then are the failed generation's.
    since: DateTime<Utc>,
    reason: &'a str,
    /// The snapshot an interrupted rollback had chosen: restored again.
    restore: Option<String>,
}

/// After a failed gate: stop lxgate, restore the snapshot when the previous
/// generation's lxgate refuses the schema, switch the profile back and activate the
/// previous generation. `Here` also smokes it and resumes ingest; `Detached` leaves that
/// to the transient unit. The in-progress record says all along where this is going, so
/// a kill at any point is finished by the next `deploy --nixos`.
fn roll_back(
    cfg: &Config,
    opts: &Options,
    nixos: &Nixos,
    f: &Failure,
    how: SwitchBack,
    progress: &Progress,
) -> anyhow::Result<Entry> {
    let state = cfg.paths.state.clone();
    let prev = std::fs::canonicalize(&f.to.link)
        .with_context(|| format!("reading generation {}", f.to.link.display()))?;
    let old = lxgate_of(&prev)?;
    let mut j = Journal {
        started: f.since,
        from: Some(prev.display().to_string()),
        to: f.failed.clone(),
        rolling_back: true,
        reason: Some(f.reason.to_string()),
        restore: f.restore.clone(),
        generation: Some(f.to.number),
    };
    deploy::write_journal(&state, &j)?;
    progress.step("stopping lxgate");
    let units = ["lxgate.service", "lxgate-watcher.service"];
    let _ = Command::new("systemctl").arg("stop").args(units).status();
    if j.restore.is_none() {
        progress.step("checking the schema against the previous generation");
        let runs_on_it = deploy::as_service(cfg, &old, &["migrate", "--status"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !runs_on_it {
            let snap = crate::db::snapshot::list(&state)?
                .into_iter()
                .rev()
                .find(|m| m.taken_at >= f.since)
                .context("the previous generation cannot run on the database and this switch took no snapshot; restore one by hand (`lxgate snapshot list`)")?;
            // Written before the restore starts: a restore empties the schema first, so
            // after a kill mid-restore only this record says to restore again.
            j.restore = Some(snap.id);
            deploy::write_journal(&state, &j)?;
        }
    }
    let restored = j.restore.clone();
    if let Some(id) = &restored {
        progress.step("restoring the snapshot");
        deploy::run(
            "restoring the snapshot",
            &mut deploy::as_service(cfg, &old, &["snapshot", "restore", id]),
        )?;
    }
    progress.step("switching the system profile back");
    deploy::run(
        "switching the system profile back",
        Command::new("nix-env")
            .arg("-p")
            .arg(&nixos.profile)
            .arg("--switch-generation")
            .arg(f.to.number.to_string()),
    )?;
    let switch = prev.join("bin/switch-to-configuration");
    let mut entry = Entry {
        at: Utc::now(),
        from: Some(prev.display().to_string()),
        to: f.failed.clone(),
        outcome: "rolling_back".into(),
        reason: Some(f.reason.to_string()),
        restored: restored.clone(),
    };
    match how {
        SwitchBack::Detached => {
            // The previous generation's own lxgate smokes it, with the same smoke
            // settings (without them it would check nginx against the wrong CA/port).
            let script = format!(
                "{} switch; exec {} --config {} deploy gate --after-rollback --smoke-port {}{}",
                switch.display(),
                old.display(),
                cfg.host.config,
                opts.smoke_port,
                opts.smoke_ca
                    .as_ref()
                    .map(|c| format!(" --smoke-ca {}", c.display()))
                    .unwrap_or_default(),
            );
            // Recorded first: the transient unit records `rolled_back` when it is done.
            deploy::record(&state, &entry)?;
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
        }
        SwitchBack::Here => {
            deploy::record(&state, &entry)?;
            progress.step("activating the previous generation");
            progress.suspend(|| {
                deploy::run(
                    "switch-to-configuration switch of the previous generation",
                    Command::new(&switch).arg("switch"),
                )
            })?;
            progress.step("smoke on the previous generation");
            deploy::smoke(cfg, &old, opts).context(
                "the previous generation fails smoke too; ingest stays paused: fix the host, then run `lxgate deploy gate --after-rollback`",
            )?;
            progress.suspend(|| pause::close(&state))?;
            entry.at = Utc::now();
            entry.outcome = "rolled_back".into();
            deploy::record(&state, &entry)?;
            deploy::end_journal(&state);
        }
    }
    Ok(entry)
}

/// `lxgate deploy --nixos -- ARGS`: `rebuild ARGS` (nixos-rebuild), then the gate on
/// what it activated. On failure the profile goes back to the generation it named
/// before, whose `switch-to-configuration switch` runs.
pub fn deploy_nixos(
    cfg: &Config,
    opts: &Options,
    nixos: &Nixos,
    rebuild: &[OsString],
) -> anyhow::Result<Entry> {
    let state = cfg.paths.state.clone();
    let (program, args) = rebuild
        .split_first()
        .context("name the nixos-rebuild command")?;
    deploy::outlive_the_terminal();
    if let Some(j) = deploy::in_progress(&state) {
        return finish_interrupted(cfg, opts, nixos, j);
    }
    let start = Utc::now();
    let before = nixos.current()?;
    let progress = Progress::steps("deploy", 3);
    progress.step("nixos-rebuild");
    let shown = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    deploy::write_journal(
        &state,
        &Journal {
            started: start,
            from: Some(system_of(&before)),
            to: format!("nixos-rebuild {shown}"),
            rolling_back: false,
            reason: None,
            restore: None,
            generation: Some(before.number),
        },
    )?;
    progress
        .suspend(|| pause::open(&state, "deploy", &format!("nixos-rebuild {shown}")))
        .with_context(|| format!("pausing ingest ({})", pause::marker(&state).display()))?;
    // The operator watches the build: its output goes to the terminal as it comes.
    let status = progress.suspend(|| Command::new(program).args(args).status());
    let status = status.with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let after = nixos.current()?;
    if !status.success() && after == before {
        progress.suspend(|| pause::close(&state))?;
        deploy::end_journal(&state);
        progress.finish_as("nothing switched");
        bail!(
            "{} {shown} failed ({status}) and made no new system generation; nothing was switched. Fix the cause and run it again",
            program.to_string_lossy()
        );
    }
    if after != before && has_gate_unit(&std::fs::canonicalize(&after.link)?) {
        // Its switch started lxgate-deploy-gate.service, which gated it already.
        progress.step("waiting for lxgate-deploy-gate.service");
        let entry = gate_unit_verdict(&state, start)?;
        progress.finish_as(&entry.outcome);
        return Ok(entry);
    }
    progress.step("smoke");
    let failure = if status.success() {
        deploy::smoke(cfg, &lxgate_of(&std::fs::canonicalize(&after.link)?)?, opts)
            .err()
            .map(|e| format!("{e:#}"))
    } else {
        Some(format!(
            "{} {shown} failed ({status})",
            program.to_string_lossy()
        ))
    };
    let Some(reason) = failure else {
        let entry = progress.suspend(|| passed(cfg, system_of(&after), false))?;
        progress.finish_as("deployed");
        return Ok(entry);
    };
    progress.suspend(|| tracing::error!(%reason, "deploy --nixos: the gate failed, rolling back to generation {}", before.number));
    roll_back_here(
        cfg,
        opts,
        nixos,
        &Failure {
            failed: system_of(&after),
            to: &before,
            since: start,
            reason: &reason,
            restore: None,
        },
        progress,
    )
}

/// `roll_back` in place, and the progress line saying how it ended.
fn roll_back_here(
    cfg: &Config,
    opts: &Options,
    nixos: &Nixos,
    f: &Failure,
    progress: Progress,
) -> anyhow::Result<Entry> {
    let entry = roll_back(cfg, opts, nixos, f, SwitchBack::Here, &progress);
    progress.finish_as(match &entry {
        Ok(_) => "rolled back",
        Err(_) => "rollback failed",
    });
    entry
}

/// A `deploy --nixos` that was killed (or lost its machine) before it ended: ingest is
/// still paused. Finish what it was doing before anything new — its rollback, or the
/// gate of the generation it switched to — and leave the new rebuild to the next run.
fn finish_interrupted(
    cfg: &Config,
    opts: &Options,
    nixos: &Nixos,
    j: Journal,
) -> anyhow::Result<Entry> {
    let state = cfg.paths.state.clone();
    let Some(number) = j.generation else {
        bail!(
            "a release deploy to {} (started {}) has not finished; run `lxgate deploy --release` again to finish it first",
            j.to,
            j.started
        );
    };
    let what = if j.rolling_back {
        "its rollback"
    } else {
        "the gate of the generation it switched to"
    };
    eprintln!(
        "lxgate deploy: the deploy started {} did not finish; finishing {what} now. nixos-rebuild is not run: run the command again afterwards",
        j.started
    );
    let to = nixos
        .generations()
        .into_iter()
        .find(|g| g.number == number)
        .with_context(|| format!("system generation {number}, which the interrupted deploy started from, is gone; switch to a generation that passes `lxgate smoke`, then remove {}", state.join("deploy/in-progress.json").display()))?;
    pause::open(&state, "deploy", "finishing an interrupted deploy")?;
    let progress = Progress::steps("deploy", 2);
    let (failed, reason) = if j.rolling_back {
        let reason = j.reason.clone().unwrap_or_default();
        (j.to.clone(), reason)
    } else {
        let now = nixos.current()?;
        progress.step("smoke");
        match deploy::smoke(cfg, &lxgate_of(&std::fs::canonicalize(&now.link)?)?, opts) {
            Ok(()) => {
                let entry = progress.suspend(|| passed(cfg, system_of(&now), false))?;
                progress.finish_as("deployed");
                return Ok(entry);
            }
            Err(e) => (system_of(&now), format!("{e:#}")),
        }
    };
    roll_back_here(
        cfg,
        opts,
        nixos,
        &Failure {
            failed,
            to: &to,
            since: j.started,
            reason: &reason,
            restore: j.restore,
        },
        progress,
    )
}

/// The gate unit's verdict on this switch, from the deploy history: `deployed`, or
/// `rolled_back` once the switch back it started has smoked the previous generation.
fn gate_unit_verdict(state: &Path, since: DateTime<Utc>) -> anyhow::Result<Entry> {
    let deadline = Instant::now() + Duration::from_secs(15 * 60);
    loop {
        let last = deploy::history(state)
            .into_iter()
            .rev()
            .find(|e| e.at >= since);
        match last {
            Some(e) if e.outcome != "rolling_back" => return Ok(e),
            _ if Instant::now() > deadline => bail!(
                "lxgate-deploy-gate.service gave no verdict within 15 minutes: see `journalctl -u lxgate-deploy-gate -u 'lxgate-rollback-*'`"
            ),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
