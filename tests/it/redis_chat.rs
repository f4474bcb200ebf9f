//! The chat side shared through Redis: the Memo (dedupe, confirmations, replay guard, the
//! model's answers) and Telegram long polling on one instance at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbot::Settings;
use callbot::calls::memo::{Memo, Space};
use callbot::shared::Redis;
use callbot::shared::memo::RedisMemo;
use serde_json::Value;

use crate::support::fake_telegram::{Chat, FakeTelegram, TOKEN, TgUser};
use crate::support::redis::TestRedis;
use crate::support::{never, settings, until};

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
    assert!(!b.first(SPACE, "delivery-1", ttl).await.unwrap(), "one mark for both instances");
    let other = Space {
        name: "other",
        capacity: 10,
    };
    assert!(b.first(other, "delivery-1", ttl).await.unwrap(), "spaces are apart");

    assert!(!a.replace(SPACE, "nonce", b"0".to_vec(), ttl).await.unwrap(), "nothing to replace");
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
        takes.push(tokio::spawn(
            async move { m.take(SPACE, "contested").await.unwrap() },
        ));
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
    assert!(keys.contains(&test.key("memo:other:delivery-1")), "{keys:?}");
    let mut conn = test.client().get_connection().unwrap();
    for key in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!(pttl > 0 && pttl <= 60_000, "{key} expires (PTTL {pttl})");
    }

    // A short time to live ends.
    a.put(SPACE, "short", b"z".to_vec(), Duration::from_millis(50))
        .await
        .unwrap();
    until(Duration::from_secs(2), "the short entry to expire", async || {
        a.get(SPACE, "short").await.unwrap().is_none()
    })
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
    assert!(twice.is_empty(), "messages answered more than once: {twice:?}");
    assert_eq!(tg.conflicts(), 0, "two getUpdates overlapped (409)");
}

#[tokio::test]
async fn two_instances_poll_telegram_one_at_a_time_and_the_other_takes_over_when_the_leader_dies()
{
    let Some(redis) = TestRedis::get("telegram polling lease") else {
        return;
    };
    let tg = FakeTelegram::start().await;
    let lease = Duration::from_millis(1500);
    let a = poller::spawn(polling_settings(&tg, lease), &redis).await;
    until(Duration::from_secs(5), "the first instance to poll", async || {
        tg.polls() > 0
    })
    .await;
    let b = poller::spawn(polling_settings(&tg, lease), &redis).await;

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

    // The leader dies without a word: the other polls within the lease.
    let killed = Instant::now();
    a.kill();
    let id = message_id(&tg.push(tg.text(Chat::Private, ALICE, "/help")));
    until(
        lease * 2,
        "the other instance to answer after the leader died",
        async || answers(&tg).contains_key(&id),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= lease + lease / 3 + Duration::from_millis(500),
        "taken over in {took:?} (lease {lease:?})"
    );
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
    let a = poller::spawn(polling_settings(&tg, lease), &redis).await;
    until(Duration::from_secs(5), "the first instance to poll", async || {
        tg.polls() > 0
    })
    .await;
    let b = poller::spawn(polling_settings(&tg, lease), &redis).await;
    talk(&tg, 5, Duration::from_secs(10)).await;
    let polls = tg.polls();
    // b does not poll while a holds the lease.
    never(lease / 2, "a second poller while the lease is held", || {
        tg.conflicts() > 0
    })
    .await;
    assert!(tg.polls() <= polls + 2, "one poller: {} polls", tg.polls() - polls);

    let stopped = Instant::now();
    a.stop().await;
    let id = message_id(&tg.push(tg.text(Chat::Private, ALICE, "/help")));
    until(lease, "the other instance to answer", async || {
        answers(&tg).contains_key(&id)
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took < lease / 3 + Duration::from_millis(800),
        "handed over in {took:?}, well within the lease ({lease:?})"
    );
    once_each_and_no_conflict(&tg);
    drop(b);
}

/// The Telegram adapter alone on its own runtime, with the Redis memo and leases: two of them
/// are two instances of the chat side (dropping the runtime is a SIGKILL).
mod poller {
    use std::sync::Arc;
    use std::time::Duration;

    use callbot::Settings;
    use callbot::calls::service::CallDefaults;
    use callbot::calls::{CallService, MemoryStore};
    use callbot::chat::health::Health;
    use callbot::chat::{AdapterContext, Interpreter};
    use callbot::shared::Redis;
    use callbot::shared::lease::RedisLeases;
    use callbot::shared::memo::RedisMemo;
    use callbot::telephony::{PlugContext, simulator};
    use tokio_util::sync::CancellationToken;

    use crate::support::redis::TestRedis;

    pub struct Poller {
        stop: CancellationToken,
        runtime: Option<tokio::runtime::Runtime>,
    }

    pub async fn spawn(settings: Settings, redis: &TestRedis) -> Poller {
        crate::support::init_logs();
        let (url, prefix) = (redis.url.clone(), redis.prefix.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let stop = runtime.block_on(async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let redis = Redis::connect(&url, &prefix).await.unwrap();
                let plug = simulator::plug(
                    &settings.simulator,
                    PlugContext {
                        public_url: "http://127.0.0.1:9",
                        body_limit: settings.server.webhook_body_limit,
                        calls: &settings.calls,
                    },
                );
                let (service, _queue) = CallService::new(
                    Arc::new(MemoryStore::new(1000, Duration::from_secs(3600))),
                    plug.telephony,
                    CallDefaults {
                        from: plug.from,
                        voice: settings.calls.voice.clone(),
                        language: settings.calls.language.clone(),
                        message: settings.calls.default_message.clone(),
                    },
                    settings.policy(),
                    16,
                );
                let stop = CancellationToken::new();
                let ctx = AdapterContext {
                    service,
                    interpreter: Arc::new(Interpreter::new(settings.region())),
                    public_url: "http://127.0.0.1:9".into(),
                    confirm: false,
                    shutdown: stop.clone(),
                    health: Health::new(Duration::from_secs(60)),
                    memory: Arc::new(RedisMemo::new(redis.clone())),
                };
                let _routes = callbot::chat::telegram::start(
                    &settings.telegram,
                    ctx,
                    Arc::new(RedisLeases::new(redis)),
                )
                .await
                .unwrap();
                stop
            });
            let _ = tx.send((runtime, stop));
        });
        let (runtime, stop) = rx.await.unwrap();
        Poller {
            stop,
            runtime: Some(runtime),
        }
    }

    impl Poller {
        /// As SIGKILL: every task dropped where it stands, nothing given up.
        pub fn kill(mut self) {
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }

        /// As SIGTERM: polling stops and gives its lease up.
        pub async fn stop(mut self) {
            self.stop.cancel();
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }

    impl Drop for Poller {
        fn drop(&mut self) {
            self.stop.cancel();
            if let Some(rt) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }
}
