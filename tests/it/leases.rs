//! Leases on Redis: one holder at a time, renewed by it, taken over when it stops renewing.

use std::time::Duration;

use callbot::calls::lease::Leases;
use callbot::shared::Redis;
use callbot::shared::lease::RedisLeases;

use crate::support::redis::TestRedis;

#[tokio::test]
async fn one_holder_at_a_time_and_a_takeover_after_the_ttl() {
    let Some(test) = TestRedis::get("leases") else {
        return;
    };
    let a = RedisLeases::new(Redis::connect(&test.url, &test.prefix).await.unwrap());
    let b = RedisLeases::new(Redis::connect(&test.url, &test.prefix).await.unwrap());
    let ttl = Duration::from_millis(300);
    assert!(a.hold("job", ttl).await.unwrap(), "a free lease is taken");
    assert!(!b.hold("job", ttl).await.unwrap(), "a held lease is not");
    // a renews it for longer than its first ttl: b still does not get it.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.hold("job", ttl).await.unwrap(), "the holder renews");
        assert!(!b.hold("job", ttl).await.unwrap());
    }
    // a stops renewing (dies): b takes it within the ttl.
    let start = tokio::time::Instant::now();
    while !b.hold("job", ttl).await.unwrap() {
        assert!(
            start.elapsed() < ttl * 2,
            "b took over within the lease time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!a.hold("job", ttl).await.unwrap(), "a lost it");
    // A release hands it over at once.
    b.release("job").await.unwrap();
    assert!(a.hold("job", ttl).await.unwrap());
    // Another name is another lease.
    assert!(b.hold("other", ttl).await.unwrap());
}
