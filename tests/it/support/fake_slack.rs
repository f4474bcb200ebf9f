//! A fake Slack Web API on 127.0.0.1: records every chat.postMessage, chat.update and
//! response_url post in order, accepts JSON and form bodies as real Slack does, answers as
//! Slack would (a fresh `ts` per message), and can be scripted to fail the next calls
//! (`ok: false` errors, 429 with Retry-After, 500). Also signs requests to our routes exactly
//! as Slack signs them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// The signing secret tests configure.
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_TOKEN: &str = "xoxb-test-0123456789";

/// How the fake answers the next call of a method.
#[derive(Debug, Clone)]
pub enum Failure {
    /// `{"ok": false, "error": code}` with HTTP 200.
    Error(&'static str),
    /// HTTP 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// HTTP 500.
    ServerError,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    /// `chat.postMessage`, `chat.update`, or `response_url`.
    pub method: String,
    /// The response_url id for `response_url` posts.
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: String,
    /// The body, JSON or form, as a JSON object.
    pub body: Value,
    /// What we answered (`ts` of a posted message), if it succeeded.
    pub ts: Option<String>,
    /// False when this request was answered with a scripted failure.
    pub ok: bool,
}

impl Recorded {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    pub fn text(&self) -> &str {
        self.get("text").unwrap_or_default()
    }

