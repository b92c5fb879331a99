//! PostgreSQL: the pool and the embedded migrations.

pub mod dump;
pub mod migrate;
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
