//! The access policy through the web API, and the stale-call reaper.

use std::time::Duration;

use callbot::calls::EventKind;
use callbot::core::call::CallStatus;

use crate::support::{FakeTwilio, TestApp, settings, twilio_settings};

#[tokio::test]
async fn destination_rules_refuse_with_a_reason_and_place_nothing() {
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    s.access.deny_numbers = vec!["+919876543219".into()];
    s.access.allow_numbers = vec!["+14155550100".into()];
    let app = TestApp::spawn(s).await;

    let (status, body) = app.prompt("call +49 30 901820").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "+49 30 901820 is in Germany; calls are allowed only to India."
    );
    let (status, body) = app.prompt("call +91 98765 43219").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "Calling +91 98765 43219 is not allowed here."
    );
    let long = "x".repeat(501);
    let (status, body) = app
        .prompt(&format!("call +91 98765 43210 and say {long}"))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "Your message has 501 characters; the limit is 500. Please shorten it."
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(twilio.creates().is_empty(), "nothing reached Twilio");

    // The allow-list overrides the country rule.
    app.place("call +1 415 555 0100").await;
    assert_eq!(
        twilio.wait_creates(1).await[0].get("To"),
        Some("+14155550100")
    );
}

#[tokio::test]
async fn premium_rate_numbers_are_refused_even_in_allowed_countries() {
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    s.access.countries = vec!["US".into(), "IN".into()];
    let app = TestApp::spawn(s).await;
    let (status, body) = app.prompt("call +1 900 555 0123").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "+1 900-555-0123 is a premium-rate number; callbot does not call those."
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(twilio.creates().is_empty());
}

#[tokio::test]
async fn per_destination_and_concurrency_limits_answer_429() {
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    s.limits.per_destination_hour = 2;
    s.limits.max_concurrent = 3;
    let app = TestApp::spawn(s).await;
    app.place("call +91 98765 43210").await;
    app.place("call +91 98765 43210").await;
    let (status, body) = app.prompt("call +91 98765 43210").await;
    assert_eq!(status, 429);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("+91 98765 43210 has already been called 2 times in the last hour."),
        "{body}"
    );
    app.place("call +91 98765 43211").await;
    let (status, body) = app.prompt("call +91 98765 43212").await;
    assert_eq!(status, 429);
    assert_eq!(
        body["error"],
        "3 calls are already in progress, the most at once. Try again when one ends."
    );
    assert_eq!(twilio.wait_creates(3).await.len(), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(twilio.creates().len(), 3);
}

#[tokio::test]
async fn reaper_closes_a_call_that_never_got_callbacks_with_twilios_answer() {
    let twilio = FakeTwilio::start().await;
    twilio.set_fetch("completed", Some("17"));
    let mut s = twilio_settings(&twilio);
    s.calls.time_limit_secs = 1;
    s.calls.reap_margin_secs = 0;
    s.calls.reap_interval_ms = 100;
    let app = TestApp::spawn(s).await;
    let mut events = app.service.subscribe();
    let id = app.place("call +91 98765 43210").await;
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.duration_secs, Some(17));
    assert_eq!(twilio.fetches(), [call.sid.unwrap().to_string()]);
    let final_event = loop {
        let ev = events.recv().await.unwrap();
        if ev.kind == EventKind::Final {
            break ev;
        }
    };
    assert_eq!(final_event.call.id, id, "the chat is told the outcome");
}

#[tokio::test]
async fn reaper_fails_a_call_twilio_does_not_know() {
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    s.calls.time_limit_secs = 1;
    s.calls.reap_margin_secs = 0;
    s.calls.reap_interval_ms = 100;
    let app = TestApp::spawn(s).await;
    let id = app.place("call +91 98765 43210").await;
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Failed);
    assert_eq!(
        call.error.unwrap().message,
        "the provider has no record of this call"
    );
}

#[tokio::test]
async fn check_config_shows_the_effective_policy() {
    let mut s = settings();
    s.access.telegram_users = vec!["123".into()];
    let text = s.describe();
    assert!(
        text.contains("access:          allow-lists only (deny by default)"),
        "{text}"
    );
    assert!(
        text.contains("telegram:        users 123; chats none"),
        "{text}"
    );
    assert!(text.contains("destinations:    countries IN"), "{text}");
    assert!(
        text.contains("limits:          10/hour and 50/day per requester, 3/hour per number"),
        "{text}"
    );
}
