//! The accept loop: hyper-util under axum's `Router`, with the connection-level limits of
//! SPEC.md 4.1 gate 5 that `axum::serve` does not offer (header-read timeout, connection
//! cap, bounded header size) and a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// A client must send its whole request head within this time. hyper also applies it to
    /// the wait for the next request on a kept-alive connection, so it bounds idle
    /// keep-alive too (stricter than the 60 s the spec allows).
    pub header_read_timeout: Duration,
    /// Concurrent connections; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long requests in flight may take to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// hyper's HTTP/1 server with the limits of SPEC.md 4.1 gate 5.
fn http1_builder(limits: &ServeLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024)
        .max_headers(64);
    builder
}

/// Serves `app` on one already accepted byte stream (a tunnel stream) with the same
/// connection limits as a TCP client, until the client is done or `shutdown` is cancelled
/// (then the request in flight may finish within `limits.shutdown_grace`).
pub async fn serve_one<S>(io: S, app: Router, limits: &ServeLimits, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A tunnel stream may be half-closed (SPEC.md 6.3): a client that shuts its write side
    // after its request still gets the answer.
    let conn = http1_builder(limits)
        .half_close(true)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
}

/// Serves `app` on every listener until `shutdown` is cancelled, then lets requests in flight
/// finish for at most `limits.shutdown_grace`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    app: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let builder = Arc::new(http1_builder(&limits));

    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (app, graceful, slots, builder, shutdown) = (
            app.clone(),
            graceful.clone(),
            slots.clone(),
            builder.clone(),
            shutdown.clone(),
        );
        loops.spawn(async move {
            loop {
                let permit = tokio::select! {
                    () = shutdown.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let stream = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        });
    }
    while loops.join_next().await.is_some() {}
    // Dropping the listeners above stopped accepting; now drain.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return;
    };
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
}
