//! The chat side shared through Redis: the Memo (dedupe, confirmations, replay guard, the
//! model's answers) and Telegram long polling on one instance at a time. Several instances
//! are real apps ([`Instance`]) sharing one Redis under the test's prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::Settings;
use callbot::calls::memo::{Memo, Space};
use callbot::shared::Redis;
use callbot::shared::memo::RedisMemo;
use serde_json::Value;

use crate::slack::{ALICE as SLACK_ALICE, CHANNEL, TEAM, with_slack};
use crate::support::fake_slack::{FakeSlack, SIGNING_SECRET, signature};
use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN, TgUser};
use crate::support::redis::TestRedis;
use crate::support::{FakeTwilio, Instance, never, settings, stays_false, twilio_settings, until};

const SPACE: Space = Space {
    name: "contract",
    capacity: 100,
};

#[tokio::test]
async fn the_redis_memo_marks_keeps_replaces_and_takes_once_and_every_key_expires() {
    let Some(test) = TestRedis::get("redis memo contract") else {
        return;
    };
    let a = RedisMemo::new(Redis::connect(&test.url, &test.prefix).await.unwrap());
    let b = RedisMemo::new(Redis::connect(&test.url, &test.prefix).await.unwrap());
    let ttl = Duration::from_secs(60);

    assert!(a.first(SPACE, "delivery-1", ttl).await.unwrap());
    assert!(
        !b.first(SPACE, "delivery-1", ttl).await.unwrap(),
        "one mark for both instances"
    );
    let other = Space {
        name: "other",
        capacity: 10,
    };
    assert!(
        b.first(other, "delivery-1", ttl).await.unwrap(),
        "spaces are apart"
    );

    assert!(
        !a.replace(SPACE, "nonce", b"0".to_vec(), ttl).await.unwrap(),
        "nothing to replace"
    );
    assert_eq!(b.get(SPACE, "nonce").await.unwrap(), None);
    a.put(SPACE, "nonce", b"1".to_vec(), ttl).await.unwrap();
    assert_eq!(b.get(SPACE, "nonce").await.unwrap(), Some(b"1".to_vec()));
    assert!(b.replace(SPACE, "nonce", b"2".to_vec(), ttl).await.unwrap());
    assert_eq!(b.take(SPACE, "nonce").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(a.take(SPACE, "nonce").await.unwrap(), None, "taken once");
    assert!(
        !a.replace(SPACE, "nonce", b"3".to_vec(), ttl).await.unwrap(),
        "a taken key is not brought back"
    );

    // Many takers and markers at once on two connections: one wins each.
    a.put(SPACE, "contested", b"x".to_vec(), ttl).await.unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut takes = Vec::new();
    let mut marks = Vec::new();
    for i in 0..40 {
        let memo = if i % 2 == 0 { a.clone() } else { b.clone() };
        let m = memo.clone();
        takes.push(tokio::spawn(async move {
            m.take(SPACE, "contested").await.unwrap()
        }));
        marks.push(tokio::spawn(async move {
            memo.first(SPACE, "contested-mark", ttl).await.unwrap()
        }));
    }
    let mut taken = 0;
    for t in takes {
        taken += usize::from(t.await.unwrap().is_some());
    }
    let mut first = 0;
    for m in marks {
        first += usize::from(m.await.unwrap());
    }
    assert_eq!((taken, first), (1, 1), "one take and one first mark win");

    // Keys are namespaced and every one of them expires.
    a.put(SPACE, "kept", b"y".to_vec(), ttl).await.unwrap();
    let keys = test.keys();
    assert!(keys.contains(&test.key("memo:contract:kept")), "{keys:?}");
    assert!(
        keys.contains(&test.key("memo:other:delivery-1")),
        "{keys:?}"
    );
    let mut conn = test.client().get_connection().unwrap();
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(pttl > 0 && pttl <= 60_000, "{key} expires (PTTL {pttl})");
    }

    // A short time to live ends.
    a.put(SPACE, "short", b"z".to_vec(), Duration::from_millis(50))
        .await
        .unwrap();
    until(
        Duration::from_secs(2),
        "the short entry to expire",
        async || a.get(SPACE, "short").await.unwrap().is_none(),
    )
    .await;
}

