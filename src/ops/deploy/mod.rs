//! `lxgate deploy --release PATH` on a Debian host (issue 18): a health gate that rolls
//! back by itself.
//!
//! Releases live in `<prefix>/releases/<version>-<sha256[..12]>/bin/lxgate` (prefix
//! `/opt/lxgate`); the units run `<prefix>/current/bin/lxgate`, and `current` is a
//! symlink replaced by rename, so it names one release or the other, never neither.
//! A deploy pauses ingest (crate::ingest::pause), stops lxgate's units, flips
//! `current`, renders and installs units, tmpfiles and nginx with the new binary
//! (`nginx -t` before nginx is reloaded), runs lxgate-migrate.service (which snapshots),
//! starts the units (Type=notify: started means ready), checks /readyz and runs `smoke`
//! as the service user. Any failure rolls back: `current` flips back, the previous
//! release's files are installed again, the snapshot is restored when the previous
//! release refuses the schema (`migrate --status` fails), the units start and smoke runs
//! on the previous release. Only then is ingest resumed.
//!
//! Every step can be repeated, and `<state>/deploy/in-progress.json` says which release
//! the host is going to and whether it is rolling back: after a SIGKILL at any point the
//! same command finishes the job (forward to the same release, or the rollback).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;

use crate::config::Config;
use crate::ingest::pause;
use crate::progress::Progress;
pub(crate) use journal::{end_journal, write_journal};
pub use journal::{history, in_progress, record, Entry, Journal};

mod journal;
mod releases;

pub use releases::{current, flip, install, prune, release_id, Layout};

/// What one deploy is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub release: PathBuf,
    /// For smoke: the CA that verifies nginx's certificate, and nginx's TLS port.
    pub smoke_ca: Option<PathBuf>,
    pub smoke_port: u16,
    /// Releases kept (the current and the previous always among them).
    pub keep: usize,
}

/// A host command; its failure is an error carrying the tail of what it said.
pub(crate) fn run(what: &str, c: &mut Command) -> anyhow::Result<String> {
    let out = c
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", c.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(text)
}

fn systemctl(args: &[&str]) -> Command {
    let mut c = Command::new("systemctl");
    c.args(args);
    c
}

/// `bin ARGS` as the service user, with the units' environment (settings file, env
/// file, keys group): what the units see, as systemd gives it to them.
pub(crate) fn as_service(cfg: &Config, bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("systemd-run");
    c.args(["--wait", "--pipe", "--quiet", "--collect"])
        .arg(format!("--uid={}", cfg.host.user))
        .arg(format!("--gid={}", cfg.host.group))
        .arg(format!(
            "--property=SupplementaryGroups={}",
            cfg.host.keys_group
        ))
        .arg(format!(
            "--property=EnvironmentFile=-{}",
            cfg.paths.state.join(".env.systemd").display()
        ))
        .arg(format!("--setenv=LXGATE_CONFIG={}", cfg.host.config))
        .arg(bin)
        .args(args);
    c
}

