//! The system's `restic`, driven as a child process. The repository password reaches it
//! as a file name (RESTIC_PASSWORD_FILE), the backend's credentials through its
//! environment; neither is ever in argv or a log line. Its failures are sorted into the
//! few an operator can act on (wrong password, no repository, a damaged one).

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::crypto::age::{ExposeSecret, SecretString};
use crate::progress::{tree_size, Progress, Total};

/// The child's stderr, read to its end on a thread of its own (restic could block on a
/// full pipe while its stdout is read or it is waited for).
fn stderr_of(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    })
}

/// `restic stats --mode restore-size --json` (its file count includes directories).
#[derive(Debug, Deserialize)]
struct RestoreSize {
    total_size: u64,
    total_file_count: u64,
}

/// The systemd credentials lxgate-backup.service loads (nix/contract.toml).
pub const PASSWORD_CREDENTIAL: &str = "restic-password";
pub const ENV_CREDENTIAL: &str = "restic-env";

#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    #[error("restic is not installed or not in PATH ({0}): apt-get install restic (NixOS: the module adds it)")]
    Missing(std::io::Error),
    #[error("no restic repository is configured: set [backup] repository in the settings or pass --repository")]
    NoRepository,
    #[error("no repository password: load the systemd credential {PASSWORD_CREDENTIAL} (lxgate-backup.service does, from /etc/lxgate/credentials/{PASSWORD_CREDENTIAL}), set RESTIC_PASSWORD_FILE or pass --password-file")]
    NoPassword,
    #[error("the restic environment file {path} is unreadable or malformed ({why}); it holds KEY=VALUE lines, one per line")]
    BadEnvFile { path: PathBuf, why: String },
    #[error("the repository password is wrong (restic: no key found for it): use the password this repository was initialised with")]
    WrongPassword,
    #[error("there is no restic repository at {0}: check [backup] repository, or create it once with `restic init`")]
    NotARepository(String),
    #[error("the repository is damaged (restic check found errors): {0}. Do not prune it; run `restic check --read-data` and `restic repair` (restic ≥ 0.16), then back up again")]
    Damaged(String),
    #[error("no snapshot {0} in the repository: list them with `restic snapshots`")]
    NoSnapshot(String),
    #[error("restic {what} failed ({status}): {stderr}")]
    Failed {
        what: &'static str,
        status: String,
        stderr: String,
    },
}

/// How to reach one repository. Debug never shows the environment's values.
pub struct Restic {
    pub repository: String,
    password_file: PathBuf,
    env: Vec<(String, SecretString)>,
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Restic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restic")
            .field(
                "repository",
                &crate::config::redact_repository(&self.repository),
            )
            .field("password_file", &self.password_file)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where the repository, its password and the backend's environment come from, in order:
/// what the command line names, then the unit's credentials, then the environment.
#[derive(Debug, Default, Clone)]
pub struct Access {
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
}

impl Restic {
    /// `configured`: the settings' [backup] repository; `env`: the process environment.
    pub fn locate(
        given: &Access,
        configured: Option<&str>,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Restic, ResticError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
        let repository = given
            .repository
            .clone()
            .or_else(|| configured.map(str::to_string))
            .or_else(|| get("RESTIC_REPOSITORY").cloned())
            .ok_or(ResticError::NoRepository)?;
        let credential = |name: &str| {
            get("CREDENTIALS_DIRECTORY")
                .map(|d| Path::new(d).join(name))
                .filter(|p| p.is_file())
        };
        let password_file = given
            .password_file
            .clone()
            .or_else(|| credential(PASSWORD_CREDENTIAL))
            .or_else(|| get("RESTIC_PASSWORD_FILE").map(PathBuf::from))
            .ok_or(ResticError::NoPassword)?;
        let env = match given
            .env_file
            .clone()
            .or_else(|| credential(ENV_CREDENTIAL))
        {
            Some(p) => read_env_file(&p)?,
            None => Vec::new(),
        };
        Ok(Restic {
            repository,
            password_file,
            env,
            cache_dir: get("CACHE_DIRECTORY").map(PathBuf::from),
        })
    }

