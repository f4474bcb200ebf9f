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
use crate::support::{AUTH_TOKEN, FakeTwilio, TestApp, twilio_settings};

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
        let res = self
            .app
            .http
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap();
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(env.fakes.twilio.creates().is_empty());
    assert!(env.fakes.slack.records().is_empty());
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
    // One byte every 100 ms: it would take 100 s to send the body.
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.fakes.twilio.creates().is_empty(),
        "seed {seed}: junk placed a call"
    );
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
    // Let the dialer, its retries and the chat posts run: the three creates (refused, failed
    // then retried, accepted) are paced a second apart, and a loaded machine takes longer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while logs.text().matches("callbot::calls::dialer").count() < 3
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
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
