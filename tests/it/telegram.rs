//! Telegram adapter end to end (issue 3): the real teloxide Bot against a fake Bot API, the
//! real Twilio client against the fake Twilio. Each test reads like the chat it produces.

use std::time::Duration;

use callbot::Settings;
use callbot::calls::store::ListFilter;
use callbot::config::TelegramMode;
use callbot::core::call::{Call, CallStatus};
use serde_json::Value;

use crate::support::fake_telegram::{BOT_USERNAME, Chat, FakeTelegram, TOKEN, TgUser};
use crate::support::{FakeTwilio, TestApp, stays_false, twilio_settings};

pub(crate) const ALICE: TgUser = TgUser {
    id: 111,
    first_name: "Alice",
    username: "alice",
};
/// Not on the allow-list.
pub(crate) const BOB: TgUser = TgUser {
    id: 222,
    first_name: "Bob",
    username: "bob",
};
const GROUP: i64 = -100_123;
pub(crate) const SECRET: &str = "s3cret-Token_for-tests";

struct Env {
    app: TestApp,
    tg: FakeTelegram,
    twilio: FakeTwilio,
}

async fn spawn(configure: impl FnOnce(&mut Settings)) -> Env {
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let mut s = twilio_settings(&twilio);
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    configure(&mut s);
    let app = TestApp::spawn(s).await;
    Env { app, tg, twilio }
}

impl Env {
    /// The newest call (waits until the dialer gave it Twilio's sid).
    async fn latest_call_with_sid(&self) -> Call {
        let calls = self
            .app
            .service
            .list(1, &ListFilter::default())
            .await
            .unwrap();
        let id = calls.first().expect("a call was placed").id.clone();
        self.app
            .wait_for(&id, Duration::from_secs(15), |c| c.sid.is_some())
            .await
    }

    /// Posts an update to our webhook with this secret header; returns the HTTP status.
    async fn post_webhook(&self, update: &Value, secret: Option<&str>) -> u16 {
        let mut req = self
            .app
            .http
            .post(format!("{}/telegram/webhook", self.app.base))
            .json(update);
        if let Some(secret) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

#[tokio::test]
async fn private_chat_call_reports_progress_edits_and_one_final_reply_with_duration() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.push(tg.text(
        Chat::Private,
        ALICE,
        "Call to +91 9876543210 and say the car is <b>outside</b>",
    ));

    let creates = env.twilio.wait_creates(1).await;
    let twilio_call = &creates[0];
    assert_eq!(twilio_call.get("To"), Some("+919876543210"));
    tg.wait_message("📞 Calling").await;
    env.latest_call_with_sid().await;

    let twilio = &env.twilio;
    let send = |status: &'static str, seq: u64, extra: &'static [(&str, &str)]| {
        let form = twilio.callback(twilio_call, status, seq, extra);
        async move { assert_eq!(twilio.send_callback(twilio_call, &form).await, 200) }
    };
    send("initiated", 0, &[]).await;
    send("ringing", 1, &[]).await;
    tg.wait_edit("🔔 Ringing").await;
    send("in-progress", 2, &[]).await;
    tg.wait_edit("answered").await;
    // Twilio repeats its final callback: still one outcome message.
    send("completed", 3, &[("CallDuration", "42")]).await;
    send("completed", 3, &[("CallDuration", "42")]).await;
    send("in-progress", 2, &[]).await;
    tg.wait_message("✅").await;
    // Anything sent after this (a second outcome) would come before the help answer's.
    tg.push(tg.text(Chat::Private, ALICE, "/help"));
    tg.wait_message("Your Telegram id: 111").await;

    // The whole chat, as Telegram saw it: one status message edited, one outcome, the help.
    insta::assert_snapshot!("private_chat_transcript", tg.transcript_from(0).join("\n"));
    // Plain text, no parse mode: the user's "<b>" can never break the markup.
    assert!(
        tg.requests("sendMessage")
            .iter()
            .all(|r| r.body.get("parse_mode").is_none())
    );

    let call = env.latest_call_with_sid().await;
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.message, "the car is <b>outside</b>");
    assert_eq!(call.origin.chat, "111");
    assert_eq!(call.origin.requester, "111");
    let status_id = tg.requests("sendMessage")[0].result["message_id"].to_string();
    assert_eq!(
        call.origin.status_message.as_deref(),
        Some(status_id.as_str())
    );
    assert!(tg.polls() >= 1);

