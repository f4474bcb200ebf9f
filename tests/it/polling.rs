//! Real calls with no public URL (issue 19, polling mode): Twilio credentials and no
//! `CALLBOT_PUBLIC_URL`, so the TwiML goes inline with the create request, nothing calls
//! back, and each call's status is fetched from the fake Twilio (`GET …/Calls/{sid}.json`),
//! which moves the call one status per request.

use std::time::{Duration, Instant};

use callbot::core::call::CallStatus;
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::Value;

use crate::support::{FakeTwilio, QUIET, TestApp, polling_settings, twilio_settings};

/// The create-call parameters of Twilio's OpenAPI description (tests/data/twilio, cut from
/// twilio/twilio-oai).
fn create_parameters() -> Vec<String> {
    let spec: Value =
        serde_json::from_str(include_str!("../data/twilio/twilio-calls-openapi.json")).unwrap();
    let schema = &spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Calls.json"]["post"]["requestBody"]
        ["content"]["application/x-www-form-urlencoded"]["schema"];
    schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The `<Say>` elements of a TwiML document: (attributes, text), read by an XML parser.
fn says(twiml: &str) -> Vec<(Vec<(String, String)>, String)> {
    let mut reader = Reader::from_str(twiml);
    let mut says = Vec::new();
    let mut open: Option<(Vec<(String, String)>, String)> = None;
    let mut root = None;
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                root.get_or_insert(name.clone());
                if name == "Say" {
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.unwrap();
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                                a.unescape_value().unwrap().into_owned(),
                            )
                        })
                        .collect();
                    open = Some((attrs, String::new()));
                }
            }
            Event::Text(t) => {
                if let Some((_, text)) = open.as_mut() {
                    text.push_str(&t.unescape().unwrap());
                }
            }
            Event::End(e) if e.name().as_ref() == b"Say" => says.extend(open.take()),
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(root.as_deref(), Some("Response"), "{twiml}");
    says
}

#[tokio::test]
async fn without_a_public_url_the_twiml_goes_inline_and_the_call_is_followed_by_polling() {
    let twilio = FakeTwilio::start().await;
    twilio.move_on_get();
    let app = TestApp::spawn(polling_settings(&twilio)).await;
    let id = app
        .place("call +91 98765 43212 and say Table <4> & \"friends\" is ready")
        .await;
    let create = twilio.wait_creates(1).await.remove(0);

    // Inline TwiML, and nothing that would make Twilio reach for us.
    let known = create_parameters();
    for (key, _) in &create.form {
        assert!(known.contains(key), "{key} is not a create parameter");
    }
    for absent in [
        "Url",
        "Method",
        "StatusCallback",
        "StatusCallbackMethod",
        "StatusCallbackEvent",
        "FallbackUrl",
    ] {
        assert_eq!(create.get(absent), None, "{absent} in {:?}", create.form);
    }
    assert_eq!(create.get("To"), Some("+919876543212"));
    assert_eq!(create.get("From"), Some(crate::support::FROM));
    assert_eq!(create.get("Timeout"), Some("30"));
    assert_eq!(create.get("TimeLimit"), Some("120"));
    let twiml = create.get("Twiml").expect("inline Twiml");
    assert!(twiml.chars().count() <= 4000);
    let said = says(twiml);
    assert_eq!(said.len(), 1, "{twiml}");
    let (attrs, text) = &said[0];
    assert_eq!(text, "Table <4> & \"friends\" is ready");
    assert!(
        attrs.contains(&("voice".into(), "alice".into())),
        "{attrs:?}"
    );
    assert!(
        attrs.contains(&("language".into(), "en-US".into())),
        "{attrs:?}"
    );

    // Followed by polling to its end: queued, ringing, in progress (twice), completed.
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Completed, "{call:#?}");
    assert_eq!(call.duration_secs, Some(2));
    let statuses: Vec<CallStatus> = call.history.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [
            CallStatus::Queued,
            CallStatus::Ringing,
            CallStatus::InProgress,
            CallStatus::Completed
        ]
    );
    let sid = call.sid.clone().unwrap().to_string();
    assert_eq!(call.polls, 5);
    assert_eq!(twilio.fetches_of(&sid), 5);
    // Stops at the final status.
    crate::support::never(QUIET, "a status request after the call ended", || {
        twilio.fetches_of(&sid) > 5
    })
    .await;
    // The API shows it like any call.
    let shown: Value = app
        .http
        .get(format!("{}/api/calls/{id}", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "completed", "{shown}");
}

