//! The dial queue on Redis (a stream with one consumer group): its contract, redelivery after a
//! consumer dies, none lost or doubled under concurrent consumers; then real apps sharing one
//! Redis: an instance killed (as SIGKILL does) with calls queued and live, and the survivor
//! dials each queued call exactly once; a graceful stop leaves its queue to the others; a call
//! stored but never queued is failed by housekeeping, which runs on the holder of its lease alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::calls::queue::{DialQueue, QueueError};
use callbot::calls::store::{CallStore, ListFilter};
use callbot::core::call::{Call, CallId, CallStatus, Origin, Platform};
use callbot::core::phone::PhoneNumber;
use callbot::shared::Redis;
use callbot::shared::queue::RedisQueue;
use callbot::shared::store::RedisStore;
use chrono::Utc;
use parking_lot::Mutex;

use crate::support::fake_twilio::Plan;
use crate::support::redis::TestRedis;
use crate::support::{FakeTwilio, Instance, QUIET, TestApp, twilio_settings, until};

/// A short claim time, so that takeovers happen within a test.
const CLAIM: Duration = Duration::from_millis(400);

async fn queue(test: &TestRedis, capacity: usize) -> Arc<RedisQueue> {
    let redis = Redis::connect(&test.url, &test.prefix).await.unwrap();
    RedisQueue::start(redis, &test.url, capacity, CLAIM)
        .await
        .unwrap()
}

fn ids(n: usize) -> Vec<CallId> {
    (0..n).map(|_| CallId::generate()).collect()
}

async fn next_within(q: &RedisQueue, within: Duration) -> Option<callbot::calls::queue::Delivery> {
    tokio::time::timeout(within, q.next())
        .await
        .ok()
        .map(|d| d.unwrap().expect("the Redis queue never ends"))
}