/// The long-running and timer-driven units of a render, which a deploy stops and starts.
fn units_in(render: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(render.join("systemd"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Render the contract's files with `release`'s own binary (its contract may differ)
/// and install them: nginx only if `nginx -t` accepts it (else the old file is put
/// back), units with a daemon-reload, tmpfiles applied.
fn install_files(cfg: &Config, layout: &Layout, release: &str) -> anyhow::Result<Vec<String>> {
    let render = Scratch(
        layout
            .prefix
            .join(format!(".render-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&render.0);
    let bin = layout.bin_of(release);
    run(
        "rendering units, tmpfiles and nginx",
        Command::new(&bin)
            .arg("--config")
            .arg(&cfg.host.config)
            .args(["render", "all", "--out"])
            .arg(render.0.as_path())
            .arg("--bin")
            .arg(layout.current_bin()),
    )?;
    let nginx_new = render.0.as_path().join("nginx/lxgate.conf");
    if cfg.host.nginx && nginx_new.is_file() {
        let old = std::fs::read(&layout.nginx_site).ok();
        let new = std::fs::read(&nginx_new)?;
        if old.as_deref() != Some(new.as_slice()) {
            put(&layout.nginx_site, &new)?;
            if let Err(e) = run("nginx -t", Command::new("nginx").arg("-t")) {
                match old {
                    Some(old) => put(&layout.nginx_site, &old)?,
                    None => std::fs::remove_file(&layout.nginx_site)?,
                }
                return Err(
                    e.context("the new nginx server block was refused and the old one put back")
                );
            }
        }
    }
    let units = units_in(render.0.as_path());
    std::fs::create_dir_all(&layout.units)?;
    for u in &units {
        put(
            &layout.units.join(u),
            &std::fs::read(render.0.as_path().join("systemd").join(u))?,
        )?;
    }
    put(
        &layout.tmpfiles,
        &std::fs::read(render.0.as_path().join("tmpfiles.d/lxgate.conf"))?,
    )?;
    run(
        "systemctl daemon-reload",
        &mut systemctl(&["daemon-reload"]),
    )?;
    run(
        "systemd-tmpfiles --create",
        Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(&layout.tmpfiles),
    )?;
    Ok(units)
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn put(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("an installed file has a directory");
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().expect("a file name").to_string_lossy();
    crate::durable::write_atomic(
        path,
        &dir.join(format!(".{name}.lxgate-tmp")),
        bytes,
        Some(0o644),
    )
    .with_context(|| format!("installing {}", path.display()))?;
    crate::durable::sync_dir(dir);
    Ok(())
}

/// The units in `dir` that `lxgate render` wrote (its header), but the keys unit: a
/// unit of the operator's that happens to be called lxgate-… (a backup wrapper, the
/// twin's test runner that runs this deploy) is not ours to stop.
fn rendered_units(dir: &Path) -> Vec<String> {
    let ours = |p: &Path| {
        std::fs::read_to_string(p).is_ok_and(|t| t.starts_with(crate::contract::render::HEADER))
    };
    let mut units: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| ours(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lxgate") && n != "lxgate-keys.service")
        .collect();
    units.sort();
    units
}

/// Every unit an earlier deploy installed but the keys unit, stopped before `current`
/// changes: serve drains its requests on SIGTERM, so no upload is in flight when the
/// snapshot is taken.
fn stop_units(layout: &Layout) {
    let units = rendered_units(&layout.units);
    if units.is_empty() {
        return;
    }
    let mut args = vec!["stop"];
    args.extend(units.iter().map(String::as_str));
    if let Err(e) = run("stopping lxgate's units", &mut systemctl(&args)) {
        tracing::warn!(error = %format!("{e:#}"), "stopping units");
    }
}

/// Keys, migrations, then the units; wait for /readyz; then smoke as the service user.
fn start_and_check(
    cfg: &Config,
    layout: &Layout,
    units: &[String],
    opts: &Options,
    progress: &Progress,
) -> anyhow::Result<()> {
    progress.step("keys and migrations");
    run(
        "lxgate-keys.service",
        &mut systemctl(&["restart", "lxgate-keys.service"]),
    )?;
    run(
        "lxgate-migrate.service (the migrations)",
        &mut systemctl(&["restart", "lxgate-migrate.service"]),
    )?;
    let enable: Vec<&str> = units
        .iter()
        .map(String::as_str)
        .filter(|u| {
            std::fs::read_to_string(layout.units.join(u)).is_ok_and(|t| t.contains("[Install]"))
        })
        .collect();
    let mut args = vec!["enable"];
    args.extend(&enable);
    run("enabling the units", &mut systemctl(&args))?;
    // Type=notify: `start` returns once serve said READY, i.e. passed its readiness.
    let start: Vec<&str> = enable
        .iter()
        .copied()
        .filter(|u| !matches!(*u, "lxgate-keys.service" | "lxgate-migrate.service"))
        .collect();
    let mut args = vec!["start"];
    args.extend(&start);
    progress.step("starting the units");
    run("starting the units", &mut systemctl(&args))?;
    if cfg.host.nginx {
        run(
            "reloading nginx",
            &mut systemctl(&["reload-or-restart", "nginx.service"]),
        )?;
    }
    progress.step("smoke");
    smoke(cfg, &layout.current_bin(), opts)
}

/// /readyz, then `bin smoke` as the service user with the units' environment.
pub(crate) fn smoke(cfg: &Config, bin: &Path, opts: &Options) -> anyhow::Result<()> {
    wait_ready(cfg)?;
    let mut smoke = vec![
        "smoke".to_string(),
        "--port".into(),
        opts.smoke_port.to_string(),
    ];
    if let Some(ca) = &opts.smoke_ca {
        smoke.extend(["--ca".into(), ca.display().to_string()]);
    }
    let args: Vec<&str> = smoke.iter().map(String::as_str).collect();
    run("lxgate smoke", &mut as_service(cfg, bin, &args))?;
    Ok(())
}

/// /readyz 200 on the app's own listener (TCP); a unix socket relies on Type=notify.
fn wait_ready(cfg: &Config) -> anyhow::Result<()> {
    let listen = &cfg.server.listen;
    if listen.starts_with("unix:") {
        return Ok(());
    }
    let url = format!("http://{listen}/readyz");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let start = Instant::now();
    loop {
        match agent.get(&url).call() {
            Ok(r) if r.status() == 200 => return Ok(()),
            other => {
                if start.elapsed() > Duration::from_secs(90) {
                    let why = match other {
                        Err(ureq::Error::Status(_, r)) => r.into_string().unwrap_or_default(),
                        Err(e) => e.to_string(),
                        Ok(r) => format!("status {}", r.status()),
                    };
                    bail!("{url} did not answer 200 within 90 s: {why}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub struct Done {
    pub release: String,
    pub entry: Entry,
}

/// Ignore SIGHUP, as deploy-rs's activator does: the operator's ssh session may end
/// mid-deploy, and a deploy or rollback that finishes beats one cut short with ingest
/// paused. Unsafe because rustix sets no signal dispositions; a handler (signal-hook,
/// tokio) would not do: SIG_IGN is kept across exec, so nixos-rebuild and
/// switch-to-configuration outlive the hangup too, and a handler is reset there.
#[allow(unsafe_code)]
pub(crate) fn outlive_the_terminal() {
    // SAFETY: SIG_IGN installs no handler code; signal() takes no pointers.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
}

/// Deploy `opts.release`, or finish the deploy a killed run left.
pub fn deploy(cfg: &Config, layout: &Layout, opts: &Options) -> anyhow::Result<Done> {
    outlive_the_terminal();
    std::fs::create_dir_all(&layout.prefix)?;
    let lock_path = layout.prefix.join("deploy.lock");
    let lock = std::fs::File::create(&lock_path)?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another lxgate deploy holds {}; wait for it to end",
                lock_path.display()
            )
        },
    )?;
    let state = cfg.paths.state.clone();
    // Install, stop, flip, files, keys and migrations, start, smoke.
    let progress = Progress::steps("deploy", 7);
    progress.step("installing the release");
    let id = install(layout, &opts.release)?;

    let journal = match in_progress(&state) {
        Some(j) if j.generation.is_some() => bail!(
            "a NixOS deploy (started {}) has not finished; run `lxgate deploy --nixos` again to finish it first",
            j.started
        ),
        Some(j) if j.rolling_back || j.to != id => {
            // A deploy to another release, or a rollback, was cut short: finish its
            // rollback first; this release is then deployed from a known state.
            let reason = j
                .reason
                .clone()
                .unwrap_or_else(|| "an interrupted deploy was not finished".into());
            progress.suspend(|| {
                eprintln!(
                    "lxgate deploy: finishing the rollback of {} first ({reason})",
                    j.to
                )
            });
            rollback(cfg, layout, opts, j, &reason, &progress)?;
            None
        }
        other => other,
    };
    let j = match journal {
        Some(j) => {
            progress.suspend(|| eprintln!("lxgate deploy: resuming the deploy of {id}"));
            j
        }
        None => {
            let from = current(layout);
            if from.as_deref() == Some(id.as_str()) {
                // A rerun after a deploy that finished (perhaps just before a kill).
                progress.finish_as("already current");
                return Ok(Done {
                    release: id.clone(),
                    entry: Entry {
                        at: Utc::now(),
                        from,
                        to: id,
                        outcome: "current".into(),
                        reason: None,
                        restored: None,
                    },
                });
            }
            let j = Journal {
                started: Utc::now(),
                from,
                to: id.clone(),
                rolling_back: false,
                reason: None,
                restore: None,
                generation: None,
            };
            write_journal(&state, &j)?;
            j
        }
    };
    progress
        .suspend(|| pause::open(&state, "deploy", &format!("deploying {id}")))
        .with_context(|| format!("pausing ingest ({})", pause::marker(&state).display()))?;
    let forward = (|| -> anyhow::Result<()> {
        progress.step("stopping lxgate's units");
        stop_units(layout);
        progress.step("switching current");
        flip(layout, &id)?;
        progress.step("installing units, tmpfiles and nginx");
        let units = install_files(cfg, layout, &id)?;
        start_and_check(cfg, layout, &units, opts, &progress)
    })();
    match forward {
        Ok(()) => {
            progress.suspend(|| pause::close(&state))?;
            let entry = Entry {
                at: Utc::now(),
                from: j.from.clone(),
                to: id.clone(),
                outcome: "deployed".into(),
                reason: None,
                restored: None,
            };
            record(&state, &entry)?;
            end_journal(&state);
            let mut protect = vec![id.as_str()];
            protect.extend(j.from.as_deref());
            for r in prune(layout, opts.keep.max(2), &protect) {
                progress.suspend(|| eprintln!("lxgate deploy: removed old release {r}"));
            }
            progress.finish_as("deployed");
            Ok(Done { release: id, entry })
        }
        Err(e) => {
            let reason = format!("{e:#}");
            let mut j = j;
            j.rolling_back = true;
            j.reason = Some(reason.clone());
            write_journal(&state, &j)?;
            progress.suspend(|| eprintln!("lxgate deploy: {id} failed, rolling back: {reason}"));
            let entry = rollback(cfg, layout, opts, j, &reason, &progress);
            progress.finish_as(if entry.is_ok() {
                "rolled back"
            } else {
                "rollback failed"
            });
            let entry = entry?;
            Ok(Done {
                release: entry.from.clone().unwrap_or_default(),
                entry,
            })
        }
    }
}

/// Back to `j.from`; restore the snapshot this deploy's migration took when the
/// previous release refuses the schema. The journal stays until it is done, so a killed
/// rollback is finished by the next run.
fn rollback(
    cfg: &Config,
    layout: &Layout,
    opts: &Options,
    j: Journal,
    reason: &str,
    progress: &Progress,
) -> anyhow::Result<Entry> {
    let state = cfg.paths.state.clone();
    let Some(from) = j.from.clone() else {
        bail!(
            "{} failed on a host without a previous release, so there is nothing to roll back to: {reason}. Fix the cause and run the deploy again",
            j.to
        );
    };
    let mut j = Journal {
        rolling_back: true,
        reason: Some(reason.to_string()),
        ..j
    };
    write_journal(&state, &j)?;
    progress.suspend(|| pause::open(&state, "deploy", &format!("rolling back to {from}")))?;
    let result = (|| -> anyhow::Result<Option<String>> {
        progress.step("rolling back: stopping lxgate's units");
        stop_units(layout);
        flip(layout, &from)?;
        progress.step("rolling back: installing the previous release's files");
        let units = install_files(cfg, layout, &from)?;
        let old = layout.bin_of(&from);
        if j.restore.is_none() {
            let runs_on_it = as_service(cfg, &old, &["migrate", "--status"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !runs_on_it {
                let snap = crate::db::snapshot::list(&state)?
                    .into_iter()
                    .rev()
                    .find(|m| m.taken_at >= j.started)
                    .with_context(|| format!("{from} cannot run on the database, and this deploy took no snapshot to restore; restore one by hand (`lxgate snapshot list`)"))?;
                j.restore = Some(snap.id);
                write_journal(&state, &j)?;
            }
        }
        if let Some(id) = &j.restore {
            progress.step("rolling back: restoring the snapshot");
            run(
                "restoring the snapshot",
                &mut as_service(cfg, &old, &["snapshot", "restore", id]),
            )?;
        }
        let restored = j.restore.clone();
        start_and_check(cfg, layout, &units, opts, progress)?;
        Ok(restored)
    })();
    match result {
        Ok(restored) => {
            progress.suspend(|| pause::close(&state))?;
            let entry = Entry {
                at: Utc::now(),
                from: Some(from),
                to: j.to.clone(),
                outcome: "rolled_back".into(),
                reason: Some(reason.to_string()),
                restored,
            };
            record(&state, &entry)?;
            end_journal(&state);
            Ok(entry)
        }
        Err(e) => {
            let entry = Entry {
                at: Utc::now(),
                from: Some(from),
                to: j.to.clone(),
                outcome: "failed".into(),
                reason: Some(format!("{reason}; the rollback failed too: {e:#}")),
                restored: None,
            };
            let _ = record(&state, &entry);
            Err(e.context(format!(
                "the rollback of {} did not finish; ingest stays paused. Fix the cause and run `lxgate deploy --release` again to finish it",
                j.to
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_units_lxgate_rendered_are_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let ours = format!(
            "{}[Service]\nExecStart=/opt/lxgate/current/bin/lxgate serve\n",
            crate::contract::render::HEADER
        );
        for n in [
            "lxgate.service",
            "lxgate-keys.service",
            "lxgate-storage-audit.timer",
        ] {
            std::fs::write(dir.path().join(n), &ours).unwrap();
        }
        // The host's own: the twin's test runner (which runs `lxgate deploy`), a backup
        // wrapper, and an unrelated unit.
        for n in [
            "lxgate-twin-test.service",
            "lxgate-offsite.service",
            "nginx.service",
        ] {
            std::fs::write(
                dir.path().join(n),
                "[Service]\nExecStart=/bin/sh /twin/scenario.sh\n",
            )
            .unwrap();
        }
        assert_eq!(
            rendered_units(dir.path()),
            ["lxgate-storage-audit.timer", "lxgate.service"]
        );
    }
}
