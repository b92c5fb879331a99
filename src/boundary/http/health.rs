use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// Database reachable, no pending migrations, managed storage present.
pub async fn readiness(state: &AppState) -> Result<(), String> {
    let client = state
        .pool
        .get()
        .await
        .map_err(|_| "database unreachable: check PostgreSQL and DATABASE_URL".to_string())?;
    let pending = crate::db::migrate::pending(&client)
        .await
        .map_err(|e| format!("cannot read migration state: {e}"))?;
    if pending > 0 {
        return Err(format!(
            "{pending} migration(s) pending: run `lxgate migrate`"
        ));
    }
    if !state.storage.root().join("objects").is_dir() {
        return Err("managed storage is missing: check the data root mount and tmpfiles".into());
    }
    Ok(())
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state).await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => ApiError::unavailable(reason).into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    let rows = client
        .query(
            "SELECT status, ingest_mode, count(*) FROM upload_jobs GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await?;
    let jobs: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&jobs),
    )
        .into_response())
}
