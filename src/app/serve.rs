//! The HTTP server loop: hyper's HTTP/1.1 connections, each with a header deadline and a
//! write (idle) timeout, at most `max_connections` open at once, with graceful shutdown.
//!
//! `axum::serve` has none of these limits: a client that sends half its headers keeps its
//! connection (and a file descriptor) forever, and enough of them starve the process. The
//! pieces are hyper-util's `GracefulShutdown`, tokio-io-timeout's write timeout, a tokio
//! semaphore, and the header deadline below; only the accept loop that joins them is
//! written here.
//!
//! The header deadline is a watchdog per connection ([`Activity`]) rather than hyper's own
//! `header_read_timeout`: hyper allocates, registers and cancels a timer for every request,
//! which was an eighth of a signed callback's CPU under load (BENCHMARKS.md, wrk). The
//! watchdog's one timer is re-armed once per deadline, not once per request: each request
//! only stores two timestamps.
//!
//! HTTP/1.1 only: Twilio, Slack and Telegram deliver webhooks over HTTP/1.1, and browsers
//! speak HTTP/2 only over TLS, which a reverse proxy in front of callbot terminates.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tracing::{trace, warn};

/// Per-connection limits (from `[server]` in the settings).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a request's headers, from when the connection opens or its previous
    /// answer was sent (so an idle keep-alive connection is closed after it too).
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
    builder.keep_alive(true);
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
        let activity = Arc::new(Activity::new());
        let service = Watched {
            inner: TowerToHyperService::new(router.clone()),
            activity: activity.clone(),
        };
        let conn = graceful.watch(builder.serve_connection(io, service));
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            tokio::select! {
                biased;
                ended = conn => if let Err(e) = ended {
                    trace!(error = %e, "connection ended with an error");
                },
                () = activity.expired(header_timeout) => {
                    trace!("no request head within the header timeout; connection closed");
                }
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

/// What the header deadline of one connection watches: since when it has been waiting for a
/// request head (it opened, or its last answer was sent whole), or that a request is in hand.
struct Activity {
    opened: Instant,
    /// Milliseconds from `opened` to the start of the wait, or [`Activity::BUSY`].
    idle_since: AtomicU64,
}

impl Activity {
    const BUSY: u64 = u64::MAX;

    fn new() -> Self {
        Self {
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
        }
    }

    /// A request head has arrived: no deadline until its answer is sent.
    fn busy(&self) {
        self.idle_since.store(Self::BUSY, Ordering::Relaxed);
    }

    /// The answer is sent (or dropped): the next head is due within the timeout from now.
    fn idle(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(Self::BUSY - 1);
        self.idle_since.store(ms, Ordering::Relaxed);
    }

    /// Resolves once the connection has waited `timeout` for a request head. Its timer is
    /// set to the earliest moment that can be true and, when it fires, moved to the
    /// deadline of the current wait: requests in between cost it nothing.
    async fn expired(&self, timeout: Duration) {
        let mut check_at = self.opened + timeout;
        loop {
            tokio::time::sleep_until(check_at).await;
            match self.idle_since.load(Ordering::Relaxed) {
                Self::BUSY => check_at = Instant::now() + timeout,
                ms => {
                    let due = self.opened + Duration::from_millis(ms) + timeout;
                    if due <= Instant::now() {
                        return;
                    }
                    check_at = due;
                }
            }
        }
    }
}

/// The router as a hyper service that tells the connection's [`Activity`] when a request
/// arrives and when its answer has been sent: the answer's body reports it when hyper
/// drops it, after writing it whole (a stream such as `/api/events` keeps the connection
/// busy as long as it runs, as it did with hyper's own timer).
#[derive(Clone)]
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Watched<S>
where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<IdleOnDrop>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.activity.busy();
        let activity = self.activity.clone();
        self.inner
            .call(req)
            .map(move |answer| {
                Ok(answer
                    .unwrap_or_else(|never| match never {})
                    .map(|body| IdleOnDrop { body, activity }))
            })
            .boxed()
    }
}

/// An answer's body that marks its connection idle when dropped.
struct IdleOnDrop {
    body: Body,
    activity: Arc<Activity>,
}

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.activity.idle();
    }
}

impl http_body::Body for IdleOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
