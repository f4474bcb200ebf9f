//! The call store on Redis: the `CallStore` contract against a real Redis, several writers of
//! one call at once, and apps sharing one Redis.

use std::sync::Arc;
use std::time::Duration;

use callbot::calls::store::{CallStore, ListFilter};
use callbot::core::call::{Applied, Call, CallSid, CallStatus, Origin, Platform, StatusUpdate};
use callbot::core::phone::PhoneNumber;
use callbot::shared::Redis;
use callbot::shared::store::RedisStore;
use chrono::Utc;

use crate::support::redis::TestRedis;

fn call(n: u32) -> Call {
    Call::new(
        PhoneNumber::from_e164(&format!("+91987650{n:04}")).unwrap(),
        "+15005550006",
        "hello".into(),
        "alice",
        "en-US",
        Origin::new(Platform::Web, "web"),
        Utc::now(),
    )
}

async fn store(test: &TestRedis, ttl: Duration) -> RedisStore {
    RedisStore::new(Redis::connect(&test.url, &test.prefix).await.unwrap(), ttl)
}

fn update(status: CallStatus, seq: u64) -> StatusUpdate {
    StatusUpdate {
        status: Some(status),
        sequence: Some(seq),
        duration_secs: (status == CallStatus::Completed).then_some(10),
        ..StatusUpdate::default()
    }
}

