//! `lxgate deploy --nixos -- ARGS` against a system profile of its own (issue 18). The
//! host has real PostgreSQL, age, pg_dump/pg_restore, systemd-tmpfiles and nix-env; the
//! NixOS parts are real processes standing in for a NixOS host:
//! - system generations are directories whose `bin/switch-to-configuration` is a script
//!   that records its call and installs that generation's settings file and tmpfiles
//!   rules (what activation does with /etc);
//! - `nixos-rebuild` is a script that adds the next generation to the profile and runs
//!   its switch-to-configuration, as `nixos-rebuild switch` does;
//! - this host has no systemd as PID 1, so `systemd-run` runs the command in place with
//!   the environment the unit would get, and `systemctl` records its call.
//!
//! The host runs everything as root (user, group and keys group `root` in the settings),
//! so smoke passes here when nothing is wrong.
mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Host {
    site: Site,
    dir: PathBuf,
    state: PathBuf,
    /// The settings file lxgate reads: a link the generations' activation replaces.
    config: PathBuf,
    profile: PathBuf,
    calls: PathBuf,
    stand_ins: PathBuf,
}

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\nset -e\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Host {
    fn new() -> Host {
        need_tool("nix-env");
        need_tool("systemd-tmpfiles");
        let mut site = Site::new("standalone");
        let dir = site.dir.path().to_path_buf();
        let state = dir.join("state");
        let config = dir.join("etc/lxgate.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        site.set("LXGATE_CONFIG", config.to_str().unwrap());
        site.set("LX_ANNOTATE_DEFAULT_CENTER", "A");
        let calls = dir.join("calls.log");
        let stand_ins = dir.join("stand-ins");
        script(
            &stand_ins.join("systemd-run"),
            r#"while [ $# -gt 0 ]; do
  case "$1" in
    --setenv=*) export "${1#--setenv=}" ;;
    --property=EnvironmentFile=*) f=${1#--property=EnvironmentFile=}; f=${f#-}; if [ -f "$f" ]; then set -a; . "$f"; set +a; fi ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
exec "$@"
"#,
        );
        script(
            &stand_ins.join("systemctl"),
            &format!("echo \"systemctl $*\" >> {}\n", calls.display()),
        );
        let h = Host {
            site,
            profile: dir.join("profiles/system"),
            dir,
            state,
            config,
            calls,
            stand_ins,
        };
        // Generation 1: the running system.
        let g1 = h.generation("g1", "");
        std::fs::create_dir_all(h.dir.join("profiles")).unwrap();
        std::os::unix::fs::symlink(&g1, h.dir.join("profiles/system-1-link")).unwrap();
        std::os::unix::fs::symlink("system-1-link", &h.profile).unwrap();
        run_ok(
            Command::new(g1.join("bin/switch-to-configuration")).arg("switch"),
            "activating generation 1",
        );
        std::fs::write(&h.calls, "").unwrap();
        // Made by serve when it starts; no serve runs here.
        std::fs::create_dir_all(h.site.data().join("storage/tmp")).unwrap();
        h.site.migrate();
        h.site.ensure_master_key(&h.state.join("keys/master.age"));
        h.site.ok(&["center", "add", "A", "--name", "Center A"]);
        h
    }

    /// A generation directory: its settings, its lxgate (this build), and a
    /// switch-to-configuration that installs them and then runs `extra`.
    fn generation(&self, name: &str, extra: &str) -> PathBuf {
        let g = self.dir.join("generations").join(name);
        let settings = format!(
            "[paths]\nstate = \"{}\"\n[host]\nmaster_key = \"{}\"\nnginx = false\nuser = \"root\"\ngroup = \"root\"\nkeys_group = \"root\"\nconfig = \"{}\"\n[server]\nlisten = \"unix:{}\"\n",
            self.state.display(),
            self.state.join("keys/master.age").display(),
            self.config.display(),
            self.dir.join("lxgate.sock").display(),
        );
        std::fs::create_dir_all(g.join("etc/systemd/system")).unwrap();
        std::fs::write(g.join("lxgate.toml"), settings).unwrap();
        std::fs::write(
            g.join("etc/systemd/system/lxgate-migrate.service"),
            format!("[Service]\nExecStart={} migrate\n", bin()),
        )
        .unwrap();
        let env: Vec<(&str, &str)> = self.site.env();
        let mut tmpfiles = command(
            &[
                "--config",
                g.join("lxgate.toml").to_str().unwrap(),
                "render",
                "tmpfiles",
                "--out",
                g.join("etc").to_str().unwrap(),
            ],
            &env,
        );
        run_ok(&mut tmpfiles, "rendering tmpfiles");
        script(
            &g.join("bin/switch-to-configuration"),
            &format!(
                "echo \"{name} $*\" >> {calls}\nln -sfn {g}/lxgate.toml {cfg}.new\nmv -T {cfg}.new {cfg}\nsystemd-tmpfiles --create {g}/etc/tmpfiles.d/lxgate.conf\n{extra}",
                calls = self.calls.display(),
                g = g.display(),
                cfg = self.config.display(),
            ),
        );
        g
    }

    /// A nixos-rebuild that makes `g` generation 2 and switches to it.
    fn rebuild(&self, g: &Path) -> PathBuf {
        let path = self.dir.join("nixos-rebuild");
        script(
            &path,
            &format!(
                "echo \"nixos-rebuild $*\" >> {calls}\nln -s {g} {p}-2-link\nln -sfn system-2-link {p}.new\nmv -T {p}.new {p}\nexec {g}/bin/switch-to-configuration switch\n",
                calls = self.calls.display(),
                g = g.display(),
                p = self.profile.display(),
            ),
        );
        path
    }

    fn deploy(&self, rebuild: &Path) -> std::process::Output {
        let profile = self.profile.display().to_string();
        let rebuild = rebuild.display().to_string();
        self.lxgate(&[
            "deploy",
            "--nixos",
            "--system-profile",
            &profile,
            "--nixos-rebuild",
            &rebuild,
            "--",
            "switch",
            "--flake",
            ".#clinic",
        ])
    }

    /// lxgate as root on this host, with the stand-ins first on PATH.
    fn lxgate(&self, args: &[&str]) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.stand_ins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = self.site.env();
        env.push(("PATH", &path));
        lxgate(args, &env)
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap()
    }

    fn profile_names(&self) -> String {
        std::fs::read_link(&self.profile)
            .unwrap()
            .display()
            .to_string()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("deploy/history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn has_name_column(&self) -> bool {
        self.site.count(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'centers' AND column_name = 'name'",
        ) == 1
    }
}

