//! Forward-only embedded migrations (SPEC §11).
//!
//! The seed-004 incident: duplicate prefixes ran in the wrong order. Here prefixes must
//! strictly increase (checked by a unit test over the embedded set), every applied file
//! keeps its sha256 (an edited applied file is an error naming it), each migration runs
//! in its own transaction, and a session advisory lock serialises concurrent migrators.
//!
//! Expand/contract: each file declares in its first line whether the release before it
//! still runs on the schema it leaves, and the declaration is recorded with the
//! migration. A binary then runs on a database that a newer release migrated when every
//! migration it does not know was declared compatible (a rollback to the previous
//! release after an expand step), and refuses edited, missing and incompatible ones.

use sha2::{Digest, Sha256};

use super::DbError;

/// The first line of every migration file: whether the release before the one that
/// brings this migration still runs on the schema it leaves (expand: new tables, new
/// columns with defaults) or not (contract: drops, renames, tightened constraints).
pub const HEADER: &str = "-- previous release: ";

pub struct Migration {
    pub version: i64,
    pub name: String,
    pub file: &'static str,
    pub sql: &'static str,
    /// Declared in the header: the previous release runs on the schema after this one.
    pub compatible: bool,
}

impl Migration {
    /// sha256 of the SQL after the header line. The header is a declaration about the
    /// release, recorded in its own column; files applied before headers existed keep
    /// the checksum they were recorded with.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(body(self.sql).as_bytes()))
    }
}

fn body(sql: &str) -> &str {
    match sql.strip_prefix(HEADER) {
        Some(rest) => rest.split_once('\n').map_or("", |(_, b)| b),
        None => sql,
    }
}

/// `compatible` or `incompatible`, then optionally why.
fn declared(file: &str, sql: &str) -> Result<bool, MigrateError> {
    let line = sql.lines().next().unwrap_or("");
    let word = line
        .strip_prefix(HEADER)
        .and_then(|rest| rest.split_whitespace().next());
    match word {
        Some("compatible") => Ok(true),
        Some("incompatible") => Ok(false),
        _ => Err(MigrateError::NoHeader(file.to_string())),
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
    #[error("migration file {0} must start with the line `-- previous release: compatible` (the release before still runs on the new schema: new tables, new columns with defaults) or `-- previous release: incompatible` (drops, renames, stricter constraints); add it")]
    NoHeader(String),
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
    #[error("database has migration {version} ({name}), which this binary does not know and which is older than its newest; it comes from another build of lxgate: restore the snapshot taken before it ran")]
    Unknown { version: i64, name: String },
    #[error("migration {file} was never applied, but the later migration {later} was; restore the snapshot taken before {later} ran")]
    Missing { file: String, later: i64 },
    #[error("database has migration {version} ({name}) from a newer release, declared incompatible with this one: run the newer release, or restore the snapshot taken before it ran")]
    Incompatible { version: i64, name: String },
    #[error("no migration ran: {0}")]
    Before(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("migration {file} failed: {source}")]
    Apply {
        file: String,
        source: tokio_postgres::Error,
    },
}

impl MigrateError {
    /// The database holds a schema this binary must not run on; only a snapshot (or the
    /// release that made it) helps.
    pub fn needs_restore(&self) -> bool {
        matches!(
            self,
            MigrateError::Unknown { .. }
                | MigrateError::Missing { .. }
                | MigrateError::Incompatible { .. }
        )
    }
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
            compatible: declared(file, sql)?,
        });
    }
    Ok(out)
}

pub fn embedded() -> Vec<Migration> {
    plan(EMBEDDED).expect("embedded migrations are ordered and declared (checked by unit test)")
}

#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub version: i64,
    pub file: String,
    pub applied: bool,
}

/// A migration applied by a newer release than this binary, declared compatible.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ahead {
    pub version: i64,
    pub name: String,
}

/// The database against this binary's set, once nothing forbids running on it.
#[derive(Debug, Default)]
pub struct Schema {
    /// Known migrations not yet applied.
    pub pending: Vec<i64>,
    /// Applied by a newer release, every one declared compatible with the previous one.
    pub ahead: Vec<Ahead>,
    /// The newest applied version (0 on an empty database).
    pub current: i64,
}

struct Applied {
    version: i64,
    name: String,
    sha256: String,
    /// None: applied before the declaration was recorded.
    compatible: Option<bool>,
}

async fn ensure_table(c: &tokio_postgres::Client) -> Result<(), MigrateError> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS lxgate_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         ALTER TABLE lxgate_migrations
            ADD COLUMN IF NOT EXISTS previous_release_compatible BOOLEAN",
    )
    .await?;
    Ok(())
}

