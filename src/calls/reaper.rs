//! The stale-call reaper: a call without a final status after its TimeLimit plus a margin
//! is fetched from the provider and closed, so its chat always gets an outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CallService;

/// Checks every `interval` for calls older than `max_age` that are not final.
pub fn spawn(
    service: Arc<CallService>,
    interval: Duration,
    max_age: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match service.reap(max_age).await {
                Ok(0) => {}
                Ok(n) => info!(closed = n, "reaper closed stale calls"),
                Err(e) => warn!(error = %e, "reaper could not read the store"),
            }
        }
    })
}