#[tokio::test]
async fn instructions_longer_than_twilio_takes_inline_are_refused_at_request_time() {
    let twilio = FakeTwilio::start().await;
    let mut s = polling_settings(&twilio);
    s.limits.message_max_chars = 4000;
    let app = TestApp::spawn(s).await;
    // 3,800 characters of message, fine as a message; each `&` is written `&amp;` in the
    // TwiML, which then has 4,302 characters.
    let long = format!("{}{}", "x".repeat(3700), "&".repeat(100));
    let (status, body) = app
        .prompt(&format!("call +91 98765 43212 and say {long}"))
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("would have 4302 characters"), "{error}");
    assert!(error.contains("the limit is 4000"), "{error}");
    assert!(error.contains("CALLBOT_PUBLIC_URL"), "{error}");
    // Nothing placed, nothing stored.
    twilio.no_creates_beyond(0, QUIET).await;
    let (_, list) = app.prompt("list").await;
    assert!(!list.to_string().contains("98765"), "{list}");

    // What fits goes.
    let fits = "x".repeat(3800);
    app.place(&format!("call +91 98765 43212 and say {fits}"))
        .await;
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(says(create.get("Twiml").unwrap())[0].1, fits);

    // With a public URL the TwiML is fetched, so the same long message is no problem.
    let mut s = twilio_settings(&twilio);
    s.limits.message_max_chars = 4000;
    let callbacks = TestApp::spawn(s).await;
    callbacks
        .place(&format!("call +91 98765 43212 and say {long}"))
        .await;
    let create = twilio.wait_creates(2).await.remove(1);
    assert!(create.get("Twiml").is_none());
    assert!(create.get("Url").is_some());
}

#[tokio::test]
async fn a_call_that_never_ends_stops_at_its_request_budget_with_its_outcome_unknown() {
    let twilio = FakeTwilio::start().await;
    // Twilio says "ringing" for ever.
    twilio.set_fetch("ringing", None);
    let mut s = polling_settings(&twilio);
    s.twilio.poll_max_requests = 4;
    s.twilio.poll_ringing_ms = 10;
    // Five a second for everyone: the four requests take at least 600 ms.
    s.twilio.poll_per_second = 5;
    let app = TestApp::spawn(s).await;
    let id = app.place("call +91 98765 43219").await;
    twilio.wait_creates(1).await;
    let started = Instant::now();
    let call = app.wait_final(&id).await;
    let took = started.elapsed();
    assert_eq!(call.status, CallStatus::Failed);
    let reason = &call.error.as_ref().unwrap().message;
    assert!(reason.contains("outcome is unknown"), "{reason}");
    assert!(reason.contains("after 4 status requests"), "{reason}");
    let sid = call.sid.clone().unwrap().to_string();
    assert_eq!(twilio.fetches_of(&sid), 4);
    assert_eq!(call.polls, 4);
    assert!(took >= Duration::from_millis(550), "{took:?}");
    crate::support::never(QUIET, "a status request beyond the budget", || {
        twilio.fetches_of(&sid) > 4
    })
    .await;
    // The ringing call was not hung up: its outcome is unknown, not ended by us.
    assert!(twilio.hangups().is_empty());
}

#[tokio::test]
async fn forcing_polling_with_a_public_url_set_still_polls() {
    let twilio = FakeTwilio::start().await;
    twilio.move_on_get();
    let mut s = polling_settings(&twilio);
    s.server.public_url = Some("https://callbot.example.com".into());
    s.twilio.mode = callbot::config::TwilioModeSetting::Polling;
    let app = TestApp::spawn(s).await;
    let id = app.place("call +91 98765 43210").await;
    let create = twilio.wait_creates(1).await.remove(0);
    assert!(create.get("Twiml").is_some() && create.get("Url").is_none());
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Busy);
}

#[cfg(feature = "telegram")]
mod telegram {
    use super::*;
    use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
    use crate::telegram::ALICE;

    /// Three calls from a Telegram chat, each followed by polling to its end: busy, no
    /// answer, completed. Each gets its status message and one outcome in the thread.
    #[tokio::test]
    async fn telegram_calls_followed_by_polling_end_busy_unanswered_and_completed() {
        let twilio = FakeTwilio::start().await;
        twilio.move_on_get();
        let tg = FakeTelegram::start().await;
        let mut s = polling_settings(&twilio);
        // Slow enough for the chat to show each step.
        s.twilio.poll_ringing_ms = 150;
        s.twilio.poll_in_progress_ms = 150;
        s.telegram.bot_token = Some(TOKEN.to_owned().into());
        s.telegram.api_url = tg.base.clone();
        s.access.telegram_users = vec![ALICE.id.to_string()];
        let _app = TestApp::spawn(s).await;

        tg.push(tg.text(Chat::Private, ALICE, "Call to +91 9876543210"));
        tg.wait_message("📵 +91 98765 43210 was busy.").await;
        tg.push(tg.text(Chat::Private, ALICE, "Call to +91 9876543211"));
        tg.wait_message("⌛ No answer from +91 98765 43211.").await;
        tg.push(tg.text(
            Chat::Private,
            ALICE,
            "Call to +91 9876543212 and say the car is outside",
        ));
        tg.wait_message("✅ Call to +91 98765 43212 completed, 0:02.")
            .await;
        tg.wait_edit("✅ Call to +91 98765 43212 completed").await;
        // Anything sent after this (a second outcome) would come before the help answer's.
        tg.push(tg.text(Chat::Private, ALICE, "/help"));
        tg.wait_message("Your Telegram id: 111").await;

        // The messages posted (edits aside): a status message and one outcome per call.
        let posted: Vec<String> = tg
            .transcript_from(0)
            .into_iter()
            .filter(|l| l.starts_with("sendMessage"))
            .map(|l| l.lines().next().unwrap_or_default().to_owned())
            .collect();
        insta::assert_snapshot!(posted.join("\n"), @r#"
        sendMessage ↩ "Call to +91 9876543210": 📞 Calling +91 98765 43210… [✖️ Cancel]
        sendMessage ↩ "Call to +91 9876543210": 📵 +91 98765 43210 was busy.
        sendMessage ↩ "Call to +91 9876543211": 📞 Calling +91 98765 43211… [✖️ Cancel]
        sendMessage ↩ "Call to +91 9876543211": ⌛ No answer from +91 98765 43211.
        sendMessage ↩ "Call to +91 9876543212 and say the car is outside": 📞 Calling +91 98765 43212… [✖️ Cancel]
        sendMessage ↩ "Call to +91 9876543212 and say the car is outside": ✅ Call to +91 98765 43212 completed, 0:02.
        sendMessage ↩ "/help": I place phone calls for you.
        "#);
        // Each status message ends edited to its outcome.
        let edits: Vec<String> = tg
            .transcript_from(0)
            .into_iter()
            .filter(|l| l.starts_with("editMessageText"))
            .collect();
        for end in ["was busy", "No answer from", "completed, 0:02"] {
            assert!(edits.iter().any(|e| e.contains(end)), "{end}: {edits:#?}");
        }
        let creates = twilio.creates();
        assert_eq!(creates.len(), 3);
        assert!(creates.iter().all(|c| c.get("StatusCallback").is_none()));
    }
}

#[cfg(feature = "redis")]
mod shared {
    use super::*;
    use crate::support::redis::TestRedis;
    use crate::support::{Instance, until};
    use callbot::core::call::CallId;