fn need_tool(tool: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success(),
        "{tool} is missing (.ci/run installs it)"
    );
}

/// What a generation's activation does to break smoke: the staticfiles directory with a
/// mode the contract does not allow (a wrong tmpfiles rule).
fn break_smoke(h: &Host) -> String {
    format!("chmod 0700 {}\n", h.state.join("staticfiles").display())
}

#[test]
fn a_generation_that_passes_smoke_stays_and_ingest_resumes() {
    let h = Host::new();
    let g2 = h.generation("g2", "");
    let o = h.deploy(&h.rebuild(&g2));
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("deployed "), "{}", stdout(&o));
    assert_eq!(
        h.calls(),
        "nixos-rebuild switch --flake .#clinic\ng2 switch\n",
        "nothing rolled back, no unit stopped"
    );
    assert_eq!(h.profile_names(), "system-2-link");
    assert!(!h.state.join("deploy/ingest-paused").exists());
    let last = h.history().pop().unwrap();
    assert_eq!(last["outcome"], "deployed", "{last}");
    // Not a terminal: the summary line, no bar.
    let err = stderr(&o);
    assert!(err.contains("deploy: deployed, "), "{err}");
    assert!(!err.contains("[=") && !err.contains("\r"), "{err}");
}

#[test]
fn smoke_failing_after_an_incompatible_migration_restores_the_snapshot_and_switches_back() {
    let h = Host::new();
    let psql = lxgate::db::tools::program("psql").unwrap();
    // Generation 2's activation: its migrate unit snapshots, then applies a migration
    // declared incompatible with generation 1 (as its lxgate would); its tmpfiles
    // rules break smoke.
    let g2 = h.generation(
        "g2",
        &format!(
            "{bin} snapshot take\n{psql} -q -v ON_ERROR_STOP=1 \"$DATABASE_URL\" -c \"ALTER TABLE centers DROP COLUMN name; INSERT INTO lxgate_migrations (version, name, sha256, previous_release_compatible) VALUES (9001, 'contract_centers', 'x', false)\"\n{}",
            break_smoke(&h),
            bin = bin(),
            psql = psql.display(),
        ),
    );
    let o = h.deploy(&h.rebuild(&g2));
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    // nixos-rebuild's own output comes first (here: the snapshot the migration took).
    let verdict = stdout(&o).lines().last().unwrap_or_default().to_string();
    assert!(
        verdict.starts_with("rolled back to ") && verdict.contains("restored"),
        "{verdict}"
    );
    let calls = h.calls();
    assert!(
        calls.ends_with(
            "g2 switch\nsystemctl stop lxgate.service lxgate-watcher.service\ng1 switch\n"
        ),
        "lxgate stopped, then generation 1 activated: {calls}"
    );
    assert_eq!(h.profile_names(), "system-1-link");
    assert!(h.has_name_column(), "the snapshot gave the column back");
    assert_eq!(
        h.site
            .count("SELECT count(*) FROM lxgate_migrations WHERE version = 9001"),
        0
    );
    h.site.ok(&["migrate", "--status"]);
    assert!(!h.state.join("deploy/ingest-paused").exists());
    let last = h.history().pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    assert!(last["restored"].is_string(), "{last}");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("lxgate smoke failed"),
        "the reason says what failed: {last}"
    );
    let err = stderr(&o);
    assert!(err.contains("deploy: rolled back, "), "{err}");
}