    fn command(&self) -> Result<Command, ResticError> {
        let mut c = Command::new("restic");
        // Only what this Restic says: a password or repository of the caller's shell
        // must not redirect a backup.
        for var in [
            "RESTIC_PASSWORD",
            "RESTIC_PASSWORD_COMMAND",
            "RESTIC_REPOSITORY_FILE",
            "RESTIC_KEY_HINT",
        ] {
            c.env_remove(var);
        }
        c.env("RESTIC_REPOSITORY", &self.repository)
            .env("RESTIC_PASSWORD_FILE", &self.password_file);
        if let Some(d) = &self.cache_dir {
            c.env("RESTIC_CACHE_DIR", d);
        }
        for (k, v) in &self.env {
            c.env(k, v.expose_secret());
        }
        c.stdin(Stdio::null());
        Ok(c)
    }

    /// Run restic with `args`; its stdout on success, its failure sorted otherwise.
    fn output(&self, what: &'static str, args: &[&str]) -> Result<Vec<u8>, ResticError> {
        let o = self
            .command()?
            .args(args)
            .output()
            .map_err(ResticError::Missing)?;
        if o.status.success() {
            return Ok(o.stdout);
        }
        Err(self.sorted(what, o.status, &String::from_utf8_lossy(&o.stderr)))
    }

    fn sorted(
        &self,
        what: &'static str,
        status: std::process::ExitStatus,
        stderr: &str,
    ) -> ResticError {
        let stderr = stderr.trim();
        if stderr.contains("wrong password") {
            ResticError::WrongPassword
        } else if stderr.contains("Is there a repository at the following location?")
            || stderr.contains("unable to open config file")
        {
            ResticError::NotARepository(crate::config::redact_repository(&self.repository))
        } else if stderr.contains("no matching ID found") || stderr.contains("no snapshot found") {
            ResticError::NoSnapshot(last_line(stderr))
        } else {
            ResticError::Failed {
                what,
                status: status.to_string(),
                stderr: tail(stderr),
            }
        }
    }

