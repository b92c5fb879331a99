//! `lxgate serve`: the HTTP boundary (axum). Listens on 127.0.0.1 or a unix socket,
//! where nothing but nginx reaches it.

mod bounds;
mod error;
mod health;
mod jobs;
mod listen;
mod metrics;
pub mod openapi;
mod ratelimit;
mod request_id;
mod sealed_media;
mod transfers;
mod upload;

pub use error::ApiError;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use tracing::Instrument;

use crate::access::media::{Caller, Decisions};
use crate::access::tokens::{self, Principal, TokenHash};
use crate::access::verified::Verified;
use crate::audit;
use crate::config::Config;
use crate::ingest::Storage;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub storage: Storage,
    pub uploads: bounds::Uploads,
    pub rate_limits: Arc<ratelimit::Limits>,
    pub metrics: Arc<metrics::Metrics>,
    /// Tokens the database confirmed within `[server] token_recheck_secs`.
    pub verified: Arc<Verified>,
    /// Media decisions it allowed within that window, by token and job.
    pub media_decisions: Arc<Decisions>,
}

impl AppState {
    /// 503 with `Retry-After` while a deploy window is open (crate::ingest::pause):
    /// a file accepted now could be discarded by a rollback.
    pub fn accepting(&self) -> Result<(), ApiError> {
        if !crate::ingest::pause::is_paused(&self.config.paths.state) {
            return Ok(());
        }
        Err(ApiError {
            retry_after: Some(crate::ingest::pause::RETRY_AFTER_SECS),
            ..ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "ingest_paused",
                "lxgate is being upgraded and takes no files until the new release has passed its checks; send the file again after the time in Retry-After",
            )
        })
    }
}

pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.server.upload_max_size;
    let media_limit = state.config.hub_receiver.max_media_size;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/openapi.json", get(openapi::served))
        // Bodies that stream into storage are bounded by UPLOAD_MAX_SIZE in staging, not
        // by axum's 2 MB default (which multipart bodies would otherwise hit); what a
        // refusal leaves unread is read before it is answered.
        .route(
            "/api/upload/",
            post(upload::upload)
                .layer(DefaultBodyLimit::disable())
                .layer(middleware::from_fn_with_state(
                    upload_limit,
                    bounds::read_to_end,
                )),
        )
        .route("/api/upload/{id}/status/", get(jobs::status))
        .route("/api/upload-jobs/", get(jobs::list))
        .route("/api/upload-jobs/{id}", get(jobs::get_one))
        .route("/api/media/{id}", get(jobs::media))
        .route("/api/media/hub/transfers/", post(transfers::register))
        .route(
            "/api/media/hub/transfers/{key}/media/",
            post(transfers::media)
                .layer(DefaultBodyLimit::disable())
                .layer(middleware::from_fn_with_state(
                    media_limit,
                    bounds::read_to_end,
                )),
        )
        .route(
            "/api/media/hub/transfers/{key}/status/",
            get(transfers::status),
        )
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint; see the README for the API",
            )
        })
        // Every other route may be sent a body it does not want (a POST where only GET
        // exists, a refused token): up to what nginx lets through there, it is read
        // before the answer, so nginx passes the answer on instead of a 502.
        .layer(middleware::from_fn_with_state(
            bounds::small_body(),
            bounds::read_to_end,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// One span per request, named by its route pattern (never the raw path, query string
/// or headers: they may carry patient names and tokens), with the request id that
/// nginx sends as `X-Request-Id` (or a new one) and that the answer carries back; its
/// latency goes to the route's histogram.
async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let id = request_id::of(req.headers());
    req.headers_mut()
        .insert(request_id::HEADER, id.header_value());
    let span = tracing::info_span!("request", route = %route, request_id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.observe_request(&route, status, secs);
    resp.headers_mut()
        .insert(request_id::HEADER, id.header_value());
    span.in_scope(|| {
        let ms = (secs * 1000.0).round() as u64;
        // Probes and scrapes come every few seconds; the journal keeps them only at debug.
        if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") && status < 500 {
            tracing::debug!(status, ms, "answered");
        } else {
            tracing::info!(status, ms, "answered");
        }
    });
    resp
}

/// Where a request came from: the proxy's `X-Forwarded-For` when `[server]
/// trusted_proxy` says nothing but nginx reaches the app (nginx sets it to
/// `$remote_addr`), else the peer address; none on a unix socket without a proxy.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<IpAddr>);

impl Source {
    pub fn of(config: &Config, parts: &axum::http::request::Parts) -> Source {
        let forwarded = config
            .server
            .trusted_proxy
            .then(|| parts.headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            // The last hop is the one our proxy added.
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Source(forwarded.or(peer))
    }

    /// For logs and provenance.
    pub fn label(&self) -> String {
        self.0
            .map_or_else(|| "local".to_string(), |ip| ip.to_string())
    }
}

impl axum::extract::FromRequestParts<AppState> for Source {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Source, Self::Rejection> {
        Ok(Source::of(&state.config, parts))
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The hash of the bearer token, or 401 without one.
fn bearer_hash(headers: &HeaderMap, source: Source) -> Result<TokenHash, ApiError> {
    match bearer(headers) {
        Some(token) => Ok(tokens::hash_token(token)),
        None => {
            auth_failed(source, "refused", "no bearer token");
            Err(ApiError::unauthorized())
        }
    }
}

/// The token as a caller: its principal when the database confirmed it within the
/// verified window, else its hash to look up. 429 past the source's rate of token
/// lookups (a confirmed token costs no lookup, so a video player's range requests do
/// not count against it; guessed tokens always do).
fn caller(state: &AppState, hash: TokenHash, source: Source) -> Result<Caller, ApiError> {
    if let Some((p, asked)) = state.verified.get(&hash) {
        return Ok(Caller::Known(p, asked));
    }
    if let Err(e) = state.rate_limits.token.check(source.0) {
        auth_failed(
            source,
            "rate_limited",
            "too many token checks from this source",
        );
        return Err(e);
    }
    Ok(Caller::Unverified(hash))
}

/// A token the database does not know, or revoked: audited, 401.
fn unknown_token(source: Source) -> ApiError {
    auth_failed(source, "refused", "unknown or revoked token");
    ApiError::unauthorized()
}

fn auth_failed(source: Source, outcome: &'static str, reason: &'static str) {
    audit::Event {
        event: "auth_failed",
        outcome,
        source: Some(&source.label()),
        reason: Some(reason),
        ..Default::default()
    }
    .emit()
}

/// Resolve the bearer token, or 401 (429 past the source's rate of token checks).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    source: Source,
) -> Result<Principal, ApiError> {
    let hash = bearer_hash(headers, source)?;
    let hash = match caller(state, hash, source)? {
        Caller::Known(p, _) => return Ok(p),
        Caller::Unverified(hash) => hash,
    };
    let client = state.pool.get().await?;
    let asked = Instant::now();
    match tokens::lookup(&client, &hash).await? {
        Some(p) => {
            state.verified.insert(hash, &p, asked);
            Ok(p)
        }
        None => Err(unknown_token(source)),
    }
}

/// Bind, notify systemd when ready, serve until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_then(config, || {}).await
}

/// `serve`, calling `bound` once the listener accepts connections, so whoever prints
/// "up" (lxgate dev) never announces an address that still refuses connections.
pub async fn serve_then(config: Config, bound: impl FnOnce()) -> anyhow::Result<()> {
    let url = config.require_database_url()?.to_string();
    let pool = crate::db::pool(&url, config.db.pool_size)?;
    let storage = Storage::from_config(&config);
    let removed = storage.prepare().map_err(|e| {
        anyhow::anyhow!(
            "preparing managed storage {}: {e}",
            config.paths.storage.display()
        )
    })?;
    if removed > 0 {
        tracing::info!(removed, "removed temp files left by an interrupted upload");
    }
    crate::systemd::spawn_watchdog();
    let listen = config.server.listen.clone();
    let limits = config.server.limits.clone();
    let token_recheck = config.server.token_recheck;
    let rate_limits = Arc::new(ratelimit::Limits::new(&config));
    tokio::spawn(ratelimit::Limits::forget_idle_forever(rate_limits.clone()));
    let state = AppState {
        config: Arc::new(config),
        pool,
        storage,
        uploads: bounds::Uploads::new(limits.max_uploads),
        rate_limits,
        metrics: Arc::new(metrics::Metrics::new()),
        verified: Arc::new(Verified::new(token_recheck)),
        media_decisions: Arc::new(Decisions::new(token_recheck)),
    };
    let app = router(state.clone());
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        crate::systemd::stopping();
    };
    let listener = if let Some(path) = listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        listen::Listener::Unix(tokio::net::UnixListener::bind(path)?)
    } else {
        listen::Listener::Tcp(tokio::net::TcpListener::bind(&listen).await?)
    };
    bound();
    tokio::spawn(announce_ready(state, listen.clone()));
    listen::serve(listener, app, &limits, shutdown).await?;
    Ok(())
}

/// READY=1 only once the socket is bound and the database answers with every
/// migration applied; until then systemd keeps dependents waiting while /readyz
/// already says why.
async fn announce_ready(state: AppState, listen: String) {
    let mut waited = 0u32;
    loop {
        match health::readiness(&state).await {
            Ok(()) => break,
            Err(not_ready) => {
                if waited % 10 == 0 {
                    not_ready.log();
                }
                waited += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    tracing::info!(listen = %listen, "ready");
    crate::systemd::ready();
}
