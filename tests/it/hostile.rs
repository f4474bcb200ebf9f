//! Hostile input (issue 9): oversized, mistyped, slow and junk requests on every route get a
//! 4xx, never a 5xx or a panic, place no call, and leave the service answering; no configured
//! secret appears in the logs or in any answer, including when providers fail.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::Settings;
use callbot::config::TelegramMode;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::fake_openai::FakeOpenAi;
use crate::support::fake_slack::{BOT_TOKEN, Failure, FakeSlack, SIGNING_SECRET, signature};
use crate::support::fake_telegram::{FakeTelegram, TOKEN};
use crate::support::fake_twilio::Plan;
use crate::support::{AUTH_TOKEN, FakeTwilio, QUIET, TestApp, never, twilio_settings, until};
use callbot::calls::store::ListFilter;

const TG_SECRET: &str = "tg-webhook-Secret_0123";
const WEB_TOKEN: &str = "web-token-0123456789";
const OPENAI_KEY: &str = "sk-hostile-test-key-0123";

/// The four providers' fakes.
struct Fakes {
    twilio: FakeTwilio,
    tg: FakeTelegram,
    slack: FakeSlack,
    openai: FakeOpenAi,
}

impl Fakes {
    async fn start() -> Self {
        Self {
            twilio: FakeTwilio::start().await,
            tg: FakeTelegram::start().await,
            slack: FakeSlack::start().await,
            openai: FakeOpenAi::start().await,
        }
    }

    /// Every adapter on: Twilio, Telegram in webhook mode, Slack, the LLM, a web token.
    fn settings(&self) -> Settings {
        let mut s = twilio_settings(&self.twilio);
        s.server.web_token = Some(WEB_TOKEN.to_owned().into());
        s.telegram.bot_token = Some(TOKEN.to_owned().into());
        s.telegram.api_url = self.tg.base.clone();
        s.telegram.mode = TelegramMode::Webhook;
        s.telegram.webhook_secret = Some(TG_SECRET.to_owned().into());
        s.slack.bot_token = Some(BOT_TOKEN.to_owned().into());
        s.slack.signing_secret = Some(SIGNING_SECRET.to_owned().into());
        s.slack.api_url = self.slack.api_url.clone();
        s.llm.base_url = Some(self.openai.base.clone());
        s.llm.api_key = Some(OPENAI_KEY.to_owned().into());
        s.llm.timeout_secs = 2;
        s.access.slack_teams = vec!["T0TEAM".into()];
        s.access.telegram_users = vec!["111".into()];
        s
    }
}

struct Env {
    app: TestApp,
    fakes: Fakes,
}

async fn spawn(configure: impl FnOnce(&mut Settings)) -> Env {
    let fakes = Fakes::start().await;
    let mut s = fakes.settings();
    configure(&mut s);
    let app = TestApp::spawn(s).await;
    Env { app, fakes }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.base)
    }

    async fn healthy(&self) {
        // A new connection: a pooled one may have sat idle past a short header timeout (which
        // is also the keep-alive limit) and been closed by the server as the request left.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let res = fresh.get(self.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "the service still answers");
    }
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// Every POST route, with the credentials it needs, so the body itself is what is judged.
fn signed_post(
    env: &Env,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut req = env
        .app
        .http
        .post(env.url(path))
        .header("content-type", content_type);
    match path {
        "/ai_prompt" => req = req.bearer_auth(WEB_TOKEN),
        "/telegram/webhook" => req = req.header("x-telegram-bot-api-secret-token", TG_SECRET),
        p if p.starts_with("/slack/") => {
            let ts = now();
            let sig = signature(SIGNING_SECRET, &ts, &String::from_utf8_lossy(&body));
            req = req
                .header("x-slack-request-timestamp", ts)
                .header("x-slack-signature", sig);
        }
        _ => {}
    }
    req.body(body)
}

const POST_ROUTES: [(&str, &str); 6] = [
    ("/ai_prompt", "application/json"),
    ("/webhooks/status", "application/x-www-form-urlencoded"),
    ("/telegram/webhook", "application/json"),
    ("/slack/commands", "application/x-www-form-urlencoded"),
    ("/slack/events", "application/json"),
    ("/slack/interactions", "application/x-www-form-urlencoded"),
];

