//! PostgreSQL: the pool and the embedded migrations.

pub mod dump;
pub mod migrate;
pub mod snapshot;
pub mod tools;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL connection string: {0}. Use postgres://user@host/db or 'host=/run/postgresql dbname=lxgate user=lxgate'")]
    BadUrl(String),
    #[error("database unreachable: {0}. Check that PostgreSQL runs and DATABASE_URL points at it")]
    Unreachable(String),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("database pool error: {0}")]
    Pool(String),
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e.to_string())
    }
}

/// Parse a URL or key=value string (unix socket hosts included: `host=/run/postgresql`
/// or `postgres://user@%2Frun%2Fpostgresql/db`).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| DbError::BadUrl(e.to_string()))
}

pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let cfg = parse_url(url)?;
    let mgr = Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// One connection outside the pool (migrate, doctor, CLI).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let cfg = parse_url(url)?;
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| DbError::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// The libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) of `url`, a
/// URL or key=value string: how PostgreSQL's own programs reach exactly what the
/// service reaches, without the connection in their argv.
pub fn libpq_env(url: &str) -> Result<Vec<(&'static str, String)>, DbError> {
    let cfg = parse_url(url)?;
    let mut env = Vec::new();
    if let Some(host) = cfg.get_hosts().first() {
        let h = match host {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        env.push(("PGHOST", h));
    }
    if let Some(port) = cfg.get_ports().first() {
        env.push(("PGPORT", port.to_string()));
    }
    if let Some(user) = cfg.get_user() {
        env.push(("PGUSER", user.to_string()));
    }
    if let Some(pw) = cfg.get_password() {
        let pw = String::from_utf8(pw.to_vec())
            .map_err(|_| DbError::BadUrl("the password is not UTF-8".into()))?;
        env.push(("PGPASSWORD", pw));
    }
    let db = cfg
        .get_dbname()
        .ok_or_else(|| DbError::BadUrl("it names no database (add dbname=… or /dbname)".into()))?;
    env.push(("PGDATABASE", db.to_string()));
    Ok(env)
}

/// The connection `url` names, to database `db` instead (a scratch database on the same
/// server), as a key=value string.
pub fn with_dbname(url: &str, db: &str) -> Result<String, DbError> {
    // libpq quoting: single quotes, with backslash and quote escaped.
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let parts: Vec<String> = libpq_env(url)?
        .into_iter()
        .map(|(var, value)| {
            let key = match var {
                "PGHOST" => "host",
                "PGPORT" => "port",
                "PGUSER" => "user",
                "PGPASSWORD" => "password",
                _ => return format!("dbname={}", q(db)),
            };
            format!("{key}={}", q(&value))
        })
        .collect();
    Ok(parts.join(" "))
}