#[tokio::test]
async fn push_next_and_ack_keep_order_and_depth() {
    let Some(test) = TestRedis::get("redis queue contract") else {
        return;
    };
    let q = queue(&test, 100).await;
    let calls = ids(3);
    for id in &calls {
        q.push(id).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let listed = q.calls().await.unwrap().expect("a shared queue can tell");
    assert_eq!(listed, calls.iter().cloned().collect::<HashSet<_>>());

    for (n, id) in calls.iter().enumerate() {
        let d = next_within(&q, Duration::from_secs(2))
            .await
            .expect("a delivery");
        assert_eq!(&d.call, id, "first in, first out");
        assert!(!d.redelivered, "{d:?}");
        // Read but not acknowledged: still counted, still listed (it is being dialed).
        assert_eq!(q.depth().await.unwrap(), 3 - n);
        assert!(q.calls().await.unwrap().unwrap().contains(id));
        q.ack(&d).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 2 - n);
        assert!(!q.calls().await.unwrap().unwrap().contains(id));
    }
    // Nothing more: an acknowledged entry never comes back, not even after the claim time.
    assert!(next_within(&q, CLAIM * 3).await.is_none());
    // Housekeeping keeps a consumer that is alive (it read a moment ago).
    q.tidy().await.unwrap();
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(test.key("dial"))
        .arg("dialers")
        .query_async(
            &mut test
                .client()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        matches!(&consumers, redis::Value::Array(c) if c.len() == 1),
        "{consumers:?}"
    );
    // A graceful stop of a shared queue fails nothing: whatever waits is left to the others.
    q.push(&calls[0]).await.unwrap();
    assert!(q.close().await.unwrap().is_empty());
    assert_eq!(q.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn push_refuses_at_capacity_counting_calls_being_dialed() {
    let Some(test) = TestRedis::get("redis queue capacity") else {
        return;
    };
    let q = queue(&test, 2).await;
    let calls = ids(4);
    q.push(&calls[0]).await.unwrap();
    q.push(&calls[1]).await.unwrap();
    assert!(
        matches!(q.push(&calls[2]).await, Err(QueueError::Full(2))),
        "the third push is refused"
    );
    // Taking one does not make room: it is being dialed, and stays until acknowledged.
    let d = next_within(&q, Duration::from_secs(2)).await.unwrap();
    assert!(matches!(q.push(&calls[2]).await, Err(QueueError::Full(2))));
    q.ack(&d).await.unwrap();
    q.push(&calls[2]).await.unwrap();
    assert!(matches!(q.push(&calls[3]).await, Err(QueueError::Full(2))));
    assert_eq!(q.depth().await.unwrap(), 2);
}

#[tokio::test]
async fn an_entry_whose_consumer_died_goes_to_another_after_the_claim_time_and_not_before() {
    let Some(test) = TestRedis::get("redis queue redelivery") else {
        return;
    };
    let a = queue(&test, 100).await;
    let b = queue(&test, 100).await;
    let call = CallId::generate();
    a.push(&call).await.unwrap();
    let taken = next_within(&a, Duration::from_secs(2)).await.unwrap();
    assert_eq!(taken.call, call);
    // a dials for three claim times, renewing: b does not get the entry.
    assert!(
        next_within(&b, CLAIM * 3).await.is_none(),
        "a live consumer keeps what it dials"
    );
    // a dies (its renewals stop with it).
    let died = Instant::now();
    drop(a);
    let again = next_within(&b, CLAIM * 4)
        .await
        .expect("the entry of a dead consumer is redelivered");
    let took = died.elapsed();
    assert_eq!(again.call, call);
    assert!(again.redelivered, "{again:?}");
    // Its last renewal came at most a third of the claim time before it died.
    assert!(
        took >= CLAIM * 2 / 3 - Duration::from_millis(20),
        "taken after the claim time, not before: {took:?}"
    );
    b.ack(&again).await.unwrap();
    assert_eq!(b.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn entries_handed_back_on_a_graceful_stop_go_to_another_at_once() {
    let Some(test) = TestRedis::get("redis queue release") else {
        return;
    };
    let a = queue(&test, 100).await;
    let b = queue(&test, 100).await;
    let calls = ids(2);
    a.push(&calls[0]).await.unwrap();
    a.push(&calls[1]).await.unwrap();
    // a read both; it hands the first back explicitly (read, not dialed) and abandons the
    // second (say, its read was cut short), which leave() hands back.
    let first = next_within(&a, Duration::from_secs(2)).await.unwrap();
    let second = next_within(&a, Duration::from_secs(2)).await.unwrap();
    assert!(
        a.release(&first).await.unwrap(),
        "another dialer will take it"
    );
    a.abandon(&second);
    a.leave().await.unwrap();
    let start = Instant::now();
    let mut got = HashSet::new();
    while got.len() < 2 {
        let d = next_within(&b, CLAIM).await.expect("handed back at once");
        assert!(d.redelivered);
        b.ack(&d).await.unwrap();
        got.insert(d.call);
    }
    assert_eq!(got, calls.into_iter().collect::<HashSet<_>>());
    assert!(
        start.elapsed() < CLAIM,
        "not after the claim time: {:?}",
        start.elapsed()
    );
}

/// Four consumers take 300 entries at once; two of them die holding one entry each. Every
/// entry is acknowledged exactly once, none by two live consumers, none lost.
#[tokio::test]
async fn concurrent_consumers_lose_none_and_double_none() {
    let Some(test) = TestRedis::get("redis queue concurrent") else {
        return;
    };
    let producer = queue(&test, 10_000).await;
    let calls = ids(300);
    let acked: Arc<Mutex<HashMap<CallId, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for n in 0..4 {
        let q = queue(&test, 10_000).await;
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let Some(d) = next_within(&q, Duration::from_secs(3)).await else {
                    return done;
                };
                // Workers 0 and 1 die holding their tenth entry.
                if n < 2 && done == 9 {
                    return done;
                }
                tokio::task::yield_now().await;
                *acked.lock().entry(d.call.clone()).or_default() += 1;
                q.ack(&d).await.unwrap();
                done += 1;
            }
        }));
    }
    let pushers: Vec<_> = calls
        .chunks(100)
        .map(|chunk| {
            let producer = producer.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for id in chunk {
                    producer.push(&id).await.unwrap();
                }
            })
        })
        .collect();
    for p in pushers {
        p.await.unwrap();
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    let acked = acked.lock().clone();
    assert_eq!(total, 300, "every entry acknowledged once");
    assert_eq!(acked.len(), 300, "none lost");
    assert!(acked.values().all(|&n| n == 1), "none doubled");
    assert_eq!(producer.depth().await.unwrap(), 0);
}

fn stored_call(n: u32) -> Call {
    Call::new(
        PhoneNumber::from_e164(&format!("+91987651{n:04}")).unwrap(),
        "+15005550006",
        "hello".into(),
        "alice",
        "en-US",
        Origin::new(Platform::Web, "web"),
        Utc::now(),
    )
}

