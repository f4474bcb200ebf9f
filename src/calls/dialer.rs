//! The dialer: takes queued calls in order and creates them at the provider no faster than
//! `cps` per second (the [`Pacer`]: governor in one process, Redis for several), with at most `max_concurrent` create requests in flight, and
//! retries 429 / 5xx / timeouts / connection errors by the one retry policy
//! ([`crate::retry`]: jittered exponential backoff, Retry-After honoured, `max_tries` tries).
//! A create is never retried blindly: after one that went unanswered, the provider's call list is
//! asked first, and the store is read between tries.
//!
//! Calls come from the [`DialQueue`]; each delivery is acknowledged only once the dial's result
//! is recorded in the store. A redelivered call (its first dialer died or stopped) is dialed
//! only if the store still shows it queued without a sid, and only after the provider's call
//! list shows no create for it: the first dialer may have sent one.
//!
//! On shutdown it stops taking calls, hands back to the queue what it read but did not dial
//! (a shared queue gives it to another instance; in one process it is failed with a reason, as
//! is everything still queued), and waits up to `grace` for requests in flight.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::pacing::Pacer;
use super::queue::{Delivery, DialQueue};
use super::service::CallService;
use super::{Telephony, TelephonyError};
use crate::core::call::{CallId, CallStatus};
use crate::retry::Policy;

/// Longest wait a 429's or 503's Retry-After may impose on one call; a longer one fails it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long a call whose create was accepted but whose answer was lost waits for its first
/// status callback (which carries our call id and so gives the call its sid) before it is
/// closed as failed. Providers report `initiated` within a second or two of the create.
const UNCONFIRMED_WAIT: Duration = Duration::from_secs(30);

/// Pause before asking an unavailable queue again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DialerConfig {
    pub max_concurrent: usize,
    pub max_tries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub grace: Duration,
}

struct Ctx {
    service: Arc<CallService>,
    queue: Arc<dyn DialQueue>,
    telephony: Arc<dyn Telephony>,
    pacer: Arc<dyn Pacer>,
    cfg: DialerConfig,
    shutdown: CancellationToken,
}

