//! Questions the callee answers by key or voice (issue 19): the `<Gather>` TwiML served over
//! the real route, signed and forged answers posted to `/webhooks/gather` as Twilio posts
//! them, the answer in the Telegram and Slack threads, and the simulator playing the callee.

use std::time::Duration;

use callbot::core::speech::Answer;

use crate::support::fake_slack::FakeSlack;
use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
use crate::support::fake_twilio::Recorded;
use crate::support::twiml::{attrs, parse_twiml};
use crate::support::{FakeTwilio, TestApp, settings, twilio_settings};

/// Twilio's `<Gather>` post: the call's fields plus `extra`, to the action resolved against
/// the TwiML's URL.
async fn post_answer(
    twilio: &FakeTwilio,
    create: &Recorded,
    action: &str,
    extra: &[(&str, &str)],
    token: Option<&str>,
) -> (u16, String) {
    let base = url::Url::parse(create.get("Url").unwrap()).unwrap();
    let url = base.join(action).unwrap().to_string();
    let mut form: Vec<(String, String)> = [
        ("AccountSid", crate::support::ACCOUNT_SID),
        ("CallSid", create.sid.as_deref().unwrap()),
        ("CallStatus", "in-progress"),
        ("From", create.get("From").unwrap()),
        ("To", create.get("To").unwrap()),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    form.sort();
    let res = twilio.post_signed(&url, &form, token).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_question_is_served_as_two_gathers_and_a_signed_answer_is_stored_once() {
    let twilio = FakeTwilio::start().await;
    let app = TestApp::spawn(twilio_settings(&twilio)).await;
    let id = app
        .place("call +91 98765 43210 and say dinner <tonight> & and ask: Can you come? 1 yes 2 no")
        .await;
    let create = twilio.wait_creates(1).await.remove(0);
    let (_, xml) = twilio.fetch_twiml(&create).await;
    let (elements, says) = parse_twiml(&xml);
    let names: Vec<&str> = elements.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["Response", "Say", "Gather", "Say", "Gather", "Say"],
        "{xml}"
    );
    let action = format!("../webhooks/gather?call_id={id}");
    let gather = |last: bool| {
        let mut a = vec![
            ("input", "dtmf speech"),
            ("numDigits", "1"),
            ("timeout", "6"),
            ("language", "en-US"),
            ("action", action.as_str()),
            ("method", "POST"),
        ];
        if last {
            a.push(("actionOnEmptyResult", "true"));
        }
        attrs(&a)
    };
    assert_eq!(elements[2].1, gather(false));
    assert_eq!(elements[4].1, gather(true));
    assert_eq!(says[0].text, "dinner <tonight> &");
    assert_eq!(says[1].text, "Can you come? Press 1 for yes, 2 for no.");
    assert_eq!(says[2].text, says[1].text);

    // A forged answer is refused and changes nothing.
    let (status, _) =
        post_answer(&twilio, &create, &action, &[("Digits", "2")], Some("wrong")).await;
    assert_eq!(status, 403);
    assert_eq!(app.call(&id).await.answer, None);

    // The signed one is stored with its label; Twilio is told to end the call.
    let (status, reply) = post_answer(&twilio, &create, &action, &[("Digits", "1")], None).await;
    assert_eq!(status, 200);
    assert!(reply.contains("<Say"), "{reply}");
    let answered = |c: &callbot::core::call::Call| c.answer.is_some();
    let call = app.wait_for(&id, Duration::from_secs(5), answered).await;
    assert_eq!(
        call.answer.as_deref(),
        Some(&Answer::Key {
            digits: "1".into(),
            label: Some("yes".into())
        })
    );
    // Repeated, or a different answer delivered late: the first one stays.
    for digits in ["1", "2"] {
        let (status, _) = post_answer(&twilio, &create, &action, &[("Digits", digits)], None).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.call(&id).await.answer, call.answer);

    // The API shows it.
    let view: serde_json::Value = app
        .http
        .get(format!("{}/api/calls/{id}", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["answer_text"],
        "📞 +91 98765 43210 answered the question: 1 — yes"
    );
    assert_eq!(view["question"]["text"], "Can you come?");
}

#[tokio::test]
async fn no_answer_after_the_second_ask_is_recorded_and_said_in_the_telegram_thread() {
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![crate::telegram::ALICE.id.to_string()];
    let app = TestApp::spawn(s).await;
    let alice = crate::telegram::ALICE;

    tg.push(tg.text(
        Chat::Private,
        alice,
        "call +91 9876543210 and ask: Can you come tomorrow? (yes/no)",
    ));
    let create = twilio.wait_creates(1).await.remove(0);
    tg.wait_message("📞 Calling").await;
    let calls = app
        .service
        .list(1, &callbot::calls::store::ListFilter::default())
        .await
        .unwrap();
    let id = calls[0].id.clone();
    let (_, xml) = twilio.fetch_twiml(&create).await;
    let (elements, says) = parse_twiml(&xml);
    // Nothing is said before the question (no default message).
    assert_eq!(elements[1].0, "Gather", "{xml}");
    assert_eq!(
        says[0].text,
        "Can you come tomorrow? Press 1 for yes, 2 for no."
    );
    let action = format!("../webhooks/gather?call_id={id}");
    app.wait_for(&id, Duration::from_secs(5), |c| c.sid.is_some())
        .await;
    // The second <Gather> posts its empty result.
    let (status, _) = post_answer(&twilio, &create, &action, &[], None).await;
    assert_eq!(status, 200);
    app.wait_for(&id, Duration::from_secs(5), |c| {
        c.answer.as_deref() == Some(&Answer::Nothing)
    })
    .await;
    let form = twilio.callback(&create, "completed", 3, &[("CallDuration", "20")]);
    assert_eq!(twilio.send_callback(&create, &form).await, 200);
    let outcome = tg.wait_message("✅").await;
    assert_eq!(
        outcome["text"],
        "✅ Call to +91 98765 43210 completed, 0:20.\n📞 +91 98765 43210: no answer to the question"
    );
}

#[tokio::test]
async fn a_spoken_answer_is_posted_once_in_the_slack_thread() {
    let twilio = FakeTwilio::start().await;
    let slack = FakeSlack::start().await;
    let s = crate::slack::with_slack(twilio_settings(&twilio), &slack);
    let app = TestApp::spawn(s).await;
    let alice = crate::slack::ALICE;
    let (status, _, _) = crate::slack::signed_command(
        &app,
        &slack,
        alice,
        "+91 9876543210 and ask: Can you come tomorrow? 1 yes 2 no",
        "r1",
    )
    .await;
    assert_eq!(status, 200);
    let create = twilio.wait_creates(1).await.remove(0);
    let status_msg = slack
        .wait_for("the status message", |r| r.method == "chat.postMessage")
        .await;
    let ts = status_msg.ts.clone().unwrap();
    let calls = app
        .service
        .list(1, &callbot::calls::store::ListFilter::default())
        .await
        .unwrap();
    let id = calls[0].id.clone();
    let action = format!("../webhooks/gather?call_id={id}");
    // Delivered twice, as Twilio may.
    for _ in 0..2 {
        let (status, _) = post_answer(
            &twilio,
            &create,
            &action,
            &[("SpeechResult", "yes I can"), ("Confidence", "0.87")],
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let form = twilio.callback(&create, "completed", 3, &[("CallDuration", "42")]);
    assert_eq!(twilio.send_callback(&create, &form).await, 200);
    assert_eq!(twilio.send_callback(&create, &form).await, 200);
    let reply = slack
        .wait_for("the outcome in the thread", |r| {
            r.method == "chat.postMessage" && r.get("thread_ts") == Some(&ts)
        })
        .await;
    assert_eq!(
        reply.text(),
        format!(
            "<@{alice}> ✅ Call to +91 98765 43210 completed, 0:42.\n📞 +91 98765 43210 answered the question: “yes I can” (said, confidence 0.87)"
        )
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posted = slack
        .records()
        .iter()
        .filter(|r| r.method == "chat.postMessage" && r.get("thread_ts").is_some())
        .count();
    assert_eq!(posted, 1, "the outcome was posted more than once");
}

#[tokio::test]
async fn the_simulator_answers_by_key_by_voice_or_not_at_all_by_the_second_to_last_digit() {
    let app = TestApp::spawn(settings()).await;
    let cases = [
        (
            "+91 98765 43263",
            Answer::Key {
                digits: "1".into(),
                label: Some("yes".into()),
            },
        ),
        (
            "+91 98765 43273",
            Answer::Speech {
                text: "yes".into(),
                confidence: Some(0.9),
            },
        ),
        ("+91 98765 43283", Answer::Nothing),
    ];
    let mut ids = Vec::new();
    for (number, _) in &cases {
        ids.push(
            app.place(&format!("call {number} and ask: Can you come? 1 yes 2 no"))
                .await,
        );
    }
    for (id, (number, want)) in ids.iter().zip(&cases) {
        let call = app.wait_final(id).await;
        assert_eq!(call.answer.as_deref(), Some(want), "{number}");
    }
}
