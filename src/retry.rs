//! The one retry policy for outbound HTTP: Twilio (the dialer's creates, the client's reads),
//! Slack, Telegram and the language model all wait and give up by these rules.
//!
//! - **Backoff.** After the n-th failure the wait is drawn from `[d/2, d)`, where
//!   `d = first · 2^(n-1)`, capped at `max_delay` ("equal jitter": never longer than the cap,
//!   never shorter than half of it, and callers that failed together spread out). The
//!   sequence is backon's [`ExponentialBuilder`] with jitter, started at `first/2` and capped
//!   at `max_delay/2` (backon adds a jitter in `[0, d)` to each delay).
//! - **Retry-After.** A wait the server names (the HTTP `Retry-After` header of a 429 or 503,
//!   Telegram's `parameters.retry_after`) replaces the backoff. One longer than the call
//!   site's `max_retry_after` gives up at once: waiting less than asked only earns another 429.
//! - **Caps, per call site.** `max_tries` (the first one included) and `max_total`, the sum of
//!   all waits (Retry-After waits included).
//!
//! What to retry is the call site's to say ([`Verdict`]): only requests that are safe to send
//! again. A Twilio create is never retried here blindly: the dialer asks Twilio whether an
//! unanswered create placed the call before creating it again, and checks the store between
//! tries. That is why the loop is ours rather than backon's `Retryable`: the dialer drives a
//! [`Schedule`] itself, Retry-After waits count against the total, and a too-long Retry-After
//! stops instead of being clamped.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tracing::warn;

/// Where the exponential sequence stops being computed (2^32 · first is past any cap).
const MAX_EXPONENT: u32 = 32;

/// How one call site retries. Build with [`Policy::new`] and the `with_*` setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest wait after the first failure (the jitter draws from its upper half).
    pub first: Duration,
    /// Longest wait after any failure.
    pub max_delay: Duration,
    /// Tries in all, the first one included; at least one is always made.
    pub max_tries: u32,
    /// Longest time spent waiting between tries, summed.
    pub max_total: Duration,
    /// Longest Retry-After honoured; a longer one gives up.
    pub max_retry_after: Duration,
}

impl Policy {
    /// `max_tries` tries, waits from `first` doubling up to `max_delay`; no total cap; a
    /// Retry-After up to 60 s is honoured.
    pub const fn new(first: Duration, max_delay: Duration, max_tries: u32) -> Self {
        Self {
            first,
            max_delay,
            max_tries,
            max_total: Duration::MAX,
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// The same policy with this many tries.
    #[must_use]
    pub const fn with_tries(mut self, max_tries: u32) -> Self {
        self.max_tries = max_tries;
        self
    }

    /// The same policy, waiting at most `total` in all.
    #[must_use]
    pub const fn with_total(mut self, total: Duration) -> Self {
        self.max_total = total;
        self
    }

    /// The same policy, honouring a Retry-After up to `max`.
    #[must_use]
    pub const fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The state of one request's retries.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            policy: *self,
            backoff: self.exponential(),
            failures: 0,
            waited: Duration::ZERO,
        }
    }

    /// The backoff after `failures` consecutive failures (1-based), for loops that run
    /// forever and so keep no [`Schedule`] (Telegram's long polling).
    pub fn backoff(&self, failures: u32) -> Duration {
        let n = failures.clamp(1, MAX_EXPONENT) as usize;
        self.exponential().nth(n - 1).unwrap_or(self.max_delay)
    }

    fn exponential(&self) -> ExponentialBackoff {
        let max = self.max_delay / 2;
        ExponentialBuilder::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay((self.first / 2).min(max))
            .with_max_delay(max)
            .without_max_times()
            .build()
    }
}

/// What a call site makes of one failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not worth another try (a refusal, a request that may have taken effect).
    Fatal,
    /// Try again: after the server's wait if it named one, else after the backoff.
    Retry(Option<Duration>),
}

