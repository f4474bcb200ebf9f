//! One dialogue, three adapters (issue 17): the same scripted conversation runs against
//! Telegram (the real teloxide Bot and a fake Bot API), Slack (signed Events API requests and
//! button clicks, the real Web API client and a fake Slack) and the console (`POST
//! /ai_prompt`), each with the real Twilio client against the fake Twilio, and every step
//! must come out the same. The Telegram and Slack transcripts are snapshots, whole.

use std::time::Duration;

use callbot::Settings;
use callbot::core::call::CallId;
use serde_json::{Value, json};

use crate::support::fake_slack::{FakeSlack, Recorded as SlackRecord};
use crate::support::fake_telegram::{BOT_USERNAME, Chat, FakeTelegram, TOKEN, TgUser};
use crate::support::{FakeTwilio, TestApp, twilio_settings};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Person {
    /// On the allow-list; places the call.
    Alice,
    /// On the allow-list, in the same conversation; not the requester.
    Carol,
    /// Not on the allow-list.
    Stranger,
}

/// What a step comes to, whatever the platform shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Help,
    /// Asked to confirm, with buttons.
    Prompt,
    Placed,
    AlreadyAnswered,
    Status,
    /// A list of this many calls.
    List(usize),
    NotYours,
    /// Refused who asks: no buttons, seen by them alone where the platform can.
    Refused,
    NotUnderstood,
    UnknownCall,
    NoCalls,
    Cancelled,
    /// A repeated delivery: nothing at all.
    Nothing,
}

