//! [`Pacer`] on Redis: `calls.cps` for every instance on one provider account together.
//!
//! `{p}:pace:<account>` holds the theoretical arrival time of the next create (GCRA, in µs of
//! Redis `TIME`, the one clock all instances share). [`BOOK`] books the next free slot and
//! answers how long until it comes (0: now); the dialer sleeps that long and dials. Booking
//! rather than asking again after the sleep means a dialer that wakes late (timer rounding, a
//! loaded host) delays only its own create: the schedule holds as long as it books its next
//! slot within the burst's slack. Same burst rule as the local pacer
//! ([`crate::calls::pacing::burst`]); the key outlives its time by [`IDLE`], so an account
//! idle for longer starts again with the spare cell taken.

use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use super::Redis;
use crate::calls::pacing::{Pacer, burst, period};

/// KEYS: the account's pace key. ARGV: period (µs), burst tolerance (µs: spare cells × period),
/// how long the key outlives its time (µs). Returns the µs until the booked slot.
const BOOK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat
if stored then
  tat = math.max(tonumber(stored), now)
else
  tat = now + tolerance
end
local slot = math.max(tat - tolerance, now)
tat = tat + period
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now + tonumber(ARGV[3])) / 1000))
return slot - now
";

/// How long the pace key outlives its time: after an idle spell longer than this the next
/// create starts afresh, with the spare cell taken (no two creates back to back).
const IDLE: Duration = Duration::from_secs(1);

/// How long to wait before asking again when Redis does not answer.
const UNREACHABLE_WAIT: Duration = Duration::from_millis(500);

pub struct RedisPacer {
    redis: Redis,
    key: String,
    period_us: u64,
    tolerance_us: u64,
    book: redis::Script,
}

impl RedisPacer {
    /// `account`: the provider account the rate belongs to (a Twilio Account SID, or
    /// "simulator").
    pub fn new(redis: Redis, account: &str, cps: u32) -> Self {
        let period_us = u64::try_from(period(cps).as_micros()).unwrap_or(u64::MAX);
        Self {
            key: redis.key(&format!("pace:{account}")),
            redis,
            period_us,
            tolerance_us: period_us * u64::from(burst(cps).get() - 1),
            book: redis::Script::new(BOOK),
        }
    }
}

#[async_trait]
impl Pacer for RedisPacer {
    async fn ready(&self) {
        loop {
            let answer: redis::RedisResult<u64> = self
                .book
                .key(&self.key)
                .arg(self.period_us)
                .arg(self.tolerance_us)
                .arg(u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX))
                .invoke_async(&mut self.redis.conn())
                .await;
            match answer {
                Ok(0) => return,
                Ok(wait) => {
                    tokio::time::sleep(Duration::from_micros(wait)).await;
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "dial pacing: Redis does not answer; waiting");
                    tokio::time::sleep(UNREACHABLE_WAIT).await;
                }
            }
        }
    }
}