#[test]
fn smoke_failing_without_a_migration_switches_back_and_restores_nothing() {
    let h = Host::new();
    let g2 = h.generation("g2", &break_smoke(&h));
    let o = h.deploy(&h.rebuild(&g2));
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert!(h.calls().ends_with("g1 switch\n"), "{}", h.calls());
    assert_eq!(h.profile_names(), "system-1-link");
    let last = h.history().pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");
    assert!(last["restored"].is_null(), "{last}");
    assert!(!h.state.join("deploy/ingest-paused").exists());
}

#[test]
fn a_rebuild_that_fails_before_switching_changes_nothing() {
    let h = Host::new();
    let rebuild = h.dir.join("nixos-rebuild-fails");
    script(
        &rebuild,
        "echo 'error: attribute clinic missing' >&2\nexit 1\n",
    );
    let o = h.deploy(&rebuild);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("made no new system generation"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.calls(), "", "nothing stopped, nothing switched");
    assert_eq!(h.profile_names(), "system-1-link");
    assert!(!h.state.join("deploy/ingest-paused").exists());
}

/// lxgate-deploy-gate.service's path after a switch takes the same way back: the switch
/// back runs "in a transient unit" (the stand-in runs it in place), and the previous
/// generation's lxgate smokes it there and resumes ingest.
#[test]
fn the_gate_unit_after_a_failed_switch_takes_the_same_way_back() {
    let h = Host::new();
    let g2 = h.generation("g2", &break_smoke(&h));
    // The switch the unit runs after; its migrate unit holds the pause.
    std::fs::create_dir_all(h.state.join("deploy")).unwrap();
    run_ok(&mut Command::new(h.rebuild(&g2)), "nixos-rebuild switch");
    let o = h.lxgate(&[
        "deploy",
        "gate",
        "--system-profile",
        h.profile.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rolling back to the previous generation"),
        "{}",
        stderr(&o)
    );
    assert!(
        h.calls().ends_with(
            "g2 switch\nsystemctl stop lxgate.service lxgate-watcher.service\ng1 switch\n"
        ),
        "{}",
        h.calls()
    );
    assert_eq!(h.profile_names(), "system-1-link");
    let outcomes: Vec<String> = h
        .history()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["rolling_back", "rolled_back"]);
    assert!(!h.state.join("deploy/ingest-paused").exists());
}

