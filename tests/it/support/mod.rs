//! Test support: the app on port 0 with every outbound base URL pointed at local fakes.
//! Logs only when TEST_LOG is set.

pub mod fake_openai;
pub mod fake_slack;
pub mod fake_telegram;
pub mod fake_twilio;
pub mod faults;

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::calls::CallService;
use callbot::core::call::{Call, CallId};
use callbot::{App, Settings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use fake_twilio::FakeTwilio;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const FROM: &str = "+15005550006";

pub struct TestApp {
    pub base: String,
    pub service: Arc<CallService>,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long a "nothing happened" check gives the signal that would have come.
pub const QUIET: Duration = Duration::from_millis(300);

/// A "nothing happened" check: polls `happened` (the signal that would have come: a call
/// created, a message posted) for [`QUIET`] and fails as soon as it turns true, rather than
/// sleeping and looking once.
pub async fn stays_false(what: &str, happened: impl AsyncFn() -> bool) {
    let start = Instant::now();
    loop {
        assert!(!happened().await, "{what}");
        if start.elapsed() >= QUIET {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        callbot::telemetry::init(callbot::config::LogFormat::Pretty);
    }
}

/// Settings for tests: loopback port 0, fast dialing, simulator unless Twilio is set.
pub fn settings() -> Settings {
    let mut s = Settings::defaults();
    s.server.bind = "127.0.0.1:0".parse().unwrap();
    s.calls.cps = 100;
    s.calls.backoff_base_ms = 20;
    s.calls.backoff_max_ms = 200;
    s.simulator.speed = 0.01;
    // Load tests place many calls that never end; policy tests set their own limits (the
    // global caps too).
    s.limits.max_concurrent = 100_000;
    s.limits.global_hour = u32::MAX;
    s.limits.global_day = u32::MAX;
    s.limits.llm_per_user_minute = 1_000_000;
    s
}

/// Settings that place calls through `twilio`.
pub fn twilio_settings(twilio: &FakeTwilio) -> Settings {
    let mut s = settings();
    s.twilio.account_sid = Some(ACCOUNT_SID.into());
    s.twilio.auth_token = Some(AUTH_TOKEN.to_owned().into());
    s.twilio.from_number = Some(FROM.into());
    s.twilio.api_base = twilio.base.clone();
    s.twilio.request_timeout_ms = 2000;
    s
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        init_logs();
        let app = App::build(settings).await.expect("app builds");
        let base = format!("http://{}", app.local_addr());
        let service = app.service();
        let stop = app.shutdown_token();
        tokio::spawn(app.run());
        Self {
            base,
            service,
            http: reqwest::Client::new(),
            stop,
        }
    }

    pub async fn prompt(&self, command: &str) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}/ai_prompt", self.base))
            .json(&serde_json::json!({ "command": command }))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Places a call through the web API and returns its id.
    pub async fn place(&self, command: &str) -> CallId {
        let (status, body) = self.prompt(command).await;
        assert_eq!(status, 202, "{body}");
        CallId::parse(body["id"].as_str().unwrap()).unwrap()
    }

    pub async fn call(&self, id: &CallId) -> Call {
        self.service.get(id).await.unwrap().expect("call exists")
    }

    /// Waits until the call satisfies `f` (or panics after `timeout`).
    pub async fn wait_for(
        &self,
        id: &CallId,
        timeout: Duration,
        f: impl Fn(&Call) -> bool,
    ) -> Call {
        let start = Instant::now();
        loop {
            let call = self.call(id).await;
            if f(&call) {
                return call;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting; call is {call:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_final(&self, id: &CallId) -> Call {
        self.wait_for(id, Duration::from_secs(15), |c| c.status.is_terminal())
            .await
    }
}