    let metrics = reqwest::get(format!("{}/metrics", env.app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let posted = r#"callbot_chat_posts_total{platform="telegram",result="ok"}"#;
    assert!(metrics.contains(posted), "{posted} in {metrics}");
}

#[tokio::test]
async fn group_hears_only_its_commands_mentions_and_replies_and_keeps_the_topic() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.push(tg.text(Chat::Group(GROUP), ALICE, "call +91 9876543210 please"));
    tg.push(tg.text(Chat::Group(GROUP), ALICE, "/call@otherbot +91 9876543210"));
    tg.push(tg.text(Chat::Group(GROUP), ALICE, "/help@otherbot"));
    tg.push(tg.text(
        Chat::Topic(GROUP, 7),
        ALICE,
        &format!("/call@{BOT_USERNAME} +91 9876543210"),
    ));
    let status = tg.wait_message("📞 Calling").await;
    let sent = &tg.requests("sendMessage")[0];
    assert_eq!(sent.body["message_thread_id"], 7);
    assert_eq!(sent.body["chat_id"], GROUP);

    // A mention and a reply to the bot are heard too.
    tg.push(tg.text(Chat::Group(GROUP), ALICE, &format!("@{BOT_USERNAME} help")));
    tg.wait_message("Your Telegram id: 111").await;
    tg.push(tg.text_replying(Chat::Topic(GROUP, 7), ALICE, "status", Some(&status)));
    tg.wait_message("· +91 98765 43210 ·").await;

    assert_eq!(env.twilio.creates().len(), 1);
    let transcript = tg.transcript_from(3);
    assert_eq!(transcript.len(), 3, "{transcript:#?}");
    assert_eq!(
        transcript[0],
        format!(
            "sendMessage ↩ \"/call@{BOT_USERNAME} +91 9876543210\" (topic 7): 📞 Calling +91 98765 43210… [✖️ Cancel]"
        )
    );
    assert!(transcript[1].starts_with(&format!(
        "sendMessage ↩ \"@{BOT_USERNAME} help\": I place phone calls"
    )));
    assert!(
        transcript[2]
            .starts_with("sendMessage ↩ \"status\" (topic 7): 📞 Calling +91 98765 43210…"),
        "{transcript:#?}"
    );
    let call = env.latest_call_with_sid().await;
    assert_eq!(call.origin.chat, GROUP.to_string());
    assert_eq!(call.origin.thread.as_deref(), Some("7"));
}

#[tokio::test]
async fn cancel_command_hangs_up_and_reports_canceled() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.push(tg.text(Chat::Private, ALICE, "call +91 9876543210"));
    let creates = env.twilio.wait_creates(1).await;
    tg.wait_message("📞 Calling").await;
    env.latest_call_with_sid().await;

    tg.push(tg.text(Chat::Private, ALICE, "/cancel"));
    tg.wait_message("Hanging up").await;
    let hangups = env.twilio.hangups();
    assert_eq!(hangups.len(), 1);
    assert_eq!(hangups[0].get("Status"), Some("canceled"));
    // Twilio confirms with its callback.
    let form = env.twilio.callback(&creates[0], "canceled", 1, &[]);
    assert_eq!(env.twilio.send_callback(&creates[0], &form).await, 200);
    tg.wait_message("🚫").await;

    assert_eq!(
        tg.transcript_from(3),
        [
            "sendMessage ↩ \"call +91 9876543210\": 📞 Calling +91 98765 43210… [✖️ Cancel]",
            "sendMessage ↩ \"/cancel\": Hanging up the call to +91 98765 43210…",
            "editMessageText \"📞 Calling +91 98765 43210…\": 🚫 Call to +91 98765 43210 was canceled.",
            "sendMessage ↩ \"call +91 9876543210\": 🚫 Call to +91 98765 43210 was canceled.",
        ]
    );
}

