//! Measurements for the notes, through the real app and the test fakes on loopback (moved
//! here from the ignored integration tests, so `cargo test` never runs them):
//!
//! - `latency`: `POST /ai_prompt` to the fake Twilio's create, 1,000 sequential requests:
//!   p50, p99, max.
//! - `pacing`: calls queued at once at CPS 1, 10 and 50 (ten seconds' worth each): the rate
//!   achieved at the fake.
//! - `shared-pacing`: the same through three app instances sharing one Redis
//!   (`CALLBOT_STORE=redis`; needs `CALLBOT_TEST_REDIS_URL`) at CPS 1, 5, 10 and 50: the rate of
//!   the merged creates, lost, doubled, and the most creates within any one second.
//!
//! `cargo bench --bench measure -- [latency|pacing|shared-pacing] [--smoke]` (all by default;
//! `--smoke` runs a small, quick case of each).

use std::time::{Duration, Instant};

// The integration tests' support code: the app on port 0 and the fakes. Parts of it serve
// only the tests.
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{FakeTwilio, QUIET, TestApp, twilio_settings};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let which: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| which.is_empty() || which.contains(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if run("latency") {
        rt.block_on(prompt_to_twilio_latency(if smoke { 20 } else { 1000 }));
    }
    if run("pacing") {
        let rates: &[u32] = if smoke { &[50] } else { &[1, 10, 50] };
        rt.block_on(dial_pacing(rates));
    }
    #[cfg(feature = "redis")]
    if run("shared-pacing") {
        let rates: &[u32] = if smoke { &[50] } else { &[1, 5, 10, 50] };
        rt.block_on(shared_pacing(rates));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `n` sequential prompts, each waited for at the fake before the next is sent.
async fn prompt_to_twilio_latency(n: usize) {
    let twilio = FakeTwilio::start().await;
    let mut settings = twilio_settings(&twilio);
    settings.calls.cps = 1_000_000;
    let app = TestApp::spawn(settings).await;
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        sent.push(Instant::now());
        app.place(&format!("call +91 98{:08}", 76_000_000 + i))
            .await;
        twilio.wait_creates(i + 1).await;
    }
    let creates = twilio.creates();
    let mut lat: Vec<Duration> = creates.iter().zip(&sent).map(|(c, t)| c.at - *t).collect();
    lat.sort();
    println!(
        "POST /ai_prompt -> fake Twilio create, {n} sequential requests: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[n - 1]
    );
}

/// For each rate, ten seconds' worth of calls (plus one) queued at once; the rate achieved
/// between the first and the last create at the fake.
async fn dial_pacing(rates: &[u32]) {
    for &cps in rates {
        let twilio = FakeTwilio::start().await;
        let mut settings = twilio_settings(&twilio);
        settings.calls.cps = cps;
        let app = TestApp::spawn(settings).await;
        let n = (cps * 10 + 1) as usize;
        for i in 0..n {
            app.place(&format!("call +91 98{:08}", 76_000_000 + i))
                .await;
        }
        let creates = twilio.wait_creates(n).await;
        // One create per call: none comes after the n-th.
        twilio.no_creates_beyond(n, QUIET).await;
        let span = creates[n - 1].at - creates[0].at;
        let rate = (n - 1) as f64 / span.as_secs_f64();
        println!(
            "cps {cps}: {n} calls queued at once, {} creates at the fake, achieved {rate:.3}/s ({:+.2} %)",
            twilio.creates().len(),
            (rate / f64::from(cps) - 1.0) * 100.0
        );
    }
}

/// For each rate, ten seconds' worth of calls (plus one) placed in turn through three app
/// instances on one Redis; the merged creates at the fake.
#[cfg(feature = "redis")]
async fn shared_pacing(rates: &[u32]) {
    for &cps in rates {
        let Some(redis) = support::redis::TestRedis::get("shared-pacing") else {
            return;
        };
        let twilio = FakeTwilio::start().await;
        let mut settings = redis.settings(twilio_settings(&twilio));
        settings.calls.cps = cps;
        let apps = [
            TestApp::spawn(settings.clone()).await,
            TestApp::spawn(settings.clone()).await,
            TestApp::spawn(settings).await,
        ];
        let n = (cps * 10 + 1) as usize;
        let started = Instant::now();
        for i in 0..n {
            apps[i % 3]
                .place(&format!("call +91 98{:08}", 76_000_000 + i))
                .await;
        }
        // Each request is a few Redis round trips; when placing takes longer than dialing
        // (n / cps), the rate shown is the placing rate.
        let placing = started.elapsed();
        while twilio.creates().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        twilio.no_creates_beyond(n, QUIET).await;
        let creates = twilio.creates();
        let mut numbers: Vec<&str> = creates.iter().filter_map(|c| c.get("To")).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut at: Vec<Instant> = creates.iter().map(|c| c.at).collect();
        at.sort();
        let busiest = (0..at.len())
            .map(|i| {
                at[i..]
                    .iter()
                    .take_while(|t| **t - at[i] < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let rate = (n - 1) as f64 / (at[n - 1] - at[0]).as_secs_f64();
        println!(
            "cps {cps}, three instances: {n} calls (placed in {placing:.1?}), achieved {rate:.3}/s ({:+.2} %), lost {}, duplicated {}, at most {busiest} creates in any one second",
            (rate / f64::from(cps) - 1.0) * 100.0,
            n - numbers.len(),
            creates.len() - numbers.len(),
        );
    }
}
