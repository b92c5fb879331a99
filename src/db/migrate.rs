//! Forward-only embedded migrations (SPEC §11).
//!
//! The seed-004 incident: duplicate prefixes ran in the wrong order. Here prefixes must
//! strictly increase (checked by a unit test over the embedded set), every applied file
//! keeps its sha256 (an edited applied file is an error naming it), each migration runs
//! in its own transaction, and a session advisory lock serialises concurrent migrators.

use sha2::{Digest, Sha256};

use super::DbError;

pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// The embedded set, in file order. build.rs generates the list from migrations/.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Any number that is the same on every lxgate host: the lock key of the migrator.
const LOCK_KEY: i64 = 0x6c78_6761_7465_6d69; // "lxgatemi"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration file {0} does not start with a numeric prefix NNNN_name.sql")]
    BadName(String),
    #[error("migration prefixes must strictly increase: {earlier} and {later} share or reverse the order of prefix {version}; renumber {later}")]
    Order {
        earlier: String,
        later: String,
        version: i64,
    },
    #[error("applied migration {file} was edited after it ran (recorded sha256 {recorded}, file now {now}); migrations are forward-only: restore the file and add a new migration")]
    Edited {
        file: String,
        recorded: String,
        now: String,
    },
    #[error("database has migration {version} ({name}) that this binary does not know; run a newer lxgate")]
    Unknown { version: i64, name: String },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration {file} failed: {source}")]
    Apply {
        file: String,
        source: tokio_postgres::Error,
    },
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(DbError::Query(e))
    }
}

/// Validate a list of (file name, sql) and turn it into ordered migrations.
pub fn plan(files: &[(&'static str, &'static str)]) -> Result<Vec<Migration>, MigrateError> {
    let mut out: Vec<Migration> = Vec::new();
    for (file, sql) in files {
        let (num, rest) = file
            .split_once('_')
            .ok_or_else(|| MigrateError::BadName(file.to_string()))?;
        let version: i64 = num
            .parse()
            .map_err(|_| MigrateError::BadName(file.to_string()))?;
        if !rest.ends_with(".sql") {
            return Err(MigrateError::BadName(file.to_string()));
        }
        if let Some(prev) = out.last() {
            if version <= prev.version {
                return Err(MigrateError::Order {
                    earlier: prev.file.to_string(),
                    later: file.to_string(),
                    version,
                });
            }
        }
        out.push(Migration {
            version,
            name: rest.trim_end_matches(".sql").to_string(),
            file,
            sql,
        });
    }
    Ok(out)
}

pub fn embedded() -> Vec<Migration> {
    plan(EMBEDDED).expect("embedded migrations are ordered (checked by unit test)")
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub version: i64,
    pub file: String,
    pub applied: bool,
}

async fn ensure_table(c: &tokio_postgres::Client) -> Result<(), MigrateError> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS lxgate_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    Ok(())
}

async fn applied(c: &tokio_postgres::Client) -> Result<Vec<(i64, String, String)>, MigrateError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('lxgate_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(vec![]);
    }
    let rows = c
        .query(
            "SELECT version, name, sha256 FROM lxgate_migrations ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Compare what ran with what we have: edited files and unknown versions are errors.
fn verify(set: &[Migration], done: &[(i64, String, String)]) -> Result<(), MigrateError> {
    for (version, name, sum) in done {
        match set.iter().find(|m| m.version == *version) {
            None => {
                return Err(MigrateError::Unknown {
                    version: *version,
                    name: name.clone(),
                })
            }
            Some(m) if m.checksum() != *sum => {
                return Err(MigrateError::Edited {
                    file: m.file.to_string(),
                    recorded: sum.clone(),
                    now: m.checksum(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub async fn status(
    c: &tokio_postgres::Client,
    set: &[Migration],
) -> Result<Vec<Status>, MigrateError> {
    let done = applied(c).await?;
    verify(set, &done)?;
    Ok(set
        .iter()
        .map(|m| Status {
            version: m.version,
            file: m.file.to_string(),
            applied: done.iter().any(|(v, _, _)| *v == m.version),
        })
        .collect())
}

/// Number of migrations not yet applied (readiness).
pub async fn pending(c: &tokio_postgres::Client) -> Result<usize, MigrateError> {
    Ok(status(c, &embedded())
        .await?
        .iter()
        .filter(|s| !s.applied)
        .count())
}

/// Apply every pending migration; returns the files applied by this process.
pub async fn run(
    c: &mut tokio_postgres::Client,
    set: &[Migration],
) -> Result<Vec<String>, MigrateError> {
    // The session lock is held across transactions; it is released when we unlock or
    // the connection ends (a killed migrator never leaves it behind).
    c.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = run_locked(c, set).await;
    let _ = c
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run_locked(
    c: &mut tokio_postgres::Client,
    set: &[Migration],
) -> Result<Vec<String>, MigrateError> {
    ensure_table(c).await?;
    let done = applied(c).await?;
    verify(set, &done)?;
    let mut ran = Vec::new();
    for m in set
        .iter()
        .filter(|m| !done.iter().any(|(v, _, _)| *v == m.version))
    {
        let tx = c.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Apply {
                file: m.file.to_string(),
                source,
            })?;
        tx.execute(
            "INSERT INTO lxgate_migrations (version, name, sha256) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(file = m.file, "migration applied");
        ran.push(m.file.to_string());
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_is_strictly_ordered() {
        let set = plan(EMBEDDED).unwrap();
        assert!(!set.is_empty());
    }

    #[test]
    fn duplicate_prefix_is_rejected_naming_both_files() {
        let e = plan(&[("0001_a.sql", ""), ("0002_b.sql", ""), ("0002_c.sql", "")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("0002_b.sql") && e.contains("0002_c.sql"), "{e}");
        let e = plan(&[("0003_a.sql", ""), ("0002_b.sql", "")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("0003_a.sql") && e.contains("0002_b.sql"), "{e}");
        assert!(matches!(
            plan(&[("x_a.sql", "")]),
            Err(MigrateError::BadName(_))
        ));
    }
}
