//! Fault injection (issue 9): hundreds of requests through each adapter while 30 % of every
//! provider request (Twilio, Telegram, Slack) is faulted at random — 500/502/503, 429 with
//! Retry-After, connection resets, answers slower than the client's timeout, malformed JSON.
//!
//! For every request: exactly one final outcome message in its thread (success, or a clear
//! failure with the reason), at most one call at Twilio (exactly one unless every dial attempt
//! was faulted, and then the outcome says so), and no status message left pending (live,
//! with a Cancel button). The seed is printed; `CALLBOT_FAULT_SEED=<seed>` replays its fault
//! sequence, `CALLBOT_FAULT_REQUESTS=<n>` changes the count (default 500).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use callbot::Settings;
use callbot::calls::store::ListFilter;
use callbot::core::call::{Call, CallStatus};
use callbot::core::replies;
use futures::StreamExt as _;

use crate::support::faults;
use crate::support::{FakeTwilio, TestApp, never, twilio_settings};

/// The heavy runs (these and the soak) take turns: each alone keeps two cores busy, and a
/// chat answer slowed past the client's timeout by load is a lost answer (RELIABILITY.md).
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Share of provider requests faulted.
const RATE: f64 = 0.3;

fn requests() -> usize {
    std::env::var("CALLBOT_FAULT_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500)
}

/// The i-th request's destination: distinct numbers, last digits 0–9 in turn (so busy,
/// no answer and completed calls all occur).
fn number(i: usize) -> String {
    format!("+91 98765 {i:05}")
}

/// Fast timeouts so slow faults cost little; no limit gets in the way.
fn faulty_settings(twilio: &FakeTwilio) -> Settings {
    let mut s = twilio_settings(twilio);
    s.twilio.request_timeout_ms = 300;
    s.limits.per_user_hour = 100_000;
    s.limits.per_user_day = 100_000;
    s.limits.per_destination_hour = 100_000;
    s
}

/// Every call in the store.
async fn all_calls(app: &TestApp) -> Vec<Call> {
    app.service
        .list(100_000, &ListFilter::default())
        .await
        .unwrap()
}

/// Waits until `done()` holds, for up to two minutes; `progress()` describes the shortfall.
async fn wait_until(
    what: &str,
    done: impl AsyncFn() -> bool,
    progress: impl Fn() -> String,
    seed: u64,
) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "seed {seed}: timed out waiting for {what}: {}",
            progress()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checks on Twilio's side and the store: every call final; exactly one create per
/// call that got a sid, none for a call whose dialing failed, no create for an unknown
/// number; the outcome text is the call's.
fn check_calls_and_creates(calls: &[Call], twilio: &FakeTwilio, n: usize, seed: u64) {
    assert_eq!(calls.len(), n, "seed {seed}: one call per request");
    let mut creates: HashMap<String, usize> = HashMap::new();
    for c in twilio.creates().into_iter().filter(|c| c.sid.is_some()) {
        *creates.entry(c.get("To").unwrap().to_owned()).or_default() += 1;
    }
    for call in calls {
        assert!(
            call.status.is_terminal(),
            "seed {seed}: not final: {call:#?}"
        );
        let placed = creates.remove(call.to.e164()).unwrap_or(0);
        if call.sid.is_some() {
            assert_eq!(placed, 1, "seed {seed}: creates for {}", call.to);
        } else {
            assert_eq!(placed, 0, "seed {seed}: creates for {}", call.to);
            assert_eq!(call.status, CallStatus::Failed, "seed {seed}");
            assert!(call.error.is_some(), "seed {seed}: a reason: {call:#?}");
        }
    }
    assert!(
        creates.is_empty(),
        "seed {seed}: creates for no call: {creates:?}"
    );
}

/// Waits until `outcomes()` (every outcome post, repeats included) counts `n`, then waits
/// three seconds for a repeated outcome or a create after every call ended (failing as soon as
/// one comes), turns the faults off and checks the calls against Twilio's creates; returns the
/// calls.
async fn finish(
    app: &TestApp,
    twilio: &FakeTwilio,
    (chat, chat_faults): (&str, &faults::Faults),
    outcomes: impl Fn() -> usize,
    n: usize,
    seed: u64,
) -> Vec<Call> {
    wait_until(
        "an outcome for every request",
        async || outcomes() >= n,
        || format!("{} of {n} outcomes", outcomes()),
        seed,
    )
    .await;
    let created = twilio.creates().len();
    let twice = format!("seed {seed}: an outcome posted twice");
    tokio::join!(
        never(Duration::from_secs(3), &twice, || outcomes() > n),
        twilio.no_creates_beyond(created, Duration::from_secs(3))
    );
    print_faults("twilio", twilio.faults());
    print_faults(chat, chat_faults);
    twilio.faults().disable();
    chat_faults.disable();
    let calls = all_calls(app).await;
    check_calls_and_creates(&calls, twilio, n, seed);
    calls
}

fn print_faults(name: &str, f: &faults::Faults) {
    let (requests, drawn) = f.stats();
    println!("{name}: {requests} requests while faulting, faults {drawn:?}");
    let kinds: std::collections::HashSet<_> = drawn.keys().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds.len(),
        5,
        "{name}: every kind of fault was played: {drawn:?}"
    );
}

