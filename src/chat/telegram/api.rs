//! Sending Bot API requests by the one retry policy ([`crate::retry`]): 429 `retry_after`
//! is honoured; network errors, timeouts, server errors and garbled answers are retried with
//! the jittered exponential backoff; every retry is logged.

use std::time::Duration;

use teloxide::RequestError;
use teloxide::requests::{Output, Request};

use crate::retry::{self, Policy, Verdict};

/// Attempts per request (the first one included).
pub(super) const MAX_ATTEMPTS: u32 = 6;

/// Attempts for a message that must arrive (a call's outcome): with the backoff capped at
/// [`BACKOFF_MAX`] this keeps trying for a minute to two.
pub(super) const MUST_ARRIVE_ATTEMPTS: u32 = 16;

/// The longest `retry_after` we wait for one request; longer ones give up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Longest backoff after a first network error; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Bot API requests: the caps of this call site.
const POLICY: Policy =
    Policy::new(BACKOFF_BASE, BACKOFF_MAX, MAX_ATTEMPTS).with_max_retry_after(MAX_RETRY_AFTER);

/// Backoff after `failures` consecutive failures (1-based), jittered as every retry's.
pub(super) fn backoff(failures: u32) -> Duration {
    POLICY.backoff(failures)
}

/// Sends `request`, retrying on 429 (after `retry_after`) and network errors (with backoff).
/// Other errors (a bad request, a blocked bot) are returned at once.
pub(super) async fn send<R>(request: &R, method: &'static str) -> Result<Output<R>, RequestError>
where
    R: Request<Err = RequestError>,
{
    send_tries(request, method, MAX_ATTEMPTS).await
}

/// [`send`] with this many attempts.
pub(super) async fn send_tries<R>(
    request: &R,
    method: &'static str,
    max_attempts: u32,
) -> Result<Output<R>, RequestError>
where
    R: Request<Err = RequestError>,
{
    let result = send_unmetered(request, method, max_attempts).await;
    crate::telemetry::chat_post("telegram", result.is_ok());
    result
}

/// A server-side failure worth another try. teloxide keeps only the description of an
/// error answer, not its HTTP status, so a JSON 5xx is told by Telegram's wording; a 5xx
/// from the proxy in front of the Bot API is an HTML page, which arrives as `InvalidJson`.
fn is_transient(err: &RequestError) -> bool {
    match err {
        RequestError::Network(_) | RequestError::Io(_) | RequestError::InvalidJson { .. } => true,
        RequestError::Api(teloxide::ApiError::Unknown(description)) => {
            let d = description.to_ascii_lowercase();
            [
                "internal server error",
                "bad gateway",
                "service unavailable",
                "gateway timeout",
            ]
            .iter()
            .any(|s| d.contains(s))
        }
        _ => false,
    }
}

async fn send_unmetered<R>(
    request: &R,
    method: &'static str,
    max_attempts: u32,
) -> Result<Output<R>, RequestError>
where
    R: Request<Err = RequestError>,
{
    let policy = POLICY.with_tries(max_attempts);
    retry::run(&policy, method, || request.send_ref(), verdict)
        .await
        .map_err(|failure| failure.error)
}

/// 429 waits for its `retry_after`; transient failures back off; the rest is final.
fn verdict(err: &RequestError) -> Verdict {
    match err {
        RequestError::RetryAfter(secs) => Verdict::Retry(Some(secs.duration())),
        e if is_transient(e) => Verdict::Retry(None),
        _ => Verdict::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let ms = Duration::from_millis;
        assert!((ms(99)..=ms(200)).contains(&backoff(1)));
        assert!((ms(199)..=ms(400)).contains(&backoff(2)));
        assert!((ms(799)..=ms(1600)).contains(&backoff(4)));
        assert!((BACKOFF_MAX / 2 - ms(1)..=BACKOFF_MAX).contains(&backoff(30)));
    }

    #[test]
    fn rate_limits_wait_transient_errors_back_off_and_refusals_are_final() {
        let after = RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(3));
        assert_eq!(
            verdict(&after),
            Verdict::Retry(Some(Duration::from_secs(3)))
        );
        let down = RequestError::Api(teloxide::ApiError::Unknown("Bad Gateway".into()));
        assert_eq!(verdict(&down), Verdict::Retry(None));
        let blocked = RequestError::Api(teloxide::ApiError::BotBlocked);
        assert_eq!(verdict(&blocked), Verdict::Fatal);
    }
}