async fn applied(c: &tokio_postgres::Client) -> Result<Vec<Applied>, MigrateError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('lxgate_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(vec![]);
    }
    // Through to_jsonb: a table that an older lxgate made has no compatibility column
    // until the next `lxgate migrate`, and reading it must not fail before then.
    let rows = c
        .query(
            "SELECT version, name, sha256,
                    (to_jsonb(m) ->> 'previous_release_compatible')::boolean
             FROM lxgate_migrations m ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Applied {
            version: r.get(0),
            name: r.get(1),
            sha256: r.get(2),
            compatible: r.get(3),
        })
        .collect())
}

/// Compare what ran with what we have. Accepted: applied known files with their
/// checksum, known files not yet applied after every applied one (pending), and
/// unknown ones newer than this binary's newest that were declared compatible (ahead).
fn verify(set: &[Migration], done: &[Applied]) -> Result<Schema, MigrateError> {
    let newest_known = set.last().map_or(0, |m| m.version);
    let mut schema = Schema {
        current: done.last().map_or(0, |a| a.version),
        ..Schema::default()
    };
    for a in done {
        match set.iter().find(|m| m.version == a.version) {
            None if a.version > newest_known => {
                if a.compatible != Some(true) {
                    return Err(MigrateError::Incompatible {
                        version: a.version,
                        name: a.name.clone(),
                    });
                }
                schema.ahead.push(Ahead {
                    version: a.version,
                    name: a.name.clone(),
                });
            }
            None => {
                return Err(MigrateError::Unknown {
                    version: a.version,
                    name: a.name.clone(),
                })
            }
            Some(m) if m.checksum() != a.sha256 => {
                return Err(MigrateError::Edited {
                    file: m.file.to_string(),
                    recorded: a.sha256.clone(),
                    now: m.checksum(),
                })
            }
            Some(_) => {}
        }
    }
    for m in set {
        if done.iter().any(|a| a.version == m.version) {
            continue;
        }
        if schema.current > m.version {
            return Err(MigrateError::Missing {
                file: m.file.to_string(),
                later: schema.current,
            });
        }
        schema.pending.push(m.version);
    }
    Ok(schema)
}

/// The database's migrations against `set`: an error when this binary must not run on
/// it, else what is pending and what a newer, compatible release applied.
pub async fn check(c: &tokio_postgres::Client, set: &[Migration]) -> Result<Schema, MigrateError> {
    verify(set, &applied(c).await?)
}

pub async fn status(
    c: &tokio_postgres::Client,
    set: &[Migration],
) -> Result<Vec<Status>, MigrateError> {
    let schema = check(c, set).await?;
    Ok(set
        .iter()
        .map(|m| Status {
            version: m.version,
            file: m.file.to_string(),
            applied: !schema.pending.contains(&m.version),
        })
        .collect())
}

/// Apply every pending migration; returns the files applied by this process.
pub async fn run(
    c: &mut tokio_postgres::Client,
    set: &[Migration],
) -> Result<Vec<String>, MigrateError> {
    run_after(c, set, |_| async { Ok(()) }).await
}

