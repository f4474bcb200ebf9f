//! Adapter health for `GET /healthz`: each chat adapter that keeps a connection of its own
//! (Slack Socket Mode, Telegram long polling) reports "connected" or "failing since …" here,
//! and the route answers 503 naming every adapter that has been failing for longer than
//! `health.adapter_down_ms` (a minute by default: a reconnect or two is normal and not worth
//! waking anyone for).
//!
//! Adapters that only receive webhooks (Slack HTTP routes, Telegram webhook mode) report
//! nothing: the platform reaches us, there is no connection of ours to lose.
//!
//! A dependency the instance cannot work without (the shared Redis of `CALLBOT_STORE=redis`)
//! is reported at once, without the adapters' grace: while it fails, every request and
//! callback fails too, so a load balancer should know now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;

/// What one adapter last reported.
#[derive(Debug, Clone)]
struct State {
    /// `None` while connected; otherwise when the current run of failures began.
    failing_since: Option<Instant>,
    /// The latest failure's reason.
    reason: String,
}

/// The registry every adapter reports to; shared by the adapters and the `/healthz` route.
#[derive(Debug)]
pub struct Health {
    adapters: Mutex<BTreeMap<&'static str, State>>,
    /// Each dependency's reason while its last check failed.
    dependencies: Mutex<BTreeMap<&'static str, Option<String>>>,
    /// How long an adapter may fail before `/healthz` reports it.
    down_after: Duration,
}

/// One adapter's line to the registry.
#[derive(Debug, Clone)]
pub struct AdapterHealth {
    registry: Arc<Health>,
    name: &'static str,
}

/// An adapter that has been failing for longer than the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    pub adapter: &'static str,
    pub reason: String,
    pub for_secs: u64,
}

impl Health {
    pub fn new(down_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            adapters: Mutex::new(BTreeMap::new()),
            dependencies: Mutex::new(BTreeMap::new()),
            down_after,
        })
    }

    /// Registers an adapter whose connection works (it just proved so, e.g. getMe).
    pub fn adapter(self: &Arc<Self>, name: &'static str) -> AdapterHealth {
        self.register(name, None)
    }

    /// Registers an adapter that is not connected yet: failing from now with `reason` until
    /// it first reports [`AdapterHealth::ok`], so a connection that never comes up is
    /// reported too.
    pub fn adapter_connecting(self: &Arc<Self>, name: &'static str, reason: &str) -> AdapterHealth {
        self.register(name, Some(reason))
    }

    fn register(self: &Arc<Self>, name: &'static str, failing: Option<&str>) -> AdapterHealth {
        self.adapters.lock().insert(
            name,
            State {
                failing_since: failing.map(|_| Instant::now()),
                reason: failing.unwrap_or_default().to_owned(),
            },
        );
        AdapterHealth {
            registry: self.clone(),
            name,
        }
    }

    /// Registers a dependency (working until it reports otherwise).
    pub fn dependency(self: &Arc<Self>, name: &'static str) -> DependencyHealth {
        self.dependencies.lock().insert(name, None);
        DependencyHealth {
            registry: self.clone(),
            name,
        }
    }

    /// Dependencies whose last check failed, with the reason: `(name, reason)`.
    pub fn dependencies_down(&self) -> Vec<(&'static str, String)> {
        self.dependencies
            .lock()
            .iter()
            .filter_map(|(name, reason)| Some((*name, reason.clone()?)))
            .collect()
    }

    /// Adapters failing for longer than the threshold, by name.
    pub fn down(&self) -> Vec<Down> {
        self.adapters
            .lock()
            .iter()
            .filter_map(|(name, state)| {
                let since = state.failing_since?;
                let elapsed = since.elapsed();
                (elapsed > self.down_after).then(|| Down {
                    adapter: name,
                    reason: state.reason.clone(),
                    for_secs: elapsed.as_secs(),
                })
            })
            .collect()
    }

    /// The `/healthz` answer: `ok` (200), or 503 with the reason and a JSON list of the
    /// dependencies and adapters that are down.
    pub fn response(&self) -> Response {
        let down = self.down();
        let dependencies = self.dependencies_down();
        if down.is_empty() && dependencies.is_empty() {
            return "ok".into_response();
        }
        let adapters: Vec<_> = down
            .iter()
            .map(|d| json!({ "adapter": d.adapter, "reason": d.reason, "failing_for_secs": d.for_secs }))
            .collect();
        let mut errors: Vec<String> = dependencies
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect();
        if !down.is_empty() {
            let names: Vec<_> = down.iter().map(|d| d.adapter).collect();
            errors.push(format!("chat adapter down: {}", names.join(", ")));
        }
        let dependencies: Vec<_> = dependencies
            .iter()
            .map(|(name, reason)| json!({ "dependency": name, "reason": reason }))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unhealthy",
                "error": errors.join("; "),
                "dependencies": dependencies,
                "adapters": adapters,
            })),
        )
            .into_response()
    }
}