    /// `restic backup`: a snapshot of `paths` tagged `tag`, without `excludes`. Progress
    /// is one line redrawn on a TTY, else nothing until the summary. The snapshot's ID.
    pub fn backup(
        &self,
        paths: &[PathBuf],
        excludes: &[String],
        tag: &str,
    ) -> Result<BackupSummary, ResticError> {
        let mut c = self.command()?;
        c.args(["backup", "--json", "--tag", tag]);
        for e in excludes {
            c.arg("--exclude").arg(e);
        }
        c.arg("--").args(paths);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ResticError::Missing)?;
        let err = stderr_of(&mut child);
        let tty = std::io::stderr().is_terminal();
        let mut summary = None;
        let (mut vanished, mut unreadable) = (0u64, Vec::new());
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let Ok(line) = line else { break };
            let Ok(m) = serde_json::from_str::<Message>(&line) else {
                continue;
            };
            match m.message_type.as_str() {
                "status" if tty => {
                    let mut e = std::io::stderr();
                    let _ = write!(
                        e,
                        "\rrestic backup: {:5.1}% {} of {} files, {} MiB",
                        m.percent_done.unwrap_or(0.0) * 100.0,
                        m.files_done.unwrap_or(0),
                        m.total_files.unwrap_or(0),
                        m.bytes_done.unwrap_or(0) >> 20
                    );
                    let _ = e.flush();
                }
                "summary" => summary = Some(m),
                // Drop folders are transient: a file the watcher took while restic was
                // walking is gone (ENOENT), and is in storage with its row by the next
                // backup. Anything else unreadable fails the backup.
                "error" if m.error.as_ref().and_then(|e| e.get("Err")) == Some(&2.into()) => {
                    vanished += 1
                }
                "error" => unreadable.push(format!(
                    "{}: {}",
                    m.item.as_deref().unwrap_or("?"),
                    m.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
                )),
                _ => {}
            }
        }
        if tty {
            eprintln!();
        }
        let status = child.wait().map_err(ResticError::Missing)?;
        let stderr = err.join().unwrap_or_default();
        // Exit 3: some files could not be read; the snapshot exists but is incomplete,
        // and for patient media that is a failed backup, unless they only vanished.
        let only_vanished = status.code() == Some(3) && unreadable.is_empty() && summary.is_some();
        if !status.success() && !only_vanished {
            if !unreadable.is_empty() {
                return Err(ResticError::Failed {
                    what: "backup",
                    status: status.to_string(),
                    stderr: format!(
                        "{} files could not be read (first: {})",
                        unreadable.len(),
                        unreadable[..unreadable.len().min(3)].join("; ")
                    ),
                });
            }
            return Err(self.sorted("backup", status, &stderr));
        }
        let m = summary.ok_or_else(|| ResticError::Failed {
            what: "backup",
            status: status.to_string(),
            stderr: "restic printed no summary".into(),
        })?;
        Ok(BackupSummary {
            snapshot: m.snapshot_id.unwrap_or_default(),
            files: m.total_files_processed.unwrap_or(0),
            bytes: m.total_bytes_processed.unwrap_or(0),
            added: m.data_added.unwrap_or(0),
            vanished,
        })
    }

    /// `restic check`: the repository's structure (add `--read-data` for every pack).
    pub fn check(&self, read_data: bool) -> Result<(), ResticError> {
        let mut args = vec!["check"];
        if read_data {
            args.push("--read-data");
        }
        match self.output("check", &args) {
            Err(ResticError::Failed { stderr, .. }) => Err(ResticError::Damaged(stderr)),
            other => other.map(|_| ()),
        }
    }

    /// Every snapshot tagged `tag`, oldest first.
    pub fn snapshots(&self, tag: &str) -> Result<Vec<Snapshot>, ResticError> {
        let out = self.output("snapshots", &["snapshots", "--json", "--tag", tag])?;
        serde_json::from_slice(&out).map_err(|e| ResticError::Failed {
            what: "snapshots",
            status: "0".into(),
            stderr: format!("unreadable JSON: {e}"),
        })
    }

    /// The snapshot `id` (a prefix works), or the newest tagged `tag` when `id` is None.
    pub fn snapshot(&self, id: Option<&str>, tag: &str) -> Result<Snapshot, ResticError> {
        let all = self.snapshots(tag)?;
        let found = match id {
            None | Some("latest") => all.into_iter().last(),
            Some(id) => all.into_iter().find(|s| s.id.starts_with(id)),
        };
        found.ok_or_else(|| ResticError::NoSnapshot(id.unwrap_or("latest").to_string()))
    }

    /// `restic restore ID --target DIR`: the snapshot's absolute paths below `target`,
    /// with progress under `what`. restic 0.14 (Debian 12) reports nothing while it
    /// restores, so the progress is what has arrived under `target` against the
    /// snapshot's restore size, looked at twice a second.
    pub fn restore(&self, id: &str, target: &Path, what: &str) -> Result<(), ResticError> {
        let size = self.restore_size(id);
        let progress = Progress::start(
            what,
            Total {
                files: size.as_ref().map_or(0, |s| s.total_file_count),
                bytes: size.as_ref().ok().map(|s| s.total_size),
            },
        );
        let mut child = self
            .command()?
            .args(["restore", id, "--target"])
            .arg(target)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ResticError::Missing)?;
        let err = stderr_of(&mut child);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(ResticError::Missing)? {
                break status;
            }
            let (files, bytes) = tree_size(target);
            progress.set(files, bytes);
            std::thread::sleep(std::time::Duration::from_millis(500));
        };
        let (files, bytes) = tree_size(target);
        progress.set(files, bytes);
        progress.finish();
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(self.sorted("restore", status, &stderr))
        }
    }

    /// What restoring `id` writes: `restic stats --mode restore-size`.
    fn restore_size(&self, id: &str) -> Result<RestoreSize, ResticError> {
        let out = self.output("stats", &["stats", "--json", "--mode", "restore-size", id])?;
        serde_json::from_slice(&out).map_err(|e| ResticError::Failed {
            what: "stats",
            status: "0".into(),
            stderr: format!("unreadable JSON: {e}"),
        })
    }

    /// `restic forget --prune` of snapshots tagged `tag` beyond the keep counts.
    pub fn forget_prune(&self, tag: &str, keep: [(&str, u32); 3]) -> Result<(), ResticError> {
        let counts: Vec<(String, String)> = keep
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (format!("--keep-{k}"), n.to_string()))
            .collect();
        if counts.is_empty() {
            return Ok(());
        }
        let mut args = vec!["forget", "--prune", "--tag", tag];
        for (k, n) in &counts {
            args.extend([k.as_str(), n.as_str()]);
        }
        self.output("forget", &args).map(|_| ())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub time: String,
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub hostname: String,
}