/// Why a retryable failure was not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Every try was used.
    Tries(u32),
    /// The next wait would pass the total cap.
    Budget(Duration),
    /// The server asked for a longer wait than this call site accepts.
    RetryAfter(Duration),
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tries(n) => write!(f, "gave up after {n} tries"),
            Self::Budget(total) => write!(f, "gave up after waiting {total:?} in all"),
            Self::RetryAfter(after) => write!(f, "asked to wait {}s; gave up", after.as_secs()),
        }
    }
}

/// One request's retries: the backoff sequence, the failures and the time waited so far.
#[derive(Debug)]
pub struct Schedule {
    policy: Policy,
    backoff: ExponentialBackoff,
    failures: u32,
    waited: Duration,
}

impl Schedule {
    /// Records a failed try and returns how long to wait before the next one, or why there
    /// is none. `retry_after` is the wait the server named, if any.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        self.failures += 1;
        if self.failures >= self.policy.max_tries {
            return Err(GiveUp::Tries(self.failures));
        }
        let wait = match retry_after {
            Some(after) if after > self.policy.max_retry_after => {
                return Err(GiveUp::RetryAfter(after));
            }
            Some(after) => after,
            None => self.backoff.next().unwrap_or(self.policy.max_delay),
        };
        let total = self.waited.saturating_add(wait);
        if total > self.policy.max_total {
            return Err(GiveUp::Budget(self.waited));
        }
        self.waited = total;
        Ok(wait)
    }

    /// Failed tries so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Time waited so far.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// A request that did not succeed.
#[derive(Debug)]
pub struct Failure<E> {
    /// The last try's error.
    pub error: E,
    /// Tries made.
    pub tries: u32,
    /// `None`: the error was not retryable; else why retrying stopped.
    pub gave_up: Option<GiveUp>,
}

/// Runs `attempt` until it succeeds, `verdict` calls its error fatal, or `policy` gives up;
/// logs every retry and the giving up under `what`.
pub async fn run<T, E, F, Fut>(
    policy: &Policy,
    what: &str,
    mut attempt: F,
    verdict: impl Fn(&E) -> Verdict,
) -> Result<T, Failure<E>>
where
    E: fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut schedule = policy.schedule();
    loop {
        let error = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let retry_after = match verdict(&error) {
            Verdict::Fatal => {
                return Err(Failure {
                    error,
                    tries: schedule.failures() + 1,
                    gave_up: None,
                });
            }
            Verdict::Retry(after) => after,
        };
        match schedule.next_wait(retry_after) {
            Ok(wait) => {
                warn!(
                    request = what,
                    tries = schedule.failures(),
                    wait_ms = wait.as_millis() as u64,
                    %error,
                    "request failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(why) => {
                warn!(request = what, tries = schedule.failures(), %error, %why, "request failed; giving up");
                return Err(Failure {
                    error,
                    tries: schedule.failures(),
                    gave_up: Some(why),
                });
            }
        }
    }
}

