//! A fake Slack Web API on 127.0.0.1: records every chat.postMessage, chat.update and
//! response_url post in order, accepts JSON and form bodies as real Slack does, answers as
//! Slack would (a fresh `ts` per message), and can be scripted to fail the next calls
//! (`ok: false` errors, 429 with Retry-After, 500). Also signs requests to our routes exactly
//! as Slack signs them.
//!
//! Tokens are checked as Slack checks them: `auth.test` answers who the bot token is, and
//! any method with a wrong token answers `invalid_auth` (`not_authed` without one);
//! `apps.connections.open` wants the app-level token (`not_allowed_token_type` for the bot
//! token). Start-up checks (auth.test, apps.connections.open) are counted, not recorded with
//! the messages.

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
pub const APP_TOKEN: &str = "xapp-test-0123456789";

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
    /// What apps.connections.open answers (Socket Mode), once started.
    ws_url: Mutex<Option<String>>,
    /// Start-up checks answered, by method (`auth.test`, `apps.connections.open`).
    checks: Mutex<HashMap<String, usize>>,
    faults: super::faults::Faults,
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
            // Slack takes GET and POST for every method (slack-morphism GETs auth.test).
            .route("/api/{method}", post(api).get(api))
            .route("/response/{id}", post(response_url))
            .route(
                "/redirect/{id}",
                post(|Path(id): Path<String>| async move {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [("location", format!("/response/{id}-followed"))],
                    )
                }),
            )
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

    /// The fault mode of chat.postMessage, chat.update and response_url posts.
    pub fn faults(&self) -> &super::faults::Faults {
        &self.inner.faults
    }

    /// How many times `method` (`auth.test`, `apps.connections.open`) was called.
    pub fn checks(&self, method: &str) -> usize {
        self.inner.checks.lock().get(method).copied().unwrap_or(0)
    }

    /// A response_url on this fake that answers 307 to [`Self::response_url`] of
    /// `{id}-followed`: a client that follows redirects posts there.
    pub fn redirecting_url(&self, id: &str) -> String {
        format!("{}/redirect/{id}", self.base)
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
    // Slack's token errors: none given, or one it does not know.
    let token_error = |expected: &str| match rec.authorization.as_deref() {
        None => Some("not_authed"),
        Some(given) if given == format!("Bearer {expected}") => None,
        Some(given) if expected == APP_TOKEN && given == format!("Bearer {BOT_TOKEN}") => {
            Some("not_allowed_token_type")
        }
        Some(_) => Some("invalid_auth"),
    };
    if method == "apps.connections.open" {
        *inner.checks.lock().entry(method.clone()).or_default() += 1;
        let url = inner.ws_url.lock().clone();
        return match (token_error(APP_TOKEN), url) {
            (Some(code), _) => axum::Json(json!({ "ok": false, "error": code })).into_response(),
            (None, Some(url)) => axum::Json(json!({ "ok": true, "url": url })).into_response(),
            // The app has Socket Mode turned off in its settings.
            (None, None) => {
                axum::Json(json!({ "ok": false, "error": "invalid_auth" })).into_response()
            }
        };
    }
    if let Some(code) = token_error(BOT_TOKEN) {
        if method == "auth.test" {
            *inner.checks.lock().entry(method.clone()).or_default() += 1;
        } else {
            inner.records.lock().push(rec);
        }
        return axum::Json(json!({ "ok": false, "error": code })).into_response();
    }
    if method == "auth.test" {
        *inner.checks.lock().entry(method.clone()).or_default() += 1;
        return axum::Json(json!({
            "ok": true, "url": "https://fake-team.slack.com/", "team": "Fake Team",
            "user": "callbot", "team_id": "T0TEAM", "user_id": "U0BOT", "bot_id": "B0BOT",
            "is_enterprise_install": false,
        }))
        .into_response();
    }
    if let Some(res) = inner.faults.maybe(super::faults::Style::Slack).await {
        return res;
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
        "chat.postEphemeral" => {
            let ts = {
                let mut n = inner.next_ts.lock();
                *n += 1;
                format!("1700000000.{:06}", *n)
            };
            json!({ "ok": true, "message_ts": ts })
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
    if let Some(res) = inner
        .faults
        .maybe_transport(super::faults::Style::Slack)
        .await
    {
        return res;
    }
    if let Some(f) = take_failure(&inner, "response_url") {
        rec.ok = false;
        inner.records.lock().push(rec);
        return failure_response(&f);
    }
    inner.records.lock().push(rec);
    (StatusCode::OK, "ok").into_response()
}

/// Slack's side of Socket Mode: `apps.connections.open` answers with a `ws://` URL here; each
/// connection gets `hello`, then the envelopes the test sends; acknowledgements are recorded.
/// A minimal RFC 6455 server (text frames, masked client frames, ping/pong, close).
pub struct SocketMode {
    outgoing: tokio::sync::mpsc::UnboundedSender<Value>,
    acks: Arc<Mutex<Vec<Value>>>,
    /// True: Slack's WebSocket side is gone (connections dropped, new ones refused).
    down: tokio::sync::watch::Sender<bool>,
}

impl FakeSlack {
    pub async fn start_socket_mode(&self) -> SocketMode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *self.inner.ws_url.lock() = Some(format!("ws://{}/link", listener.local_addr().unwrap()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acks2 = acks.clone();
        let (down, down_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if *down_rx.borrow() {
                    drop(stream);
                    continue;
                }
                tokio::spawn(ws_connection(
                    stream,
                    rx.clone(),
                    acks2.clone(),
                    down_rx.clone(),
                ));
            }
        });
        SocketMode {
            outgoing: tx,
            acks,
            down,
        }
    }
}

impl SocketMode {
    /// Slack's WebSocket endpoint goes away: every open connection is dropped without a
    /// close frame (a network cut) and new ones are refused.
    pub fn cut(&self) {
        self.down.send_replace(true);
    }

    /// Sends an envelope (`slash_commands`, `events_api`, `interactive`) to the app.
    pub fn send(&self, envelope: Value) {
        self.outgoing.send(envelope).unwrap();
    }

    /// Waits for the acknowledgement of `envelope_id`.
    pub async fn ack(&self, envelope_id: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Some(a) = self
                .acks
                .lock()
                .iter()
                .find(|a| a["envelope_id"] == envelope_id)
            {
                return a.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no ack for {envelope_id}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn ws_connection(
    mut stream: tokio::net::TcpStream,
    outgoing: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Value>>>,
    acks: Arc<Mutex<Vec<Value>>>,
    mut down: tokio::sync::watch::Receiver<bool>,
) {
    use base64::Engine as _;
    use sha1::Digest as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).await.is_err() {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    ));
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::unbounded_channel::<(u8, Vec<u8>)>();
    let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake-slack"}, "connection_info": {"app_id": "A0APP"}});
    let _ = frames_tx.send((0x1, hello.to_string().into_bytes()));
    // Writer: frames from the reader (pongs) and from the test.
    let writer_task = tokio::spawn(async move {
        while let Some((opcode, payload)) = frames_rx.recv().await {
            let mut frame = vec![0x80 | opcode];
            match payload.len() {
                n if n < 126 => frame.push(n as u8),
                n if n < 65536 => {
                    frame.push(126);
                    frame.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    frame.push(127);
                    frame.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            frame.extend_from_slice(&payload);
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let frames = frames_tx.clone();
    let feeder = tokio::spawn(async move {
        loop {
            let next = outgoing.lock().await.recv().await;
            let Some(envelope) = next else { return };
            if frames
                .send((0x1, envelope.to_string().into_bytes()))
                .is_err()
            {
                return;
            }
        }
    });
    let frames_in = async move {
        loop {
            let mut h = [0u8; 2];
            if reader.read_exact(&mut h).await.is_err() {
                break;
            }
            let opcode = h[0] & 0x0f;
            let mut len = u64::from(h[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                if reader.read_exact(&mut b).await.is_err() {
                    break;
                }
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                let mut b = [0u8; 8];
                if reader.read_exact(&mut b).await.is_err() {
                    break;
                }
                len = u64::from_be_bytes(b);
            }
            let mut mask = [0u8; 4];
            if h[1] & 0x80 != 0 && reader.read_exact(&mut mask).await.is_err() {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            if reader.read_exact(&mut payload).await.is_err() {
                break;
            }
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                0x1 => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&payload) {
                        acks.lock().push(v);
                    }
                }
                0x8 => break,
                0x9 => {
                    let _ = frames_tx.send((0xA, payload));
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        () = frames_in => {}
        // A network cut: both halves are dropped below, no close frame.
        _ = down.wait_for(|d| *d) => {}
    }
    feeder.abort();
    writer_task.abort();
}
