//! Tracing setup (`RUST_LOG` filters, pretty or JSON output) and Prometheus metrics.
//!
//! Metric names (all counters unless noted):
//! - `callbot_calls_total{status}`: calls that reached a final status.
//! - `callbot_dial_attempts_total`, `callbot_dial_retries_total`: create-call requests.
//! - `callbot_telephony_request_seconds{op}` (histogram): Twilio REST latency.
//! - `callbot_webhook_requests_total{route,result}`: accepted / bad_signature / unknown_call.
//! - `callbot_chat_posts_total{platform,result}`: messages posted back to chat.
//! - `callbot_queue_depth`, `callbot_active_calls` (gauges).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,tower_http=warn,hyper=warn,reqwest=warn";

/// Installs the global subscriber once; later calls are no-ops (tests call it repeatedly).
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER);
}

/// [`init`] with another filter for when `RUST_LOG` is unset (`callbot call` shows only
/// warnings among its progress lines). Logs go to stderr, coloured only when stderr is a
/// terminal and `NO_COLOR` is not set (<https://no-color.org>).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = std::io::stderr().is_terminal() && !no_color;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Latency buckets for provider requests, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (embedding); ours then only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Registers every series documented above at zero, so a fresh instance's `/metrics` lists
/// them all (a dashboard or alert on a series that appears only after first use sees "no
/// data" instead of 0). Registering is idempotent and touches no value, so several apps in
/// one process (tests) keep their counts.
pub fn register_series() {
    for status in crate::core::call::CallStatus::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
    {
        metrics::counter!("callbot_calls_total", "status" => status.as_str()).increment(0);
    }
    metrics::counter!("callbot_dial_attempts_total").increment(0);
    metrics::counter!("callbot_dial_retries_total").increment(0);
    for op in ["create", "hangup", "fetch", "list"] {
        // Registered without a sample: the exporter lists the histogram with empty buckets.
        let _ = metrics::histogram!("callbot_telephony_request_seconds", "op" => op);
    }
    for route in ["status", "twiml"] {
        for result in ["accepted", "unknown_call", "bad_signature"] {
            metrics::counter!("callbot_webhook_requests_total", "route" => route, "result" => result)
                .increment(0);
        }
    }
    for platform in ["telegram", "slack"] {
        for result in ["ok", "error"] {
            metrics::counter!("callbot_chat_posts_total", "platform" => platform, "result" => result)
                .increment(0);
        }
    }
    metrics::gauge!("callbot_queue_depth").increment(0.0);
    metrics::gauge!("callbot_active_calls").increment(0.0);
}

/// Counts a message posted back to a chat platform.
pub fn chat_post(platform: &'static str, ok: bool) {
    metrics::counter!(
        "callbot_chat_posts_total",
        "platform" => platform,
        "result" => if ok { "ok" } else { "error" }
    )
    .increment(1);
}