/// Starts the dialer; it runs until `shutdown` is cancelled and the queue is settled.
pub fn spawn(
    service: Arc<CallService>,
    queue: Arc<dyn DialQueue>,
    telephony: Arc<dyn Telephony>,
    cfg: DialerConfig,
    shutdown: CancellationToken,
    pacer: Arc<dyn Pacer>,
) -> JoinHandle<()> {
    let ctx = Arc::new(Ctx {
        service,
        queue,
        telephony,
        pacer,
        cfg,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(run(ctx, shutdown))
}

async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.cfg.max_concurrent));
    loop {
        let delivery = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = ctx.queue.next() => match next {
                Ok(Some(delivery)) => delivery,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "dial queue unavailable; asking again");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(QUEUE_RETRY) => continue,
                    }
                }
            },
        };
        let permit = tokio::select! {
            () = shutdown.cancelled() => { hand_back(&ctx, &delivery).await; break }
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        tokio::select! {
            () = shutdown.cancelled() => { hand_back(&ctx, &delivery).await; break }
            () = ctx.pacer.ready() => {}
        }
        let ctx = ctx.clone();
        let span = info_span!("dial", call_id = %delivery.call, redelivered = delivery.redelivered);
        tokio::spawn(
            async move {
                dial(&ctx, &delivery).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Stop: nothing queued is silently dropped.
    match ctx.queue.close().await {
        Ok(left) => {
            for id in left {
                fail_unplaced(&ctx, &id).await;
            }
        }
        Err(e) => warn!(error = %e, "could not close the dial queue"),
    }
    let all = u32::try_from(ctx.cfg.max_concurrent).unwrap_or(u32::MAX);
    if tokio::time::timeout(ctx.cfg.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("dial requests still in flight after the shutdown grace period");
    }
    if let Err(e) = ctx.queue.leave().await {
        warn!(error = %e, "could not hand unread calls back to the dial queue");
    }
}

/// True when the failure was recorded.
async fn fail_unplaced(ctx: &Ctx, id: &CallId) -> bool {
    let reason = "not placed: callbot is shutting down".to_owned();
    match ctx.service.fail(id, None, reason, 0).await {
        Ok(_) => true,
        Err(e) => {
            warn!(call_id = %id, error = %e, "could not record an unplaced call");
            false
        }
    }
}

/// A delivery read but not dialed when the service stops: another instance dials it if the
/// queue is shared; otherwise it is failed with the reason.
async fn hand_back(ctx: &Ctx, delivery: &Delivery) {
    match ctx.queue.release(delivery).await {
        Ok(true) => info!(call_id = %delivery.call, "stopping: call left to another instance"),
        Ok(false) => {
            let recorded = fail_unplaced(ctx, &delivery.call).await;
            settle(ctx, delivery, recorded).await;
        }
        Err(e) => {
            warn!(call_id = %delivery.call, error = %e, "stopping: could not hand the call back; another instance takes it after the claim time");
            ctx.queue.abandon(delivery);
        }
    }
}

/// Ends a delivery: acknowledged when the call's result is recorded in the store (or there was
/// nothing to do); otherwise abandoned, to be handed out again after the queue's claim time.
async fn settle(ctx: &Ctx, delivery: &Delivery, recorded: bool) {
    if !recorded {
        ctx.queue.abandon(delivery);
        return;
    }
    if let Err(e) = ctx.queue.ack(delivery).await {
        warn!(call_id = %delivery.call, error = %e, "could not acknowledge a dialed call; it will be looked at again");
    }
}

impl DialerConfig {
    /// The retry policy of create requests: `calls.max_tries`, `calls.backoff_base_ms`
    /// doubling up to `calls.backoff_max_ms`.
    pub fn retry_policy(&self) -> Policy {
        Policy::new(self.backoff_base, self.backoff_max, self.max_tries)
            .with_max_retry_after(MAX_RETRY_AFTER)
    }
}

async fn dial(ctx: &Arc<Ctx>, delivery: &Delivery) {
    let id = &delivery.call;
    let call = match ctx.service.get(id).await {
        Ok(Some(call)) if call.status == CallStatus::Queued && call.sid.is_none() => call,
        // Canceled or gone while it waited, or (redelivered) placed by its first dialer.
        Ok(_) => return settle(ctx, delivery, true).await,
        Err(e) => {
            warn!(error = %e, "store unavailable; call not placed yet");
            return settle(ctx, delivery, false).await;
        }
    };
    let mut retries = ctx.cfg.retry_policy().schedule();
    let mut tries = 0;
    // Set once a create may have reached the provider without our hearing back: a
    // redelivered call's first dialer may have sent one at any time since the call was made.
    let mut unanswered_since: Option<DateTime<Utc>> = delivery
        .redelivered
        .then(|| call.created_at - chrono::Duration::seconds(2));
    loop {
        tries += 1;
        metrics::counter!("callbot_dial_attempts_total").increment(1);
        if tries > 1 {
            metrics::counter!("callbot_dial_retries_total").increment(1);
        }
        let started = Utc::now();
        // Ask before creating again: an earlier create that went unanswered may have placed it.
        let found = match unanswered_since {
            Some(since) => placed_after_all(ctx, &call, since).await,
            None => Ok(None),
        };
        let result = match found {
            Ok(Some(placed)) => {
                info!(sid = %placed.sid, tries, "an unanswered create had placed the call; not placing it again");
                Ok(placed)
            }
            Err(e) => Err(e),
            // Last thing before a create: a shared queue may have handed the call to another
            // dialer while this one could not renew its hold (cut off from Redis longer than
            // the claim time); that dialer owns it now, and asks the provider before creating.
            Ok(None) => match ctx.queue.keep(delivery).await {
                Ok(true) => ctx.telephony.place(&call).await,
                Ok(false) => {
                    warn!(
                        tries,
                        "another dialer took the call over; not placing it here"
                    );
                    return;
                }
                Err(e) => {
                    warn!(error = %e, tries, "dial queue unavailable; call not placed yet");
                    return settle(ctx, delivery, false).await;
                }
            },
        };
        if let Err(TelephonyError::Timeout(_) | TelephonyError::Network(_)) = &result {
            // The provider's clock names the second it took the request; allow for skew.
            unanswered_since.get_or_insert(started - chrono::Duration::seconds(2));
        }
        let err = match result {
            Ok(placed) => {
                info!(sid = %placed.sid, tries, "call created");
                let recorded = record_placed(ctx, id, &placed, tries).await;
                return settle(ctx, delivery, recorded).await;
            }
            Err(TelephonyError::Unconfirmed(why)) => {
                warn!(%why, tries, "call created but the provider's answer was lost; waiting for its first callback");
                let why =
                    "the telephony provider accepted the call but its answer was lost".to_owned();
                tokio::spawn(await_first_callback(
                    ctx.clone(),
                    delivery.clone(),
                    tries,
                    why,
                    started - chrono::Duration::seconds(2),
                ));
                return;
            }
            Err(err) => err,
        };
        let mut gave_up = None;
        if err.is_retryable() {
            match retries.next_wait(err.retry_after()) {
                Ok(delay) => {
                    warn!(error = %err, tries, ?delay, "create call failed; retrying");
                    let stopping = tokio::select! {
                        () = ctx.shutdown.cancelled() => true,
                        () = async {
                            tokio::time::sleep(delay).await;
                            ctx.pacer.ready().await;
                        } => false,
                    };
                    // Checked last thing before the next try: a callback may have come meanwhile.
                    match still_unplaced(ctx, id, &err).await {
                        Ok(true) => {}
                        Ok(false) => return settle(ctx, delivery, true).await,
                        Err(e) => {
                            warn!(error = %e, "store unavailable; call not placed yet");
                            return settle(ctx, delivery, false).await;
                        }
                    }
                    if stopping {
                        // Between tries when the service stops: another instance dials it,
                        // or the requester is told; it is not left queued.
                        return hand_back(ctx, delivery).await;
                    }
                    continue;
                }
                Err(why) => {
                    warn!(error = %err, tries, %why, "create call failed; not retrying");
                    gave_up = Some(why);
                }
            }
        }
        let mut reason = err.to_call_error();
        if let Some(why) = gave_up {
            // "(gave up after 3 tries)", "(asked to wait 120s; gave up)"
            reason.message = format!("{} ({why})", reason.message);
        }
        if let Some(since) = unanswered_since {
            // One last look: a create that went unanswered may have placed it.
            match placed_after_all(ctx, &call, since).await {
                Ok(Some(placed)) => {
                    info!(sid = %placed.sid, tries, "an unanswered create had placed the call");
                    let recorded = record_placed(ctx, id, &placed, tries).await;
                    return settle(ctx, delivery, recorded).await;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "cannot tell whether the call was placed; waiting for a callback");
                    tokio::spawn(await_first_callback(
                        ctx.clone(),
                        delivery.clone(),
                        tries,
                        reason.message,
                        since,
                    ));
                    return;
                }
            }
        }
        warn!(error = %err, tries, "call not placed");
        let recorded = match ctx
            .service
            .fail(id, reason.code, reason.message, tries)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(error = %e, "could not record the failed call");
                false
            }
        };
        return settle(ctx, delivery, recorded).await;
    }
}