#[cfg(feature = "telegram")]
mod telegram {
    use super::*;
    use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
    use crate::telegram::{ALICE, SECRET, webhook};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn telegram_requests_with_30_percent_of_provider_calls_faulted_each_end_with_one_outcome()
    {
        let _turn = HEAVY.lock().await;
        let n = requests();
        let seed = faults::seed();
        println!("fault seed {seed} (CALLBOT_FAULT_SEED={seed} replays it)");
        let twilio = FakeTwilio::start().await;
        let tg = FakeTelegram::start().await;
        let mut s = faulty_settings(&twilio);
        s.telegram.bot_token = Some(TOKEN.to_owned().into());
        s.telegram.api_url = tg.base.clone();
        // Not tighter: on a loaded machine an answer can take a second, and a post whose
        // answer is lost after Telegram acted is posted twice (RELIABILITY.md).
        s.telegram.request_timeout_ms = 4000;
        s.access.telegram_users = vec![ALICE.id.to_string()];
        webhook(&mut s);
        let app = TestApp::spawn(s).await;
        twilio
            .faults()
            .enable(seed, RATE, Duration::from_millis(500));
        tg.faults()
            .enable(seed.wrapping_add(1), RATE, Duration::from_millis(5000));
        let _player = twilio.autoplay();

        // Each request is its own private message; remember its message id.
        let updates: Vec<_> = (0..n)
            .map(|i| {
                tg.text(
                    Chat::Private,
                    ALICE,
                    &format!("Call {} and say fault run {i}", number(i)),
                )
            })
            .collect();
        let asked: Vec<i64> = updates
            .iter()
            .map(|u| u["message"]["message_id"].as_i64().unwrap())
            .collect();
        let url = format!("{}/telegram/webhook", app.base);
        futures::stream::iter(updates)
            .for_each_concurrent(32, |update| {
                let (http, url) = (app.http.clone(), url.clone());
                async move {
                    let res = http
                        .post(&url)
                        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
                        .json(&update)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
            .await;

        // An outcome is a reply without buttons; a status message has a Cancel button.
        let outcomes = || {
            let mut by_request: HashMap<i64, Vec<String>> = HashMap::new();
            for r in tg.requests("sendMessage") {
                if r.body.get("reply_markup").is_none()
                    && let Some(to) = r.body["reply_parameters"]["message_id"].as_i64()
                {
                    let text = r.body["text"].as_str().unwrap_or_default().to_owned();
                    by_request.entry(to).or_default().push(text);
                }
            }
            by_request
        };
        let calls = finish(
            &app,
            &twilio,
            ("telegram", tg.faults()),
            || outcomes().values().map(Vec::len).sum(),
            n,
            seed,
        )
        .await;
        let by_to: HashMap<&str, &Call> = calls.iter().map(|c| (c.to.e164(), c)).collect();
        let outcomes = outcomes();
        let mut failed = 0;
        for (i, m) in asked.iter().enumerate() {
            let texts = outcomes.get(m).cloned().unwrap_or_default();
            assert_eq!(texts.len(), 1, "seed {seed}: request {i}: {texts:?}");
            let e164 = number(i).replace(' ', "");
            let call = by_to[e164.as_str()];
            assert_eq!(texts[0], replies::outcome(call), "seed {seed}: request {i}");
            failed += usize::from(call.status == CallStatus::Failed);
        }
        // No status message left pending: the last edit of each has no Cancel button.
        let mut last_edit: HashMap<i64, bool> = HashMap::new();
        for r in tg.requests("sendMessage") {
            if r.body.get("reply_markup").is_some() {
                last_edit.insert(r.result["message_id"].as_i64().unwrap(), true);
            }
        }
        for r in tg.requests("editMessageText") {
            let id = r.body["message_id"].as_i64().unwrap();
            last_edit.insert(id, r.body.get("reply_markup").is_some());
        }
        // Each call's own status message (the one it remembers) ends without its button. A
        // copy posted twice because an answer was lost after Telegram acted is counted.
        let mut orphans = last_edit.len();
        for call in &calls {
            if let Some(id) = call.origin.status_message.as_deref() {
                let id: i64 = id.parse().unwrap();
                orphans = orphans.saturating_sub(1);
                assert_eq!(
                    last_edit.get(&id),
                    Some(&false),
                    "seed {seed}: left live: {call:#?}"
                );
            }
        }
        println!("status messages posted twice after a lost answer: {orphans}");
        println!(
            "{n} requests: {} status messages, {failed} calls failed after every dial attempt was faulted",
            last_edit.len()
        );
    }
}

#[cfg(feature = "slack")]
mod slack {
    use super::*;
    use crate::slack::{ALICE, signed_command, with_slack};
    use crate::support::fake_slack::FakeSlack;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slack_commands_with_30_percent_of_provider_calls_faulted_each_end_with_one_outcome() {
        let _turn = HEAVY.lock().await;
        let n = requests();
        let seed = faults::seed();
        println!("fault seed {seed} (CALLBOT_FAULT_SEED={seed} replays it)");
        let twilio = FakeTwilio::start().await;
        let slack = FakeSlack::start().await;
        let mut s = with_slack(faulty_settings(&twilio), &slack);
        s.slack.request_timeout_ms = 4000;
        let app = TestApp::spawn(s).await;
        twilio
            .faults()
            .enable(seed, RATE, Duration::from_millis(500));
        slack
            .faults()
            .enable(seed.wrapping_add(2), RATE, Duration::from_millis(5000));
        let _player = twilio.autoplay();

        futures::stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let text = format!("{} and say fault run {i}", number(i));
                let (app, slack) = (&app, &slack);
                async move {
                    let (status, ..) =
                        signed_command(app, slack, ALICE, &text, &format!("r{i}")).await;
                    assert_eq!(status, 200, "request {i}");
                }
            })
            .await;

        // An outcome is a post without blocks; the status message has blocks (and Cancel).
        let outcomes = || {
            slack
                .records()
                .into_iter()
                .filter(|r| r.ok && r.method != "chat.update" && r.body.get("blocks").is_none())
                .map(|r| r.text().to_owned())
                .collect::<Vec<_>>()
        };
        let calls = finish(
            &app,
            &twilio,
            ("slack", slack.faults()),
            || outcomes().len(),
            n,
            seed,
        )
        .await;
        let outcomes = outcomes();
        assert_eq!(outcomes.len(), n, "seed {seed}: {outcomes:#?}");
        let mut failed = 0;
        for call in &calls {
            let want = format!("<@{ALICE}> {}", replies::outcome(call));
            let got = outcomes.iter().filter(|t| **t == want).count();
            assert_eq!(got, 1, "seed {seed}: outcome {want:?} posted {got} times");
            failed += usize::from(call.status == CallStatus::Failed);
        }
        // No status message left pending: each one's last version has no Cancel button.
        let mut live: HashMap<String, bool> = HashMap::new();
        for r in slack.records().into_iter().filter(|r| r.ok) {
            let key = match r.method.as_str() {
                "chat.postMessage" => r.ts.clone(),
                "chat.update" => r.get("ts").map(str::to_owned),
                _ => None,
            };
            if let Some(key) = key
                && r.body.get("blocks").is_some()
            {
                live.insert(key, !r.buttons().is_empty());
            }
        }
        let mut orphans = live.len();
        for call in &calls {
            if let Some(ts) = call.origin.status_message.as_deref() {
                orphans = orphans.saturating_sub(1);
                assert_eq!(
                    live.get(ts),
                    Some(&false),
                    "seed {seed}: left live: {call:#?}"
                );
            }
        }
        println!("status messages posted twice after a lost answer: {orphans}");
        println!(
            "{n} commands: {} status messages, {failed} calls failed",
            live.len()
        );
    }
}

#[cfg(feature = "llm")]
mod llm {
    use super::*;
    use crate::support::fake_openai::FakeOpenAi;
    use serde_json::json;

