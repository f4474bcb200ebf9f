//! Sending Bot API requests: 429 `retry_after` is honoured; network errors, timeouts,
//! server errors and garbled answers are retried with exponential backoff; every retry is
//! logged.

use std::time::Duration;

use teloxide::RequestError;
use teloxide::requests::{Output, Request};
use tracing::warn;

/// Attempts per request (the first one included).
pub(super) const MAX_ATTEMPTS: u32 = 6;

/// Attempts for a message that must arrive (a call's outcome): with the backoff capped at
/// [`BACKOFF_MAX`] this keeps trying for about two minutes.
pub(super) const MUST_ARRIVE_ATTEMPTS: u32 = 16;

/// The longest `retry_after` we wait for one request; longer ones give up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// First backoff after a network error; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Backoff after `failures` consecutive failures (1-based).
pub(super) fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
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
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match request.send_ref().await {
            Ok(output) => return Ok(output),
            Err(e) => e,
        };
        let wait = match &err {
            RequestError::RetryAfter(secs) if secs.duration() <= MAX_RETRY_AFTER => secs.duration(),
            e if is_transient(e) => backoff(attempt),
            _ => return Err(err),
        };
        if attempt >= max_attempts {
            warn!(method, attempt, error = %err, "telegram request failed; giving up");
            return Err(err);
        }
        warn!(method, attempt, error = %err, wait_ms = wait.as_millis() as u64, "telegram request failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
