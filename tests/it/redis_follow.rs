//! Chat follow-up across instances on one Redis: whichever instance Twilio's callback lands
//! on, the thread gets one status message (edited) and one outcome; an owner killed mid-call
//! is taken over within the follow claim's time; the console's live log shows every
//! instance's calls. Real apps (the Telegram adapter in webhook mode, the real Twilio client
//! against the fake), a real Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::Settings;
use callbot::calls::claims::Claims;
use callbot::calls::store::ListFilter;
use callbot::calls::{EventBus, EventKind};
use callbot::core::call::{Call, CallId, CallStatus, Origin, Platform};
use callbot::core::phone::{PhoneNumber, Region};
use callbot::shared::Redis;
use callbot::shared::claims::RedisClaims;
use callbot::shared::events::EventBridge;
use callbot::telephony::twilio::signature::sign;
use futures::StreamExt as _;
use rand::seq::SliceRandom as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::fake_telegram::{Chat, FakeTelegram, Recorded, TOKEN};
use crate::support::fake_twilio::Recorded as Created;
use crate::support::redis::TestRedis;
use crate::support::{
    AUTH_TOKEN, FakeTwilio, Instance, QUIET, never, settings, twilio_settings, until,
};
use crate::telegram::{ALICE, SECRET, webhook};

/// The load balancer's address: every instance signs and checks Twilio's requests against it.
const PUBLIC: &str = "https://callbot.example";

struct Env {
    twilio: FakeTwilio,
    tg: FakeTelegram,
    redis: TestRedis,
    http: reqwest::Client,
}

impl Env {
    async fn new(test: &str) -> Option<Self> {
        let redis = TestRedis::get(test)?;
        Some(Self {
            twilio: FakeTwilio::start().await,
            tg: FakeTelegram::start().await,
            redis,
            http: reqwest::Client::new(),
        })
    }

    /// One instance's settings: Telegram in webhook mode, Twilio, this test's Redis, a short
    /// follow claim.
    fn settings(&self, claim: Duration) -> Settings {
        let mut s = twilio_settings(&self.twilio);
        s.telegram.bot_token = Some(TOKEN.to_owned().into());
        s.telegram.api_url = self.tg.base.clone();
        s.access.telegram_users = vec![ALICE.id.to_string()];
        webhook(&mut s);
        s.server.public_url = Some(PUBLIC.into());
        s.store.follow_claim_ms = claim.as_millis() as u64;
        self.redis.settings(s)
    }

    /// Alice asks for a call through `on`'s webhook (as Telegram would deliver it there).
    async fn ask(&self, on: &Instance, text: &str) {
        let update = self.tg.text(Chat::Private, ALICE, text);
        let status = self
            .http
            .post(format!("{}/telegram/webhook", on.base))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }

    /// Posts a Twilio status callback to instance `on`, signed for the public URL (what
    /// Twilio does, the load balancer choosing `on`).
    async fn callback(&self, on: &Instance, created: &Created, form: &[(String, String)]) {
        let url = created.get("StatusCallback").unwrap();
        let path = url
            .strip_prefix(PUBLIC)
            .expect("callbacks go to the public URL");
        let status = self
            .http
            .post(format!("{}{path}", on.base))
            .header("X-Twilio-Signature", sign(AUTH_TOKEN, url, form))
            .form(form)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "callback to {}", on.base);
    }

    fn status_messages(&self) -> Vec<Recorded> {
        sent(&self.tg, "📞 Calling")
    }

    fn outcomes(&self) -> Vec<Recorded> {
        sent(&self.tg, "✅")
    }
}

