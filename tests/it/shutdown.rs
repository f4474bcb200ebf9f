//! Graceful shutdown (issue 9): with calls queued, one create in flight and a browser holding
//! the live log open, stopping callbot dials or fails every call (never silently drops one)
//! and the server exits within its grace period.

use std::time::{Duration, Instant};

use callbot::calls::store::ListFilter;
use callbot::core::call::CallStatus;
use futures::StreamExt as _;

use crate::support::fake_twilio::Plan;
use crate::support::{self, FakeTwilio, twilio_settings};

#[tokio::test]
async fn stop_with_queued_calls_and_an_open_live_log_ends_every_call_within_the_grace_period() {
    let twilio = FakeTwilio::start().await;
    // Each create takes 1.5 s at Twilio; one call per second leaves the rest queued.
    twilio.plan(std::iter::repeat_n(
        Plan::Delayed(Duration::from_millis(1500)),
        10,
    ));
    let mut s = twilio_settings(&twilio);
    s.calls.cps = 1;
    s.server.shutdown_grace_secs = 3;
    let app = support::build(s).await;
    let base = format!("http://{}", app.local_addr());
    let service = app.service();
    let stop = app.shutdown_token();
    let server = tokio::spawn(app.run());

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let res = http
            .post(format!("{base}/ai_prompt"))
            .json(&serde_json::json!({"command": format!("call +91 98765 4321{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
        let body: serde_json::Value = res.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // A browser's live log, held open across the stop.
    let live = http.get(format!("{base}/api/events")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let mut live = live.bytes_stream();
    // The first create is in flight at the fake (recorded there, answered 1.5 s later).
    twilio.wait_creates(1).await;

    let stopped = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("callbot stops within its grace period (3 s) plus a margin")
        .unwrap()
        .unwrap();
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    // The live log was ended by the server, not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(chunk) = live.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream was closed");

    // Every call was either created at Twilio or failed with the reason.
    let creates = twilio.creates();
    let calls = service.list(10, &ListFilter::default()).await.unwrap();
    assert_eq!(calls.len(), 5);
    for call in &calls {
        let created = creates.iter().any(|c| c.get("To") == Some(call.to.e164()));
        if created {
            assert!(call.sid.is_some(), "{call:?}");
        } else {
            assert_eq!(call.status, CallStatus::Failed, "{call:?}");
            assert_eq!(
                call.error.as_ref().map(|e| e.message.as_str()),
                Some("not placed: callbot is shutting down"),
                "{call:?}"
            );
        }
    }
    assert!(!creates.is_empty(), "the call in flight was completed");
    assert!(
        creates.len() < 5,
        "queued calls were not all dialed: {}",
        creates.len()
    );
}
