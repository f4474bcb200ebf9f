//! [`Pacer`] on Redis: `calls.cps` for every instance on one provider account together.
//!
//! `{p}:pace:<account>` holds the theoretical arrival time of the next create (GCRA, in µs of
//! Redis `TIME`, the one clock all instances share). [`GCRA`] answers 0 (go, counted) or how
//! long to wait; the pacer sleeps that long and asks again, so whichever instance asks first
//! after the wait takes the slot. Same burst rule as the local pacer
//! ([`crate::calls::pacing::burst`]); the key expires a second after its time has passed, so
//! an account idle for longer starts again with the spare cell taken.

use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use super::Redis;
use crate::calls::pacing::{Pacer, burst, period};

/// KEYS: the account's pace key. ARGV: period (µs), burst tolerance (µs: spare cells × period),
/// how long the key outlives its time (µs).
const GCRA: &str = r"
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
if now < tat - tolerance then
  return tat - tolerance - now
end
tat = tat + period
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now + tonumber(ARGV[3])) / 1000))
return 0
";

/// How long the pace key outlives its time. A dialer that wakes late finds the key and
/// catches up (within the burst); after an idle spell longer than this the next create
/// starts afresh, with the spare cell taken.
const IDLE: Duration = Duration::from_secs(1);

/// Where the burst is one (below 10 CPS), a create may still go this fraction of a period
/// early (1/50: 2 %, 4 ms at CPS 5). Each create is asked for after a sleep that ends late
/// (timer rounding, the round trip to Redis); without this each lateness pushed the schedule
/// back (−1.1 % at CPS 5 with three instances on a loaded machine). Two creates are still
/// never closer than 98 % of a period.
const STRICT_EARLY: u64 = 50;

/// How long to wait before asking again when Redis does not answer.
const UNREACHABLE_WAIT: Duration = Duration::from_millis(500);

pub struct RedisPacer {
    redis: Redis,
    key: String,
    period_us: u64,
    tolerance_us: u64,
    gcra: redis::Script,
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
            tolerance_us: match burst(cps).get() {
                1 => period_us / STRICT_EARLY,
                burst => period_us * u64::from(burst - 1),
            },
            gcra: redis::Script::new(GCRA),
        }
    }
}

#[async_trait]
impl Pacer for RedisPacer {
    async fn ready(&self) {
        loop {
            let answer: redis::RedisResult<u64> = self
                .gcra
                .key(&self.key)
                .arg(self.period_us)
                .arg(self.tolerance_us)
                .arg(u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX))
                .invoke_async(&mut self.redis.conn())
                .await;
            match answer {
                Ok(0) => return,
                Ok(wait) => tokio::time::sleep(Duration::from_micros(wait)).await,
                Err(e) => {
                    warn!(error = %e, "dial pacing: Redis does not answer; waiting");
                    tokio::time::sleep(UNREACHABLE_WAIT).await;
                }
            }
        }
    }
}
