//! What the callee hears (issue 19): the language and voice of a call, and its repeat. The
//! real app with the real Twilio client against the fake Twilio; the TwiML served over the
//! real route is parsed with quick-xml; the chats are the real teloxide and slack-morphism
//! clients against their fakes.

use std::time::Duration;

use callbot::Settings;
use callbot::calls::store::ListFilter;
use callbot::core::call::CallId;

use crate::support::fake_slack::FakeSlack;
use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
use crate::support::fake_twilio::Recorded;
use crate::support::twiml::{Say, attrs, parse_twiml};
use crate::support::{FakeTwilio, TestApp, stays_false, twilio_settings};

/// The voices table of these tests: Hindi and Indian English on Polly, Tamil on Google.
pub(crate) fn with_voices(s: &mut Settings) {
    for (tag, voice) in [
        ("hi-IN", "Polly.Aditi"),
        ("en-IN", "Polly.Raveena"),
        ("ta_in", "Google.ta-IN-Standard-A"),
    ] {
        s.voices.insert(tag.to_owned(), voice.to_owned());
    }
}

/// The create parameters callbot sends for a plain spoken call: none of them changes with
/// the language (it travels in the TwiML), and none is outside Twilio's CreateCall form.
fn assert_plain_create(create: &Recorded, to: &str) {
    assert_eq!(create.get("To"), Some(to));
    let mut names: Vec<&str> = create.form.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        [
            "From",
            "Method",
            "StatusCallback",
            "StatusCallbackEvent",
            "StatusCallbackMethod",
            "TimeLimit",
            "Timeout",
            "To",
            "Url"
        ],
        "{create:?}"
    );
}