    /// action_ids of the buttons in the message's blocks.
    pub fn buttons(&self) -> Vec<(String, String)> {
        let blocks = match self.body.get("blocks") {
            // Form bodies carry blocks as a JSON string.
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
            Some(v) => v.clone(),
            None => Value::Null,
        };
        let mut out = vec![];
        for block in blocks.as_array().into_iter().flatten() {
            for el in block["elements"].as_array().into_iter().flatten() {
                if el["type"] == "button" {
                    out.push((
                        el["action_id"].as_str().unwrap_or_default().to_owned(),
                        el["value"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
        out
    }

    /// One line for transcripts.
    pub fn line(&self) -> String {
        let mut parts = vec![self.method.clone()];
        for key in [
            "channel",
            "ts",
            "thread_ts",
            "response_type",
            "replace_original",
        ] {
            if let Some(v) = self.body.get(key) {
                parts.push(format!(
                    "{key}={}",
                    v.as_str().map_or(v.to_string(), str::to_owned)
                ));
            }
        }
        if let Some(ts) = &self.ts {
            parts.push(format!("→ ts={ts}"));
        }
        let buttons = self.buttons();
        if !buttons.is_empty() {
            let names: Vec<_> = buttons.iter().map(|(a, _)| a.as_str()).collect();
            parts.push(format!("buttons={}", names.join(",")));
        }
        parts.push(format!("text={:?}", self.text()));
        parts.join(" ")
    }
}

#[derive(Default)]
struct Inner {
    records: Mutex<Vec<Recorded>>,
    failures: Mutex<HashMap<String, VecDeque<Failure>>>,
    next_ts: Mutex<u64>,
}

#[derive(Clone)]
pub struct FakeSlack {
    /// The Web API base URL (what `SLACK_API_URL` is set to).
    pub api_url: String,
    base: String,
    inner: Arc<Inner>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/response/{id}", post(response_url))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            api_url: format!("{base}/api"),
            base,
            inner,
        }
    }

    /// A response_url that posts back here, recorded under `id`.
    pub fn response_url(&self, id: &str) -> String {
        format!("{}/response/{id}", self.base)
    }

    /// Scripts the answers to the next calls of `method` (`chat.postMessage`, `chat.update`,
    /// `response_url`); then: success.
    pub fn fail(&self, method: &str, failures: impl IntoIterator<Item = Failure>) {
        self.inner
            .failures
            .lock()
            .entry(method.to_owned())
            .or_default()
            .extend(failures);
    }

    pub fn records(&self) -> Vec<Recorded> {
        self.inner.records.lock().clone()
    }

    /// Successful records of one method.
    pub fn of(&self, method: &str) -> Vec<Recorded> {
        self.records()
            .into_iter()
            .filter(|r| r.method == method && r.ok)
            .collect()
    }

    /// Waits until some record satisfies `f`; returns it.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Recorded) -> bool) -> Recorded {
        let start = Instant::now();
        loop {
            if let Some(r) = self.records().into_iter().find(|r| r.ok && f(r)) {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; recorded:\n{}",
                self.transcript()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every request, one line each, in order.
    pub fn transcript(&self) -> String {
        self.records()
            .iter()
            .map(|r| {
                if r.ok {
                    r.line()
                } else {
                    format!("{} (scripted failure)", r.line())
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Slack's v0 signature of a request body at `timestamp`, with [`SIGNING_SECRET`].
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    use rustls::crypto::tls13::OkmBlock;
    let rustls::SupportedCipherSuite::Tls13(suite) = TLS13_AES_128_GCM_SHA256 else {
        unreachable!("a TLS 1.3 suite")
    };
    let tag = suite.hkdf_provider.hmac_sign(
        &OkmBlock::new(secret.as_bytes()),
        format!("v0:{timestamp}:{body}").as_bytes(),
    );
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn body_as_json(headers: &HeaderMap, body: &str) -> (String, Value) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let value = if content_type.starts_with("application/json") {
        serde_json::from_str(body).unwrap_or(Value::Null)
    } else {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    };
    (content_type, value)
}

fn take_failure(inner: &Inner, method: &str) -> Option<Failure> {
    inner
        .failures
        .lock()
        .get_mut(method)
        .and_then(VecDeque::pop_front)
}

fn failure_response(f: &Failure) -> Response {
    match f {
        Failure::Error(code) => axum::Json(json!({ "ok": false, "error": code })).into_response(),
        Failure::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            axum::Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response(),
        Failure::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
    }
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (content_type, value) = body_as_json(&headers, &body);
    let mut rec = Recorded {
        at: Instant::now(),
        method: method.clone(),
        path: format!("/api/{method}"),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        content_type,
        body: value.clone(),
        ts: None,
        ok: true,
    };
    if rec.authorization.as_deref() != Some(&format!("Bearer {BOT_TOKEN}")) {
        inner.records.lock().push(rec);
        return axum::Json(json!({ "ok": false, "error": "not_authed" })).into_response();
    }
    if let Some(f) = take_failure(&inner, &method) {
        rec.ok = false;
        inner.records.lock().push(rec);
        return failure_response(&f);
    }
    let channel = value["channel"].as_str().unwrap_or_default().to_owned();
    let text = value["text"].as_str().unwrap_or_default().to_owned();
    let answer = match method.as_str() {
        "chat.postMessage" => {
            let ts = {
                let mut n = inner.next_ts.lock();
                *n += 1;
                format!("1700000000.{:06}", *n)
            };
            rec.ts = Some(ts.clone());
            json!({
                "ok": true, "channel": channel, "ts": ts,
                "message": { "type": "message", "ts": ts, "text": text, "bot_id": "BFAKE" },
            })
        }
        "chat.update" => {
            let ts = value["ts"].as_str().unwrap_or_default().to_owned();
            json!({
                "ok": true, "channel": channel, "ts": ts, "text": text,
                "message": { "text": text, "bot_id": "BFAKE" },
            })
        }
        _ => {
            rec.ok = false;
            json!({ "ok": false, "error": "unknown_method" })
        }
    };
    inner.records.lock().push(rec);
    axum::Json(answer).into_response()
}

async fn response_url(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (content_type, value) = body_as_json(&headers, &body);
    let mut rec = Recorded {
        at: Instant::now(),
        method: "response_url".into(),
        path: id,
        authorization: None,
        content_type,
        body: value,
        ts: None,
        ok: true,
    };
    if let Some(f) = take_failure(&inner, "response_url") {
        rec.ok = false;
        inner.records.lock().push(rec);
        return failure_response(&f);
    }
    inner.records.lock().push(rec);
    (StatusCode::OK, "ok").into_response()
}