/// Records the provider's sid on the call; a call canceled while its create was in flight
/// is hung up at once. True when recorded.
async fn record_placed(ctx: &Ctx, id: &CallId, placed: &super::Placed, tries: u32) -> bool {
    match ctx.service.placed(id, placed, tries).await {
        Ok(Some(c)) if c.status == CallStatus::Canceled && c.sid.is_none() => {
            let _ = ctx.service.hangup(&placed.sid, CallStatus::Queued).await;
            true
        }
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, "could not record the placed call");
            false
        }
    }
}

/// The call a create that went unanswered placed, if it did: the newest call to the same
/// number from the same caller id since then whose sid is none of our other calls' (it may
/// be this call's own, when its first callback came while we asked).
async fn placed_after_all(
    ctx: &Ctx,
    call: &crate::core::call::Call,
    since: DateTime<Utc>,
) -> Result<Option<super::Placed>, TelephonyError> {
    let store_error = |e: super::store::StoreError| TelephonyError::Network(format!("store: {e}"));
    for placed in ctx.telephony.recent_calls(call, since).await? {
        match ctx.service.call_with_sid(&placed.sid).await {
            Ok(None) => return Ok(Some(placed)),
            Ok(Some(owner)) if owner == call.id => return Ok(Some(placed)),
            Ok(Some(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    // Adopted by a callback whose call had already ended (ended calls leave the sid index).
    match ctx.service.get(&call.id).await {
        Ok(Some(c)) if c.status == CallStatus::Queued && c.sid.is_none() => Ok(None),
        Ok(Some(c)) => Ok(c.sid.map(|sid| super::Placed {
            sid,
            status: c.status,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(store_error(e)),
    }
}

/// A call the provider accepted without our learning its sid: its first status callback names our
/// call id and gives it the sid. If none comes, the provider's call list (calls created since
/// `since`) is asked once more — with no callbacks at all (Twilio polled, no public URL) it is
/// the only way to learn the sid — and only then is the call closed with the reason. The
/// delivery is held until then: should this instance die meanwhile, the call's next dialer
/// finds the create in the provider's call list.
async fn await_first_callback(
    ctx: Arc<Ctx>,
    delivery: Delivery,
    tries: u32,
    why: String,
    since: DateTime<Utc>,
) {
    let id = &delivery.call;
    // Asked at once too: with the provider polled there is no callback to wait for.
    if let Ok(Some(call)) = ctx.service.get(id).await
        && call.status == CallStatus::Queued
        && call.sid.is_none()
        && let Ok(Some(placed)) = placed_after_all(&ctx, &call, since).await
    {
        info!(call_id = %id, sid = %placed.sid, "the provider's call list shows the unconfirmed call");
        let recorded = record_placed(&ctx, id, &placed, tries).await;
        return settle(&ctx, &delivery, recorded).await;
    }
    let start = tokio::time::Instant::now();
    while start.elapsed() < UNCONFIRMED_WAIT {
        match ctx.service.get(id).await {
            Ok(Some(call)) if call.status == CallStatus::Queued && call.sid.is_none() => {}
            Ok(_) => return settle(&ctx, &delivery, true).await,
            Err(e) => {
                warn!(call_id = %id, error = %e, "store unavailable while waiting for the first callback");
                return settle(&ctx, &delivery, false).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = match ctx.service.get(id).await {
        Ok(Some(call)) if call.status == CallStatus::Queued && call.sid.is_none() => call,
        Ok(_) => return settle(&ctx, &delivery, true).await,
        Err(e) => {
            warn!(call_id = %id, error = %e, "store unavailable while waiting for the first callback");
            return settle(&ctx, &delivery, false).await;
        }
    };
    match placed_after_all(&ctx, &call, since).await {
        Ok(Some(placed)) => {
            info!(call_id = %id, sid = %placed.sid, "the provider's call list shows the unconfirmed call");
            let recorded = record_placed(&ctx, id, &placed, tries).await;
            return settle(&ctx, &delivery, recorded).await;
        }
        Ok(None) => {}
        Err(e) => {
            warn!(call_id = %id, error = %e, "could not ask the provider's call list about an unconfirmed call");
        }
    }
    let reason = format!(
        "{why}; no status followed within {} s",
        UNCONFIRMED_WAIT.as_secs()
    );
    let recorded = match ctx.service.fail(id, None, reason, tries).await {
        Ok(_) => true,
        Err(e) => {
            warn!(call_id = %id, error = %e, "could not record the unconfirmed call");
            false
        }
    };
    settle(&ctx, &delivery, recorded).await;
}

/// Before a retry: the call may have been canceled, or, after a timeout, created after all
/// (its first status callback carries our call id and gives it a sid). Retrying then would
/// place a second call.
async fn still_unplaced(
    ctx: &Ctx,
    id: &CallId,
    err: &TelephonyError,
) -> Result<bool, super::store::StoreError> {
    Ok(match ctx.service.get(id).await? {
        Some(call) if call.status == CallStatus::Queued && call.sid.is_none() => true,
        Some(call) => {
            if matches!(err, TelephonyError::Timeout(_) | TelephonyError::Network(_)) {
                info!(status = %call.status, "the timed-out create succeeded after all; not retrying");
            }
            false
        }
        None => false,
    })
}
