//! A real Redis for the tests of the shared engine (`CALLBOT_STORE=redis`).
//!
//! `CALLBOT_TEST_REDIS_URL` names it (`.ci/run` sets it, starting a server when none runs on
//! 127.0.0.1:6379). Without it a test is skipped with a printed reason; under `CI=true` a
//! missing Redis fails the test instead. Each test gets its own key prefix, and its keys are
//! deleted when the handle is dropped.

use std::sync::atomic::{AtomicU32, Ordering};

use callbot::Settings;
use callbot::config::StoreBackend;

pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

#[allow(dead_code, reason = "used by the Redis tests")]
impl TestRedis {
    /// The test Redis with a fresh prefix, or `None` (after printing why) when none is
    /// configured outside CI. Use as `let Some(redis) = TestRedis::get("name") else { return };`.
    pub fn get(test: &str) -> Option<Self> {
        let url = match std::env::var("CALLBOT_TEST_REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{test}: CALLBOT_TEST_REDIS_URL is not set, and under CI=true the Redis tests must run"
                );
                eprintln!(
                    "SKIPPED {test}: set CALLBOT_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run the Redis tests"
                );
                return None;
            }
        };
        let prefix = format!(
            "cbtest-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let redis = Self { url, prefix };
        // Fail loudly (not skip) when it is configured but does not answer.
        let mut conn = redis
            .client()
            .get_connection()
            .unwrap_or_else(|e| panic!("{test}: CALLBOT_TEST_REDIS_URL does not answer: {e}"));
        let _: String = redis::cmd("PING").query(&mut conn).expect("PING");
        Some(redis)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).expect("a Redis URL")
    }

    /// `{prefix}:rest`, as callbot names its keys.
    pub fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    /// `settings` switched to this Redis and this test's prefix.
    pub fn settings(&self, mut settings: Settings) -> Settings {
        settings.store.backend = StoreBackend::Redis;
        settings.store.redis_url = Some(self.url.clone().into());
        settings.store.redis_prefix = self.prefix.clone();
        settings
    }

    /// Every key of this test.
    pub fn keys(&self) -> Vec<String> {
        let mut conn = self.client().get_connection().expect("redis");
        let pattern = format!("{{{}}}:*", self.prefix);
        let iter: redis::Iter<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut conn)
            .expect("SCAN");
        iter.filter_map(Result::ok).collect()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(mut conn) = self.client().get_connection() else {
            return;
        };
        let keys = self.keys();
        for chunk in keys.chunks(500) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}
