//! Measurements for the notes (ignored in CI; run with
//! `cargo test --release --test it measure -- --ignored --nocapture`).

use std::time::{Duration, Instant};

use crate::support::{FakeTwilio, TestApp, twilio_settings};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement"]
async fn measure_prompt_to_twilio_latency() {
    let twilio = FakeTwilio::start().await;
    let mut settings = twilio_settings(&twilio);
    settings.calls.cps = 1_000_000;
    let app = TestApp::spawn(settings).await;
    let n = 1000;
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

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement"]
async fn measure_dial_pacing() {
    for cps in [1u32, 10, 50] {
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
        tokio::time::sleep(Duration::from_millis(300)).await;
        let span = creates[n - 1].at - creates[0].at;
        let rate = (n - 1) as f64 / span.as_secs_f64();
        println!(
            "cps {cps}: {n} calls queued at once, {} creates at the fake, achieved {rate:.3}/s ({:+.2} %)",
            twilio.creates().len(),
            (rate / f64::from(cps) - 1.0) * 100.0
        );
    }
}
