//! A private PostgreSQL cluster started from the system's binaries: `lxgate dev` keeps
//! one under its state dir, the test harness starts one per test run. Unix socket
//! only (`listen_addresses=''`), trust auth inside a directory only its owner reaches.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Cluster {
    pub dir: PathBuf,
    pub socket_dir: PathBuf,
    bindir: PathBuf,
    /// When running as root, the server runs as this account (initdb refuses root).
    run_as: Option<String>,
    stop_on_drop: bool,
}

/// The directory holding initdb/pg_ctl: PATH first, then Debian's newest
/// /usr/lib/postgresql/N/bin.
pub fn find_bindir() -> Result<PathBuf> {
    match crate::db::tools::bindir_with(&["initdb", "pg_ctl"]) {
        Some(p) => Ok(p),
        None => bail!(
            "no PostgreSQL server binaries found (initdb, pg_ctl): install them with \
             `apt-get install postgresql` (Debian) or enter `nix develop`"
        ),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Cluster {
    /// Create (first time) and start a cluster under `dir`; reuse it if it already runs.
    pub fn start(dir: &Path) -> Result<Cluster> {
        let bindir = find_bindir()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let socket_dir = dir.join("sock");
        let data = dir.join("pgdata");
        let run_as = is_root().then(|| "postgres".to_string());
        let c = Cluster {
            dir: dir.clone(),
            socket_dir: socket_dir.clone(),
            bindir,
            run_as,
            stop_on_drop: true,
        };
        std::fs::create_dir_all(&socket_dir)?;
        if let Some(user) = &c.run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:"), &dir.display().to_string()])
                .status()?;
            if !status.success() {
                bail!("cannot chown {} to {user}: does the account exist? (`apt-get install postgresql` creates it)", dir.display());
            }
        }
        if !data.join("PG_VERSION").exists() {
            let out = c
                .command("initdb")
                .args([
                    "-D",
                    &data.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .output()?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        if !c.running(&data) {
            let opts = format!(
                "-c listen_addresses='' -c unix_socket_directories='{}' -c fsync=on -c max_connections=200",
                socket_dir.display()
            );
            let out = c
                .command("pg_ctl")
                .args([
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &dir.join("postgres.log").display().to_string(),
                    "-w",
                    "-o",
                    &opts,
                    "start",
                ])
                .output()?;
            if !out.status.success() {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                bail!(
                    "pg_ctl start failed: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    log
                );
            }
        }
        Ok(c)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bindir.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn running(&self, data: &Path) -> bool {
        self.command("pg_ctl")
            .args(["-D", &data.display().to_string(), "status"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Leave the server running after this handle is dropped (`lxgate dev` restarts reuse it).
    pub fn keep_running(mut self) -> Self {
        self.stop_on_drop = false;
        self
    }

    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port=5432 user=postgres dbname={dbname}",
            self.socket_dir.display()
        )
    }

    pub async fn create_database(&self, name: &str) -> Result<String> {
        let admin = crate::db::connect(&self.url("postgres")).await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            // Names come from our own code (dev, test ids), quoted anyway.
            admin
                .batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
                .await?;
        }
        Ok(self.url(name))
    }

    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.dir.join("pgdata").display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            self.stop();
        }
    }
}