/// An instance stored a call and died before queueing it: housekeeping (on whichever instance
/// holds its lease) fails it with a reason once it is older than the claim time, and leaves
/// alone a call that is queued, however old.
#[tokio::test]
async fn a_call_stored_but_never_queued_is_failed_by_housekeeping() {
    let Some(test) = TestRedis::get("redis queue recovery") else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let mut s = test.settings(twilio_settings(&twilio));
    s.store.claim_ms = 300;
    s.calls.reap_interval_ms = 100;
    // The orphan: in the store, in no queue.
    let store = RedisStore::new(
        Redis::connect(&test.url, &test.prefix).await.unwrap(),
        Duration::from_secs(3600),
    );
    let orphan = stored_call(1);
    store.insert(orphan.clone()).await.unwrap();
    // Its neighbour: queued long ago, its entry still in the stream (no dialer yet).
    let queued = stored_call(2);
    store.insert(queued.clone()).await.unwrap();
    queue(&test, 100).await.push(&queued.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let app = TestApp::spawn(s).await;
    let failed = app.wait_final(&orphan.id).await;
    assert_eq!(failed.status, CallStatus::Failed);
    assert_eq!(
        failed.error.map(|e| e.message),
        Some("not placed: the callbot instance that took it stopped before queueing it".into())
    );
    // The queued one went to the dialer, not to recovery.
    twilio.wait_creates(1).await;
    let creates = twilio.creates();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(
        creates[0].get("Url").unwrap().ends_with(queued.id.as_str()),
        "{creates:?}"
    );
    app.stays(&queued.id, QUIET, |c| c.status != CallStatus::Failed)
        .await;
}

/// Counts each call id's creates at the fake (our id ends the TwiML Url).
fn creates_by_call(twilio: &FakeTwilio) -> HashMap<String, usize> {
    let mut by_call = HashMap::new();
    for c in twilio.creates() {
        let url = c.get("Url").unwrap();
        let id = url.rsplit('/').next().unwrap().to_owned();
        *by_call.entry(id).or_default() += 1;
    }
    by_call
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Alice asks A (two calls a second) for 60 calls in Telegram; after ten are created at
/// Twilio and live, and an eleventh create is in flight (Twilio created it but its answer is
/// held back), A is killed: no graceful stop, nothing handed back. B starts at the address
/// Twilio calls back (the load balancer's) and dials each of the remaining calls exactly
/// once: the unread ones at once, the ones A held after the claim time, the eleventh only
/// after Twilio's call list showed it was created. Every one of the 60 ends with a final
/// status, and the chat gets 60 outcomes, one each.
#[cfg(feature = "telegram")]
#[tokio::test]
async fn when_an_instance_is_killed_another_dials_its_queue_exactly_once_and_posts_every_outcome() {
    use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN};
    use crate::telegram::{ALICE, SECRET, webhook};
    let Some(test) = TestRedis::get("redis queue kill") else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let tg = FakeTelegram::start().await;
    let port = free_port();
    let lb = format!("http://127.0.0.1:{port}");
    let mut s = test.settings(twilio_settings(&twilio));
    s.server.public_url = Some(lb.clone());
    s.store.claim_ms = 1000;
    s.store.follow_claim_ms = 1000;
    s.telegram.bot_token = Some(TOKEN.to_owned().into());
    s.telegram.api_url = tg.base.clone();
    s.access.telegram_users = vec![ALICE.id.to_string()];
    s.limits.per_user_hour = 1000;
    s.limits.per_user_day = 1000;
    webhook(&mut s);
    let mut on_a = s.clone();
    on_a.calls.cps = 2;
    twilio.plan(
        std::iter::repeat_n(Plan::Created, 10).chain([Plan::Delayed(Duration::from_secs(30))]),
    );
    let a = Instance::spawn(on_a).await;
    let http = reqwest::Client::new();
    for i in 0..60 {
        // The last digit makes the fake Twilio complete the call.
        let update = tg.text(Chat::Private, ALICE, &format!("call +91 98{i:07}2"));
        let status = http
            .post(format!("{}/telegram/webhook", a.base))
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    until(
        Duration::from_secs(20),
        "A accepted the 60 calls",
        async || {
            a.service
                .list(100, &ListFilter::default())
                .await
                .unwrap()
                .len()
                == 60
        },
    )
    .await;
    twilio.wait_creates(11).await;
    a.kill();
    // Ten created and one in flight (more would mean A outran its pace).
    assert!(twilio.creates().len() <= 12);

    let mut on_b = s;
    on_b.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    let b = TestApp::spawn(on_b).await;
    assert_eq!(b.base, lb);
    // The create A never heard back about: no callback for it yet (Twilio's come within a
    // second or so; here they wait), so only Twilio's call list can tell B it exists.
    let eleventh = twilio.creates()[10].clone();
    let in_flight =
        CallId::parse(eleventh.get("Url").unwrap().rsplit('/').next().unwrap()).unwrap();
    let adopted = b
        .wait_for(&in_flight, Duration::from_secs(20), |c| c.sid.is_some())
        .await;
    assert_eq!(adopted.sid.as_ref().map(ToString::to_string), eleventh.sid);
    let _twilio_plays = twilio.autoplay();
    let mut calls = Vec::new();
    until(Duration::from_secs(60), "every call ends", async || {
        calls = b.service.list(100, &ListFilter::default()).await.unwrap();
        calls.iter().all(|c| c.status.is_terminal())
    })
    .await;
    let took = start.elapsed();
    assert_eq!(calls.len(), 60);
    twilio.no_creates_beyond(60, QUIET).await;
    let by_call = creates_by_call(&twilio);
    for call in &calls {
        assert_eq!(
            by_call.get(call.id.as_str()),
            Some(&1),
            "{call:#?} created once"
        );
        // Ended as the fake played it: none failed for want of a dialer.
        assert_eq!(call.status, CallStatus::Completed, "{call:#?}");
    }
    assert!(
        !twilio.lists().is_empty(),
        "the redelivered call was checked against Twilio's call list"
    );
    // One outcome per call in the chat, posted by B (A is gone).
    let outcomes = || {
        tg.requests("sendMessage")
            .into_iter()
            .filter(|r| {
                r.status == 200 && r.body["text"].as_str().is_some_and(|t| t.starts_with("✅"))
            })
            .count()
    };
    until(
        Duration::from_secs(30),
        "60 outcomes in the chat",
        async || outcomes() >= 60,
    )
    .await;
    crate::support::never(QUIET * 2, "a second outcome for a call", || outcomes() > 60).await;
    eprintln!("B finished A's queue and live calls (60) in {took:?}");
}

/// A graceful stop on Redis fails no queued call: A (one call a second, its creates held
/// back) stops with calls queued, and B dials every one of them, each once.
#[tokio::test]
async fn a_graceful_stop_leaves_queued_calls_to_another_instance() {
    let Some(test) = TestRedis::get("redis queue graceful stop") else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let port = free_port();
    let mut s = test.settings(twilio_settings(&twilio));
    s.server.public_url = Some(format!("http://127.0.0.1:{port}"));
    s.store.claim_ms = 5000;
    let mut on_a = s.clone();
    on_a.calls.cps = 1;
    on_a.server.shutdown_grace_secs = 1;
    let a = Instance::spawn(on_a).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let (status, body) = a.prompt(&format!("call +91 98701 {i:05}")).await;
        assert_eq!(status, 202, "{body}");
        ids.push(CallId::parse(body["id"].as_str().unwrap()).unwrap());
    }
    twilio.wait_creates(1).await;
    let stopped = Instant::now();
    a.stop().await;
    let mut on_b = s;
    on_b.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
    let b = TestApp::spawn(on_b).await;
    let _twilio_plays = twilio.autoplay();
    until(Duration::from_secs(30), "every call ends", async || {
        for id in &ids {
            if !b.call(id).await.status.is_terminal() {
                return false;
            }
        }
        true
    })
    .await;
    // Within much less than the claim time: the call A had read was handed back, not left to
    // time out.
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    twilio.no_creates_beyond(8, QUIET).await;
    let by_call = creates_by_call(&twilio);
    for id in &ids {
        let call = b.call(id).await;
        assert_ne!(call.status, CallStatus::Failed, "{call:#?}");
        assert_eq!(by_call.get(id.as_str()), Some(&1), "{id} created once");
    }
}

/// Housekeeping runs on the holder of the `housekeeping` lease alone: a second instance does
/// not take it while the holder renews it, and takes it at its next look (well within the
/// lease time) once the holder stops gracefully and gives it up.
#[tokio::test]
async fn the_housekeeping_lease_stays_with_one_instance_and_moves_when_it_stops() {
    let Some(test) = TestRedis::get("redis housekeeping lease") else {
        return;
    };
    let mut s = test.settings(crate::support::settings());
    // The lease lives 3 s: left to expire, it would pass at least 2 s after the holder's
    // last renewal.
    s.calls.reap_interval_ms = 1000;
    let key = test.key("lease:housekeeping");
    let mut conn = test
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let a = Instance::spawn(s.clone()).await;
    let mut holder: Option<String> = None;
    until(Duration::from_secs(5), "A takes the lease", async || {
        holder = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        holder.is_some()
    })
    .await;
    let b = TestApp::spawn(s).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let now: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(now, holder, "the holder keeps the lease while it renews it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Instant::now();
    a.stop().await;
    until(Duration::from_secs(5), "B takes the lease", async || {
        let now: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        now.is_some() && now != holder
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_millis(1800),
        "given up, not left to expire: {:?}",
        stopped.elapsed()
    );
    drop(b);
}

/// A dialer cut off from Redis for longer than the claim time loses its entry to another
/// dialer, and the queue says so when asked right before a create: the entry's new holder
/// keeps it, the old one is told it no longer holds it.
#[tokio::test]
async fn a_dialer_cut_off_past_the_claim_time_is_told_it_lost_the_entry() {
    use crate::support::redis_proxy::RedisProxy;
    let Some(test) = TestRedis::get("redis queue keep") else {
        return;
    };
    let proxy = RedisProxy::start(&test.url).await;
    let redis = Redis::connect(&proxy.url, &test.prefix).await.unwrap();
    let a = RedisQueue::start(redis, &proxy.url, 100, CLAIM)
        .await
        .unwrap();
    let b = queue(&test, 100).await;
    let call = CallId::generate();
    a.push(&call).await.unwrap();
    let held = next_within(&a, Duration::from_secs(2)).await.unwrap();
    assert!(a.keep(&held).await.unwrap(), "a holds what it read");
    proxy.cut();
    let taken = next_within(&b, CLAIM * 5)
        .await
        .expect("b takes over the entry of a silent dialer");
    assert_eq!(taken.call, call);
    assert!(taken.redelivered);
    proxy.restore();
    let mut kept = None;
    until(
        Duration::from_secs(10),
        "a reaches Redis again",
        async || {
            kept = a.keep(&held).await.ok();
            kept.is_some()
        },
    )
    .await;
    assert_eq!(kept, Some(false), "a no longer holds it: b does");
    assert!(b.keep(&taken).await.unwrap());
    // b dies in turn, and a takes the entry back: a new hold. The dialer of a's first hold
    // (still waiting somewhere) must not go on, though the entry is a's again.
    drop(b);
    // a's blocking reads may fail once more on a connection the cut broke (the dialer asks
    // again after such an error, as here).
    let deadline = Instant::now() + CLAIM * 10;
    let back = loop {
        assert!(
            Instant::now() < deadline,
            "a never took the entry of dead b"
        );
        match tokio::time::timeout(CLAIM, a.next()).await {
            Ok(Ok(Some(d))) => break d,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => {}
        }
    };
    assert_eq!(back.call, call);
    assert_ne!(back.hold, held.hold);
    assert!(!a.keep(&held).await.unwrap(), "the first hold is over");
    assert!(a.keep(&back).await.unwrap(), "the new hold goes on");
    a.ack(&back).await.unwrap();
    assert!(
        !a.keep(&back).await.unwrap(),
        "an acknowledged entry is held by nobody"
    );
}

/// The dialer asks the queue right before every create: A waits out Twilio's Retry-After
/// while cut off from Redis, B takes the call over and sends its create (Twilio is slow to
/// answer it, so the store shows no sid yet), and A, back, does not create the call again.
#[tokio::test]
async fn a_dialer_that_lost_its_call_while_waiting_to_retry_does_not_create_it() {
    use crate::support::redis_proxy::RedisProxy;
    let Some(test) = TestRedis::get("redis dialer keep") else {
        return;
    };
    let proxy = RedisProxy::start(&test.url).await;
    let twilio = FakeTwilio::start().await;
    let mut s = test.settings(twilio_settings(&twilio));
    s.store.claim_ms = 600;
    s.calls.max_tries = 5;
    s.twilio.request_timeout_ms = 10_000;
    twilio.plan([
        Plan::Error {
            status: 429,
            code: 20429,
            message: "Too many requests",
            retry_after: Some(3),
        },
        Plan::Delayed(Duration::from_secs(4)),
        Plan::Created,
    ]);
    let mut on_a = s.clone();
    on_a.store.redis_url = Some(proxy.url.clone().into());
    let a = Instance::spawn(on_a).await;
    let (status, body) = a.prompt("call +91 9876543217").await;
    assert_eq!(status, 202, "{body}");
    twilio.wait_creates(1).await;
    // A waits three seconds to try again; it cannot renew its hold meanwhile.
    proxy.cut();
    let b = Instance::spawn(s).await;
    twilio.wait_creates(2).await;
    proxy.restore();
    // A wakes after its three seconds, B's create is answered after four.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answered: Vec<_> = twilio
        .creates()
        .into_iter()
        .filter(|c| c.sid.is_some())
        .collect();
    assert_eq!(
        answered.len(),
        1,
        "one call created, by B: {:#?}",
        twilio.creates()
    );
    assert_eq!(twilio.creates().len(), 2, "A sent no second create");
    drop(b);
}