#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub snapshot: String,
    pub files: u64,
    pub bytes: u64,
    pub added: u64,
    /// Files that disappeared while restic walked (drops the watcher took meanwhile).
    pub vanished: u64,
}

/// restic's `--json` lines (status and summary share one shape here).
#[derive(Deserialize)]
struct Message {
    message_type: String,
    percent_done: Option<f64>,
    total_files: Option<u64>,
    files_done: Option<u64>,
    bytes_done: Option<u64>,
    snapshot_id: Option<String>,
    total_files_processed: Option<u64>,
    total_bytes_processed: Option<u64>,
    data_added: Option<u64>,
    error: Option<serde_json::Value>,
    item: Option<String>,
}

/// A KEY=VALUE file as systemd's EnvironmentFile= reads it (comments, blank lines,
/// optional quotes). Values are secrets: they go to restic's environment and nowhere else.
fn read_env_file(p: &Path) -> Result<Vec<(String, SecretString)>, ResticError> {
    let bad = |why: String| ResticError::BadEnvFile {
        path: p.to_path_buf(),
        why,
    };
    let text = SecretString::from(std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?);
    let mut out = Vec::new();
    for (n, line) in text.expose_secret().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(format!("line {} has no '='", n + 1)));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!("line {} names no variable", n + 1)));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), SecretString::from(v.to_string())));
    }
    Ok(out)
}

fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or("").trim().to_string()
}

/// The last lines of a tool's stderr: where restic says what went wrong.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_as_systemd_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("env");
        std::fs::write(
            &p,
            "# backend\nAWS_ACCESS_KEY_ID=abc\nexport AWS_SECRET_ACCESS_KEY=\"s e=cret\"\n\nB2_KEY='x'\n",
        )
        .unwrap();
        let got: Vec<(String, String)> = read_env_file(&p)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.expose_secret().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("AWS_ACCESS_KEY_ID".into(), "abc".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s e=cret".into()),
                ("B2_KEY".into(), "x".into())
            ]
        );
        std::fs::write(&p, "AWS_ACCESS_KEY_ID\n").unwrap();
        let e = read_env_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 1 has no '='"), "{e}");
        assert!(!e.contains("AWS"), "{e}");
    }

    #[test]
    fn a_password_in_a_repository_url_is_never_shown() {
        use crate::config::redact_repository as r;
        assert_eq!(
            r("rest:https://site:s3cret@backup.example.org:8000/site-a"),
            "rest:https://site:***@backup.example.org:8000/site-a"
        );
        assert_eq!(
            r("rest:https://backup.example.org/a@b"),
            "rest:https://backup.example.org/a@b"
        );
        assert_eq!(
            r("sftp:backup@host:/srv/restic"),
            "sftp:backup@host:/srv/restic"
        );
        assert_eq!(r("/var/backups/lxgate/repo"), "/var/backups/lxgate/repo");
        let e = ResticError::NotARepository(r("rest:https://u:pw@h/x")).to_string();
        assert!(!e.contains("pw@"), "{e}");
    }

    #[test]
    fn the_command_line_wins_then_credentials_then_the_environment() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(PASSWORD_CREDENTIAL), "pw\n").unwrap();
        let mut env = std::collections::BTreeMap::new();
        env.insert("RESTIC_PASSWORD_FILE".into(), "/from/env".into());
        let none = Access::default();
        let r = Restic::locate(&none, Some("/repo"), &env).unwrap();
        assert_eq!(r.password_file, Path::new("/from/env"));
        env.insert(
            "CREDENTIALS_DIRECTORY".into(),
            d.path().display().to_string(),
        );
        let r = Restic::locate(&none, Some("/repo"), &env).unwrap();
        assert_eq!(r.password_file, d.path().join(PASSWORD_CREDENTIAL));
        let given = Access {
            repository: Some("/other".into()),
            password_file: Some("/given".into()),
            env_file: None,
        };
        let r = Restic::locate(&given, Some("/repo"), &env).unwrap();
        assert_eq!(
            (r.repository.as_str(), r.password_file.as_path()),
            ("/other", Path::new("/given"))
        );
        assert!(matches!(
            Restic::locate(&none, None, &Default::default()),
            Err(ResticError::NoRepository)
        ));
        assert!(matches!(
            Restic::locate(&none, Some("/repo"), &Default::default()),
            Err(ResticError::NoPassword)
        ));
    }
}
