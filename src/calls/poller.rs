//! The poller: follows the calls of a provider that does not call back (Twilio without a
//! public URL, `twilio.mode = "polling"`) by asking for each call's status, about every
//! second while it is queued or ringing and every few seconds in progress, until it ends.
//!
//! - **Same path as a callback.** A fetched status goes through
//!   [`CallService::polled`]: the call's state machine, the store and the event bus, so the
//!   chat follow-up is the one callbacks drive, and a repeated or stale observation changes
//!   nothing.
//! - **A budget.** Every request is counted on the call itself (`Call::polls`, in the same
//!   store change as the status), so the count survives a restart and a change of instance.
//!   A call that reaches `max_requests` without ending is closed as failed with a reason
//!   that says its outcome is unknown, so its thread still gets a final message. All
//!   requests together go through a [`Pacer`] (`twilio.poll_per_second`; on Redis one pace for
//!   every instance): beyond it they wait their turn, slower, never dropped.
//! - **One instance per call.** A call is polled by the holder of its lease `poll:<call id>`
//!   (the [`Leases`] port, renewed every third of its time to live). Every instance learns of
//!   calls from the event bus (the Redis bridge brings the others') and, at start and every
//!   lease time, from the live calls in the store, so the calls of an instance that stopped or
//!   died are picked up within the lease's time to live, with their count.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::lease::Leases;
use super::pacing::Pacer;
use super::store::ListFilter;
use super::{CallService, Telephony};
use crate::core::call::{Call, CallId, CallStatus, StatusUpdate};
use crate::core::replies;

/// How often calls are polled and how many requests each may take.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    /// Between two requests while the call is queued, initiated or ringing.
    pub ringing_every: Duration,
    /// Between two requests while the call is in progress.
    pub in_progress_every: Duration,
    /// Requests per call; then its outcome is recorded as unknown.
    pub max_requests: u32,
}

impl PollConfig {
    fn every(&self, status: CallStatus) -> Duration {
        if status == CallStatus::InProgress {
            self.in_progress_every
        } else {
            self.ringing_every
        }
    }
}

struct Ctx {
    service: Arc<CallService>,
    telephony: Arc<dyn Telephony>,
    leases: Arc<dyn Leases>,
    pacer: Arc<dyn Pacer>,
    cfg: PollConfig,
    /// How long a call's poll lease lasts unrenewed.
    lease_ttl: Duration,
    shutdown: CancellationToken,
}

/// Follows by polling every call of `service` that has a provider sid and no final status,
/// until `shutdown`. Subscribes before returning, so no call placed after this is missed.
pub fn spawn(
    service: Arc<CallService>,
    telephony: Arc<dyn Telephony>,
    leases: Arc<dyn Leases>,
    pacer: Arc<dyn Pacer>,
    cfg: PollConfig,
    lease_ttl: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let events = service.subscribe();
    let ctx = Arc::new(Ctx {
        service,
        telephony,
        leases,
        pacer,
        cfg,
        lease_ttl: lease_ttl.max(Duration::from_millis(30)),
        shutdown,
    });
    tokio::spawn(run(ctx, events))
}

/// Starts a worker per call to follow, once; looks at the store at start, every lease time
/// and after the bus lagged.
async fn run(ctx: Arc<Ctx>, mut events: tokio::sync::broadcast::Receiver<super::CallEvent>) {
    let mut following: HashSet<CallId> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CallId>();
    let mut look = tokio::time::interval(ctx.lease_ttl);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = |call: &Call, following: &mut HashSet<CallId>| {
        if call.sid.is_none() || call.status.is_terminal() || following.contains(&call.id) {
            return;
        }
        following.insert(call.id.clone());
        let (ctx, done, id) = (ctx.clone(), done_tx.clone(), call.id.clone());
        tokio::spawn(async move {
            follow(&ctx, &id).await;
            let _ = done.send(id);
        });
    };
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            Some(id) = done_rx.recv() => { following.remove(&id); }
            event = events.recv() => match event {
                Ok(event) => start(&event.call, &mut following),
                Err(RecvError::Lagged(_)) => look.reset_immediately(),
                Err(RecvError::Closed) => break,
            },
            _ = look.tick() => {
                let live = ListFilter { live_only: true, ..ListFilter::default() };
                match ctx.service.list(usize::MAX, &live).await {
                    Ok(calls) => calls.iter().for_each(|c| start(c, &mut following)),
                    Err(e) => warn!(error = %e, "poller could not read the live calls; looking again later"),
                }
            }
        }
    }
}