impl AdapterHealth {
    /// The connection works (a poll answered, a socket said hello).
    pub fn ok(&self) {
        if let Some(state) = self.registry.adapters.lock().get_mut(self.name) {
            state.failing_since = None;
        }
    }

    /// The connection failed; the run of failures keeps its first instant.
    pub fn failing(&self, reason: impl Into<String>) {
        if let Some(state) = self.registry.adapters.lock().get_mut(self.name) {
            state.failing_since.get_or_insert_with(Instant::now);
            state.reason = reason.into();
        }
    }
}

/// One dependency's line to the registry.
#[derive(Debug, Clone)]
pub struct DependencyHealth {
    registry: Arc<Health>,
    name: &'static str,
}

impl DependencyHealth {
    /// The latest check passed.
    pub fn ok(&self) {
        if let Some(reason) = self.registry.dependencies.lock().get_mut(self.name) {
            *reason = None;
        }
    }

    /// The latest check failed: `/healthz` says so until one passes.
    pub fn failing(&self, reason: impl Into<String>) {
        if let Some(state) = self.registry.dependencies.lock().get_mut(self.name) {
            *state = Some(reason.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adapter_is_down_only_after_failing_for_longer_than_the_threshold() {
        let health = Health::new(Duration::from_millis(40));
        let slack = health.adapter_connecting("slack", "Socket Mode not connected yet");
        assert!(health.down().is_empty(), "a fresh start has its grace");
        slack.ok();
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.down().is_empty());
        slack.failing("Socket Mode disconnected");
        assert!(health.down().is_empty(), "one failure is not an outage");
        std::thread::sleep(Duration::from_millis(60));
        slack.failing("Socket Mode disconnected again");
        let down = health.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].adapter, "slack");
        assert_eq!(down[0].reason, "Socket Mode disconnected again");
        assert_eq!(health.response().status(), StatusCode::SERVICE_UNAVAILABLE);
        slack.ok();
        assert!(health.down().is_empty(), "recovered");
        assert_eq!(health.response().status(), StatusCode::OK);
    }

    #[test]
    fn a_failing_dependency_is_reported_at_once_with_its_reason() {
        let health = Health::new(Duration::from_secs(60));
        let redis = health.dependency("redis");
        assert_eq!(health.response().status(), StatusCode::OK);
        redis.failing("unreachable: connection refused");
        assert_eq!(
            health.dependencies_down(),
            [("redis", "unreachable: connection refused".to_owned())]
        );
        assert_eq!(health.response().status(), StatusCode::SERVICE_UNAVAILABLE);
        redis.ok();
        assert_eq!(health.response().status(), StatusCode::OK);
    }

    #[test]
    fn a_connection_that_never_comes_up_is_reported() {
        let health = Health::new(Duration::from_millis(20));
        let _slack = health.adapter_connecting("slack", "Socket Mode not connected yet");
        let _tg = health.adapter("telegram");
        std::thread::sleep(Duration::from_millis(40));
        let down = health.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].adapter, "slack");
    }
}