/// The operator's ssh session ending (SIGHUP) does not cut the deploy short.
#[test]
fn a_hangup_does_not_stop_the_deploy() {
    let h = Host::new();
    let g2 = h.generation("g2", "");
    let ready = h.dir.join("rebuild-started");
    let rebuild = h.dir.join("nixos-rebuild-slow");
    // Says it started, then waits for the hangup to have been sent.
    script(
        &rebuild,
        &format!(
            "touch {ready}\nwhile [ ! -e {ready}.hup ]; do sleep 0.05; done\nexec {}\n",
            h.rebuild(&g2).display(),
            ready = ready.display()
        ),
    );
    let profile = h.profile.display().to_string();
    let path = format!(
        "{}:{}",
        h.stand_ins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = h.site.env();
    env.push(("PATH", &path));
    let mut c = command(
        &[
            "deploy",
            "--nixos",
            "--system-profile",
            &profile,
            "--nixos-rebuild",
            rebuild.to_str().unwrap(),
            "--",
            "switch",
        ],
        &env,
    );
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "nixos-rebuild to start",
        std::time::Duration::from_secs(60),
        || ready.exists(),
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    std::fs::write(ready.with_extension("hup"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert_eq!(h.profile_names(), "system-2-link");
    assert!(!h.state.join("deploy/ingest-paused").exists());
}

/// A SIGKILL in the middle of the rollback (generation 1's activation kills lxgate the
/// first time it runs) leaves ingest paused and says so in the in-progress record; the
/// next `deploy --nixos` finishes that rollback first — activates generation 1 again,
/// smokes it, resumes ingest — and does not run nixos-rebuild again.
#[test]
fn a_rollback_killed_midway_is_finished_by_the_next_run() {
    let h = Host::new();
    let once = h.dir.join("killed-once");
    h.generation(
        "g1",
        &format!(
            "if [ ! -e {m} ]; then touch {m}; kill -9 $PPID; fi\n",
            m = once.display()
        ),
    );
    let g2 = h.generation("g2", &break_smoke(&h));
    let rebuild = h.rebuild(&g2);
    let o = h.deploy(&rebuild);
    assert_eq!(o.status.code(), None, "killed: {}", stderr(&o));
    assert!(h.state.join("deploy/ingest-paused").exists());
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.state.join("deploy/in-progress.json")).unwrap())
            .unwrap();
    assert_eq!(j["rolling_back"], true, "{j}");
    assert_eq!(j["generation"], 1, "{j}");

    let o = h.deploy(&rebuild);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("finishing its rollback now"),
        "{}",
        stderr(&o)
    );
    let calls = h.calls();
    assert_eq!(calls.matches("nixos-rebuild").count(), 1, "{calls}");
    assert!(
        calls.ends_with(
            "g1 switch\nsystemctl stop lxgate.service lxgate-watcher.service\ng1 switch\n"
        ),
        "stopped again, then generation 1 activated again: {calls}"
    );
    assert_eq!(h.profile_names(), "system-1-link");
    assert!(!h.state.join("deploy/ingest-paused").exists());
    assert!(!h.state.join("deploy/in-progress.json").exists());
    let last = h.history().pop().unwrap();
    assert_eq!(last["outcome"], "rolled_back", "{last}");

    // Over: the next run is a deploy of its own again.
    std::fs::remove_file(h.profile.with_file_name("system-2-link")).unwrap();
    let g3 = h.generation("g3", "");
    let o = h.deploy(&h.rebuild(&g3));
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
}