/// `run`, calling `before` under the migrator's lock once migrations are known to be
/// pending and before the first is applied (the snapshot); its error (`Before`) stops
/// the run with nothing applied.
pub async fn run_after<F, Fut>(
    c: &mut tokio_postgres::Client,
    set: &[Migration],
    before: F,
) -> Result<Vec<String>, MigrateError>
where
    F: FnOnce(&Schema) -> Fut,
    Fut: std::future::Future<Output = Result<(), MigrateError>>,
{
    // The session lock is held across transactions; it is released when we unlock or
    // the connection ends (a killed migrator never leaves it behind).
    c.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = run_locked(c, set, before).await;
    let _ = c
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run_locked<F, Fut>(
    c: &mut tokio_postgres::Client,
    set: &[Migration],
    before: F,
) -> Result<Vec<String>, MigrateError>
where
    F: FnOnce(&Schema) -> Fut,
    Fut: std::future::Future<Output = Result<(), MigrateError>>,
{
    ensure_table(c).await?;
    let schema = check(c, set).await?;
    if !schema.pending.is_empty() {
        before(&schema).await?;
    }
    let mut ran = Vec::new();
    for m in set.iter().filter(|m| schema.pending.contains(&m.version)) {
        let tx = c.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Apply {
                file: m.file.to_string(),
                source,
            })?;
        tx.execute(
            "INSERT INTO lxgate_migrations (version, name, sha256, previous_release_compatible)
             VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &m.checksum(), &m.compatible],
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
    fn embedded_set_is_strictly_ordered_and_declared() {
        // plan() refuses a file without its header line.
        let set = plan(EMBEDDED).unwrap();
        assert!(!set.is_empty());
        let e = plan(&[("0001_a.sql", "CREATE TABLE a (x int);")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("0001_a.sql") && e.contains("-- previous release: compatible"),
            "{e}"
        );
        assert!(matches!(
            plan(&[("0001_a.sql", "-- previous release: maybe\nSELECT 1;")]),
            Err(MigrateError::NoHeader(_))
        ));
    }

    /// Hosts recorded these checksums before the files had a header line; adding the
    /// header must not make them "edited".
    #[test]
    fn headers_leave_recorded_checksums_alone() {
        let recorded = [
            (
                1,
                "b1d5b0c561dc82e50fea3adfcc0606a7025cfe56338d8fdf26c885653b28d100",
            ),
            (
                2,
                "3a0b4987ced4214199b29d8253cf59de1a7362011000b058bab47cd4c79e0d0f",
            ),
            (
                3,
                "07d7a6018001a46f5f479d519dcb499296e9fe3521864307b14fdbca2738fea8",
            ),
            (
                4,
                "6105ce046ade1a5db56a9b6136db0fded74d2ce492d334e40ce326aa8b8ee9b6",
            ),
        ];
        let set = embedded();
        for (v, sum) in recorded {
            let m = set.iter().find(|m| m.version == v).unwrap();
            assert_eq!(m.checksum(), sum, "{}", m.file);
        }
    }

    fn m(file: &'static str, sql: &'static str) -> Migration {
        plan(&[(file, sql)]).unwrap().pop().unwrap()
    }

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            name: m.name.clone(),
            sha256: m.checksum(),
            compatible: Some(m.compatible),
        }
    }

    #[test]
    fn a_newer_release_is_accepted_only_when_it_declared_every_step_compatible() {
        let a = m(
            "0001_a.sql",
            "-- previous release: incompatible\nCREATE TABLE a ();",
        );
        let b = m(
            "0002_b.sql",
            "-- previous release: compatible (new table)\nCREATE TABLE b ();",
        );
        let c = m(
            "0003_c.sql",
            "-- previous release: incompatible\nDROP TABLE a;",
        );
        let old = vec![m(
            "0001_a.sql",
            "-- previous release: incompatible\nCREATE TABLE a ();",
        )];

        let s = verify(&old, &[applied(&a), applied(&b)]).unwrap();
        assert_eq!(s.ahead.len(), 1);
        assert_eq!(s.ahead[0].version, 2);
        assert!(s.pending.is_empty());

        let e = verify(&old, &[applied(&a), applied(&b), applied(&c)]).unwrap_err();
        assert!(
            matches!(e, MigrateError::Incompatible { version: 3, .. }),
            "{e}"
        );
        assert!(e.needs_restore());

        // Recorded before declarations existed: not known to be compatible.
        let mut undeclared = applied(&b);
        undeclared.compatible = None;
        assert!(matches!(
            verify(&old, &[applied(&a), undeclared]),
            Err(MigrateError::Incompatible { .. })
        ));
    }

    #[test]
    fn gaps_and_foreign_migrations_are_refused_pending_ones_listed() {
        let set = plan(&[
            (
                "0001_a.sql",
                "-- previous release: incompatible\nCREATE TABLE a ();",
            ),
            (
                "0002_b.sql",
                "-- previous release: compatible\nCREATE TABLE b ();",
            ),
            (
                "0004_d.sql",
                "-- previous release: compatible\nCREATE TABLE d ();",
            ),
        ])
        .unwrap();
        let s = verify(&set, &[applied(&set[0])]).unwrap();
        assert_eq!(s.pending, vec![2, 4]);
        assert_eq!(s.current, 1);

        let e = verify(&set, &[applied(&set[0]), applied(&set[2])]).unwrap_err();
        assert!(matches!(e, MigrateError::Missing { later: 4, .. }), "{e}");
        assert!(e.to_string().contains("0002_b.sql"), "{e}");

        let foreign = m(
            "0003_c.sql",
            "-- previous release: compatible\nCREATE TABLE c ();",
        );
        let e = verify(&set, &[applied(&set[0]), applied(&foreign)]).unwrap_err();
        assert!(matches!(e, MigrateError::Unknown { version: 3, .. }), "{e}");
    }

    #[test]
    fn duplicate_prefix_is_rejected_naming_both_files() {
        const H: &str = "-- previous release: compatible\n";
        let e = plan(&[("0001_a.sql", H), ("0002_b.sql", H), ("0002_c.sql", H)])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("0002_b.sql") && e.contains("0002_c.sql"), "{e}");
        let e = plan(&[("0003_a.sql", H), ("0002_b.sql", H)])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("0003_a.sql") && e.contains("0002_b.sql"), "{e}");
        assert!(matches!(
            plan(&[("x_a.sql", H)]),
            Err(MigrateError::BadName(_))
        ));
    }
}