#[tokio::test]
async fn cancel_button_hangs_up_only_for_the_requester_and_is_always_answered() {
    let env = spawn(|s| s.access.telegram_chats = vec![GROUP.to_string()]).await;
    let tg = &env.tg;
    tg.push(tg.text(Chat::Group(GROUP), ALICE, "/call +91 9876543210"));
    let creates = env.twilio.wait_creates(1).await;
    let status = tg.wait_message("📞 Calling").await;
    env.latest_call_with_sid().await;
    let form = env.twilio.callback(&creates[0], "ringing", 1, &[]);
    assert_eq!(env.twilio.send_callback(&creates[0], &form).await, 200);
    tg.wait_edit("🔔 Ringing").await;

    tg.push(tg.press(BOB, &status, "Cancel"));
    tg.wait_for("Bob's answer", |r| {
        r.iter().any(|r| r.method == "answerCallbackQuery")
    })
    .await;
    assert!(env.twilio.hangups().is_empty());

    tg.push(tg.press(ALICE, &status, "Cancel"));
    tg.wait_for("Alice's answer", |r| {
        r.iter()
            .filter(|r| r.method == "answerCallbackQuery")
            .count()
            == 2
    })
    .await;
    let hangups = env.twilio.hangups();
    assert_eq!(hangups.len(), 1);
    assert_eq!(hangups[0].get("Status"), Some("canceled"));
    let form = env.twilio.callback(&creates[0], "canceled", 2, &[]);
    assert_eq!(env.twilio.send_callback(&creates[0], &form).await, 200);
    tg.wait_message("🚫").await;

    assert_eq!(
        tg.transcript_from(3),
        [
            "sendMessage ↩ \"/call +91 9876543210\": 📞 Calling +91 98765 43210… [✖️ Cancel]",
            "editMessageText \"📞 Calling +91 98765 43210…\": 🔔 Ringing +91 98765 43210… [✖️ Cancel]",
            "answerCallbackQuery: Only @alice can cancel this call.",
            "answerCallbackQuery: Hanging up the call to +91 98765 43210…",
            "editMessageText \"📞 Calling +91 98765 43210…\": 🚫 Call to +91 98765 43210 was canceled.",
            "sendMessage ↩ \"/call +91 9876543210\": 🚫 Call to +91 98765 43210 was canceled.",
        ]
    );
}

#[tokio::test]
async fn confirmation_places_the_call_only_when_the_requester_presses_call_once() {
    let env = spawn(|s| {
        s.calls.confirm = true;
        s.access.telegram_chats = vec![GROUP.to_string()];
    })
    .await;
    let tg = &env.tg;
    tg.push(tg.text(
        Chat::Group(GROUP),
        ALICE,
        "/call +91 9876543210 and say Your table is ready",
    ));
    let question = tg.wait_message("?").await;
    let data = question["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(data.len() <= 64, "{data}");

    // Bob may not call at all: he is told so instead of being asked.
    tg.push(tg.text(Chat::Private, BOB, "call +91 9876543210"));
    let refusal = tg.wait_message("not allowed").await;
    assert!(refusal["reply_markup"].is_null());

    tg.push(tg.press(BOB, &question, "Call"));
    tg.wait_for("Bob's answer", |r| {
        r.iter().any(|r| r.method == "answerCallbackQuery")
    })
    .await;
    assert!(env.twilio.creates().is_empty());

    tg.push(tg.press(ALICE, &question, "Call"));
    env.twilio.wait_creates(1).await;
    tg.wait_edit("📞 Calling").await;
    // The same button again: the nonce was used.
    tg.push(tg.press(ALICE, &question, "Call"));
    tg.wait_for("the third answer", |r| {
        r.iter()
            .filter(|r| r.method == "answerCallbackQuery")
            .count()
            == 3
    })
    .await;
    assert_eq!(env.twilio.creates().len(), 1);

    let call = env.latest_call_with_sid().await;
    let asked = "\"/call +91 9876543210 and say Your table is ready\"";
    let q = "\"Call +91 98765 43210 and say “Your table is ready”?\"";
    let transcript = tg.transcript_from(3);
    assert_eq!(
        transcript[0],
        format!(
            "sendMessage ↩ {asked}: Call +91 98765 43210 and say “Your table is ready”? [📞 Call] [✖️ Cancel]"
        )
    );
    assert!(transcript[1].starts_with("sendMessage ↩ \"call +91 9876543210\": You're not allowed"));
    assert_eq!(
        transcript[2],
        "answerCallbackQuery: Only @alice can confirm this call."
    );
    // The question becomes the status message; answering and editing may interleave.
    let mut rest = transcript[3..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            format!(
                "answerCallbackQuery: Placing the call to +91 98765 43210… (call {})",
                call.id
            ),
            "answerCallbackQuery: This request was already answered.".to_owned(),
            format!("editMessageText {q}: 📞 Calling +91 98765 43210… [✖️ Cancel]"),
        ]
    );
    assert_eq!(call.message, "Your table is ready");
    assert_eq!(
        call.origin.status_message,
        Some(question["message_id"].to_string().into())
    );
}

