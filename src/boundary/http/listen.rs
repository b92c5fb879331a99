//! Connections, each bounded in time and in number: hyper's header read timeout (its
//! timer also runs while a keep-alive connection sits idle), tower-http's body read
//! timeout, at most `max_connections` open at once, and a shutdown that waits for
//! requests in flight only until its deadline. axum::serve has none of these.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeout;

use crate::config::ServerLimits;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, let
/// requests in flight finish for up to `shutdown_timeout`, and close what is left.
pub async fn serve(
    listener: Listener,
    app: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(connection_bound(limits)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        // At the bound, new connections wait in the kernel's backlog, not in our memory.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            () = &mut shutdown => break,
        };
        let (io, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pass, instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app
            .clone()
            .map_request(move |mut req: axum::http::Request<_>| {
                if let Some(peer) = peer {
                    req.extensions_mut().insert(ConnectInfo(peer));
                }
                req
            });
        let service = TowerToHyperService::new(RequestBodyTimeout::new(app, limits.body_timeout));
        match io {
            Stream::Tcp(s) => spawn(&mut tasks, &graceful, &http, s, service, slot),
            Stream::Unix(s) => spawn(&mut tasks, &graceful, &http, s, service, slot),
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tasks.len(),
            "closing connections still open at the shutdown deadline ([server] shutdown_timeout_secs)"
        );
    }
    tasks.shutdown().await;
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Stream::Tcp(s), Some(a))),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
    }
}

fn spawn<I, S>(
    tasks: &mut JoinSet<()>,
    graceful: &GracefulShutdown,
    http: &http1::Builder,
    io: I,
    service: S,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
    tasks.spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        drop(slot);
    });
}

/// `max_connections`, fitted to the open-file limit: the soft limit is raised to the
/// hard one (systemd's default soft limit of 1024 is meant to be raised by services
/// that need more), and what the pool, temp files and logs need is kept aside.
fn connection_bound(limits: &ServerLimits) -> usize {
    let reserve = limits.max_uploads + 128;
    let Some(files) = raise_open_files() else {
        return limits.max_connections;
    };
    let fits = files.saturating_sub(reserve as u64).max(16) as usize;
    if fits < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files = files,
            using = fits,
            "[server] max_connections does not fit the open-file limit: raise LimitNOFILE= or lower max_connections"
        );
        return fits;
    }
    limits.max_connections
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; the limit now in force.
fn raise_open_files() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    // None is RLIM_INFINITY.
    let (cur, max) = (
        lim.current.unwrap_or(u64::MAX),
        lim.maximum.unwrap_or(u64::MAX),
    );
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    if cur < max && setrlimit(Resource::Nofile, raised).is_ok() {
        return Some(max);
    }
    Some(cur)
}
