//! Test support: the app on port 0 with every outbound base URL pointed at local fakes.
//! Logs only when TEST_LOG is set.

pub mod fake_openai;
pub mod fake_slack;
pub mod fake_telegram;
pub mod fake_twilio;
pub mod faults;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_proxy;
pub mod twiml;

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::calls::{CallEvent, CallService, EventKind};
use callbot::core::call::{Call, CallId};
use callbot::{App, Settings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use fake_twilio::FakeTwilio;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";
pub const FROM: &str = "+15005550006";

/// How long a "nothing happened" check waits for the signal that would have come: the app
/// acts on a request within milliseconds, so this is many times that, even on a loaded host.
pub const QUIET: Duration = Duration::from_millis(500);

/// A "nothing happened" check: watches `happened` for `window` and panics (with `what`) as
/// soon as it holds, so a failure shows at once and a pass costs exactly `window`.
pub async fn never(window: Duration, what: &str, mut happened: impl FnMut() -> bool) {
    let deadline = Instant::now() + window;
    loop {
        assert!(!happened(), "{what}");
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `done()` holds, polling every 10 ms; panics with `what` after `within`.
pub async fn until(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the bus for `window` after a call's final event was seen, counting the final
/// events of call `id` already queued or still to come; panics on a second one at once.
/// Expects the receiver to have been subscribed before the call was placed.
pub async fn exactly_one_final(
    events: &mut tokio::sync::broadcast::Receiver<CallEvent>,
    id: &CallId,
    window: Duration,
) {
    let deadline = tokio::time::Instant::now() + window;
    let mut finals = 0;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ev)) => {
                if ev.call.id == *id && ev.kind == EventKind::Final {
                    finals += 1;
                    assert!(finals == 1, "a second final event for {id}: {ev:#?}");
                }
            }
            Ok(Err(e)) => panic!("the test's bus receiver failed: {e}"),
            Err(_) => break,
        }
    }
    assert_eq!(finals, 1, "one final event for {id}");
}

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

/// Settings that place calls through `twilio` in callback mode, as with a tunnel on the same
/// host: the public URL is the app's own loopback address ([`build`] binds it first, unless
/// the test sets another).
pub fn twilio_settings(twilio: &FakeTwilio) -> Settings {
    let mut s = polling_settings(twilio);
    s.twilio.mode = callbot::config::TwilioModeSetting::Callbacks;
    s
}

/// Settings that place calls through `twilio` with no public URL: polling mode (with
/// `twilio.mode = "auto"`), polled fast.
pub fn polling_settings(twilio: &FakeTwilio) -> Settings {
    let mut s = settings();
    s.twilio.account_sid = Some(ACCOUNT_SID.into());
    s.twilio.auth_token = Some(AUTH_TOKEN.to_owned().into());
    s.twilio.from_number = Some(FROM.into());
    s.twilio.api_base = twilio.base.clone();
    s.twilio.request_timeout_ms = 2000;
    s.twilio.poll_ringing_ms = 20;
    s.twilio.poll_in_progress_ms = 50;
    s.twilio.poll_per_second = 1000;
    s
}

/// Builds the app. In callback mode with no public URL set, it binds its port first and names
/// that loopback address as the public URL (callback mode requires one, explicitly set).
pub async fn build(mut settings: Settings) -> App {
    let listener = tokio::net::TcpListener::bind(settings.server.bind)
        .await
        .expect("a port");
    if settings.twilio.mode == callbot::config::TwilioModeSetting::Callbacks
        && settings.server.public_url.is_none()
    {
        settings.server.public_url = Some(format!("http://{}", listener.local_addr().unwrap()));
    }
    App::build_on(settings, listener).await.expect("app builds")
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        init_logs();
        let app = build(settings).await;
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

    /// A "nothing happened" check on the store: watches the call for `window` and panics as
    /// soon as it stops satisfying `f`.
    pub async fn stays(&self, id: &CallId, window: Duration, f: impl Fn(&Call) -> bool) {
        let deadline = Instant::now() + window;
        loop {
            let call = self.call(id).await;
            assert!(f(&call), "the call changed: {call:#?}");
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_final(&self, id: &CallId) -> Call {
        self.wait_for(id, Duration::from_secs(15), |c| c.status.is_terminal())
            .await
    }
}

/// An app on a runtime of its own, so that it can be killed the way SIGKILL kills a process:
/// [`Instance::kill`] drops every task at once, with no graceful shutdown (nothing is failed,
/// nothing released, no lease given up). Build it from a test's async body; the runtime is
/// made on a plain thread.
#[allow(dead_code, reason = "used by the multi-instance tests")]
pub struct Instance {
    pub base: String,
    pub service: Arc<CallService>,
    pub http: reqwest::Client,
    stop: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

#[allow(dead_code, reason = "used by the multi-instance tests")]
impl Instance {
    pub async fn spawn(settings: Settings) -> Self {
        init_logs();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let app = runtime.block_on(build(settings));
            let base = format!("http://{}", app.local_addr());
            let service = app.service();
            let stop = app.shutdown_token();
            runtime.spawn(app.run());
            let _ = tx.send((runtime, base, service, stop));
        });
        let (runtime, base, service, stop) = rx.await.expect("the instance started");
        Self {
            base,
            service,
            http: reqwest::Client::new(),
            stop,
            runtime: Some(runtime),
        }
    }

    /// Stops it gracefully (as SIGTERM does) and waits a moment for the stop to finish.
    pub async fn stop(mut self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Kills it as SIGKILL would: every task is dropped where it stands.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
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
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