#[tokio::test]
async fn oversized_bodies_get_413_on_every_post_route() {
    let env = spawn(|_| {}).await;
    let limit = Settings::defaults().server.webhook_body_limit;
    for (path, content_type) in POST_ROUTES {
        let body = vec![b'a'; limit + 1];
        let res = signed_post(&env, path, content_type, body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 413, "{path}");
        let text = res.text().await.unwrap();
        assert!(!text.contains("panicked"), "{path}: {text}");
    }
    env.healthy().await;
    assert!(env.fakes.twilio.creates().is_empty());
}

#[tokio::test]
async fn wrong_content_types_are_refused_and_change_nothing() {
    let env = spawn(|_| {}).await;
    // A valid command, but not JSON: 415.
    let res = signed_post(
        &env,
        "/ai_prompt",
        "text/plain",
        br#"{"command":"call +91 98765 43210"}"#.to_vec(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    // Malformed JSON with the right type: 400.
    let res = signed_post(
        &env,
        "/ai_prompt",
        "application/json",
        b"{\"command\":".to_vec(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // Properly signed Slack requests in the other route's format.
    for (path, content_type, body) in [
        (
            "/slack/commands",
            "application/json",
            r#"{"command":"/call","text":"+91 98765 43210"}"#,
        ),
        (
            "/slack/events",
            "application/x-www-form-urlencoded",
            "type=event_callback&event_id=Ev1",
        ),
        (
            "/slack/interactions",
            "application/json",
            r#"{"type":"block_actions"}"#,
        ),
        ("/telegram/webhook", "text/plain", "update_id=1"),
    ] {
        let res = signed_post(&env, path, content_type, body.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{path} {content_type}: {status}"
        );
    }
    tokio::join!(
        env.fakes.twilio.no_creates_beyond(0, QUIET),
        never(QUIET, "a Slack post for a malformed request", || {
            !env.fakes.slack.records().is_empty()
        })
    );
    env.healthy().await;
}

#[tokio::test]
async fn slow_bodies_are_cut_off() {
    let env = spawn(|s| s.server.body_timeout_ms = 500).await;
    let addr = env.app.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(
        b"POST /webhooks/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nCallSid=",
    )
    .await
    .unwrap();
    let started = Instant::now();
    // One byte every 100 ms: it would take 100 s to send the body. (The sleep is the
    // scenario: a deliberately slow client.)
    let dripping = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if conn.write_all(b"a").await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await
            {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        String::new()
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), dripping)
        .await
        .expect("the server cut the slow body off");
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    env.healthy().await;
}

fn junk_text(rng: &mut StdRng, max: usize) -> String {
    const PIECES: &[&str] = &[
        "%",
        "%zz",
        "%00",
        "&",
        "=",
        "+",
        "call",
        "+91 98765 43210",
        "{",
        "}",
        "[",
        "\"",
        "\\",
        "\u{0}",
        "é",
        "💥",
        "<Say>",
        "]]>",
        "CallSid",
        "CallStatus=completed",
        "SequenceNumber=-1",
        "..",
        "/",
        "null",
        "true",
        "1e999",
        "-0",
        " ",
        "\n",
    ];
    let n = rng.random_range(0..max);
    (0..n)
        .map(|_| {
            if rng.random_bool(0.7) {
                PIECES[rng.random_range(0..PIECES.len())].to_owned()
            } else {
                char::from(rng.random_range(0x20u8..0x7f)).to_string()
            }
        })
        .collect()
}

#[tokio::test]
async fn junk_on_every_route_gets_4xx_never_5xx() {
    let seed: u64 = std::env::var("CALLBOT_JUNK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let env = spawn(|_| {}).await;
    let paths = [
        "/",
        "/ai_prompt",
        "/api/calls",
        "/api/calls/abc",
        "/api/calls/abc/cancel",
        "/api/stats",
        "/twiml/abc",
        "/twiml/",
        "/webhooks/status",
        "/telegram/webhook",
        "/slack/commands",
        "/slack/events",
        "/slack/interactions",
        "/healthz",
        "/metrics",
        "/nope",
        "/api/calls/%ff",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let headers = [
        "content-type",
        "authorization",
        "x-twilio-signature",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-telegram-bot-api-secret-token",
        "accept",
        "x-forwarded-proto",
        "host",
    ];
    let content_types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data",
        "application/json; charset=utf-16",
        "*/*",
        "",
    ];
    for i in 0..400 {
        let path = paths[rng.random_range(0..paths.len())];
        let method = methods[rng.random_range(0..methods.len())];
        let query = junk_text(&mut rng, 12).replace(['#', ' ', '\n', '\u{0}'], "");
        let url = format!("{}?{query}", env.url(path));
        let Ok(url) = reqwest::Url::parse(&url) else {
            continue;
        };
        let mut req = env
            .app
            .http
            .request(method.parse().unwrap(), url)
            .timeout(Duration::from_secs(5));
        req = req.header(
            "content-type",
            content_types[rng.random_range(0..content_types.len())],
        );
        if rng.random_bool(0.5) {
            // Right credentials half the time, so parsers behind the checks see junk too.
            req = match path {
                "/ai_prompt" | "/api/calls" | "/api/stats" | "/metrics" => {
                    req.bearer_auth(WEB_TOKEN)
                }
                "/telegram/webhook" => req.header("x-telegram-bot-api-secret-token", TG_SECRET),
                _ => req,
            };
        }
        for _ in 0..rng.random_range(0..4) {
            let name = headers[rng.random_range(0..headers.len())];
            let value = junk_text(&mut rng, 20).replace(['\n', '\u{0}', '\r'], "");
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                req = req.header(name, value);
            }
        }
        let body = junk_text(&mut rng, 200);
        let signed = path.starts_with("/slack/") && rng.random_bool(0.5);
        if signed {
            let ts = now();
            req = req
                .header("x-slack-request-timestamp", &ts)
                .header("x-slack-signature", signature(SIGNING_SECRET, &ts, &body));
        }
        let res = req.body(body.clone()).send().await;
        let res = res.unwrap_or_else(|e| panic!("seed {seed}, request {i}: {method} {path}: {e}"));
        let status = res.status().as_u16();
        assert!(
            status < 500,
            "seed {seed} (CALLBOT_JUNK_SEED={seed} reproduces), request {i}: {method} {path}?{query} \
             signed={signed} body={body:?} → {status}"
        );
    }
    env.healthy().await;
    println!("seed {seed}: no junk request may place a call");
    env.fakes.twilio.no_creates_beyond(0, QUIET).await;
}

/// A `MakeWriter` collecting formatted log lines in memory.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

/// Runs on one thread so that every task the app spawns logs through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_appear_in_logs_or_answers() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let secrets = [
        AUTH_TOKEN,
        TOKEN,
        TG_SECRET,
        BOT_TOKEN,
        SIGNING_SECRET,
        WEB_TOKEN,
        OPENAI_KEY,
    ];
    let mut answers = Vec::new();

    // Telegram unreachable at start: the error says so without the token in the Bot API URL.
    {
        let fakes = Fakes::start().await;
        let mut s = fakes.settings();
        s.telegram.api_url = "http://127.0.0.1:9".into();
        let err = callbot::App::build(s)
            .await
            .err()
            .expect("start fails without Telegram");
        answers.push(format!("{err:#} {err:?}"));
    }

    let env = spawn(|s| {
        s.llm.timeout_secs = 1;
    })
    .await;
    // Twilio refuses the first create (401), fails the next with 500, then accepts.
    env.fakes.twilio.plan([
        Plan::Error {
            status: 401,
            code: 20003,
            message: "Authenticate",
            retry_after: None,
        },
        Plan::Error {
            status: 500,
            code: 20500,
            message: "Internal Server Error",
            retry_after: None,
        },
    ]);
    env.fakes.slack.fail(
        "chat.postMessage",
        [Failure::ServerError, Failure::Error("invalid_auth")],
    );
    let http = &env.app.http;
    for command in [
        "call +91 98765 43210 and say hi",
        "call +91 98765 43211",
        "ring my friend on nine nine",
    ] {
        let res = http
            .post(env.url("/ai_prompt"))
            .bearer_auth(WEB_TOKEN)
            .json(&json!({"command": command}))
            .send()
            .await
            .unwrap();
        answers.push(res.text().await.unwrap());
    }
    // Forged and wrong credentials on every guarded route.
    for (path, header, value) in [
        ("/ai_prompt", "authorization", "Bearer wrong"),
        (
            "/telegram/webhook",
            "x-telegram-bot-api-secret-token",
            "wrong",
        ),
        ("/webhooks/status", "x-twilio-signature", "AAAA"),
        ("/slack/commands", "x-slack-signature", "v0=00"),
        ("/metrics", "authorization", "Bearer wrong"),
    ] {
        let res = http
            .post(env.url(path))
            .header(header, value)
            .header("x-slack-request-timestamp", now())
            .body("text=call")
            .send()
            .await
            .unwrap();
        answers.push(format!("{} {}", res.status(), res.text().await.unwrap()));
    }
    // A Slack command whose status message fails to post.
    let ts = now();
    let body = "team_id=T0TEAM&channel_id=C0CHAN&user_id=U0ALICE&user_name=alice&command=%2Fcall&text=%2B91+98765+43212&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr&trigger_id=t";
    let res = http
        .post(env.url("/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature(SIGNING_SECRET, &ts, body))
        .body(body)
        .send()
        .await
        .unwrap();
    answers.push(res.text().await.unwrap());
    // Let the dialer, its retries and the chat posts run: every call is dialed (it has a sid)
    // or has ended (the refused create), and both scripted failures of the Slack status
    // message were answered. The creates are paced a second apart; a loaded machine takes
    // longer.
    until(
        Duration::from_secs(30),
        "every call dialed or ended, and both failed Slack posts",
        async || {
            let calls = env
                .app
                .service
                .list(100, &ListFilter::default())
                .await
                .unwrap();
            let failed_posts = env
                .fakes
                .slack
                .records()
                .iter()
                .filter(|r| r.method == "chat.postMessage" && !r.ok)
                .count();
            calls.len() >= 3
                && calls
                    .iter()
                    .all(|c| c.sid.is_some() || c.status.is_terminal())
                && failed_posts >= 2
        },
    )
    .await;
    let calls = http
        .get(env.url("/api/calls"))
        .bearer_auth(WEB_TOKEN)
        .send()
        .await
        .unwrap();
    answers.push(calls.text().await.unwrap());

    let logs = logs.text();
    assert!(
        logs.contains("callbot::calls::dialer"),
        "logs were captured:\n{logs}"
    );
    std::io::stderr().flush().ok();
    for secret in secrets {
        for line in logs.lines() {
            assert!(!line.contains(secret), "a secret in the logs: {line}");
        }
        for answer in &answers {
            assert!(!answer.contains(secret), "a secret in an answer: {answer}");
        }
    }
}

/// Reads from `conn` until the server closes it (EOF or reset); returns the bytes read.
async fn read_until_closed(conn: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Slow-loris: hundreds of connections that send half their headers and stop are all closed
/// once the header timeout has passed, and `/healthz` answers throughout.
#[tokio::test]
async fn half_sent_headers_are_closed_within_the_header_timeout_while_health_keeps_answering() {
    let env = spawn(|s| s.server.header_timeout_ms = 1000).await;
    let addr = env.app.base.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        conns.push(conn);
    }
    // With all of them open, a well-behaved client is served at once.
    let started = Instant::now();
    let res = env
        .app
        .http
        .get(env.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/healthz answers while 300 half-sent requests are open");
    assert_eq!(res.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every half-sent request is cut off after the timeout, without an answer to read.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        for conn in &mut conns {
            let got = read_until_closed(conn).await;
            assert!(
                got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "half-sent requests were still open 5 s after a 1 s header timeout"
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    env.healthy().await;
}

/// Beyond `max_connections` a new connection waits to be accepted (the process keeps its file
/// descriptors), and is served as soon as the silent ones are cut off by the header timeout.
#[tokio::test]
async fn connections_beyond_the_cap_wait_and_are_served_once_slow_ones_are_cut_off() {
    let env = spawn(|s| {
        s.server.header_timeout_ms = 1000;
        s.server.max_connections = 16;
    })
    .await;
    let addr = env.app.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let opened = Instant::now();
    // A fresh client each time: a pooled connection accepted earlier would skip the queue.
    let health = |timeout: Duration| {
        reqwest::Client::new()
            .get(env.url("/healthz"))
            .timeout(timeout)
            .send()
    };
    let waited = health(Duration::from_millis(400)).await;
    assert!(
        waited.is_err(),
        "a 17th connection was served while 16 were open: {waited:?}"
    );
    let res = health(Duration::from_secs(5))
        .await
        .expect("served once the silent connections are closed");
    assert_eq!(res.status().as_u16(), 200);
    assert!(opened.elapsed() >= Duration::from_millis(600));
    for conn in &mut silent {
        tokio::time::timeout(Duration::from_secs(3), read_until_closed(conn))
            .await
            .expect("silent connections are closed");
    }
    env.healthy().await;
}

/// A client that stops reading (a dead peer, a suspended laptop) holds its connection only
/// for the idle timeout once its answers no longer fit in the socket buffers; then it is
/// closed instead of waiting for the client forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    use callbot::calls::service::CallRequest;
    use callbot::core::call::{Origin, Platform};
    use callbot::core::phone::{PhoneNumber, Region};

    let env = spawn(|s| {
        s.server.idle_timeout_secs = 1;
        // Long enough that only the idle timeout can close the connection here.
        s.server.header_timeout_ms = 60_000;
        s.limits.per_destination_hour = 10_000;
        s.limits.message_max_chars = 4000;
    })
    .await;
    // 300 calls with 4,000-character messages make each /api/calls answer over a megabyte.
    let say = "a".repeat(4000);
    let region = Region::parse("IN").unwrap();
    for i in 0..300 {
        let to = PhoneNumber::parse(&format!("+91 98765 {:05}", 10000 + i), region).unwrap();
        env.app
            .service
            .request(CallRequest {
                to,
                message: Some(say.clone()),
                origin: Origin::new(Platform::Web, "web"),
                speech: Default::default(),
            })
            .await
            .unwrap();
    }
    let addr: std::net::SocketAddr = env.app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    // Ten pipelined requests: far more than loopback socket buffers hold (4 MB each way).
    let request = format!(
        "GET /api/calls?limit=1000 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {WEB_TOKEN}\r\n\r\n"
    );
    conn.write_all(request.repeat(10).as_bytes()).await.unwrap();
    // Not reading for three idle timeouts. (The sleep is the scenario: a client that does not
    // read.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut conn))
        .await
        .expect("the server closed the connection of a client that did not read");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    let answers = text.matches("HTTP/1.1 200").count();
    assert!(answers < 10, "all {answers} answers waited for the client");
    env.healthy().await;
}

/// The web token travels in `/api/events?token=` (EventSource cannot send headers); it never
/// reaches a log line, at any level: request spans show `token=[redacted]`.
#[tokio::test(flavor = "current_thread")]
async fn the_web_token_in_a_query_never_reaches_a_log_line_even_at_trace_level() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = spawn(|_| {}).await;
    for query in [
        format!("token={WEB_TOKEN}"),
        format!("a=1&token={WEB_TOKEN}&b=2"),
        format!("%74oken={WEB_TOKEN}"),
    ] {
        let mut res = env
            .app
            .http
            .get(env.url(&format!("/api/events?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "?{query} opens the live log");
        drop(res.chunk());
    }
    let res = env
        .app
        .http
        .get(env.url(&format!("/api/calls?token={WEB_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        401,
        "a query token is for the live log only"
    );
    env.healthy().await;
    let logs = logs.text();
    for line in logs.lines() {
        assert!(
            !line.contains(WEB_TOKEN),
            "the web token in the logs: {line}"
        );
    }
    assert!(
        logs.contains("/api/events?token=[redacted]") && logs.contains("a=1&token=[redacted]&b=2"),
        "request spans were captured:\n{logs}"
    );
}

/// The header deadline counts from the end of the previous answer: a keep-alive connection
/// that sends nothing more is closed once it has passed, while an answer that takes longer
/// (an `/api/events` stream, here three deadlines long) is not cut, and its connection is
/// still served afterwards.
#[tokio::test]
async fn the_header_deadline_closes_idle_keep_alive_connections_but_not_long_answers() {
    use futures::StreamExt as _;
    let env = spawn(|s| s.server.header_timeout_ms = 400).await;
    let addr = env.app.base.trim_start_matches("http://").to_owned();

    // Idle after one answer: closed about one deadline after it, not before.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(3), read_until_closed(&mut conn))
        .await
        .expect("an idle keep-alive connection is closed after the header timeout");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(300),
        "closed too early: {idle:?}"
    );

    // Requests one after another on one connection, each within the deadline, for longer
    // than the deadline in all: the connection stays open.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let n = conn.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    // A stream three deadlines long stays open and still delivers.
    let res = env
        .app
        .http
        .get(env.url(&format!("/api/events?token={WEB_TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut stream = res.bytes_stream();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let placed = env
        .app
        .http
        .post(env.url("/ai_prompt"))
        .bearer_auth(WEB_TOKEN)
        .json(&serde_json::json!({ "command": "call +91 98765 43210" }))
        .send()
        .await
        .unwrap();
    assert!(placed.status().is_success(), "{}", placed.status());
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the event stream outlived the header timeout and delivered")
        .expect("the stream is open")
        .unwrap();
    assert!(!chunk.is_empty());
    env.healthy().await;
}
