//! A warning that may come once per request (a forged callback, a callback for a call we
//! do not know), written at most a few times a minute, with a count of the ones left out.
//!
//! After a restart with the memory store every callback of the calls in flight is for an
//! unknown call, and anyone can post forged callbacks: one WARN line each turned a burst of
//! 2,000 callbacks into 2,000 lines (a load test wrote 428 MB of log). A [`QuietLog`] lets
//! [`LINES_BURST`] lines through, then one per [`LINE_EVERY`] (governor's GCRA), and
//! counts the rest; the first line it may write after some were left out says how many.
//! If no request comes to carry that line, a timer writes it.
//!
//! Written by hand over governor: `tracing-throttle` filters in the subscriber, after the
//! event was built and its fields hashed, for every event of the process; here the hot path
//! must skip building the event at all, and only these warnings are throttled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::warn;

/// Lines written at once before the throttle starts.
pub const LINES_BURST: u32 = 3;
/// After the burst, one line per this long (so at most 6 a minute for a steady flood).
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// One kind of repeated warning (e.g. "status callback for an unknown call").
pub struct QuietLog {
    /// What each left-out request was, for the count line ("status callbacks for unknown calls").
    what: &'static str,
    limiter: DefaultDirectRateLimiter,
    /// Requests not logged since the last line.
    left_out: AtomicU64,
    /// A timer is waiting to write the count.
    timer: AtomicBool,
}

impl QuietLog {
    pub fn new(what: &'static str) -> Arc<Self> {
        let quota = Quota::with_period(LINE_EVERY)
            .expect("period is not zero")
            .allow_burst(std::num::NonZeroU32::new(LINES_BURST).expect("burst is not zero"));
        Arc::new(Self {
            what,
            limiter: RateLimiter::direct(quota),
            left_out: AtomicU64::new(0),
            timer: AtomicBool::new(false),
        })
    }

    /// One more occurrence. `Some(n)`: write the line now, noting the `n` left out before
    /// it; `None`: counted, not written (a timer writes the count later).
    pub fn hit(self: &Arc<Self>) -> Option<u64> {
        // While a timer waits for the next allowed line the throttle is spent: count only
        // (no clock read, no compare-and-swap on the limiter during a flood).
        if self.timer.load(Ordering::Acquire) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.limiter.check().is_ok() {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.timer.swap(true, Ordering::AcqRel)
        {
            let this = self.clone();
            runtime.spawn(async move { this.write_count_when_allowed().await });
        }
        None
    }

    /// Waits for the next line the throttle allows and writes the count there, unless a
    /// request's own line carried it first.
    async fn write_count_when_allowed(self: Arc<Self>) {
        loop {
            self.limiter.until_ready().await;
            let n = self.left_out.swap(0, Ordering::Relaxed);
            if n > 0 {
                warn!(
                    left_out = n,
                    "{n} more {} not logged one by one (at most {LINES_BURST} lines, then one every {}s)",
                    self.what,
                    LINE_EVERY.as_secs()
                );
            }
            self.timer.store(false, Ordering::Release);
            // A hit between the swap and the store saw the timer still set: look again.
            if self.left_out.load(Ordering::Relaxed) == 0 || self.timer.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside a runtime no timer is started, so the count stays for the next line.
    #[test]
    fn a_burst_writes_the_first_lines_then_counts_the_rest() {
        let log = QuietLog::new("things");
        let written: Vec<_> = (0..100).filter_map(|_| log.hit()).collect();
        assert_eq!(written, vec![0; LINES_BURST as usize]);
        assert_eq!(log.left_out.load(Ordering::Relaxed), 97);
    }
}