#[tokio::test]
async fn the_store_contract_holds_on_redis() {
    let Some(test) = TestRedis::get("redis store contract") else {
        return;
    };
    let store = store(&test, Duration::from_secs(3600)).await;
    let start = Utc::now();
    let mut calls = Vec::new();
    // Inserted out of order, so the order comes from the creation times.
    for n in [7u32, 3, 9, 0, 5, 1, 8, 2, 6, 4] {
        let mut c = call(n);
        c.created_at = start + chrono::Duration::seconds(i64::from(n));
        c.history[0].1 = c.created_at;
        calls.push(c.clone());
        store.insert(c.clone()).await.unwrap();
        // A repeated insert (a lost answer, retried) counts once.
        store.insert(c).await.unwrap();
    }
    assert_eq!(
        store.get(&calls[0].id).await.unwrap().as_ref(),
        Some(&calls[0])
    );
    assert_eq!(
        store
            .get(&callbot::core::call::CallId::generate())
            .await
            .unwrap(),
        None
    );

    // The dialer's sid joins the index; a call ends and leaves it.
    let sid = CallSid::new("CA0123456789abcdef0123456789abcdef");
    let first = calls
        .iter()
        .find(|c| c.created_at == start)
        .unwrap()
        .clone();
    let placed = StatusUpdate {
        sid: Some(sid.clone()),
        status: Some(CallStatus::Initiated),
        ..StatusUpdate::default()
    };
    let (after, applied) = store
        .update(&first.id, &mut |c: &mut Call| c.apply(&placed, Utc::now()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.status, applied),
        (CallStatus::Initiated, Applied::Progress)
    );
    assert_eq!(
        store.find_by_sid(&sid).await.unwrap(),
        Some(first.id.clone())
    );

    // Calls 0..5 end; 5..10 stay live.
    for c in calls
        .iter()
        .filter(|c| c.created_at < start + chrono::Duration::seconds(5))
    {
        let (after, applied) = store
            .update(&c.id, &mut |call: &mut Call| {
                call.apply(&update(CallStatus::Completed, 9), Utc::now())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (after.status, applied),
            (CallStatus::Completed, Applied::Final)
        );
        // Once final, nothing moves it.
        let (after, applied) = store
            .update(&c.id, &mut |call: &mut Call| {
                call.apply(&update(CallStatus::Ringing, 10), Utc::now())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (after.status, applied),
            (CallStatus::Completed, Applied::Ignored)
        );
    }
    assert_eq!(
        store.find_by_sid(&sid).await.unwrap(),
        None,
        "an ended call leaves the index"
    );
    let unknown = callbot::core::call::CallId::generate();
    assert!(
        store
            .update(&unknown, &mut |_: &mut Call| Applied::Progress)
            .await
            .unwrap()
            .is_none()
    );

    let secs = |calls: &[Call]| -> Vec<i64> {
        calls
            .iter()
            .map(|c| (c.created_at - start).num_seconds())
            .collect()
    };
    let all = ListFilter::default();
    assert_eq!(secs(&store.list(3, &all).await.unwrap()), [9, 8, 7]);
    assert_eq!(
        secs(&store.list(100, &all).await.unwrap()),
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    );
    assert!(store.list(0, &all).await.unwrap().is_empty());
    let live = ListFilter {
        live_only: true,
        ..ListFilter::default()
    };
    assert_eq!(
        secs(&store.list(usize::MAX, &live).await.unwrap()),
        [9, 8, 7, 6, 5]
    );
    let by_requester = ListFilter {
        requester: Some("nobody".into()),
        ..ListFilter::default()
    };
    assert!(store.list(100, &by_requester).await.unwrap().is_empty());

    let stats = store.stats(Utc::now()).await.unwrap();
    assert_eq!((stats.total, stats.active), (10, 5));
    assert_eq!(stats.by_status.get("completed"), Some(&5));
    assert_eq!(stats.by_status.get("queued"), Some(&5));
    assert_eq!(stats.answer_rate, Some(100.0));
    assert_eq!(stats.average_duration_secs, Some(10.0));
    assert_eq!(stats.today, 10);

    // Ended calls expire after the ttl; live ones do not. A list drops what expired.
    let mut conn = test
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(test.key(&format!("call:{}", first.id)))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (3590..=3600).contains(&ttl),
        "an ended call expires after the ttl: {ttl}"
    );
    let live_ttl: i64 = redis::cmd("TTL")
        .arg(test.key(&format!(
                "call:{}",
                calls
                    .iter()
                    .find(|c| c.created_at > start + chrono::Duration::seconds(5))
                    .unwrap()
                    .id
            )))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(live_ttl, -1, "a live call never expires");
}

#[tokio::test]
async fn an_ended_call_is_gone_after_the_ttl_and_leaves_the_lists() {
    let Some(test) = TestRedis::get("redis store expiry") else {
        return;
    };
    let store = store(&test, Duration::from_secs(1)).await;
    let c = call(1);
    store.insert(c.clone()).await.unwrap();
    store
        .update(&c.id, &mut |call: &mut Call| {
            call.apply(&update(CallStatus::Busy, 1), Utc::now())
        })
        .await
        .unwrap();
    crate::support::until(
        Duration::from_secs(5),
        "the ended call expires",
        async || store.get(&c.id).await.unwrap().is_none(),
    )
    .await;
    assert!(
        store
            .list(10, &ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let mut conn = test
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let listed: i64 = redis::cmd("ZCARD")
        .arg(test.key("calls"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, 0, "the list pruned the expired id");
}

/// Many tasks on two store instances (two processes' worth of connections) deliver every
/// status of the same calls at once, repeated and in any order: each call ends completed,
/// each transition is applied once, and the counters agree.
#[tokio::test]
async fn concurrent_writers_never_move_a_call_backwards() {
    let Some(test) = TestRedis::get("redis store concurrent cas") else {
        return;
    };
    let a = Arc::new(store(&test, Duration::from_secs(3600)).await);
    let b = Arc::new(store(&test, Duration::from_secs(3600)).await);
    let calls: Vec<Call> = (0..8).map(call).collect();
    for c in &calls {
        a.insert(c.clone()).await.unwrap();
    }
    let steps = [
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
    ];
    let mut tasks = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        for round in 0..4 {
            for (seq, status) in steps.iter().enumerate() {
                let store = if (i + round + seq) % 2 == 0 {
                    a.clone()
                } else {
                    b.clone()
                };
                let id = c.id.clone();
                let status = *status;
                tasks.push(tokio::spawn(async move {
                    let u = update(status, seq as u64 + 1);
                    let (after, applied) = store
                        .update(&id, &mut |call: &mut Call| call.apply(&u, Utc::now()))
                        .await
                        .unwrap()
                        .unwrap();
                    (id, status, after, applied)
                }));
            }
        }
    }
    let mut applied_steps = std::collections::HashMap::new();
    for t in tasks {
        let (id, status, after, applied) = t.await.unwrap();
        assert!(after.status.rank() >= status.rank() || applied == Applied::Ignored);
        if applied != Applied::Ignored {
            *applied_steps.entry((id, after.status)).or_insert(0) += 1;
        }
    }
    for c in &calls {
        let stored = a.get(&c.id).await.unwrap().unwrap();
        assert_eq!(stored.status, CallStatus::Completed);
        let ranks: Vec<u8> = stored.history.iter().map(|(s, _)| s.rank()).collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "monotonic: {ranks:?}"
        );
        assert_eq!(
            applied_steps.get(&(c.id.clone(), CallStatus::Completed)),
            Some(&1),
            "the final status applied once"
        );
    }
    // A status applied once per call, each status once at most across all calls' steps.
    assert!(applied_steps.values().all(|n| *n == 1), "{applied_steps:?}");
    let stats = b.stats(Utc::now()).await.unwrap();
    assert_eq!(stats.total, 8);
    assert_eq!(stats.active, 0);
    assert_eq!(stats.by_status.get("completed"), Some(&8));
    assert_eq!(stats.by_status.len(), 1, "{:?}", stats.by_status);
}

/// Two apps on one Redis: a call placed on A (the simulator, chaos on: every callback twice,
/// shuffled) is seen by B, ends the same on both, and shows in B's list and stats.
#[tokio::test]
async fn two_apps_on_one_redis_see_the_same_calls() {
    use crate::support::{TestApp, settings};
    let Some(test) = TestRedis::get("redis store two apps") else {
        return;
    };
    let mut s = test.settings(settings());
    s.simulator.chaos = true;
    let a = TestApp::spawn(s.clone()).await;
    let b = TestApp::spawn(s).await;
    let id = a.place("call +91 98765 43219").await;
    let on_b = b.wait_final(&id).await;
    assert_eq!(on_b.status, CallStatus::Completed);
    assert_eq!(on_b.duration_secs, Some(11));
    assert_eq!(a.call(&id).await, on_b);
    let listed: serde_json::Value = b
        .http
        .get(format!("{}/api/calls", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(id.as_str()), "{listed}");
    let stats = b.service.stats().await.unwrap();
    assert_eq!((stats.total, stats.active), (1, 0));
}

/// A signed Twilio status callback for `id`, signed for the shared public URL (the load
/// balancer) and delivered to one instance's own address.
async fn callback_to(
    http: &reqwest::Client,
    instance: &str,
    public_url: &str,
    id: &callbot::core::call::CallId,
    form: &[(String, String)],
) -> u16 {
    let path = format!("/webhooks/status?call_id={id}");
    let signature = callbot::telephony::twilio::signature::sign(
        crate::support::AUTH_TOKEN,
        &format!("{public_url}{path}"),
        form,
    );
    http.post(format!("{instance}{path}"))
        .header("X-Twilio-Signature", signature)
        .form(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Two instances behind one public URL: a call accepted on A, its Twilio callbacks (signed,
/// repeated, shuffled) delivered alternately to A and B, ends with the same final status on
/// both, applied once.
#[tokio::test]
async fn callbacks_split_between_two_instances_end_the_same_on_both() {
    use crate::support::{FakeTwilio, QUIET, TestApp, twilio_settings};
    use rand::seq::SliceRandom as _;
    let Some(test) = TestRedis::get("redis store callbacks on two instances") else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let public = "http://callbot-lb.test";
    let mut s = test.settings(twilio_settings(&twilio));
    s.server.public_url = Some(public.to_owned());
    let a = TestApp::spawn(s.clone()).await;
    let b = TestApp::spawn(s).await;
    let mut events_a = a.service.subscribe();
    let mut events_b = b.service.subscribe();
    let id = a.place("call +91 98765 43210").await;
    let create = twilio.wait_creates(1).await.remove(0);
    assert_eq!(
        create.get("StatusCallback"),
        Some(format!("{public}/webhooks/status?call_id={id}").as_str())
    );
    let mut forms = vec![
        twilio.callback(&create, "initiated", 0, &[]),
        twilio.callback(&create, "ringing", 1, &[]),
        twilio.callback(&create, "in-progress", 2, &[]),
        twilio.callback(&create, "completed", 3, &[("CallDuration", "42")]),
    ];
    forms.extend(forms.clone());
    forms.shuffle(&mut rand::rng());
    // Concurrently, alternating instances: the compare-and-set sorts them out.
    let sent = futures::future::join_all(forms.iter().enumerate().map(|(i, form)| {
        let to = if i % 2 == 0 { &a.base } else { &b.base };
        callback_to(&a.http, to, public, &id, form)
    }))
    .await;
    assert!(sent.iter().all(|s| *s == 200), "{sent:?}");
    let on_a = a.wait_final(&id).await;
    let on_b = b.wait_final(&id).await;
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.status, CallStatus::Completed);
    assert_eq!(on_a.duration_secs, Some(42));
    let visited: Vec<CallStatus> = on_a.history.iter().map(|(s, _)| *s).collect();
    assert!(
        visited.windows(2).all(|w| w[0].rank() < w[1].rank()),
        "{visited:?}"
    );
    // The final status was applied once, on one of the two (each bus also carries the
    // other's events, marked remote).
    let (finals_a, finals_b) = tokio::join!(
        count_finals(&mut events_a, &id, QUIET),
        count_finals(&mut events_b, &id, QUIET)
    );
    assert_eq!(
        finals_a + finals_b,
        1,
        "one final in all: {finals_a} on A, {finals_b} on B"
    );
    assert_eq!(twilio.creates().len(), 1);
}

async fn count_finals(
    events: &mut tokio::sync::broadcast::Receiver<callbot::calls::CallEvent>,
    id: &callbot::core::call::CallId,
    window: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut finals = 0;
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        // Applied here, not another instance's event brought over by the bridge.
        if ev.call.id == *id && ev.kind == callbot::calls::EventKind::Final && !ev.remote {
            finals += 1;
        }
    }
    finals
}

/// Redis goes away mid-run (a proxy between callbot and Redis is cut) and comes back: while it
/// is away `/healthz` says so, new requests are refused with a clear reason (nothing is
/// accepted and lost), Twilio's callbacks get 503 so that they are retried; nothing panics,
/// and once it is back the same app finishes the call and places new ones.
#[tokio::test]
async fn redis_going_away_gives_clear_errors_and_the_run_resumes() {
    use crate::support::redis_proxy::RedisProxy;
    use crate::support::{FakeTwilio, TestApp, twilio_settings, until};
    let Some(test) = TestRedis::get("redis going away") else {
        return;
    };
    let proxy = RedisProxy::start(&test.url).await;
    let twilio = FakeTwilio::start().await;
    let mut s = test.settings(twilio_settings(&twilio));
    s.store.redis_url = Some(proxy.url.clone().into());
    let app = TestApp::spawn(s).await;
    let health = async || {
        let res = app
            .http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    assert_eq!(health().await.0, 200);
    let id = app.place("call +91 98765 43210").await;
    let create = twilio.wait_creates(1).await.remove(0);
    app.wait_for(&id, Duration::from_secs(10), |c| c.sid.is_some())
        .await;

    proxy.cut();
    until(
        Duration::from_secs(10),
        "/healthz reports Redis down",
        async || {
            let (status, body) = health().await;
            status == 503 && body.contains("redis: unreachable")
        },
    )
    .await;
    let (status, body) = app.prompt("call +91 98765 43211").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"],
        callbot::core::replies::not_recorded(),
        "a clear reason, and nothing accepted"
    );
    let ringing = twilio.callback(&create, "ringing", 1, &[]);
    assert_eq!(
        twilio.send_callback(&create, &ringing).await,
        503,
        "Twilio is asked to retry"
    );
    let listed = app
        .http
        .get(format!("{}/api/calls", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 503);
    assert_eq!(
        twilio.creates().len(),
        1,
        "nothing placed while Redis is away"
    );

    proxy.restore();
    until(Duration::from_secs(10), "/healthz recovers", async || {
        health().await.0 == 200
    })
    .await;
    // Twilio's retry of the refused callback, then the rest of the call.
    assert_eq!(twilio.send_callback(&create, &ringing).await, 200);
    let done = twilio.callback(&create, "completed", 3, &[("CallDuration", "9")]);
    assert_eq!(twilio.send_callback(&create, &done).await, 200);
    let call = app.wait_final(&id).await;
    assert_eq!(call.status, CallStatus::Completed);
    assert!(call.history.iter().any(|(s, _)| *s == CallStatus::Ringing));
    // New requests are taken again.
    let next = app.place("call +91 98765 43212").await;
    let second = twilio.wait_creates(2).await.remove(1);
    twilio.complete_shuffled(&second, 5).await;
    assert_eq!(app.wait_final(&next).await.status, CallStatus::Completed);
}