/// A `Retry-After` header's value: delay-seconds, or an HTTP-date (then the time from now
/// to it, zero if past). `None` when it is neither.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate ("Wed, 21 Oct 2015 07:28:00 GMT") is RFC 2822 syntax, which chrono reads.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ahead = at.to_utc() - chrono::Utc::now();
    Some(ahead.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy::new(200 * MS, 5000 * MS, 100)
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_stays_under_the_cap() {
        for _ in 0..200 {
            let mut s = policy().schedule();
            let mut cap = 200 * MS;
            for _ in 0..12 {
                let wait = s.next_wait(None).unwrap();
                assert!(wait >= cap / 2 - MS, "{wait:?} below half of {cap:?}");
                assert!(wait <= cap, "{wait:?} above {cap:?}");
                cap = (cap * 2).min(5000 * MS);
            }
        }
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let waits: Vec<Duration> = (0..50).map(|_| policy().backoff(3)).collect();
        assert!(
            waits.iter().all(|w| *w >= 399 * MS && *w <= 800 * MS),
            "{waits:?}"
        );
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 10, "jittered: {waits:?}");
        assert!(policy().backoff(40) <= 5000 * MS);
        assert!(policy().backoff(0) <= 200 * MS);
    }

    #[test]
    fn retry_after_replaces_the_backoff_and_does_not_advance_it() {
        let mut s = policy().schedule();
        assert_eq!(
            s.next_wait(Some(3 * Duration::from_secs(1))),
            Ok(Duration::from_secs(3))
        );
        let wait = s.next_wait(None).unwrap();
        assert!(
            wait <= 200 * MS,
            "the backoff starts from the first step: {wait:?}"
        );
        assert_eq!(s.waited(), Duration::from_secs(3) + wait);
    }

    #[test]
    fn a_retry_after_beyond_the_cap_gives_up_at_once() {
        let mut s = policy()
            .with_max_retry_after(Duration::from_secs(10))
            .schedule();
        assert_eq!(
            s.next_wait(Some(Duration::from_secs(10))),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            s.next_wait(Some(Duration::from_secs(11))),
            Err(GiveUp::RetryAfter(Duration::from_secs(11)))
        );
    }

    #[test]
    fn tries_are_capped() {
        let mut s = policy().with_tries(3).schedule();
        assert!(s.next_wait(None).is_ok());
        assert!(s.next_wait(None).is_ok());
        assert_eq!(s.next_wait(None), Err(GiveUp::Tries(3)));
        assert_eq!(GiveUp::Tries(3).to_string(), "gave up after 3 tries");
        // One try only: no retry at all.
        assert_eq!(
            policy().with_tries(1).schedule().next_wait(Some(MS)),
            Err(GiveUp::Tries(1))
        );
    }

    #[test]
    fn the_total_wait_is_capped_retry_after_included() {
        let mut s = policy().with_total(Duration::from_secs(2)).schedule();
        assert_eq!(s.next_wait(Some(1500 * MS)), Ok(1500 * MS));
        assert_eq!(s.next_wait(Some(600 * MS)), Err(GiveUp::Budget(1500 * MS)));
        let mut s = policy().with_total(Duration::from_secs(3)).schedule();
        while s.next_wait(None).is_ok() {}
        assert!(s.waited() <= Duration::from_secs(3));
        assert!(s.waited() >= Duration::from_secs(1), "{:?}", s.waited());
    }

    #[test]
    fn retry_after_headers_are_read() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = parse_retry_after(&later).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn run_honours_retry_after_then_succeeds() {
        let calls = Cell::new(0);
        let started = std::time::Instant::now();
        let result: Result<u32, Failure<String>> = run(
            &policy(),
            "test",
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 2 { Err("429".to_owned()) } else { Ok(n) } }
            },
            |_| Verdict::Retry(Some(300 * MS)),
        )
        .await;
        assert_eq!(result.unwrap(), 2);
        assert!(started.elapsed() >= 300 * MS, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn run_stops_at_a_fatal_error_and_at_the_cap() {
        let calls = Cell::new(0);
        let fatal = run(
            &policy(),
            "test",
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>("refused") }
            },
            |_| Verdict::Fatal,
        )
        .await
        .unwrap_err();
        assert_eq!((calls.get(), fatal.tries, fatal.gave_up), (1, 1, None));

        calls.set(0);
        let capped = run(
            &Policy::new(MS, 2 * MS, 3),
            "test",
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>("503") }
            },
            |_| Verdict::Retry(None),
        )
        .await
        .unwrap_err();
        assert_eq!(calls.get(), 3);
        assert_eq!(capped.tries, 3);
        assert_eq!(capped.gave_up, Some(GiveUp::Tries(3)));
        assert_eq!(capped.error, "503");
    }
}
