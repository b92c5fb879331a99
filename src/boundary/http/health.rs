use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

/// What /healthz and /readyz answer when all is well.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `alive` or `ready`.
    status: &'static str,
}

/// The process answers (systemd's and the watchdog's question).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> Json<Status> {
    Json(Status { status: "alive" })
}

/// Why the service is not ready. `reason` is text we wrote and goes into the /readyz
/// body; `detail` may carry database error text (SQL, table and file names) and goes only
/// to the log.
pub struct NotReady {
    pub reason: String,
    pub detail: Option<String>,
}

impl NotReady {
    fn new(reason: impl Into<String>) -> NotReady {
        NotReady {
            reason: reason.into(),
            detail: None,
        }
    }

    pub fn log(&self) {
        match &self.detail {
            Some(detail) => tracing::warn!(reason = %self.reason, detail = %detail, "not ready"),
            None => tracing::warn!(reason = %self.reason, "not ready"),
        }
    }
}

/// Database reachable, no pending migrations, managed storage present. Migrations a
/// newer release applied and declared compatible are accepted (this is the previous
/// release, rolled back to): a warning and `lxgate_schema_migrations_ahead` say so.
pub async fn readiness(state: &AppState) -> Result<(), NotReady> {
    let client = state.pool.get().await.map_err(|e| NotReady {
        reason: "database unreachable: check PostgreSQL and DATABASE_URL".into(),
        detail: Some(e.to_string()),
    })?;
    let set = crate::db::migrate::embedded();
    let schema = crate::db::migrate::check(&client, &set)
        .await
        .map_err(|e| NotReady {
            reason: if e.needs_restore() {
                let newest = set.last().map_or(0, |m| m.version);
                let way_back =
                    match crate::db::snapshot::way_back(&state.config.paths.state, newest) {
                        Some(m) => format!("restore snapshot {} (`lxgate snapshot restore {}`)", m.id, m.id),
                        None => "restore the snapshot taken before them (`lxgate snapshot list`)".into(),
                    };
                format!("the database holds migrations this release cannot run on: run the release that applied them, or stop lxgate's units and {way_back}; `lxgate migrate --status` names them")
            } else {
                "cannot read the migration state: run `lxgate migrate --status` for the cause"
                    .into()
            },
            detail: Some(e.to_string()),
        })?;
    if !schema.pending.is_empty() {
        return Err(NotReady::new(format!(
            "{} migration(s) pending: run `lxgate migrate`",
            schema.pending.len()
        )));
    }
    // Said once per change, not on every probe.
    let before = state.metrics.set_schema_ahead(schema.ahead.len());
    if !schema.ahead.is_empty() && before != schema.ahead.len() as i64 {
        let versions: Vec<i64> = schema.ahead.iter().map(|a| a.version).collect();
        tracing::warn!(
            ?versions,
            "running on a schema a newer release migrated; its migrations declare this release compatible"
        );
    }
    if !state.storage.root().join("objects").is_dir() {
        return Err(NotReady::new(
            "managed storage is missing: check the data root mount and tmpfiles",
        ));
    }
    Ok(())
}

/// Database reachable with every migration applied, managed storage present.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready, and why", body = super::error::ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state).await {
        Ok(()) => Json(Status { status: "ready" }).into_response(),
        Err(not_ready) => {
            not_ready.log();
            ApiError::unavailable(not_ready.reason).into_response()
        }
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", content_type = "application/openmetrics-text", body = String)),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    let text = state
        .metrics
        .scrape(&client, &state.config.paths.quarantine())
        .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
