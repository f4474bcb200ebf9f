//! Housekeeping, on one instance at a time (the `housekeeping` lease): the stale-call reaper
//! (a call without a final status after its TimeLimit plus a margin is fetched from the
//! provider and closed, so its chat always gets an outcome), the recovery of calls an instance
//! stored but never queued before it died, and the dial queue's own tidying.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::CallService;
use super::lease::Leases;

/// The lease's name.
pub const LEASE: &str = "housekeeping";

/// What housekeeping does and how often.
#[derive(Debug, Clone, Copy)]
pub struct Housekeeping {
    /// How often it runs.
    pub interval: Duration,
    /// Calls older than this and not final are reaped.
    pub max_age: Duration,
    /// Calls queued without a queue entry for longer than this are failed.
    pub recover_after: Duration,
}

impl Housekeeping {
    /// The lease outlives two missed renewals, so a holder that is only slow keeps it; one that
    /// died hands it over within three intervals.
    pub fn lease_ttl(&self) -> Duration {
        self.interval * 3
    }
}

/// Runs housekeeping every `every.interval` while this instance holds the lease; gives the
/// lease up on a graceful stop.
pub fn spawn(
    service: Arc<CallService>,
    leases: Arc<dyn Leases>,
    every: Housekeeping,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every.interval) => {}
            }
            match leases.hold(LEASE, every.lease_ttl()).await {
                Ok(now) => {
                    if now != held {
                        info!(held = now, "housekeeping lease");
                    }
                    held = now;
                }
                Err(e) => {
                    warn!(error = %e, "housekeeping lease unavailable; skipping a round");
                    continue;
                }
            }
            if held {
                // A long round renews its lease as it goes, so no other instance starts one
                // meanwhile. Stopping it instead could cut a step short between its store
                // write and what follows it (the live-call ledger, the chat events).
                let round = run_once(&service, every);
                tokio::pin!(round);
                loop {
                    tokio::select! {
                        () = &mut round => break,
                        () = tokio::time::sleep(every.interval) => {
                            if !matches!(leases.hold(LEASE, every.lease_ttl()).await, Ok(true)) {
                                warn!("housekeeping lease not renewed during a long round; the round finishes (its changes are compare-and-set, safe beside another instance's)");
                            }
                        }
                    }
                }
            }
        }
        if held && let Err(e) = leases.release(LEASE).await {
            warn!(error = %e, "could not give the housekeeping lease up");
        }
    })
}

async fn run_once(service: &CallService, every: Housekeeping) {
    match service.reap(every.max_age).await {
        Ok(0) => {}
        Ok(n) => info!(closed = n, "reaper closed stale calls"),
        Err(e) => warn!(error = %e, "reaper could not read the store"),
    }
    match service.recover(every.recover_after).await {
        Ok(0) => {}
        Ok(n) => info!(
            failed = n,
            "recovered calls left unqueued by a stopped instance"
        ),
        Err(e) => warn!(error = %e, "could not look for unqueued calls"),
    }
    if let Err(e) = service.tidy_queue().await {
        warn!(error = %e, "could not tidy the dial queue");
    }
}
