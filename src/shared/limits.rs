//! [`Ledger`] on Redis: usage limits counted for every instance together.
//!
//! Keys (sorted sets; score: microseconds of Redis `TIME`, member: the call id):
//! `{p}:usage:user:<platform>:<requester>`, `{p}:usage:dest:<E.164>`, `{p}:usage:all` (every
//! request, for the global caps) and `{p}:usage:live` (calls not ended). Checking and counting
//! is one script ([`ADMIT`]), so two instances admitting at once never both take the last
//! place under a cap. Every write trims what has left the longest window (a day) and sets the
//! key to expire a day after it, so keys do not outlive their use.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use super::Redis;
use crate::calls::store::StoreError;
use crate::calls::usage::{Admission, Admitted, Claim, Ledger};
use crate::core::policy::{LONGEST_WINDOW, Limit, Limits, has_quota, requester_key};

/// Checks the live set, then each window in the order given, and counts the call in all of
/// them when none is full. Returns `{0, now, live}` when admitted, or `{i, wait}`: check `i`
/// (1 is the live set, then the windows) refused, and the oldest entry that must leave its
/// window before one more fits does so in `wait` µs.
///
/// KEYS: the live set, then the windows' keys. ARGV: call id, how long entries are kept (µs),
/// the live cap, then per window: its key's index in KEYS, its cap, its span (µs).
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local keep = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {1, 0}
end
for i = 4, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local cap = tonumber(ARGV[i + 1])
  local span = tonumber(ARGV[i + 2])
  local check = (i - 1) / 3 + 1
  if cap == 0 then
    return {check, span}
  end
  if redis.call('ZCOUNT', key, now - span + 1, '+inf') >= cap then
    local oldest = redis.call('ZRANGE', key, -cap, -cap, 'WITHSCORES')
    return {check, tonumber(oldest[2]) + span - now}
  end
end
for k = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now - keep)
  redis.call('ZADD', KEYS[k], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[k], math.floor(keep / 1000))
end
return {0, now, redis.call('ZCARD', KEYS[1])}
";

pub struct RedisLedger {
    redis: Redis,
    admit: redis::Script,
}

impl RedisLedger {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            admit: redis::Script::new(ADMIT),
        }
    }

    fn live_key(&self) -> String {
        self.redis.key("usage:live")
    }

    /// The windows a claim is counted in, with the limits checked on each, in
    /// the order [`Limit`] lists them in; the operator's own ways in have no per-requester window.
    fn windows(&self, claim: &Claim<'_>) -> Vec<(String, &'static [Limit])> {
        let mut windows = Vec::with_capacity(3);
        if has_quota(claim.origin) {
            windows.push((
                self.redis
                    .key(&format!("usage:user:{}", requester_key(claim.origin))),
                &[Limit::UserHour, Limit::UserDay][..],
            ));
        }
        windows.push((
            self.redis.key("usage:all"),
            &[Limit::GlobalHour, Limit::GlobalDay][..],
        ));
        windows.push((
            self.redis.key(&format!("usage:dest:{}", claim.to.e164())),
            &[Limit::Destination][..],
        ));
        windows
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn micros(d: Duration) -> i64 {
    d.num_microseconds().unwrap_or(i64::MAX)
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn admit(&self, limits: &Limits, claim: &Claim<'_>) -> Result<Admission, StoreError> {
        let windows = self.windows(claim);
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(self.live_key())
            .arg(claim.call_id)
            .arg(micros(LONGEST_WINDOW))
            .arg(limits.cap(Limit::Concurrent));
        // Which limit each check of the script is, 1-based as it answers.
        let mut checks = vec![Limit::Concurrent];
        for (i, (key, window_limits)) in windows.into_iter().enumerate() {
            invocation.key(key);
            for &limit in window_limits {
                invocation
                    .arg(i + 2)
                    .arg(limits.cap(limit))
                    .arg(micros(limit.window()));
                checks.push(limit);
            }
        }
        let answer: Vec<i64> = invocation
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        match answer[..] {
            [0, now, live] => Ok(Admission::Admitted(Admitted {
                at: DateTime::<Utc>::from_timestamp_micros(now).unwrap_or_else(Utc::now),
                live: usize::try_from(live).unwrap_or(0),
            })),
            [check, wait, ..] => {
                let limit = usize::try_from(check - 1)
                    .ok()
                    .and_then(|i| checks.get(i).copied())
                    .ok_or_else(|| StoreError(format!("redis: unexpected answer {answer:?}")))?;
                Ok(Admission::Refused(limits.refusal(
                    limit,
                    claim.to,
                    Duration::microseconds(wait),
                )))
            }
            _ => Err(StoreError(format!("redis: unexpected answer {answer:?}"))),
        }
    }

    async fn take_back(&self, claim: &Claim<'_>, _admitted: &Admitted) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic().zrem(self.live_key(), claim.call_id).ignore();
        for (key, _) in self.windows(claim) {
            pipe.zrem(key, claim.call_id).ignore();
        }
        pipe.query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(store_error)
    }

    async fn ended(&self, call_id: &str) -> Result<usize, StoreError> {
        let key = self.live_key();
        let (live,): (usize,) = redis::pipe()
            .zrem(&key, call_id)
            .ignore()
            .zcard(&key)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(live)
    }

    /// Entries over a day old are trimmed by the next admission, not here: a call that
    /// never ended (its instance lost it) counts until then.
    async fn live(&self) -> Result<usize, StoreError> {
        redis::cmd("ZCARD")
            .arg(self.live_key())
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)
    }
}