fn sent(tg: &FakeTelegram, starts: &str) -> Vec<Recorded> {
    tg.requests("sendMessage")
        .into_iter()
        .filter(|r| {
            r.status == 200
                && r.body["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(starts))
        })
        .collect()
}

fn message_id(sent: &Recorded) -> i64 {
    sent.result["message_id"].as_i64().expect("a sent message")
}

/// The one call of the test, once it has Twilio's sid and its status message is stored.
async fn the_call(on: &Instance) -> Call {
    let mut found = None;
    until(
        Duration::from_secs(15),
        "the call with its status message",
        async || {
            let calls = on.service.list(10, &ListFilter::default()).await.unwrap();
            assert!(calls.len() <= 1, "one call: {calls:#?}");
            found = calls
                .into_iter()
                .find(|c| c.sid.is_some() && c.origin.status_message.is_some());
            found.is_some()
        },
    )
    .await;
    found.unwrap()
}

/// The test: a call asked on A, its callbacks (every one twice, shuffled) delivered
/// alternately to A and B: one status message, edited to the final state, one outcome, and
/// the same final status on both.
#[tokio::test]
async fn callbacks_on_either_instance_shuffled_and_repeated_give_one_status_message_and_one_outcome()
 {
    let Some(env) = Env::new("redis follow: alternating callbacks").await else {
        return;
    };
    let a = Instance::spawn(env.settings(Duration::from_secs(2))).await;
    let b = Instance::spawn(env.settings(Duration::from_secs(2))).await;
    env.ask(&a, "call +91 98765 43210").await;
    let created = env.twilio.wait_creates(1).await.remove(0);
    env.tg.wait_message("📞 Calling").await;
    let call = the_call(&b).await;

    let t = &env.twilio;
    let mut forms = vec![
        t.callback(&created, "initiated", 0, &[]),
        t.callback(&created, "ringing", 1, &[]),
        t.callback(&created, "in-progress", 2, &[]),
        t.callback(&created, "completed", 3, &[("CallDuration", "42")]),
    ];
    forms.extend(forms.clone());
    forms.shuffle(&mut rand::rng());
    for (i, form) in forms.iter().enumerate() {
        let on = if i % 2 == 0 { &a } else { &b };
        env.callback(on, &created, form).await;
    }

    env.tg.wait_message("✅").await;
    // A second outcome or status message would come within this.
    never(QUIET * 2, "a second outcome or status message", || {
        env.outcomes().len() > 1 || env.status_messages().len() > 1
    })
    .await;
    let status = env.status_messages();
    assert_eq!(status.len(), 1, "one status message");
    let edits = env.tg.requests("editMessageText");
    assert!(
        edits
            .iter()
            .all(|e| e.body["message_id"].as_i64() == Some(message_id(&status[0]))),
        "every edit is to the one status message: {edits:#?}"
    );
    let last = edits.last().expect("the status message was edited");
    assert!(
        last.body["text"].as_str().unwrap().starts_with("✅"),
        "the last edit shows the outcome: {last:#?}"
    );
    assert_eq!(env.outcomes().len(), 1, "one outcome");

    let (on_a, on_b) = (
        a.service.get(&call.id).await.unwrap().unwrap(),
        b.service.get(&call.id).await.unwrap().unwrap(),
    );
    assert_eq!(on_a.status, CallStatus::Completed);
    assert_eq!(on_a.duration_secs, Some(42));
    assert_eq!(on_a, on_b, "the same call on both");
}

/// The owner of a call's follow-up is killed (no graceful stop, its claim left to expire)
/// mid-call; B, started after the call was placed, picks the call up from the store, takes it
/// over within the claim's time (it edits the status message A posted, before any event
/// reaches it) and posts the outcome once.
#[tokio::test]
async fn a_later_instance_takes_over_a_killed_owners_call_and_posts_its_outcome_once() {
    let Some(env) = Env::new("redis follow: owner killed").await else {
        return;
    };
    let claim = Duration::from_millis(600);
    let a = Instance::spawn(env.settings(claim)).await;
    env.ask(&a, "call +91 98765 43211").await;
    let created = env.twilio.wait_creates(1).await.remove(0);
    env.tg.wait_message("📞 Calling").await;
    let call = the_call(&a).await;
    let t = &env.twilio;
    env.callback(&a, &created, &t.callback(&created, "ringing", 1, &[]))
        .await;
    env.tg.wait_edit("🔔 Ringing").await;

    let b = Instance::spawn(env.settings(claim)).await;
    let edits_before = env.tg.requests("editMessageText").len();
    let killed = Instant::now();
    a.kill();
    // No callback yet: only B's look at the live calls can find this one.
    let edits = env
        .tg
        .wait_for("B's takeover edit", |r| {
            r.iter().filter(|r| r.method == "editMessageText").count() > edits_before
        })
        .await;
    let took = killed.elapsed();
    assert!(
        took < claim * 3,
        "taken over within the claim's time (and a renewal), took {took:?}"
    );
    let takeover = edits
        .iter()
        .filter(|r| r.method == "editMessageText")
        .nth(edits_before)
        .unwrap();
    let status = env.status_messages();
    assert_eq!(status.len(), 1, "B edits the status message A posted");
    assert_eq!(
        takeover.body["message_id"].as_i64(),
        Some(message_id(&status[0]))
    );

    let t = &env.twilio;
    env.callback(&b, &created, &t.callback(&created, "in-progress", 2, &[]))
        .await;
    env.tg.wait_edit("answered").await;
    let done = t.callback(&created, "completed", 3, &[("CallDuration", "7")]);
    env.callback(&b, &created, &done).await;
    env.callback(&b, &created, &done).await;
    env.tg.wait_message("✅").await;
    never(QUIET * 2, "a second outcome", || env.outcomes().len() > 1).await;
    assert_eq!(env.status_messages().len(), 1);
    let on_b = b.service.get(&call.id).await.unwrap().unwrap();
    assert_eq!(
        (on_b.status, on_b.duration_secs),
        (CallStatus::Completed, Some(7))
    );
}

/// The console's live log on B shows a call placed on A, every step of it in order.
#[tokio::test]
async fn the_live_log_on_b_shows_a_call_placed_on_a() {
    let Some(redis) = TestRedis::get("redis follow: live log") else {
        return;
    };
    let a = Instance::spawn(redis.settings(settings())).await;
    let b = Instance::spawn(redis.settings(settings())).await;
    let res = b
        .http
        .get(format!("{}/api/events", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    let (status, body) = a.prompt("call +91 98765 43212").await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let mut seen: Vec<String> = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    // The simulator's outcome depends on the number; every outcome is final.
    let ended = ["completed", "busy", "no-answer", "failed", "canceled"];
    while !seen.iter().any(|s| ended.contains(&s.as_str())) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("events in time; seen {seen:?}"))
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let v: Value = serde_json::from_str(data).unwrap();
                if v["call"]["id"] == id.as_str() {
                    seen.push(v["call"]["status"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("queued"), "{seen:?}");
    let last = seen.last().unwrap();
    let on_a = a
        .service
        .get(&CallId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        last,
        on_a.status.as_str(),
        "B's log ends as the call did: {seen:?}"
    );
    assert!(seen.len() >= 3, "every step, not just the end: {seen:?}");
}

fn a_call(n: u32) -> Call {
    let region = Region::parse("IN").unwrap();
    Call::new(
        PhoneNumber::parse(&format!("+91 98765 4{n:04}"), region).unwrap(),
        "+15005550006",
        "hello".into(),
        "alice",
        "en-US",
        Origin::new(Platform::Telegram, "alice"),
        chrono::Utc::now(),
    )
}

/// The bridge directly: what one instance publishes reaches the other marked remote, in
/// order, and is never sent back; an instance that starts later sees what comes after.
#[tokio::test]
async fn the_bridge_brings_each_instances_events_to_the_others_once() {
    let Some(test) = TestRedis::get("redis follow: bridge") else {
        return;
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (bus_a, bus_b) = (EventBus::new(), EventBus::new());
    let redis_a = Redis::connect(&test.url, &test.prefix).await.unwrap();
    let redis_b = Redis::connect(&test.url, &test.prefix).await.unwrap();
    // Before B exists: B does not see it.
    let early = Arc::new(a_call(0));
    let mut on_a = bus_a.subscribe();
    EventBridge::new(redis_a)
        .start(&bus_a, stop.clone())
        .await
        .unwrap();
    bus_a.publish(EventKind::Created, early.clone());
    until(
        Duration::from_secs(5),
        "the early event in the stream",
        async || !test.keys().is_empty(),
    )
    .await;
    let mut on_b = bus_b.subscribe();
    EventBridge::new(redis_b)
        .start(&bus_b, stop.clone())
        .await
        .unwrap();

    let calls: Vec<Arc<Call>> = (1..=50).map(|n| Arc::new(a_call(n))).collect();
    for (i, call) in calls.iter().enumerate() {
        if i % 2 == 0 {
            bus_a.publish(EventKind::Created, call.clone());
        } else {
            bus_b.publish(EventKind::Progress, call.clone());
        }
    }
    // Every event reaches the other bus once, in the order it was published there.
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while from_a.len() < 25 {
        let ev = tokio::time::timeout_at(deadline, on_b.recv())
            .await
            .expect("A's events on B")
            .unwrap();
        if ev.remote {
            assert_eq!(ev.kind, EventKind::Created);
            from_a.push(ev.call.id.clone());
        }
    }
    while from_b.len() < 25 {
        let ev = tokio::time::timeout_at(deadline, on_a.recv())
            .await
            .expect("B's events on A")
            .unwrap();
        if ev.remote {
            assert_eq!(ev.kind, EventKind::Progress);
            assert_eq!(
                *ev.call,
                *calls[from_b.len() * 2 + 1],
                "the whole call, as published"
            );
            from_b.push(ev.call.id.clone());
        }
    }
    let want = |start: usize| -> Vec<CallId> {
        calls
            .iter()
            .skip(start)
            .step_by(2)
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(from_a, want(0));
    assert_eq!(from_b, want(1));
    // Nothing more: no echo of a remote event, no early event on B.
    never(QUIET, "an event came back or twice", || {
        on_a.try_recv().is_ok_and(|e| e.remote) || on_b.try_recv().is_ok_and(|e| e.remote)
    })
    .await;
    assert!(!from_a.contains(&early.id));
}

/// The outcome claim: one instance wins, whatever the others try.
#[tokio::test]
async fn a_step_is_claimed_once_among_instances() {
    let Some(test) = TestRedis::get("redis follow: claims") else {
        return;
    };
    let ttl = Duration::from_secs(60);
    let mut claims = Vec::new();
    for _ in 0..4 {
        let redis = Redis::connect(&test.url, &test.prefix).await.unwrap();
        claims.push(Arc::new(RedisClaims::new(redis, ttl)));
    }
    let call = CallId::generate();
    let tries = claims.iter().flat_map(|c| {
        let call = call.clone();
        (0..5).map(move |_| {
            let (c, call) = (c.clone(), call.clone());
            tokio::spawn(async move { c.claim_step(&call, "outcome").await.unwrap() })
        })
    });
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1, "one claim of twenty");
    assert!(
        claims[0].claim_step(&call, "other").await.unwrap(),
        "another step is another claim"
    );
    assert!(
        claims[1]
            .claim_step(&CallId::generate(), "outcome")
            .await
            .unwrap()
    );
}

/// A measurement, not a check (run it by name with `--ignored --nocapture`): how long an event
/// takes from one instance's bus to another's, one at a time, and how many a second cross in
/// a burst.
#[tokio::test]
#[ignore = "a measurement; run by name"]
async fn measure_the_bridge() {
    let Some(test) = TestRedis::get("redis follow: bridge measurement") else {
        return;
    };
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (bus_a, bus_b) = (
        EventBus::with_capacity(100_000),
        EventBus::with_capacity(100_000),
    );
    let redis_a = Redis::connect(&test.url, &test.prefix).await.unwrap();
    let redis_b = Redis::connect(&test.url, &test.prefix).await.unwrap();
    EventBridge::with_len(redis_a, 100_000)
        .start(&bus_a, stop.clone())
        .await
        .unwrap();
    let mut on_b = bus_b.subscribe();
    EventBridge::new(redis_b)
        .start(&bus_b, stop.clone())
        .await
        .unwrap();
    let call = Arc::new(a_call(1));
    let mut latencies = Vec::new();
    for _ in 0..500 {
        let start = Instant::now();
        bus_a.publish(EventKind::Progress, call.clone());
        on_b.recv().await.unwrap();
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let n = 20_000;
    let start = Instant::now();
    for i in 0..n {
        bus_a.publish(EventKind::Progress, call.clone());
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(10), on_b.recv())
            .await
            .expect("every event of the burst")
            .unwrap();
    }
    let rate = f64::from(n) / start.elapsed().as_secs_f64();
    println!(
        "bridge A→B, one at a time: p50 {:?}, p99 {:?}; burst of {n}: {rate:.0} events/s",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );
}