#[tokio::test]
async fn expired_or_declined_confirmation_places_no_call() {
    let env = spawn(|s| s.calls.confirm = true).await;
    let tg = &env.tg;
    // Telegram dated the question three minutes ago.
    tg.date_offset(-180);
    tg.push(tg.text(Chat::Private, ALICE, "call +91 9876543210"));
    let old = tg.wait_message("Call +91 98765 43210?").await;
    tg.date_offset(0);
    tg.push(tg.press(ALICE, &old, "Call"));
    tg.wait_edit("expired").await;

    tg.push(tg.text(Chat::Private, ALICE, "call +91 9876543211"));
    let fresh = tg.wait_message("Call +91 98765 43211?").await;
    tg.push(tg.press(ALICE, &fresh, "Cancel"));
    tg.wait_edit("not placed").await;
    tg.wait_for("two answers", |r| {
        r.iter()
            .filter(|r| r.method == "answerCallbackQuery")
            .count()
            == 2
    })
    .await;

    assert!(env.twilio.creates().is_empty());
    let mut transcript = tg.transcript_from(3);
    transcript.sort();
    assert_eq!(
        transcript,
        [
            "answerCallbackQuery: ⌛ This request expired. Send it again to place the call.",
            "answerCallbackQuery: ✖️ Call not placed.",
            "editMessageText \"Call +91 98765 43210?\": ⌛ This request expired. Send it again to place the call.",
            "editMessageText \"Call +91 98765 43211?\": ✖️ Call not placed.",
            "sendMessage ↩ \"call +91 9876543210\": Call +91 98765 43210? [📞 Call] [✖️ Cancel]",
            "sendMessage ↩ \"call +91 9876543211\": Call +91 98765 43211? [📞 Call] [✖️ Cancel]",
        ]
    );
}

pub(crate) fn webhook(s: &mut Settings) {
    s.telegram.mode = TelegramMode::Webhook;
    s.telegram.webhook_secret = Some(SECRET.to_owned().into());
}

#[tokio::test]
async fn webhook_mode_sets_the_webhook_and_rejects_a_wrong_secret() {
    let env = spawn(webhook).await;
    let tg = &env.tg;
    assert_eq!(
        tg.transcript_from(0),
        [
            "getMe".to_owned(),
            "setMyCommands: /call /status /calls /cancel /help /start".to_owned(),
            format!(
                "setWebhook: {}/telegram/webhook secret_token={SECRET} allowed_updates=[\"message\",\"callback_query\"]",
                env.app.base
            ),
        ]
    );

    let update = tg.text(Chat::Private, ALICE, "call +91 9876543210");
    assert_eq!(env.post_webhook(&update, None).await, 401);
    assert_eq!(env.post_webhook(&update, Some("wrong")).await, 401);
    assert_eq!(
        env.post_webhook(&update, Some(&format!("{SECRET}x"))).await,
        401
    );
    // Nothing happened: no call, no message.
    stays_false("a rejected update was acted on", async || {
        !env.twilio.creates().is_empty() || tg.transcript_from(0).len() > 3
    })
    .await;
    // Rejected updates were not taken: the same update with the right secret is new.
    assert_eq!(env.post_webhook(&update, Some(SECRET)).await, 200);
    env.twilio.wait_creates(1).await;
    tg.wait_message("📞 Calling").await;
    assert_eq!(env.twilio.creates().len(), 1);
    assert_eq!(tg.polls(), 0, "no getUpdates in webhook mode");
}