#[tokio::test]
async fn a_call_in_hindi_said_twice_is_served_with_its_voice_language_and_loop() {
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    with_voices(&mut s);
    let app = TestApp::spawn(s).await;

    let id = app
        .place("call +91 98765 43210 in Hindi and say नमस्ते <b>&\"कल\"</b>, say it twice")
        .await;
    let create = twilio.wait_creates(1).await.remove(0);
    assert_plain_create(&create, "+919876543210");

    let (status, xml) = twilio.fetch_twiml(&create).await;
    assert_eq!(status, 200, "{xml}");
    let (elements, says) = parse_twiml(&xml);
    let names: Vec<&str> = elements.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Response", "Say"], "{xml}");
    assert_eq!(
        says,
        [Say {
            attrs: attrs(&[
                ("voice", "Polly.Aditi"),
                ("language", "hi-IN"),
                ("loop", "2")
            ]),
            text: "नमस्ते <b>&\"कल\"</b>".to_owned(),
        }]
    );

    // The API shows how it is spoken.
    let view: serde_json::Value = app
        .http
        .get(format!("{}/api/calls/{id}", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["language"], "hi-IN");
    assert_eq!(view["voice"], "Polly.Aditi");
    assert_eq!(view["say_loop"], 2);
    assert_eq!(view["message"], "नमस्ते <b>&\"कल\"</b>");

    // A call that asks nothing is spoken once, in the default language and voice.
    let plain = app.place("call +91 98765 43211 and say hello").await;
    let create = twilio.wait_creates(2).await.remove(1);
    assert_plain_create(&create, "+919876543211");
    let (_, xml) = twilio.fetch_twiml(&create).await;
    let (_, says) = parse_twiml(&xml);
    assert_eq!(
        says,
        [Say {
            attrs: attrs(&[("voice", "alice"), ("language", "en-US")]),
            text: "hello".to_owned(),
        }]
    );
    let call = app.call(&plain).await;
    assert!(!call.language_chosen);
    assert_eq!(call.say_loop, None);
}

#[tokio::test]
async fn tags_names_and_bare_languages_pick_their_voices_and_the_unknown_are_refused_with_the_list()
{
    let twilio = FakeTwilio::start().await;
    let mut s = twilio_settings(&twilio);
    with_voices(&mut s);
    s.limits.message_max_chars = 4000;
    s.limits.per_destination_hour = 100;
    s.limits.per_user_hour = 100;
    let app = TestApp::spawn(s).await;

    for (n, (text, language, voice)) in [
        (
            "call +91 98765 43210 lang=ta-IN and say vanakkam",
            "ta-IN",
            "Google.ta-IN-Standard-A",
        ),
        (
            "call +91 98765 43210 say in Tamil: vanakkam",
            "ta-IN",
            "Google.ta-IN-Standard-A",
        ),
        (
            "call +91 98765 43210 and say namaste lang=hi",
            "hi-IN",
            "Polly.Aditi",
        ),
        (
            "call +91 98765 43210 in en-in and say hello",
            "en-IN",
            "Polly.Raveena",
        ),
        // Plain "English" is the default English, not the first one in the table.
        (
            "call +91 98765 43210 in English and say hello",
            "en-US",
            "alice",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        app.place(text).await;
        let create = twilio.wait_creates(n + 1).await.remove(n);
        let (_, xml) = twilio.fetch_twiml(&create).await;
        let (_, says) = parse_twiml(&xml);
        assert_eq!(
            says[0].attrs,
            attrs(&[("voice", voice), ("language", language)]),
            "{text}"
        );
    }
    let placed = twilio.creates().len();

    let list = "English (en-IN), English (en-US), Hindi (hi-IN), Tamil (ta-IN)";
    for (text, reason) in [
        (
            "call +91 98765 43210 in Klingon and say nuqneH".to_owned(),
            format!("I have no voice for “Klingon”. The languages set up are: {list}."),
        ),
        (
            "call +91 98765 43210 lang=fr-FR and say bonjour".to_owned(),
            format!("I have no voice for “fr-FR”. The languages set up are: {list}."),
        ),
        (
            format!("call +91 98765 43210 in Hindi and say {}", "क".repeat(3001)),
            "That is 3001 characters to speak; the voice Polly.Aditi speaks at most 3000 at a time. Please shorten it.".to_owned(),
        ),
    ] {
        let (status, body) = app.prompt(&text).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"], reason.as_str(), "{body}");
    }
    // The same 3,001 characters fit the default voice (basic voices speak 4,096).
    app.place(&format!(
        "call +91 98765 43210 and say {}",
        "क".repeat(3001)
    ))
    .await;
    twilio.wait_creates(placed + 1).await;
    stays_false("a refused request reached Twilio", async || {
        twilio.creates().len() > placed + 1
    })
    .await;
}

#[tokio::test]
async fn telegram_confirms_in_hindi_and_the_status_message_names_the_language() {
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![crate::telegram::ALICE.id.to_string()];
    s.calls.confirm = true;
    with_voices(&mut s);
    let app = TestApp::spawn(s).await;
    let alice = crate::telegram::ALICE;

    // An unknown language is refused before any button.
    tg.push(tg.text(
        Chat::Private,
        alice,
        "call +91 9876543210 in Klingon and say nuqneH",
    ));
    let refusal = tg.wait_message("I have no voice for").await;
    assert!(refusal["reply_markup"].is_null());

    let mark = tg.recorded().len();
    tg.push(tg.text(
        Chat::Private,
        alice,
        "call +91 9876543210 in Hindi and say namaste, repeat it",
    ));
    let question = tg.wait_message("?").await;
    tg.push(tg.press(alice, &question, "Call"));
    let create = twilio.wait_creates(1).await.remove(0);
    tg.wait_edit("📞 Calling").await;
    let calls = app.service.list(1, &ListFilter::default()).await.unwrap();
    let id = calls[0].id.clone();
    let call = app
        .wait_for(&id, Duration::from_secs(10), |c| c.sid.is_some())
        .await;
    assert_eq!(
        (call.language.as_str(), call.voice.as_str(), call.say_loop),
        ("hi-IN", "Polly.Aditi", Some(2))
    );
    let (_, xml) = twilio.fetch_twiml(&create).await;
    let (_, says) = parse_twiml(&xml);
    assert_eq!(
        says,
        [Say {
            attrs: attrs(&[
                ("voice", "Polly.Aditi"),
                ("language", "hi-IN"),
                ("loop", "2")
            ]),
            text: "namaste".to_owned(),
        }]
    );

    let asked = "\"call +91 9876543210 in Hindi and say namaste, repeat it\"";
    let q = "\"Call +91 98765 43210 and say “namaste” in Hindi (hi-IN), twice?\"";
    let mut transcript = tg.transcript_from(mark);
    assert_eq!(
        transcript[0],
        format!(
            "sendMessage ↩ {asked}: Call +91 98765 43210 and say “namaste” in Hindi (hi-IN), twice? [📞 Call] [✖️ Cancel]"
        )
    );
    let mut rest = transcript.split_off(1);
    rest.sort();
    assert_eq!(
        rest,
        [
            format!(
                "answerCallbackQuery: Placing the call to +91 98765 43210 in Hindi (hi-IN), twice… (call {id})"
            ),
            format!(
                "editMessageText {q}: 📞 Calling +91 98765 43210 in Hindi (hi-IN), twice… [✖️ Cancel]"
            ),
        ]
    );
}

#[tokio::test]
async fn slack_places_a_call_in_tamil_and_refuses_an_unknown_language_with_the_list() {
    let twilio = FakeTwilio::start().await;
    let slack = FakeSlack::start().await;
    let mut s = crate::slack::with_slack(twilio_settings(&twilio), &slack);
    with_voices(&mut s);
    let app = TestApp::spawn(s).await;
    let alice = crate::slack::ALICE;

    let (status, ack, _) = crate::slack::signed_command(
        &app,
        &slack,
        alice,
        "+91 9876543210 in Dothraki and say hi",
        "r0",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ack["response_type"], "ephemeral");
    assert_eq!(
        ack["text"],
        "I have no voice for “Dothraki”. The languages set up are: English (en-IN), English (en-US), Hindi (hi-IN), Tamil (ta-IN)."
    );

    let (status, ack, _) = crate::slack::signed_command(
        &app,
        &slack,
        alice,
        "+91 9876543210 and say in Tamil: vanakkam",
        "r1",
    )
    .await;
    assert_eq!(status, 200);
    let ack_text = ack["text"].as_str().unwrap();
    let id = ack_text
        .rsplit_once("(call ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(CallId::parse)
        .unwrap_or_else(|| panic!("{ack_text}"));
    assert_eq!(
        ack_text,
        format!("Placing the call to +91 98765 43210 in Tamil (ta-IN)… (call {id})")
    );
    let create = twilio.wait_creates(1).await.remove(0);
    let status_msg = slack
        .wait_for("the status message", |r| r.method == "chat.postMessage")
        .await;
    assert_eq!(
        status_msg.text(),
        format!("📞 <@{alice}> is calling +91 98765 43210 in Tamil (ta-IN)…")
    );
    let (_, xml) = twilio.fetch_twiml(&create).await;
    let (_, says) = parse_twiml(&xml);
    assert_eq!(
        says[0].attrs,
        attrs(&[("voice", "Google.ta-IN-Standard-A"), ("language", "ta-IN")])
    );
    assert_eq!(says[0].text, "vanakkam");
    assert_eq!(twilio.creates().len(), 1, "the refused request was dialed");
}
