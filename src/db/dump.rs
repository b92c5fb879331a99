//! A database dump that is never plaintext on disk: `pg_dump --format=custom` streams
//! through the age encryptor to the host's master recipient into one file, and a restore
//! streams the age decryptor into `pg_restore`. Pre-migration snapshots and backups
//! both use this, so there is one way a dump is made and opened.
//!
//! The connection travels in the child's environment (PGHOST, PGPASSWORD, …), never in
//! its argv, where any local user could read a password with `ps`.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use sha2::{Digest, Sha256};

use crate::crypto::age::{self, AgeError, Identity, Recipient};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{0}")]
    Tool(io::Error),
    #[error("DATABASE_URL cannot be handed to {tool}: {why}")]
    Url { tool: &'static str, why: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("the dump {path} does not open with this host's master identity: {source}. Use the identity it was sealed to (age -d -i KEY)")]
    Open { path: PathBuf, source: AgeError },
    #[error("writing the dump {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("reading the dump {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// What was written: the sealed file's size and sha256 (the manifest records both, so a
/// restore can refuse a file that changed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedDump {
    pub bytes: u64,
    pub sha256: String,
}

/// The libpq environment for `url` (a URL or key=value string), so tools connect to
/// exactly what the service connects to.
fn libpq_env(url: &str, tool: &'static str) -> Result<Vec<(&'static str, String)>, DumpError> {
    super::libpq_env(url).map_err(|e| DumpError::Url {
        tool,
        why: match e {
            super::DbError::BadUrl(why) => why,
            other => other.to_string(),
        },
    })
}

fn tool_command(tool: &'static str, url: &str) -> Result<Command, DumpError> {
    let mut c = Command::new(super::tools::program(tool).map_err(DumpError::Tool)?);
    // A PGSERVICE/PGPASSFILE of the caller's shell must not redirect the dump.
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGDATABASE",
        "PGHOST",
    ] {
        c.env_remove(var);
    }
    c.envs(libpq_env(url, tool)?);
    Ok(c)
}

/// Collects a child's stderr on a thread so a chatty tool cannot block on a full pipe.
fn collect(stderr: Option<ChildStderr>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s.trim().to_string()
    })
}

fn finish(
    tool: &'static str,
    mut child: Child,
    stderr: std::thread::JoinHandle<String>,
) -> Result<(), DumpError> {
    let status = child.wait().map_err(DumpError::Tool)?;
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(DumpError::Failed {
            tool,
            status: status.to_string(),
            stderr,
        })
    }
}

/// A dump being written; removed unless it was renamed into place.
struct Partial(PathBuf);

impl Partial {
    /// Renamed into place: nothing left to remove.
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Hashes and counts what the sealer writes.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.sha.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Dump the database at `url` sealed to `to` into `out` (mode 0600), atomically: the
/// file appears under its name only when pg_dump succeeded and the age file is complete
/// and on disk. A failed dump leaves nothing behind.
pub fn dump_sealed(url: &str, to: &Recipient, out: &Path) -> Result<SealedDump, DumpError> {
    dump_sealed_at(url, to, out, None)
}

/// As `dump_sealed`, of the snapshot a transaction exported with `pg_export_snapshot()`
/// (it must stay open until this returns): the dump then holds exactly the rows that
/// transaction saw, so counts taken in it describe the dump (a backup's manifest).
pub fn dump_sealed_at(
    url: &str,
    to: &Recipient,
    out: &Path,
    snapshot: Option<&str>,
) -> Result<SealedDump, DumpError> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let write_err = |source| DumpError::Write {
        path: out.to_path_buf(),
        source,
    };
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("dump");
    let temp = Partial(dir.join(format!(".{name}.partial-{}", std::process::id())));
    let _ = std::fs::remove_file(&temp.0);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp.0)
            .map_err(write_err)?
    };
    let mut cmd = tool_command("pg_dump", url)?;
    cmd.args(["--format=custom", "--no-owner", "--no-privileges"]);
    if let Some(s) = snapshot {
        cmd.arg(format!("--snapshot={s}"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(DumpError::Tool)?;
    let stderr = collect(child.stderr.take());
    let mut plain = child.stdout.take().expect("piped stdout");
    let mut sink = Hashing {
        inner: &file,
        sha: Sha256::new(),
        n: 0,
    };
    let sealed = age::encrypt(to, &mut plain, &mut sink);
    drop(plain);
    // pg_dump's verdict first: a failed dump also ends the stream early, and its
    // stderr says why where the sealer's error would only say "broken pipe".
    finish("pg_dump", child, stderr)?;
    sealed.map_err(write_err)?;
    let (sha, n) = (sink.sha, sink.n);
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&temp.0, out).map_err(write_err)?;
    temp.disarm();
    crate::durable::sync_dir(dir);
    Ok(SealedDump {
        bytes: n,
        sha256: hex::encode(sha.finalize()),
    })
}

/// The sha256 of a file as it is on disk (to check a dump against its manifest).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// How a restore treats what the target database already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreInto {
    /// An empty database (a scratch database, a fresh host).
    Empty,
    /// The same database the dump came from: objects are dropped and recreated.
    Replace,
}

/// Restore a sealed dump into the database at `url`, in one transaction: either the
/// whole dump is in, or the database is as it was.
pub fn restore_sealed(
    path: &Path,
    identity: &Identity,
    url: &str,
    into: RestoreInto,
) -> Result<(), DumpError> {
    let file = File::open(path).map_err(|source| DumpError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cmd = tool_command("pg_restore", url)?;
    cmd.args([
        "--exit-on-error",
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
    ]);
    if into == RestoreInto::Replace {
        cmd.args(["--clean", "--if-exists"]);
    }
    // pg_restore needs -d to restore into a database rather than print SQL; the name
    // alone is no secret, the rest of the connection is in the environment.
    let db = libpq_env(url, "pg_restore")?
        .into_iter()
        .find(|(k, _)| *k == "PGDATABASE")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let mut child = cmd
        .arg("--dbname")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(DumpError::Tool)?;
    let stderr = collect(child.stderr.take());
    let mut stdin = child.stdin.take().expect("piped stdin");
    let opened = age::decrypt(identity, &mut BufReader::new(file), &mut stdin);
    if let Err(source) = opened {
        if matches!(&source, AgeError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe) {
            drop(stdin);
            // pg_restore stopped reading: its exit status and stderr say why.
            finish("pg_restore", child, stderr)?;
            return Err(DumpError::Read {
                path: path.to_path_buf(),
                source: io::Error::from(io::ErrorKind::BrokenPipe),
            });
        }
        // Killed before its input ends, so a stream cut at a chunk boundary can never
        // look complete to pg_restore; the server rolls the single transaction back.
        let _ = child.kill();
        let _ = child.wait();
        drop(stdin);
        return Err(DumpError::Open {
            path: path.to_path_buf(),
            source,
        });
    }
    drop(stdin);
    finish("pg_restore", child, stderr)
}
