//! The LLM fallback through the web API, the real async-openai client and a fake server.

use std::time::Duration;

use serde_json::json;

use crate::support::fake_openai::{Answer, FakeOpenAi};
use crate::support::{FakeTwilio, QUIET, TestApp, twilio_settings};

const NATURAL: &str = "hey, could you ring my colleague on nine eight seven six five four three two one zero and tell him the meeting moved to 5pm";

async fn app_with(openai: &FakeOpenAi, twilio: &FakeTwilio, timeout_secs: u64) -> TestApp {
    let mut s = twilio_settings(twilio);
    s.llm.base_url = Some(openai.base.clone());
    s.llm.api_key = Some("sk-test-key-never-logged".to_owned().into());
    s.llm.model = "test-model".into();
    s.llm.timeout_secs = timeout_secs;
    TestApp::spawn(s).await
}

fn call_answer(number: &str, message: &str) -> Answer {
    Answer::Json(json!({"intent": "call", "number": number, "message": message, "language": "en"}))
}

#[tokio::test]
async fn natural_language_request_places_the_call_the_model_understood() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([call_answer("9876543210", "The meeting moved to 5pm")]);
    let app = app_with(&openai, &twilio, 8).await;

    let id = app.place(NATURAL).await;
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("To"), Some("+919876543210"));
    assert_eq!(app.call(&id).await.message, "The meeting moved to 5pm");

    let requests = openai.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["model"], "test-model");
    assert_eq!(r["messages"][0]["role"], "system");
    assert_eq!(r["messages"][1]["role"], "user");
    assert_eq!(r["messages"][1]["content"], NATURAL);
    assert_eq!(r["response_format"]["type"], "json_schema");
    assert_eq!(r["response_format"]["json_schema"]["strict"], true);
}

#[tokio::test]
async fn the_grammar_answers_first_without_asking_the_model() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    let app = app_with(&openai, &twilio, 8).await;
    app.place("call +91 98765 43210 and say hi").await;
    let (status, body) = app.prompt("call +91 12345").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"], "+91 12345 is not a valid number for India.");
    assert!(openai.requests().is_empty());
}

#[tokio::test]
async fn a_number_the_user_did_not_write_is_never_dialed() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([call_answer("+91 98765 43210", "Hello")]);
    let app = app_with(&openai, &twilio, 8).await;
    let (status, body) = app
        .prompt("please ring my mother and wish her happy birthday")
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"],
        "I understood you want to call +91 98765 43210, but I can't find that number in your message, so I won't dial it. Please write the number in digits."
    );
    twilio.no_creates_beyond(0, QUIET).await;
}

#[tokio::test]
async fn a_model_that_times_out_gets_the_help_text_and_no_call() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([
        Answer::Slow(Duration::from_secs(3)),
        Answer::Slow(Duration::from_secs(3)),
    ]);
    let app = app_with(&openai, &twilio, 1).await;
    let (status, body) = app.prompt(NATURAL).await;
    assert_eq!(status, 422);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("I couldn't understand that.\nI place phone calls for you."),
        "{error}"
    );
    assert_eq!(openai.requests().len(), 2, "one retry");
    assert!(twilio.creates().is_empty());
}

#[tokio::test]
async fn invalid_json_from_the_model_gets_the_help_text() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([
        Answer::Raw("Sure! I'll call them."),
        Answer::Raw("{\"intent\": "),
    ]);
    let app = app_with(&openai, &twilio, 8).await;
    let (status, body) = app.prompt(NATURAL).await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("I couldn't understand that.")
    );
    assert!(twilio.creates().is_empty());
}

#[tokio::test]
async fn the_same_text_twice_asks_the_model_once() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([Answer::Json(
        json!({"intent": "list", "number": null, "message": null, "language": null}),
    )]);
    let app = app_with(&openai, &twilio, 8).await;
    for _ in 0..2 {
        let (status, body) = app.prompt("what calls did I make today?").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reply"], "No calls yet.");
    }
    assert_eq!(openai.requests().len(), 1);
}

#[tokio::test]
async fn servers_without_json_schema_get_plain_json_mode() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([
        Answer::Status(400, "response_format json_schema is not supported"),
        call_answer("98765 43210", "Dinner is ready"),
    ]);
    let app = app_with(&openai, &twilio, 8).await;
    app.place("could you phone 98765 43210 to say dinner is ready")
        .await;
    let requests = openai.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["response_format"]["type"], "json_schema");
    assert_eq!(requests[1]["response_format"]["type"], "json_object");
    assert_eq!(
        twilio.wait_creates(1).await[0].get("To"),
        Some("+919876543210")
    );
}