#[tokio::test]
async fn webhook_redelivery_places_one_call() {
    let env = spawn(webhook).await;
    let tg = &env.tg;
    let update = tg.text(Chat::Private, ALICE, "call +91 9876543210");
    assert_eq!(env.post_webhook(&update, Some(SECRET)).await, 200);
    assert_eq!(env.post_webhook(&update, Some(SECRET)).await, 200);
    tg.wait_message("📞 Calling").await;
    let help = tg.text(Chat::Private, ALICE, "/help");
    assert_eq!(env.post_webhook(&help, Some(SECRET)).await, 200);
    assert_eq!(env.post_webhook(&help, Some(SECRET)).await, 200);
    tg.wait_message("Your Telegram id").await;

    assert_eq!(env.twilio.wait_creates(1).await.len(), 1);
    let calls = env
        .app
        .service
        .list(10, &ListFilter::default())
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(tg.requests("sendMessage").len(), 2);
}

#[tokio::test]
async fn webhook_mode_without_a_secret_fails_to_start() {
    let tg = FakeTelegram::start().await;
    let mut s = crate::support::settings();
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.telegram.mode = TelegramMode::Webhook;
    let Err(e) = callbot::App::build(s).await else {
        panic!("webhook mode without a secret must not start");
    };
    assert!(
        format!("{e:#}").contains("TELEGRAM_WEBHOOK_SECRET"),
        "{e:#}"
    );
}