    /// Two instances on one Redis: the call's polling is taken over, with its count, when the
    /// instance polling it is killed, and followed to its end by the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_instances_polling_is_taken_over_with_its_request_count() {
        let Some(redis) = TestRedis::get("polling_takeover") else {
            return;
        };
        let twilio = FakeTwilio::start().await;
        twilio.set_fetch("ringing", None);
        let settings = || {
            let mut s = polling_settings(&twilio);
            s.store.follow_claim_ms = 300;
            s.twilio.poll_ringing_ms = 50;
            redis.settings(s)
        };
        let a = Instance::spawn(settings()).await;
        let (status, body) = a.prompt("call +91 98765 43212").await;
        assert_eq!(status, 202, "{body}");
        let id = CallId::parse(body["id"].as_str().unwrap()).unwrap();
        let sid = twilio.wait_creates(1).await.remove(0).sid.unwrap();
        until(Duration::from_secs(10), "A polling", async || {
            twilio.fetches_of(&sid) >= 3
        })
        .await;
        let b = Instance::spawn(settings()).await;
        // B sees the call but A holds its lease: the rate stays one request per 50 ms.
        let before = twilio.fetches_of(&sid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = twilio.fetches_of(&sid) - before;
        assert!(during <= 12, "{during} requests in 500 ms: polled twice?");
        a.kill();
        let killed_at = twilio.fetches_of(&sid);
        // B takes over within the lease's time and goes on counting.
        until(Duration::from_secs(5), "B polling", async || {
            twilio.fetches_of(&sid) >= killed_at + 3
        })
        .await;
        twilio.set_fetch("completed", Some("4"));
        let call = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let call = b.service.get(&id).await.unwrap().unwrap();
                if call.status.is_terminal() {
                    break call;
                }
                assert!(Instant::now() < deadline, "{call:#?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.duration_secs, Some(4));
        // Every request is on the call's count, A's and B's (one of A's may have been in
        // flight when it was killed).
        let fetched = twilio.fetches_of(&sid) as u32;
        assert!(
            call.polls == fetched || call.polls + 1 == fetched,
            "{} counted, {fetched} made",
            call.polls
        );
        assert!(call.polls as usize > killed_at, "{call:#?}");
    }
}

/// A create Twilio took but whose answer came back garbled: with no callback to wait for, the
/// dialer finds the call in Twilio's call list at once (not after the 30 s it waits for a
/// first callback), and polling follows it to its end. Created once.
#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_in_the_call_list_and_followed_by_polling() {
    use crate::support::faults::Fault;
    let twilio = FakeTwilio::start().await;
    twilio.move_on_get();
    twilio.faults().script([Fault::Malformed]);
    let app = TestApp::spawn(polling_settings(&twilio)).await;
    let id = app.place("call +91 98765 43212").await;
    let call = tokio::time::timeout(Duration::from_secs(15), app.wait_final(&id))
        .await
        .expect("followed to its end well before the wait for a callback runs out");
    assert_eq!(call.status, CallStatus::Completed, "{call:#?}");
    assert_eq!(twilio.creates().len(), 1, "created once");
    assert!(!twilio.lists().is_empty(), "Twilio's call list was asked");
    assert_eq!(
        call.sid.map(|s| s.to_string()),
        twilio.creates()[0].sid,
        "the sid Twilio's list gave"
    );
}
