//! The shared progress follower against the real Telegram adapter (teloxide against the fake
//! Bot API, the real Twilio client against the fake Twilio): when the event bus overflows and
//! the follower loses calls' final events, every outcome still reaches its thread, once.

use std::time::Duration;

use callbot::calls::store::ListFilter;
use callbot::core::call::{CallStatus, Platform, StatusUpdate};
use tokio::sync::broadcast::error::RecvError;

use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN, TgUser};
use crate::support::{FakeTwilio, TestApp, twilio_settings};

const ALICE: TgUser = TgUser {
    id: 111,
    first_name: "Alice",
    username: "alice",
};

const CALLS: usize = 10;

#[tokio::test]
async fn telegram_outcomes_arrive_once_when_the_bus_overflows() {
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    s.limits.per_user_hour = 100;
    s.limits.per_user_day = 100;
    // Room for 4 unread events: ending 10 calls at once overflows it.
    s.calls.event_bus_capacity = 4;
    let app = TestApp::spawn(s).await;

    let asked: Vec<String> = (0..CALLS)
        .map(|i| format!("call +91 98765 432{i:02}"))
        .collect();
    for text in &asked {
        tg.push(tg.text(Chat::Private, ALICE, text));
    }
    twilio.wait_creates(CALLS).await;
    // Every call placed (it has Twilio's sid) and showing its status message.
    let calls = tg_calls(&app, CALLS).await;
    for call in &calls {
        app.wait_for(&call.id, Duration::from_secs(15), |c| {
            c.sid.is_some() && c.origin.status_message.is_some()
        })
        .await;
    }

    // All ten end at once. Everything here runs on one thread, and nothing below yields
    // to the follower until the last call has ended: it finds 20 events waiting on a bus
    // with room for 4, so most calls' final events are lost to it (the probe shows the
    // overflow) and it has to read their outcomes from the store.
    let mut probe = app.service.subscribe();
    for call in &calls {
        let update = StatusUpdate {
            status: Some(CallStatus::Completed),
            duration_secs: Some(42),
            ..StatusUpdate::default()
        };
        app.service
            .on_status(Some(&call.id), &update)
            .await
            .unwrap();
    }
    assert!(matches!(probe.recv().await, Err(RecvError::Lagged(_))));

    tg.wait_for("every outcome", |r| {
        r.iter()
            .filter(|r| {
                r.method == "sendMessage"
                    && r.body["text"].as_str().is_some_and(|t| t.starts_with("✅"))
            })
            .count()
            >= CALLS
    })
    .await;
    // Anything sent after this (a second outcome) would come before the help answer's.
    tg.push(tg.text(Chat::Private, ALICE, "/help"));
    tg.wait_message("Your Telegram id: 111").await;

    let transcript = tg.transcript_from(0);
    for (i, text) in asked.iter().enumerate() {
        let outcome =
            format!("sendMessage ↩ {text:?}: ✅ Call to +91 98765 432{i:02} completed, 0:42.");
        let n = transcript.iter().filter(|l| **l == outcome).count();
        assert_eq!(n, 1, "{outcome} in {transcript:#?}");
        // The status message shows the end, without its Cancel button.
        let edited = format!(": ✅ Call to +91 98765 432{i:02} completed, 0:42.");
        assert!(
            transcript
                .iter()
                .any(|l| l.starts_with("editMessageText") && l.ends_with(&edited)),
            "{edited} in {transcript:#?}"
        );
    }
    let outcomes = transcript
        .iter()
        .filter(|l| l.starts_with("sendMessage") && l.contains(": ✅"))
        .count();
    assert_eq!(outcomes, CALLS, "{transcript:#?}");
}

/// The `n` Telegram calls placed so far (waits until there are `n`).
async fn tg_calls(app: &TestApp, n: usize) -> Vec<callbot::core::call::Call> {
    let filter = ListFilter {
        platform: Some(Platform::Telegram),
        ..ListFilter::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let calls = app.service.list(n + 1, &filter).await.unwrap();
        if calls.len() >= n {
            assert_eq!(calls.len(), n);
            return calls;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} calls",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The console's live log, on a bus it fell behind on, tells the page to reload (the page's
/// `resync` handler reads `/api/calls` again), and the list it reloads has every call.
#[tokio::test]
async fn live_log_that_falls_behind_asks_the_page_to_reload() {
    use callbot::calls::service::CallRequest;
    use callbot::core::call::Origin;
    use callbot::core::phone::{PhoneNumber, Region};
    use futures::StreamExt as _;

    let mut s = crate::support::settings();
    s.calls.event_bus_capacity = 4;
    let app = TestApp::spawn(s).await;
    let res = app
        .http
        .get(format!("{}/api/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();

    // Six calls (six events) before the stream is read again: two more than the bus holds.
    let region = Region::parse("IN").unwrap();
    for i in 0..6 {
        let to = PhoneNumber::parse(&format!("+91 98765 432{i:02}"), region).unwrap();
        app.service
            .request(CallRequest {
                to,
                message: None,
                origin: Origin::new(Platform::Web, "console"),
                speech: Default::default(),
            })
            .await
            .unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buffer = String::new();
    let first = loop {
        if let Some(end) = buffer.find("\n\n") {
            break buffer[..end].to_owned();
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    };
    assert!(first.lines().any(|l| l == "event: resync"), "{first}");

    let list: serde_json::Value = app
        .http
        .get(format!("{}/api/calls?limit=200", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 6, "{list}");
}