#[tokio::test]
async fn rate_limited_message_arrives_after_retry_after() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.throttle("sendMessage", 1, 1);
    tg.push(tg.text(Chat::Private, ALICE, "/start"));
    tg.wait_message("Your Telegram id: 111").await;

    let sends = tg.requests("sendMessage");
    assert_eq!(
        sends.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = sends[1].at - sends[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert_eq!(sends[0].body, sends[1].body);
}

#[tokio::test]
async fn help_status_and_calls_answer_in_the_chat() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.push(tg.text(Chat::Private, ALICE, "/calls"));
    tg.wait_message("No calls yet.").await;
    tg.push(tg.text(Chat::Private, ALICE, "/status"));
    tg.wait_for("two answers", |r| {
        r.iter()
            .filter(|r| r.method == "sendMessage" && r.body["text"] == "No calls yet.")
            .count()
            == 2
    })
    .await;
    tg.push(tg.text(Chat::Private, ALICE, "/cancel"));
    tg.wait_message("no call in progress").await;
    tg.push(tg.text(Chat::Private, ALICE, "hello there"));
    tg.wait_message("I couldn't understand that.").await;
    tg.push(tg.text(Chat::Private, ALICE, "call +91 12"));
    tg.wait_for("five answers", |r| {
        r.iter().filter(|r| r.method == "sendMessage").count() == 5
    })
    .await;

    tg.push(tg.text(Chat::Private, ALICE, "call +91 9876543210"));
    env.twilio.wait_creates(1).await;
    let call = env.latest_call_with_sid().await;
    tg.push(tg.text(Chat::Private, ALICE, "/calls"));
    tg.wait_message(&format!("{} · +91 98765 43210", call.id))
        .await;
    tg.push(tg.text(Chat::Private, ALICE, &format!("/status {}", call.id)));
    tg.wait_for("the status by id", |r| {
        r.iter().any(|r| {
            r.body["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("📞 Calling") && t.contains(call.id.as_str()))
        })
    })
    .await;
    // Another chat cannot read it, even its requester's.
    tg.push(tg.text(Chat::Group(GROUP), ALICE, &format!("/status {}", call.id)));
    tg.wait_message("I don't know a call with id").await;
}

#[tokio::test]
async fn user_not_in_the_allow_list_is_refused_and_no_call_is_placed() {
    let env = spawn(|_| {}).await;
    let tg = &env.tg;
    tg.push(tg.text(Chat::Private, BOB, "call +91 9876543210"));
    let refusal = tg.wait_message("not allowed").await;
    assert!(
        refusal["text"].as_str().unwrap().contains("222"),
        "{refusal}"
    );
    assert!(env.twilio.creates().is_empty());
    assert!(
        env.app
            .service
            .list(10, &ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Every refusal reason of the access policy, as the person reads it in the chat; nothing
/// reaches Twilio.
#[tokio::test]
async fn policy_refusals_are_explained_in_the_chat_and_nothing_is_dialed() {
    let env = spawn(|s| {
        s.access.deny_numbers = vec!["+919876543219".into()];
        s.limits.per_user_hour = 1;
        s.limits.per_destination_hour = 10;
    })
    .await;
    let tg = &env.tg;
    let cases = [
        (
            "call +49 30 901820".to_owned(),
            "+49 30 901820 is in Germany; calls are allowed only to India.",
        ),
        (
            "call +91 98765 43219".to_owned(),
            "Calling +91 98765 43219 is not allowed here.",
        ),
        (
            format!("call +91 98765 43210 and say {}", "x".repeat(501)),
            "Your message has 501 characters; the limit is 500. Please shorten it.",
        ),
        (
            "call +91 12345".to_owned(),
            "+91 12345 is not a valid number for India.",
        ),
    ];
    for (text, reason) in &cases {
        tg.push(tg.text(Chat::Private, ALICE, text));
        tg.wait_message(reason).await;
    }
    stays_false("a refused request reached Twilio", async || {
        !env.twilio.creates().is_empty()
    })
    .await;

    // The hourly limit: the first call goes, the second is refused with when to retry.
    tg.push(tg.text(Chat::Private, ALICE, "call +91 98765 43210"));
    env.twilio.wait_creates(1).await;
    tg.push(tg.text(Chat::Private, ALICE, "call +91 98765 43211"));
    let refusal = tg.wait_message("calls in the last hour, the limit").await;
    stays_false(
        &format!("the refused call was dialed: {refusal}"),
        async || env.twilio.creates().len() > 1,
    )
    .await;
}

/// A call that never gets a final callback is closed by the reaper with Twilio's answer, and
/// its chat gets the outcome.
#[tokio::test]
async fn the_reaper_posts_the_outcome_of_a_call_twilio_never_reported() {
    let env = spawn(|s| {
        s.calls.time_limit_secs = 1;
        s.calls.reap_margin_secs = 0;
        s.calls.reap_interval_ms = 100;
    })
    .await;
    env.twilio.set_fetch("completed", Some("17"));
    let tg = &env.tg;
    tg.push(tg.text(Chat::Private, ALICE, "call +91 98765 43210"));
    tg.wait_message("📞 Calling").await;
    tg.wait_message("✅ Call to +91 98765 43210 completed, 0:17.")
        .await;
    let transcript = tg.transcript_from(0);
    assert!(
        transcript.iter().any(|l| l
            == "sendMessage ↩ \"call +91 98765 43210\": ✅ Call to +91 98765 43210 completed, 0:17."),
        "the outcome is a reply in the thread:\n{}",
        transcript.join("\n")
    );
    assert_eq!(env.twilio.fetches().len(), 1);
}

#[tokio::test]
async fn a_telegram_token_the_bot_api_rejects_stops_the_start_naming_it() {
    let tg = FakeTelegram::start().await;
    let mut s = crate::support::settings();
    s.telegram.bot_token = Some("123456:REVOKED-token".to_owned().into());
    s.telegram.api_url = tg.base.clone();
    let err = match callbot::App::build(s).await {
        Ok(_) => panic!("started with a token Telegram rejects"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("Telegram rejected TELEGRAM_BOT_TOKEN (getMe: Unauthorized)"),
        "{err}"
    );
    assert!(!err.contains("REVOKED"), "the token is not shown: {err}");
}

#[tokio::test]
async fn healthz_turns_503_naming_telegram_while_polling_fails_and_recovers() {
    let env = spawn(|s| s.health.adapter_down_ms = 300).await;
    let healthz = || async {
        let res = env
            .app
            .http
            .get(format!("{}/healthz", env.app.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    // Polling works: healthy past the threshold.
    while env.tg.polls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(healthz().await, (200, "ok".to_owned()));

    env.tg.fail_polls(true);
    let start = std::time::Instant::now();
    let body = loop {
        let (status, body) = healthz().await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/healthz still says ok"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["adapters"][0]["adapter"], "telegram", "{body}");
    assert!(
        body["adapters"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("long polling: getUpdates refused"),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("telegram"),
        "{body}"
    );

    env.tg.fail_polls(false);
    // A message makes the next long poll answer at once (an idle one waits 10 s).
    env.tg.push(env.tg.text(Chat::Private, ALICE, "help"));
    let start = std::time::Instant::now();
    while healthz().await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
