//! The HTTP server loop: hyper's HTTP/1.1 connections, each with a header read timeout and
//! a write (idle) timeout, at most `max_connections` open at once, with graceful shutdown.
//!
//! `axum::serve` has none of these limits: a client that sends half its headers keeps its
//! connection (and a file descriptor) forever, and enough of them starve the process. The
//! pieces are hyper's and hyper-util's own (`http1::Builder::header_read_timeout`,
//! `GracefulShutdown`), tokio-io-timeout's write timeout, and a tokio semaphore; only the
//! accept loop that joins them is written here.
//!
//! HTTP/1.1 only: Twilio, Slack and Telegram deliver webhooks over HTTP/1.1, and browsers
//! speak HTTP/2 only over TLS, which a reverse proxy in front of callbot terminates.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tracing::{trace, warn};

/// Per-connection limits (from `[server]` in the settings).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's headers, from when the connection opens or its previous
    /// answer was sent (hyper starts the timer whenever it waits for a request head, so an
    /// idle keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    /// Time a write may stay blocked because the client does not read.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// File descriptors kept free beyond the connection cap: the listener, outbound clients
/// (Twilio, Slack, Telegram, the LLM), log files and the runtime's own.
const RESERVED_FDS: usize = 128;

/// Pause after an accept error that is not about one connection (such as running out of
/// file descriptors), so the loop does not spin; axum::serve waits the same.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The soft open-file limit of this process, when the platform tells (Linux /proc).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The cap that fits the process's open-file limit, with a warning when it had to shrink.
pub fn fitted_max_connections(wanted: usize) -> usize {
    match open_file_limit() {
        Some(limit) if wanted + RESERVED_FDS > limit => {
            let fitted = limit.saturating_sub(RESERVED_FDS).max(1);
            warn!(
                wanted,
                fitted,
                open_file_limit = limit,
                "server.max_connections is more than the open-file limit allows; using {fitted} (raise `ulimit -n` to allow more)"
            );
            fitted
        }
        _ => wanted.max(1),
    }
}

/// Errors that concern one incoming connection only: the next accept may well succeed.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Accepts and serves connections until `shutdown` is cancelled; then stops accepting, asks
/// every open connection to finish its request in flight and close, and waits up to
/// `drain` for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's listen queue
        // until one of ours closes (slow ones are cut by the timeouts above).
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    warn!(error = %e, "could not accept a connection");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(io));
        let conn = builder.serve_connection(io, TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                trace!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // New connections are refused from here on.
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("some connections were still open when the shutdown grace period ended");
    }
}
