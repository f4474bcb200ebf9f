//! Dial pacing: creates at the provider no faster than `calls.cps`. One process paces itself
//! with governor ([`LocalPacer`]); several instances on one provider account pace together
//! through one Redis, so that `calls.cps` holds for all of them at once.
//!
//! Both use the generic cell rate algorithm with the same burst rule ([`burst`]).

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[async_trait]
pub trait Pacer: Send + Sync + 'static {
    /// Returns when one more create may go, and counts it. Wait on it in a `select!` with
    /// shutdown: dropping it before it returns places nothing (a slot already booked for it
    /// goes unused).
    async fn ready(&self);
}

/// The time between two creates at `cps`.
pub fn period(cps: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(cps.max(1)))
}

/// How many creates may go back to back.
///
/// A burst of one makes every timer overshoot (tokio sleeps in whole milliseconds, late)
/// push the schedule back: at 100 CPS that lost 2 % of the rate. A burst of two lets a late
/// dial catch up with the schedule instead, at the price of two dials back to back after an
/// idle spell (not at start: pacers start with the spare cell taken). Below 10 CPS the
/// overshoot is negligible and the strict limit stays.
pub fn burst(cps: u32) -> NonZeroU32 {
    if cps >= 10 {
        NonZeroU32::new(2).expect("non-zero")
    } else {
        NonZeroU32::MIN
    }
}

/// This process's pace (governor).
pub struct LocalPacer {
    limiter: DefaultDirectRateLimiter,
}

impl LocalPacer {
    pub fn new(cps: u32) -> Self {
        let burst = burst(cps);
        let quota = Quota::with_period(period(cps))
            .expect("period is positive")
            .allow_burst(burst);
        let limiter = RateLimiter::direct(quota);
        if burst.get() > 1 {
            // Start with the spare cell taken, so a queue that starts full is not dialed two
            // at once; the first call still goes at once.
            let _ = limiter.check();
        }
        Self { limiter }
    }
}

#[async_trait]
impl Pacer for LocalPacer {
    async fn ready(&self) {
        self.limiter.until_ready().await;
    }
}