const ALICE: TgUser = TgUser {
    id: 111,
    first_name: "Alice",
    username: "alice",
};

/// Settings polling the fake Telegram with a short polling lease.
fn polling_settings(tg: &FakeTelegram, lease: Duration) -> Settings {
    let mut s = settings();
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.telegram.polling_lease_ms = lease.as_millis() as u64;
    s.access.telegram_users = vec![ALICE.id.to_string()];
    s
}

/// How many times the bot answered each message (by its id).
fn answers(tg: &FakeTelegram) -> std::collections::HashMap<i64, usize> {
    let mut answered = std::collections::HashMap::new();
    for r in tg.requests("sendMessage") {
        if let Some(id) = r.body["reply_parameters"]["message_id"].as_i64() {
            *answered.entry(id).or_default() += 1;
        }
    }
    answered
}

/// The message id of an update the fake built.
fn message_id(update: &Value) -> i64 {
    update["message"]["message_id"].as_i64().unwrap()
}

/// Pushes `n` messages to the bot and waits until each is answered.
async fn talk(tg: &FakeTelegram, n: usize, within: Duration) -> Vec<i64> {
    let ids: Vec<i64> = (0..n)
        .map(|_| message_id(&tg.push(tg.text(Chat::Private, ALICE, "/help"))))
        .collect();
    until(within, "every message answered", async || {
        let answered = answers(tg);
        ids.iter().all(|id| answered.contains_key(id))
    })
    .await;
    ids
}

/// Every message answered exactly once, and the fake never saw two polls at once.
fn once_each_and_no_conflict(tg: &FakeTelegram) {
    let twice: Vec<_> = answers(tg).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        twice.is_empty(),
        "messages answered more than once: {twice:?}"
    );
    assert_eq!(tg.conflicts(), 0, "two getUpdates overlapped (409)");
}

#[tokio::test]
async fn two_instances_poll_telegram_one_at_a_time_and_the_other_takes_over_when_the_leader_dies() {
    let Some(redis) = TestRedis::get("telegram polling lease") else {
        return;
    };
    let tg = FakeTelegram::start().await;
    let lease = Duration::from_millis(1500);
    let a = Instance::spawn(redis.settings(polling_settings(&tg, lease))).await;
    until(
        Duration::from_secs(5),
        "the first instance to poll",
        async || tg.polls() > 0,
    )
    .await;
    let b = Instance::spawn(redis.settings(polling_settings(&tg, lease))).await;

    // Both run for several lease times: one polls, the other waits, nothing twice.
    let ids = talk(&tg, 20, Duration::from_secs(10)).await;
    let polls = tg.polls();
    for _ in 0..3 {
        tokio::time::sleep(lease / 2).await;
        talk(&tg, 5, Duration::from_secs(10)).await;
    }
    assert!(tg.polls() > polls, "polling went on");
    once_each_and_no_conflict(&tg);
    assert_eq!(ids.len(), 20);

    // The leader dies without a word: the other takes the lease within the lease time (plus
    // the third of it it waits between looks), and answers what was written meanwhile.
    let holder = || -> Option<String> {
        let mut conn = redis.client().get_connection().unwrap();
        redis::cmd("GET")
            .arg(redis.key("lease:telegram-polling"))
            .query(&mut conn)
            .unwrap()
    };
    let leader = holder().expect("the lease is held");
    let killed = Instant::now();
    a.kill();
    let id = message_id(&tg.push(tg.text(Chat::Private, ALICE, "/help")));
    until(
        lease * 3,
        "the other instance to take the lease",
        async || holder().is_some_and(|h| h != leader),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= lease + lease / 3 + Duration::from_millis(300),
        "taken over in {took:?} (lease {lease:?})"
    );
    until(
        Duration::from_secs(10),
        "the other instance to answer after the leader died",
        async || answers(&tg).contains_key(&id),
    )
    .await;
    talk(&tg, 10, Duration::from_secs(10)).await;
    once_each_and_no_conflict(&tg);
    drop(b);
}