/// What a step does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Say(&'static str),
    /// Says this text with `{id}` replaced by the call's id.
    SayId(&'static str),
    /// Presses "Call" on the last confirmation prompt.
    Confirm,
    /// Presses "Don't call" ("Cancel" on Telegram) on the last confirmation prompt.
    Decline,
    /// Delivers the previous message again (same update / event id).
    Redeliver,
    /// Says it in another conversation of the same platform.
    Elsewhere(&'static str),
}

struct Step {
    who: Person,
    act: Act,
    expect: Outcome,
    /// The console is the operator's own: one person, no allow-list, no confirmation, no
    /// redelivery. Steps about those are for chats only.
    chat_only: bool,
}

const fn step(who: Person, act: Act, expect: Outcome) -> Step {
    Step {
        who,
        act,
        expect,
        chat_only: false,
    }
}

const fn chat(who: Person, act: Act, expect: Outcome) -> Step {
    Step {
        who,
        act,
        expect,
        chat_only: true,
    }
}

use Act::*;
use Outcome::*;
use Person::*;

/// The conversation, in order. With `calls.confirm` on: chats ask first, the console never.
const SCRIPT: &[Step] = &[
    step(Alice, Say("help"), Help),
    chat(Stranger, Say("help"), Help),
    chat(Stranger, Say("call +91 98765 43211"), Refused),
    chat(Stranger, Say("list"), Refused),
    step(Alice, Say("call +91 98765 43210"), Prompt),
    chat(Carol, Confirm, NotYours),
    chat(Alice, Confirm, Placed),
    chat(Alice, Confirm, AlreadyAnswered),
    chat(Alice, Say("call +91 98765 43212"), Prompt),
    chat(Alice, Decline, Cancelled),
    step(Alice, Say("status"), Status),
    step(Alice, Say("list"), List(1)),
    chat(Carol, SayId("status {id}"), Status),
    chat(Carol, SayId("cancel {id}"), NotYours),
    chat(Stranger, SayId("status {id}"), Refused),
    step(Alice, Say("blorp the frobnicator"), NotUnderstood),
    step(Alice, Say("status 0000000000000000000000"), UnknownCall),
    chat(Alice, Redeliver, Nothing),
    chat(Alice, Elsewhere("list"), NoCalls),
    step(Alice, SayId("cancel {id}"), Cancelled),
];

/// The one place the console differs: it places at once.
fn web_expect(step: &Step) -> Outcome {
    match (step.act, step.expect) {
        (Say(text), Prompt) if text.starts_with("call") => Placed,
        (_, expect) => expect,
    }
}

/// What a chat reply's text means (the words are the same on every platform).
fn outcome_of(text: &str, buttons: usize) -> Outcome {
    let starts = |p: &str| text.starts_with(p);
    if buttons > 0 && starts("Call +") {
        Prompt
    } else if starts("I place phone calls") {
        Help
    } else if starts("Placing the call") {
        Placed
    } else if starts("This request was already answered") {
        AlreadyAnswered
    } else if starts("Only ") {
        NotYours
    } else if starts("You're not allowed") {
        Refused
    } else if starts("I couldn't understand that.") {
        NotUnderstood
    } else if starts("I don't know a call with id") {
        UnknownCall
    } else if text == "No calls yet." {
        NoCalls
    } else if starts("Hanging up") || starts("Canceled the call") || starts("✖️ Call not placed")
    {
        Cancelled
    } else if text.contains('\n') && text.contains("+91 98765 43210 · ") {
        Status
    } else if text.contains(" · ") {
        List(text.lines().count())
    } else {
        panic!("unexpected reply {text:?}")
    }
}

const TG_ALICE: TgUser = TgUser {
    id: 111,
    first_name: "Alice",
    username: "alice",
};
const TG_CAROL: TgUser = TgUser {
    id: 333,
    first_name: "Carol",
    username: "carol",
};
const TG_STRANGER: TgUser = TgUser {
    id: 222,
    first_name: "Mallory",
    username: "mallory",
};
const TG_GROUP: i64 = -100_777;
const TG_OTHER_GROUP: i64 = -100_888;

const SL_TEAM: &str = crate::slack::TEAM;
const SL_CHANNEL: &str = crate::slack::CHANNEL;
const SL_OTHER: &str = "C0OTHER";
const SL_ALICE: &str = crate::slack::ALICE;
const SL_CAROL: &str = "U0CAROL";
const SL_STRANGER: &str = "U0MALLORY";
const SL_BOT: &str = "U0BOT";

/// What a driver saw in answer to one step.
struct Heard {
    outcome: Outcome,
    /// Shown to the asker alone (Slack ephemeral).
    private: bool,
}

/// Runs one platform's side of the script.
enum Driver {
    Telegram {
        tg: FakeTelegram,
        /// The last confirmation prompt (the message the bot sent).
        prompt: Option<Value>,
        last: Option<Value>,
    },
    Slack {
        slack: FakeSlack,
        prompt: Option<String>,
        last: Option<(String, Value)>,
        events: u32,
    },
    Web,
}

struct Run {
    app: TestApp,
    twilio: FakeTwilio,
    driver: Driver,
    call: Option<CallId>,
}

fn base(twilio: &FakeTwilio) -> Settings {
    let mut s = twilio_settings(twilio);
    s.calls.confirm = true;
    s
}

impl Run {
    async fn telegram() -> Self {
        let twilio = FakeTwilio::start().await;
        let tg = FakeTelegram::start().await;
        let mut s = base(&twilio);
        s.telegram.bot_token = Some(TOKEN.to_owned().into());
        s.telegram.api_url = tg.base.clone();
        s.access.telegram_users = vec![TG_ALICE.id.to_string(), TG_CAROL.id.to_string()];
        let app = TestApp::spawn(s).await;
        Self {
            app,
            twilio,
            driver: Driver::Telegram {
                tg,
                prompt: None,
                last: None,
            },
            call: None,
        }
    }

    async fn slack() -> Self {
        let twilio = FakeTwilio::start().await;
        let slack = FakeSlack::start().await;
        let mut s = crate::slack::with_slack(base(&twilio), &slack);
        s.access.slack_teams = vec![];
        s.access.slack_users = vec![SL_ALICE.into(), SL_CAROL.into()];
        let app = TestApp::spawn(s).await;
        Self {
            app,
            twilio,
            driver: Driver::Slack {
                slack,
                prompt: None,
                last: None,
                events: 0,
            },
            call: None,
        }
    }

    async fn web() -> Self {
        let twilio = FakeTwilio::start().await;
        let app = TestApp::spawn(base(&twilio)).await;
        Self {
            app,
            twilio,
            driver: Driver::Web,
            call: None,
        }
    }

    fn text_of(&self, act: Act) -> String {
        let id = self
            .call
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        match act {
            Say(t) | Elsewhere(t) => t.to_owned(),
            SayId(t) => t.replace("{id}", &id),
            Confirm | Decline | Redeliver => String::new(),
        }
    }

    async fn play(&mut self, step: &Step) -> Heard {
        let text = self.text_of(step.act);
        let app_base = self.app.base.clone();
        let http = self.app.http.clone();
        match &mut self.driver {
            Driver::Telegram { tg, prompt, last } => {
                let user = match step.who {
                    Alice => TG_ALICE,
                    Carol => TG_CAROL,
                    Stranger => TG_STRANGER,
                };
                let mark = tg.recorded().len();
                let update = match step.act {
                    Confirm => tg.press(user, prompt.as_ref().expect("a prompt"), "Call"),
                    Decline => tg.press(user, prompt.as_ref().expect("a prompt"), "Cancel"),
                    Redeliver => last.clone().expect("a message before"),
                    Elsewhere(_) => tg.text(
                        Chat::Group(TG_OTHER_GROUP),
                        user,
                        &format!("@{BOT_USERNAME} {text}"),
                    ),
                    Say(_) | SayId(_) => tg.text(
                        Chat::Group(TG_GROUP),
                        user,
                        &format!("@{BOT_USERNAME} {text}"),
                    ),
                };
                *last = Some(update.clone());
                tg.push(update.clone());
                if step.expect == Nothing {
                    // The repeated delivery would be answered like the first: by now, a
                    // later message's answer comes after it. Ask something and wait for
                    // that answer; nothing may come before it.
                    let probe = tg.text(
                        Chat::Group(TG_GROUP),
                        user,
                        &format!("@{BOT_USERNAME} help"),
                    );
                    tg.push(probe.clone());
                    let probe_id = probe["message"]["message_id"].clone();
                    let seen = tg
                        .wait_for("the probe's answer", |r| {
                            r[mark..].iter().any(|r| {
                                r.method == "sendMessage"
                                    && r.body["reply_parameters"]["message_id"] == probe_id
                            })
                        })
                        .await;
                    let before = seen[mark..]
                        .iter()
                        .take_while(|r| r.body["reply_parameters"]["message_id"] != probe_id)
                        .filter(|r| r.method == "sendMessage")
                        .count();
                    assert_eq!(before, 0, "a repeated update was answered again");
                    return Heard {
                        outcome: Nothing,
                        private: false,
                    };
                }
                let (text, buttons, sent) = if let Some(q) = update.get("callback_query") {
                    let qid = q["id"].clone();
                    let seen = tg
                        .wait_for("the button's answer", |r| {
                            r[mark..].iter().any(|r| {
                                r.method == "answerCallbackQuery"
                                    && r.body["callback_query_id"] == qid
                            })
                        })
                        .await;
                    let answer = seen[mark..]
                        .iter()
                        .find(|r| r.method == "answerCallbackQuery")
                        .unwrap();
                    (
                        answer.body["text"].as_str().unwrap_or_default().to_owned(),
                        0,
                        None,
                    )
                } else {
                    let mid = update["message"]["message_id"].clone();
                    let seen = tg
                        .wait_for("the reply", |r| {
                            r[mark..].iter().any(|r| {
                                r.method == "sendMessage"
                                    && r.body["reply_parameters"]["message_id"] == mid
                            })
                        })
                        .await;
                    let sent = seen[mark..]
                        .iter()
                        .find(|r| {
                            r.method == "sendMessage"
                                && r.body["reply_parameters"]["message_id"] == mid
                        })
                        .unwrap()
                        .clone();
                    let buttons = sent.body["reply_markup"]["inline_keyboard"]
                        .as_array()
                        .map_or(0, |rows| {
                            rows.iter().map(|r| r.as_array().unwrap().len()).sum()
                        });
                    (
                        sent.body["text"].as_str().unwrap_or_default().to_owned(),
                        buttons,
                        Some(sent.result),
                    )
                };
                let outcome = outcome_of(&text, buttons);
                if outcome == Prompt {
                    *prompt = sent;
                }
                Heard {
                    outcome,
                    private: false,
                }
            }
            Driver::Slack {
                slack,
                prompt,
                last,
                events,
            } => {
                let user = match step.who {
                    Alice => SL_ALICE,
                    Carol => SL_CAROL,
                    Stranger => SL_STRANGER,
                };
                let mark = slack.records().len();
                if let Confirm | Decline = step.act {
                    let action = if let Confirm = step.act {
                        "confirm_call"
                    } else {
                        "decline_call"
                    };
                    *events += 1;
                    let reply_id = format!("click{}", *events);
                    let status = slack_click(
                        &http,
                        &app_base,
                        slack,
                        user,
                        action,
                        prompt.as_deref().expect("a prompt"),
                        &reply_id,
                    )
                    .await;
                    assert_eq!(status, 200);
                    let answer = slack
                        .wait_for("the click's answer", |r| r.path == reply_id)
                        .await;
                    let private = answer.body["response_type"] == "ephemeral";
                    return Heard {
                        outcome: outcome_of(answer.text(), answer.buttons().len()),
                        private,
                    };
                }
                let (event_id, event) = match step.act {
                    Redeliver => last.clone().expect("an event before"),
                    _ => {
                        *events += 1;
                        let ts = format!("1600000100.{:06}", *events);
                        let channel = if matches!(step.act, Elsewhere(_)) {
                            SL_OTHER
                        } else {
                            SL_CHANNEL
                        };
                        let event = json!({
                            "type": "app_mention", "user": user, "channel": channel,
                            "text": format!("<@{SL_BOT}> {text}"), "ts": ts, "event_ts": ts,
                        });
                        (format!("Ev0DLG{}", *events), event)
                    }
                };
                *last = Some((event_id.clone(), event.clone()));
                assert_eq!(slack_event(&http, &app_base, &event_id, &event).await, 200);
                let ts = event["ts"].as_str().unwrap().to_owned();
                let channel = event["channel"].as_str().unwrap().to_owned();
                let answers = |r: &SlackRecord| {
                    (r.method == "chat.postMessage" && r.get("thread_ts") == Some(ts.as_str()))
                        || (r.method == "chat.postEphemeral"
                            && r.get("channel") == Some(channel.as_str())
                            && r.get("user") == Some(user))
                };
                if step.expect == Nothing {
                    // The answer to a probe comes after any answer to the repeat would have.
                    *events += 1;
                    let pts = format!("1600000100.{:06}", *events);
                    let probe = json!({
                        "type": "app_mention", "user": user, "channel": SL_CHANNEL,
                        "text": format!("<@{SL_BOT}> help"), "ts": pts, "event_ts": pts,
                    });
                    let pid = format!("Ev0DLG{}", *events);
                    assert_eq!(slack_event(&http, &app_base, &pid, &probe).await, 200);
                    slack
                        .wait_for("the probe's answer", |r| {
                            r.get("thread_ts") == Some(pts.as_str())
                        })
                        .await;
                    let again = slack.records()[mark..]
                        .iter()
                        .filter(|r| {
                            r.method == "chat.postMessage"
                                && r.get("thread_ts") == Some(ts.as_str())
                        })
                        .count();
                    assert_eq!(again, 0, "a repeated event was answered again");
                    return Heard {
                        outcome: Nothing,
                        private: false,
                    };
                }
                let answer = slack.wait_for("the answer", answers).await;
                let buttons = answer.buttons();
                let outcome = outcome_of(answer.text(), buttons.len());
                if outcome == Prompt {
                    *prompt = Some(buttons[0].1.clone());
                }
                Heard {
                    outcome,
                    private: answer.method == "chat.postEphemeral",
                }
            }
            Driver::Web => {
                let (status, body) = self.app.prompt(&text).await;
                let outcome = match status {
                    202 if body["id"].is_string() => {
                        if text.starts_with("cancel") {
                            Cancelled
                        } else {
                            Placed
                        }
                    }
                    200 if body["id"].is_string() => Cancelled,
                    200 => outcome_of(body["reply"].as_str().unwrap_or_default(), 0),
                    404 => outcome_of(body["error"].as_str().unwrap_or_default(), 0),
                    422 => outcome_of(body["error"].as_str().unwrap_or_default(), 0),
                    other => panic!("unexpected {other}: {body}"),
                };
                Heard {
                    outcome,
                    private: false,
                }
            }
        }
    }

    /// Plays the whole script; returns each step's outcome.
    async fn script(&mut self) -> Vec<Outcome> {
        let web = matches!(self.driver, Driver::Web);
        let mut outcomes = vec![];
        for (n, step) in SCRIPT.iter().enumerate() {
            if web && step.chat_only {
                continue;
            }
            let heard = self.play(step).await;
            let expect = if web { web_expect(step) } else { step.expect };
            assert_eq!(
                heard.outcome, expect,
                "step {n}: {:?} {:?}",
                step.who, step.act
            );
            if expect == Refused && matches!(self.driver, Driver::Slack { .. }) {
                assert!(
                    heard.private,
                    "step {n}: a refusal is shown to the asker alone"
                );
            }
            if expect == Placed && self.call.is_none() {
                self.twilio.wait_creates(1).await;
                let calls = self.app.service.list(1, &Default::default()).await.unwrap();
                self.call = Some(calls[0].id.clone());
                // Dialed: cancel hangs up.
                self.app
                    .wait_for(&calls[0].id, Duration::from_secs(15), |c| c.sid.is_some())
                    .await;
            }
            outcomes.push(heard.outcome);
        }
        // One call, whatever was pressed or repeated.
        assert_eq!(self.twilio.creates().len(), 1);
        outcomes
    }

    /// Ids and the fake Slack's message timestamps out, so the transcript is the same on
    /// every run.
    fn redact(&self, text: String) -> String {
        let mut text = text;
        if let Some(id) = &self.call {
            text = text.replace(id.as_str(), "<call-id>");
        }
        const TS: &str = "1700000000.";
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(TS) {
            out.push_str(&rest[..at]);
            out.push_str("<ts>");
            let after = &rest[at + TS.len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

async fn slack_event(http: &reqwest::Client, base: &str, event_id: &str, event: &Value) -> u16 {
    let body = json!({
        "token": "legacy", "team_id": SL_TEAM, "api_app_id": "A0APP", "type": "event_callback",
        "event_id": event_id, "event_time": chrono::Utc::now().timestamp(), "event": event,
        "authorizations": [{"team_id": SL_TEAM, "user_id": SL_BOT, "is_bot": true}],
    })
    .to_string();
    signed_post(http, base, "/slack/events", "application/json", body).await
}

async fn slack_click(
    http: &reqwest::Client,
    base: &str,
    slack: &FakeSlack,
    user: &str,
    action_id: &str,
    value: &str,
    reply_id: &str,
) -> u16 {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": SL_TEAM},
        "team": {"id": SL_TEAM, "domain": "test"},
        "channel": {"id": SL_CHANNEL, "name": "general"},
        "response_url": slack.response_url(reply_id),
        "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button", "action_ts": "1.1"}],
    });
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    signed_post(
        http,
        base,
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        body,
    )
    .await
}

async fn signed_post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> u16 {
    // A distinct timestamp per request: the replay guard remembers (timestamp, signature),
    // and a redelivery here is Slack's own retry, newly signed.
    static SEQ: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let ts = (chrono::Utc::now().timestamp()
        - SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 60)
        .to_string();
    let signature = crate::support::fake_slack::signature(
        crate::support::fake_slack::SIGNING_SECRET,
        &ts,
        &body,
    );
    http.post(format!("{base}{path}"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_same_conversation_on_telegram() {
    let mut run = Run::telegram().await;
    let outcomes = run.script().await;
    assert_eq!(outcomes.len(), SCRIPT.len());
    let Driver::Telegram { tg, .. } = &run.driver else {
        unreachable!()
    };
    // The dialogue's messages, whole: not the start (getMe, …) and not the call's status
    // message, which its follower edits on its own time (tests/it/telegram.rs checks it).
    let transcript: Vec<String> = tg
        .transcript_from(0)
        .into_iter()
        .filter(|l| {
            l.starts_with("sendMessage") && !l.ends_with("… [✖️ Cancel]")
                || l.starts_with("answerCallbackQuery")
                || (l.starts_with("editMessageText") && !l.ends_with("[✖️ Cancel]"))
        })
        .collect();
    insta::assert_snapshot!("telegram_transcript", run.redact(transcript.join("\n")));
}

#[tokio::test]
async fn the_same_conversation_on_slack() {
    let mut run = Run::slack().await;
    let outcomes = run.script().await;
    assert_eq!(outcomes.len(), SCRIPT.len());
    let Driver::Slack { slack, .. } = &run.driver else {
        unreachable!()
    };
    // The dialogue's messages, whole: not the start (auth.test) and not the call's status
    // message, which its follower posts and updates on its own time (tests/it/slack.rs).
    let lines: Vec<String> = slack
        .records()
        .iter()
        .filter(|r| r.method != "auth.test" && r.method != "chat.update")
        .filter(|r| !(r.method == "chat.postMessage" && r.text().contains(" is calling ")))
        .map(|r| {
            // Button values are nonces and ids: random.
            let line = r.line();
            match r.buttons().first() {
                Some((_, value)) if !value.is_empty() => line.replace(value.as_str(), "<nonce>"),
                _ => line,
            }
        })
        .collect();
    insta::assert_snapshot!("slack_transcript", run.redact(lines.join("\n")));
}

#[tokio::test]
async fn the_same_conversation_on_the_console() {
    let mut run = Run::web().await;
    let outcomes = run.script().await;
    assert_eq!(
        outcomes.len(),
        SCRIPT.iter().filter(|s| !s.chat_only).count()
    );
}
