//! A programmable, seeded fault mode shared by every fake provider: when on, each request is
//! faulted with probability `rate` before the fake acts on it, with one of
//!
//! - a server error (500, 502 or 503; Telegram's 502/503 come as an HTML page, as from the
//!   proxy in front of the Bot API),
//! - 429 with Retry-After (header, and Telegram's `parameters.retry_after`),
//! - a connection reset (the answer's head goes out, then the connection is cut mid-body),
//! - a slow answer (held beyond the client's timeout, then a 504),
//! - malformed JSON (a 200 whose body is cut short).
//!
//! A faulted request never takes effect at the provider, so a retry is the first time the
//! provider sees it — except where a fake says otherwise (Twilio: a create whose 201 was cut
//! off or garbled, or that answered too late, did place the call). The draws come from one seeded RNG per fake, so a seed names the fault
//! sequence (the order requests arrive in still varies with timing).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    ServerError(u16),
    RateLimited,
    Reset,
    Slow,
    Malformed,
}

/// How a provider writes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Twilio,
    Telegram,
    Slack,
    OpenAi,
}

struct On {
    rng: StdRng,
    rate: f64,
    slow: Duration,
    retry_after_secs: u64,
    drawn: BTreeMap<Fault, usize>,
    requests: usize,
}

#[derive(Default)]
pub struct Faults {
    on: Mutex<Option<On>>,
    /// Faults played first, one per request, whether or not the random mode is on.
    scripted: Mutex<std::collections::VecDeque<Fault>>,
}

impl Faults {
    /// Faults `rate` of the requests from now on; slow answers are held for `slow`.
    pub fn enable(&self, seed: u64, rate: f64, slow: Duration) {
        *self.on.lock() = Some(On {
            rng: StdRng::seed_from_u64(seed),
            rate,
            slow,
            retry_after_secs: 1,
            drawn: BTreeMap::new(),
            requests: 0,
        });
    }

    pub fn disable(&self) {
        *self.on.lock() = None;
    }

    /// The next requests get these faults, in order (slow ones held 10 s).
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.scripted.lock().extend(faults);
    }

    /// Whether to fault this request, and how.
    pub fn draw(&self) -> Option<(Fault, Duration, u64)> {
        if let Some(fault) = self.scripted.lock().pop_front() {
            return Some((fault, Duration::from_secs(10), 1));
        }
        let mut guard = self.on.lock();
        let on = guard.as_mut()?;
        on.requests += 1;
        if !on.rng.random_bool(on.rate) {
            return None;
        }
        let fault = match on.rng.random_range(0..5) {
            0 => Fault::ServerError([500, 502, 503][on.rng.random_range(0..3)]),
            1 => Fault::RateLimited,
            2 => Fault::Reset,
            3 => Fault::Slow,
            _ => Fault::Malformed,
        };
        *on.drawn.entry(fault).or_default() += 1;
        Some((fault, on.slow, on.retry_after_secs))
    }

    /// (requests seen while on, faults by kind).
    pub fn stats(&self) -> (usize, BTreeMap<Fault, usize>) {
        self.on
            .lock()
            .as_ref()
            .map(|on| (on.requests, on.drawn.clone()))
            .unwrap_or_default()
    }

    /// As [`Self::maybe`], but a malformed answer counts as no fault: for endpoints whose
    /// success carries no JSON (Slack's response_url answers a bare 200).
    pub async fn maybe_transport(&self, style: Style) -> Option<Response> {
        match self.draw()? {
            (Fault::Malformed, ..) => None,
            (fault, slow, retry_after) => Some(answer(fault, style, slow, retry_after).await),
        }
    }

    /// Draws, and if this request is faulted, plays the fault and returns the answer.
    pub async fn maybe(&self, style: Style) -> Option<Response> {
        let (fault, slow, retry_after) = self.draw()?;
        Some(answer(fault, style, slow, retry_after).await)
    }
}

/// Renders `fault` as `style`'s provider would answer it.
pub async fn answer(fault: Fault, style: Style, slow: Duration, retry_after: u64) -> Response {
    let json = |status: StatusCode, body: serde_json::Value| {
        (
            status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    match fault {
        Fault::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            match style {
                Style::Telegram if code == 500 => json(
                    status,
                    serde_json::json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
                ),
                Style::Twilio => json(
                    status,
                    serde_json::json!({"code": 20500, "message": "Internal Server Error", "status": code}),
                ),
                Style::OpenAi => json(
                    status,
                    serde_json::json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
                ),
                _ => (
                    status,
                    [("content-type", "text/html")],
                    format!(
                        "<html><body><h1>{code} {}</h1></body></html>",
                        status.canonical_reason().unwrap_or("")
                    ),
                )
                    .into_response(),
            }
        }
        Fault::RateLimited => {
            let body = match style {
                Style::Telegram => serde_json::json!({
                    "ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {retry_after}"),
                    "parameters": {"retry_after": retry_after},
                }),
                Style::Slack => serde_json::json!({"ok": false, "error": "ratelimited"}),
                Style::Twilio => {
                    serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429})
                }
                Style::OpenAi => {
                    serde_json::json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
                }
            };
            let mut res = json(StatusCode::TOO_MANY_REQUESTS, body);
            res.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            res
        }
        Fault::Reset => {
            // The head and a few bytes go out, then the body errors: hyper cuts the connection.
            let status = if style == Style::Twilio {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"ok\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault: connection reset",
                )),
            ];
            (
                status,
                [
                    ("content-type", "application/json"),
                    ("content-length", "64"),
                ],
                Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        Fault::Slow => {
            // The scenario: an upstream that answers slowly on purpose.
            tokio::time::sleep(slow).await;
            (StatusCode::GATEWAY_TIMEOUT, "fault: too slow").into_response()
        }
        Fault::Malformed => (
            if style == Style::Twilio {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            [("content-type", "application/json")],
            "{\"ok\": true, \"result\": {\"message_id\": 1, \"da",
        )
            .into_response(),
    }
}

/// The seed for a fault run: `CALLBOT_FAULT_SEED` or a fresh one (printed by the caller).
pub fn seed() -> u64 {
    std::env::var("CALLBOT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}