    /// The fake model: finds the "+91 98765 nnnnn" in the text.
    fn understand(text: &str) -> serde_json::Value {
        let digits: String = text
            .split("+91 ")
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take(11)
            .filter(char::is_ascii_digit)
            .collect();
        json!({"intent": "call", "number": format!("+91{digits}"), "message": "the table is ready", "language": "en"})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn web_requests_the_model_must_read_with_30_percent_of_model_and_twilio_calls_faulted() {
        let _turn = HEAVY.lock().await;
        let n = requests();
        let seed = faults::seed();
        println!("fault seed {seed} (CALLBOT_FAULT_SEED={seed} replays it)");
        let (twilio, openai) = (FakeTwilio::start().await, FakeOpenAi::start().await);
        let mut s = faulty_settings(&twilio);
        s.llm.base_url = Some(openai.base.clone());
        s.llm.api_key = Some("sk-test-key".to_owned().into());
        s.llm.model = "test-model".into();
        s.llm.timeout_secs = 1;
        let app = TestApp::spawn(s).await;
        openai.understand(understand);
        twilio
            .faults()
            .enable(seed, RATE, Duration::from_millis(500));
        openai
            .faults()
            .enable(seed.wrapping_add(3), RATE, Duration::from_millis(1300));
        let _player = twilio.autoplay();

        // No call verb: only the model can read these.
        let answers: Vec<(u16, serde_json::Value)> = futures::stream::iter(0..n)
            .map(|i| {
                let text = format!(
                    "get {} on the line and tell them the table is ready",
                    number(i)
                );
                let app = &app;
                async move { app.prompt(&text).await }
            })
            .buffered(32)
            .collect()
            .await;
        print_faults("twilio", twilio.faults());
        print_faults("openai", openai.faults());

        let mut placed = 0;
        for (i, (status, body)) in answers.iter().enumerate() {
            match status {
                202 => {
                    placed += 1;
                    assert_eq!(
                        body["to"],
                        number(i).replace(' ', ""),
                        "seed {seed}: {body}"
                    );
                }
                // The model failed twice (timeout or error, then the one retry): the help.
                422 => assert!(
                    body["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&replies::help()),
                    "seed {seed}: request {i}: {body}"
                ),
                _ => panic!("seed {seed}: request {i}: {status} {body}"),
            }
        }
        wait_until(
            "every call to end",
            async || all_calls(&app).await.iter().all(|c| c.status.is_terminal()),
            String::new,
            seed,
        )
        .await;
        // No create after every call ended.
        twilio
            .no_creates_beyond(twilio.creates().len(), Duration::from_secs(1))
            .await;
        twilio.faults().disable();
        let calls = all_calls(&app).await;
        check_calls_and_creates(&calls, &twilio, placed, seed);
        println!(
            "{n} requests for the model: {placed} calls placed, {} answered with the help text",
            n - placed
        );
        assert!(placed >= n / 2, "seed {seed}: most requests get through");
    }
}
