//! The dialer: takes queued calls in order and creates them at the provider no faster than
//! `cps` per second (governor), with at most `max_concurrent` create requests in flight, and
//! retries 429 / 5xx / timeouts / connection errors with exponential backoff and jitter.
//! On shutdown it stops taking calls, fails what is still queued with a reason, and waits
//! up to `grace` for requests in flight.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::service::CallService;
use super::{Telephony, TelephonyError};
use crate::core::call::{CallId, CallStatus};

/// Longest wait a 429's Retry-After may impose on one call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DialerConfig {
    pub cps: u32,
    pub max_concurrent: usize,
    pub max_tries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub grace: Duration,
}

struct Ctx {
    service: Arc<CallService>,
    telephony: Arc<dyn Telephony>,
    limiter: DefaultDirectRateLimiter,
    cfg: DialerConfig,
}

/// Starts the dialer; it runs until `shutdown` is cancelled and the queue is settled.
pub fn spawn(
    service: Arc<CallService>,
    queue: mpsc::Receiver<CallId>,
    telephony: Arc<dyn Telephony>,
    cfg: DialerConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.cps.max(1)));
    // A burst of one makes every timer overshoot (tokio sleeps in whole milliseconds, late)
    // push the schedule back: at 100 CPS that lost 2 % of the rate. A burst of two lets a late
    // dial catch up with the schedule instead, at the price of two dials back to back after an
    // idle spell (not at start: see below). Below 10 CPS the overshoot is negligible and the strict limit stays.
    let burst = if cfg.cps >= 10 {
        NonZeroU32::new(2).expect("non-zero")
    } else {
        NonZeroU32::MIN
    };
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    if burst.get() > 1 {
        // Start with the spare cell taken, so a queue that starts full is not dialed two at
        // once; the first call still goes at once.
        let _ = limiter.check();
    }
    let ctx = Arc::new(Ctx {
        service,
        telephony,
        limiter,
        cfg,
    });
    tokio::spawn(run(ctx, queue, shutdown))
}

async fn run(ctx: Arc<Ctx>, mut queue: mpsc::Receiver<CallId>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.cfg.max_concurrent));
    loop {
        let id = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            id = queue.recv() => match id { Some(id) => id, None => break },
        };
        metrics::gauge!("callbot_queue_depth").decrement(1.0);
        let permit = tokio::select! {
            () = shutdown.cancelled() => { fail_unplaced(&ctx, &id).await; break }
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        tokio::select! {
            () = shutdown.cancelled() => { fail_unplaced(&ctx, &id).await; break }
            () = ctx.limiter.until_ready() => {}
        }
        let ctx = ctx.clone();
        let span = info_span!("dial", call_id = %id);
        tokio::spawn(
            async move {
                dial(&ctx, &id).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Stop: nothing queued is silently dropped.
    queue.close();
    while let Some(id) = queue.recv().await {
        fail_unplaced(&ctx, &id).await;
    }
    let all = u32::try_from(ctx.cfg.max_concurrent).unwrap_or(u32::MAX);
    if tokio::time::timeout(ctx.cfg.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("dial requests still in flight after the shutdown grace period");
    }
}

async fn fail_unplaced(ctx: &Ctx, id: &CallId) {
    let reason = "not placed: callbot is shutting down".to_owned();
    if let Err(e) = ctx.service.fail(id, None, reason, 0).await {
        warn!(call_id = %id, error = %e, "could not record an unplaced call");
    }
}

/// Exponential backoff with jitter: base·2^(try-1), capped, times a random 0.5–1.0.
fn backoff(cfg: &DialerConfig, tries: u32) -> Duration {
    let exp = cfg
        .backoff_base
        .saturating_mul(2u32.saturating_pow(tries.saturating_sub(1)))
        .min(cfg.backoff_max);
    exp.mul_f64(rand::rng().random_range(0.5..=1.0))
}

async fn dial(ctx: &Ctx, id: &CallId) {
    let call = match ctx.service.get(id).await {
        Ok(Some(call)) if call.status == CallStatus::Queued && call.sid.is_none() => call,
        Ok(_) => return, // canceled or gone while it waited
        Err(e) => {
            warn!(error = %e, "store unavailable; call not placed");
            return;
        }
    };
    let mut tries = 0;
    loop {
        tries += 1;
        metrics::counter!("callbot_dial_attempts_total").increment(1);
        if tries > 1 {
            metrics::counter!("callbot_dial_retries_total").increment(1);
        }
        let result = ctx.telephony.place(&call).await;
        match result {
            Ok(placed) => {
                info!(sid = %placed.sid, tries, "call created");
                match ctx.service.placed(id, &placed, tries).await {
                    // Canceled while the create request was in flight: hang it up now.
                    Ok(Some(c)) if c.status == CallStatus::Canceled && c.sid.is_none() => {
                        let _ = ctx.service.hangup(&placed.sid, CallStatus::Queued).await;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "could not record the placed call"),
                }
                return;
            }
            Err(err) if err.is_retryable() && tries < ctx.cfg.max_tries => {
                let delay = err
                    .retry_after()
                    .map(|d| d.min(MAX_RETRY_AFTER))
                    .unwrap_or_else(|| backoff(&ctx.cfg, tries));
                warn!(error = %err, tries, ?delay, "create call failed; retrying");
                tokio::time::sleep(delay).await;
                if !still_unplaced(ctx, id, &err).await {
                    return;
                }
                ctx.limiter.until_ready().await;
            }
            Err(err) => {
                let mut reason = err.to_call_error();
                if err.is_retryable() {
                    reason.message = format!("{} (gave up after {tries} tries)", reason.message);
                }
                warn!(error = %err, tries, "call not placed");
                if let Err(e) = ctx
                    .service
                    .fail(id, reason.code, reason.message, tries)
                    .await
                {
                    warn!(error = %e, "could not record the failed call");
                }
                return;
            }
        }
    }
}

/// Before a retry: the call may have been canceled, or, after a timeout, created after all
/// (its first status callback carries our call id and gives it a sid). Retrying then would
/// place a second call.
async fn still_unplaced(ctx: &Ctx, id: &CallId, err: &TelephonyError) -> bool {
    match ctx.service.get(id).await {
        Ok(Some(call)) if call.status == CallStatus::Queued && call.sid.is_none() => true,
        Ok(Some(call)) => {
            if matches!(err, TelephonyError::Timeout(_) | TelephonyError::Network(_)) {
                info!(status = %call.status, "the timed-out create succeeded after all; not retrying");
            }
            false
        }
        _ => false,
    }
}