#[tokio::test]
async fn a_graceful_stop_hands_telegram_polling_over_at_once() {
    let Some(redis) = TestRedis::get("telegram polling handover") else {
        return;
    };
    let tg = FakeTelegram::start().await;
    // Long enough that waiting for it to run out would show.
    let lease = Duration::from_secs(6);
    let a = Instance::spawn(redis.settings(polling_settings(&tg, lease))).await;
    until(
        Duration::from_secs(5),
        "the first instance to poll",
        async || tg.polls() > 0,
    )
    .await;
    let b = Instance::spawn(redis.settings(polling_settings(&tg, lease))).await;
    talk(&tg, 5, Duration::from_secs(10)).await;
    let polls = tg.polls();
    // b does not poll while a holds the lease.
    never(lease / 2, "a second poller while the lease is held", || {
        tg.conflicts() > 0
    })
    .await;
    assert!(
        tg.polls() <= polls + 2,
        "one poller: {} polls",
        tg.polls() - polls
    );

    let stopped = Instant::now();
    a.stop().await;
    let id = message_id(&tg.push(tg.text(Chat::Private, ALICE, "/help")));
    until(lease, "the other instance to answer", async || {
        answers(&tg).contains_key(&id)
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took < lease / 2,
        "handed over in {took:?}, before the lease could have run out ({lease:?}, renewed every third)"
    );
    once_each_and_no_conflict(&tg);
    drop(b);
}

// ---------------------------------------------------------------------------------------
// Slack on two instances

const FORM: &str = "application/x-www-form-urlencoded";

/// Posts `body` to `instance`'s `path`, signed by Slack at `ts`; the status and the answer.
async fn post_signed(
    instance: &Instance,
    path: &str,
    content_type: &str,
    body: &str,
    ts: i64,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let ts = ts.to_string();
    let mut req = instance
        .http
        .post(format!("{}{path}", instance.base))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature(SIGNING_SECRET, &ts, body));
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.body(body.to_owned()).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `/call {text}` from Alice; its response_url posts back to the fake as `reply`.
fn command_body(slack: &FakeSlack, text: &str, reply: &str) -> String {
    serde_urlencoded::to_string([
        ("team_id", TEAM),
        ("channel_id", CHANNEL),
        ("channel_name", "general"),
        ("user_id", SLACK_ALICE),
        ("user_name", "alice"),
        ("command", "/call"),
        ("text", text),
        ("response_url", &slack.response_url(reply)),
        ("trigger_id", &format!("1.2.{}", rand::random::<u64>())),
    ])
    .unwrap()
}

/// Alice clicks `action_id` carrying `value`; the answer goes to the fake as `reply`.
async fn click(
    instance: &Instance,
    slack: &FakeSlack,
    action_id: &str,
    value: &str,
    reply: &str,
) -> u16 {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": SLACK_ALICE, "username": "alice", "team_id": TEAM},
        "team": {"id": TEAM, "domain": "test"},
        "channel": {"id": CHANNEL, "name": "general"},
        "response_url": slack.response_url(reply),
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button", "action_ts": "1.1"}],
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    post_signed(instance, "/slack/interactions", FORM, &body, now(), &[])
        .await
        .0
}

/// Two instances on one Redis with Slack and the fake Twilio.
async fn two_slack_instances(
    redis: &TestRedis,
    configure: impl Fn(&mut Settings),
) -> (Instance, Instance, FakeSlack, FakeTwilio) {
    let twilio = FakeTwilio::start().await;
    let slack = FakeSlack::start().await;
    let mut s = redis.settings(with_slack(twilio_settings(&twilio), &slack));
    configure(&mut s);
    let a = Instance::spawn(s.clone()).await;
    let b = Instance::spawn(s).await;
    (a, b, slack, twilio)
}

#[tokio::test]
async fn a_confirm_pressed_on_b_for_a_prompt_shown_by_a_places_one_call() {
    let Some(redis) = TestRedis::get("confirm across instances") else {
        return;
    };
    let (a, b, slack, twilio) = two_slack_instances(&redis, |s| s.calls.confirm = true).await;
    let body = command_body(&slack, "98765 43210 and say hello", "ask");
    let (status, ack) = post_signed(&a, "/slack/commands", FORM, &body, now(), &[]).await;
    assert_eq!(status, 200, "{ack}");
    let ack: Value = serde_json::from_str(&ack).unwrap();
    assert_eq!(ack["text"], "Call +91 98765 43210 and say “hello”?");
    let nonce = ack["blocks"][1]["elements"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();

    // Pressed on B: B finds the prompt A showed, and places the call.
    assert_eq!(
        click(&b, &slack, "confirm_call", &nonce, "press-b").await,
        200
    );
    let placed = slack
        .wait_for("the press answered", |r| r.path == "press-b")
        .await;
    assert!(
        placed.text().starts_with("Placing the call"),
        "{}",
        placed.text()
    );
    assert_eq!(placed.body["replace_original"], true);
    let created = twilio.wait_creates(1).await;
    assert_eq!(created[0].get("To"), Some("+919876543210"));

    // Pressed again, on both at once: answered already, on either.
    let (on_a, on_b) = tokio::join!(
        click(&a, &slack, "confirm_call", &nonce, "again-a"),
        click(&b, &slack, "confirm_call", &nonce, "again-b"),
    );
    assert_eq!((on_a, on_b), (200, 200));
    for path in ["again-a", "again-b"] {
        let again = slack
            .wait_for("the second press answered", |r| r.path == path)
            .await;
        assert_eq!(again.text(), "This request was already answered.");
    }
    stays_false("a second call from one confirmation", async || {
        twilio.creates().len() > 1
    })
    .await;
    // Both instances see the one call (one store).
    for instance in [&a, &b] {
        let calls = instance
            .service
            .list(10, &callbot::calls::store::ListFilter::default())
            .await
            .unwrap();
        assert_eq!(calls.len(), 1);
    }
}

#[tokio::test]
async fn a_slack_event_or_command_delivered_to_a_and_again_to_b_places_one_call() {
    let Some(redis) = TestRedis::get("slack dedupe across instances") else {
        return;
    };
    let (a, b, slack, twilio) = two_slack_instances(&redis, |_| {}).await;

    // An event, and Slack's retries of it, re-signed, spread over both instances.
    // The same body each time; each delivery signed anew, as Slack does.
    let event = serde_json::json!({
        "team_id": TEAM, "api_app_id": "A0APP", "type": "event_callback",
        "event_id": "Ev0SHARED", "event_time": now(),
        "event": {
            "type": "app_mention", "user": SLACK_ALICE, "channel": CHANNEL,
            "text": "<@U0BOT> call +91 98765 43210", "ts": "1600000010.0", "event_ts": "1600000010.0",
        },
        "authorizations": [{"team_id": TEAM, "user_id": "U0BOT", "is_bot": true}],
    })
    .to_string();
    let json = "application/json";
    let (first, retry_b, retry_a) = tokio::join!(
        post_signed(&a, "/slack/events", json, &event, now(), &[]),
        post_signed(
            &b,
            "/slack/events",
            json,
            &event,
            now() - 1,
            &[("x-slack-retry-num", "1")]
        ),
        post_signed(
            &a,
            "/slack/events",
            json,
            &event,
            now() - 2,
            &[("x-slack-retry-num", "2")]
        ),
    );
    assert_eq!((first.0, retry_b.0, retry_a.0), (200, 200, 200));
    twilio.wait_creates(1).await;
    slack
        .wait_for("the status message", |r| r.text().contains("is calling"))
        .await;
    stays_false("a retried event placed a second call", async || {
        twilio.creates().len() > 1
    })
    .await;

    // One signed slash command, copied to both instances at once: one call.
    let body = command_body(&slack, "+91 98765 43211", "cmd");
    let ts = now();
    let (on_a, on_b) = tokio::join!(
        post_signed(&a, "/slack/commands", FORM, &body, ts, &[]),
        post_signed(&b, "/slack/commands", FORM, &body, ts, &[]),
    );
    assert_eq!((on_a.0, on_b.0), (200, 200));
    let answers: Vec<&str> = [on_a.1.as_str(), on_b.1.as_str()]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        answers.len(),
        1,
        "one instance answers, the copy is ignored: {answers:?}"
    );
    assert!(answers[0].contains("Placing the call"), "{}", answers[0]);
    twilio.wait_creates(2).await;
    stays_false("a copied command placed a second call", async || {
        twilio.creates().len() > 2
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The model's answers

#[cfg(feature = "llm")]
#[tokio::test]
async fn the_model_is_asked_once_for_a_text_whichever_instance_reads_it() {
    use crate::support::fake_openai::{Answer, FakeOpenAi};
    let Some(redis) = TestRedis::get("model cache across instances") else {
        return;
    };
    let (openai, twilio) = (FakeOpenAi::start().await, FakeTwilio::start().await);
    openai.answer([Answer::Json(serde_json::json!({
        "intent": "call", "number": "9876543210", "message": "The meeting moved to 5pm", "language": "en",
    }))]);
    let mut s = redis.settings(twilio_settings(&twilio));
    s.llm.base_url = Some(openai.base.clone());
    s.llm.api_key = Some("sk-test-key".to_owned().into());
    s.llm.model = "test-model".into();
    let a = Instance::spawn(s.clone()).await;
    let b = Instance::spawn(s).await;
    let text = "hey, could you ring my colleague on nine eight seven six five four three two one zero and tell him the meeting moved to 5pm";

    let (status, body) = a.prompt(text).await;
    assert_eq!(status, 202, "{body}");
    // The same words on B (another message, another call): the answer A got is reused.
    let (status, body) = b.prompt(&format!("  {text} ")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["message"], "The meeting moved to 5pm", "{body}");
    assert_eq!(openai.requests().len(), 1, "the model was asked once");
    twilio.wait_creates(2).await;
    let cached: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&redis.key("memo:model:")))
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "one cached answer, keyed by a digest: {cached:?}"
    );
    assert!(
        !cached[0].contains("colleague"),
        "the key does not hold the text"
    );
}

// ---------------------------------------------------------------------------------------
// Telegram confirmations on two instances (webhook mode: every instance takes updates)

#[tokio::test]
async fn a_telegram_confirm_pressed_on_b_places_the_call_in_the_prompt_a_showed() {
    let Some(redis) = TestRedis::get("telegram confirm across instances") else {
        return;
    };
    let (tg, twilio) = (FakeTelegram::start().await, FakeTwilio::start().await);
    let mut s = redis.settings(twilio_settings(&twilio));
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    crate::telegram::webhook(&mut s);
    s.calls.confirm = true;
    s.access.telegram_users = vec![ALICE.id.to_string()];
    let a = Instance::spawn(s.clone()).await;
    let b = Instance::spawn(s).await;
    let deliver = async |to: &Instance, update: &Value| {
        to.http
            .post(format!("{}/telegram/webhook", to.base))
            .header("X-Telegram-Bot-Api-Secret-Token", crate::telegram::SECRET)
            .json(update)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let ask = tg.text(Chat::Private, ALICE, "call +91 9876543210");
    assert_eq!(deliver(&a, &ask).await, 200);
    let question = tg.wait_message("Call +91 98765 43210?").await;
    let nonce = question["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .trim_start_matches("ok:")
        .to_owned();
    // A noted which message shows the question (it becomes the call's status message).
    let shown = format!("\"status_message\":\"{}\"", question["message_id"]);
    until(
        Duration::from_secs(5),
        "the prompt recorded as shown",
        async || {
            let mut conn = redis.client().get_connection().unwrap();
            let pending: Option<String> = redis::cmd("GET")
                .arg(redis.key(&format!("memo:confirm:{nonce}")))
                .query(&mut conn)
                .unwrap();
            pending.is_some_and(|p| p.contains(&shown))
        },
    )
    .await;

    // Pressed on B: B places the call and edits A's question into its status.
    assert_eq!(deliver(&b, &tg.press(ALICE, &question, "Call")).await, 200);
    twilio.wait_creates(1).await;
    let edited = tg
        .wait_for("the question edited into the call's status", |r| {
            r.iter().any(|r| {
                r.method == "editMessageText"
                    && r.body["message_id"] == question["message_id"]
                    && r.status == 200
            })
        })
        .await;
    assert!(!edited.is_empty());

    // Pressed again, on A: already answered, nothing dialed.
    assert_eq!(deliver(&a, &tg.press(ALICE, &question, "Call")).await, 200);
    tg.wait_for("the second press answered", |r| {
        r.iter().any(|r| {
            r.method == "answerCallbackQuery"
                && r.body["text"] == "This request was already answered."
        })
    })
    .await;
    stays_false("a second call from one confirmation", async || {
        twilio.creates().len() > 1
    })
    .await;
}