/// Sleeps until `at`; false when the service stops first.
async fn sleep_until(ctx: &Ctx, at: Instant) -> bool {
    tokio::select! {
        () = ctx.shutdown.cancelled() => false,
        () = tokio::time::sleep_until(at) => true,
    }
}

/// Polls one call while this instance holds its lease, until it ends.
async fn follow(ctx: &Ctx, id: &CallId) {
    let lease = format!("poll:{id}");
    let renew_every = ctx.lease_ttl / 3;
    let mut call = match ctx.service.get(id).await {
        Ok(Some(call)) => call,
        Ok(None) => return,
        Err(e) => {
            warn!(call_id = %id, error = %e, "poller could not read the call; the next look retries");
            return;
        }
    };
    let mut held_since: Option<Instant> = None;
    let mut last_poll: Option<Instant> = None;
    let mut failing = false;
    while let Some(sid) = call.sid.clone().filter(|_| !call.status.is_terminal()) {
        let now = Instant::now();
        if held_since.is_none_or(|at| now >= at + renew_every) {
            match ctx.leases.hold(&lease, ctx.lease_ttl).await {
                Ok(true) => {
                    if held_since.is_none() {
                        // Taken over (or first taken): the count so far is on the stored call.
                        if let Ok(Some(stored)) = ctx.service.get(id).await {
                            call = stored;
                        }
                        debug!(call_id = %id, polls = call.polls, "polling the call");
                    }
                    held_since = Some(now);
                }
                held => {
                    if let Err(e) = held {
                        warn!(call_id = %id, error = %e, "poll lease unavailable; trying again");
                    }
                    // Another instance polls it: look again within its lease's time.
                    held_since = None;
                    if !sleep_until(ctx, now + renew_every).await {
                        return;
                    }
                    match ctx.service.get(id).await {
                        Ok(Some(stored)) => call = stored,
                        Ok(None) => return,
                        Err(_) => {}
                    }
                    continue;
                }
            }
            continue;
        }
        let renew_at = held_since.map_or(now, |at| at + renew_every);
        let due = last_poll.map_or(now, |at| at + ctx.cfg.every(call.status));
        if due > now {
            if !sleep_until(ctx, due.min(renew_at)).await {
                break;
            }
            continue;
        }
        if call.polls >= ctx.cfg.max_requests {
            let reason = replies::polls_ran_out(call.polls);
            warn!(call_id = %id, polls = call.polls, "status requests ran out; the call's outcome is unknown");
            if let Err(e) = ctx.service.fail(id, None, reason, 0).await {
                warn!(call_id = %id, error = %e, "could not record the call's unknown outcome; trying again");
                if !sleep_until(ctx, now + renew_every).await {
                    break;
                }
                continue;
            }
            break;
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            () = ctx.pacer.ready() => {}
        }
        last_poll = Some(Instant::now());
        let update = match ctx.telephony.poll(&sid).await {
            Ok(update) => {
                failing = false;
                update
            }
            Err(e) => {
                // Counted all the same: the budget bounds the requests, not the answers.
                if !failing {
                    warn!(call_id = %id, error = %e, "status request failed; polling on");
                }
                failing = true;
                StatusUpdate::default()
            }
        };
        match ctx.service.polled(id, &update).await {
            Ok(Some(stored)) => call = stored,
            Ok(None) => break,
            Err(e) => {
                warn!(call_id = %id, error = %e, "could not record a polled status; polling on")
            }
        }
    }
    if held_since.is_some() {
        if call.status.is_terminal() {
            debug!(call_id = %id, status = %call.status, polls = call.polls, "call followed to its end");
        } else {
            info!(call_id = %id, "stopping: the call's polling is left to another instance");
        }
        if let Err(e) = ctx.leases.release(&lease).await {
            warn!(call_id = %id, error = %e, "could not give the poll lease up; it expires by itself");
        }
    }
}