#[cfg(feature = "telegram")]
#[tokio::test]
async fn only_people_who_may_call_reach_the_model() {
    use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
    use crate::telegram::{ALICE, BOB};
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.llm.base_url = Some(openai.base.clone());
    s.llm.api_key = Some("sk-test-key-never-logged".to_owned().into());
    s.llm.model = "test-model".into();
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    let _app = TestApp::spawn(s).await;

    // Bob is not on the allow-list: his words never cost a model request.
    tg.push(tg.text(Chat::Private, BOB, NATURAL));
    tg.wait_message("I couldn't find a phone number").await;
    assert!(openai.requests().is_empty(), "{:?}", openai.requests());

    openai.answer([call_answer("9876543210", "The meeting moved to 5pm")]);
    tg.push(tg.text(Chat::Private, ALICE, NATURAL));
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("To"), Some("+919876543210"));
    assert_eq!(openai.requests().len(), 1);
}

#[cfg(feature = "slack")]
#[tokio::test]
async fn a_slow_model_never_delays_the_slack_acknowledgement() {
    use crate::slack::{ALICE, with_slack};
    use crate::support::fake_slack::FakeSlack;
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    let slack = FakeSlack::start().await;
    let mut s = with_slack(twilio_settings(&twilio), &slack);
    s.llm.base_url = Some(openai.base.clone());
    s.llm.api_key = Some("sk-test-key-never-logged".to_owned().into());
    s.llm.model = "test-model".into();
    let app = TestApp::spawn(s).await;
    openai.answer([Answer::Late(
        Duration::from_millis(2500),
        json!({"intent": "call", "number": "+919876543210", "message": "the deploy is done", "language": "en"}),
    )]);

    // No call verb: only the model reads it, and it takes 2.5 s.
    let (status, ack, took) = crate::slack::signed_command(
        &app,
        &slack,
        ALICE,
        "get +91 98765 43210 on the line and tell them the deploy is done",
        "late",
    )
    .await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(2), "acked after {took:?}");
    assert_eq!(ack["text"], "Working on it…", "{ack}");
    // The model's answer places the call, and the reply follows through the response_url.
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(create.get("To"), Some("+919876543210"));
    let late = slack
        .wait_for("the late reply", |r| r.method == "response_url")
        .await;
    assert_eq!(late.path, "late");
}

fn list_answer(_: &str) -> serde_json::Value {
    json!({"intent": "list", "number": null, "message": null, "language": null})
}

#[tokio::test]
async fn model_requests_beyond_the_per_requester_limit_answer_too_many_without_asking_it() {
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.understand(list_answer);
    let mut s = twilio_settings(&twilio);
    s.llm.base_url = Some(openai.base.clone());
    s.llm.model = "test-model".into();
    s.limits.llm_per_user_minute = 2;
    let app = TestApp::spawn(s).await;

    for text in ["what calls did I make today?", "show me what I called"] {
        let (status, body) = app.prompt(text).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(openai.requests().len(), 2);
    let (status, body) = app.prompt("anything new with my calls?").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many messages I'd need the language model for"),
        "{body}"
    );
    assert_eq!(openai.requests().len(), 2, "the model was not asked");
    // An answer already cached costs the model nothing and is still given.
    let (status, _) = app.prompt("what calls did I make today?").await;
    assert_eq!(status, 200);
    // The grammar never needs the model and is never limited.
    app.place("call +91 98765 43210").await;
    assert_eq!(openai.requests().len(), 2);
}

/// The limit is per requester: the console's spent allowance leaves a Telegram user's alone.
#[cfg(feature = "telegram")]
#[tokio::test]
async fn the_model_limit_of_one_requester_leaves_another_requester_alone() {
    use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
    use crate::telegram::ALICE;

    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    let tg = FakeTelegram::start().await;
    openai.understand(list_answer);
    let mut s = twilio_settings(&twilio);
    s.llm.base_url = Some(openai.base.clone());
    s.limits.llm_per_user_minute = 1;
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    let app = TestApp::spawn(s).await;

    assert_eq!(app.prompt("what calls did I make today?").await.0, 200);
    assert_eq!(app.prompt("show me what I called").await.0, 429);
    tg.push(tg.text(Chat::Private, ALICE, "anything new with my calls?"));
    tg.wait_message("No calls yet").await;
    assert_eq!(openai.requests().len(), 2);
    tg.push(tg.text(Chat::Private, ALICE, "what did I ring lately?"));
    tg.wait_message("too many messages I'd need the language model for")
        .await;
    assert_eq!(openai.requests().len(), 2);
}
