//! [`Leases`] on Redis: `{prefix}:lease:<name>` holds the holder's instance name with a time to
//! live. Taking and renewing is one script, so two instances never both hold it.

use std::time::Duration;

use async_trait::async_trait;

use super::Redis;
use crate::calls::lease::Leases;
use crate::calls::store::StoreError;

/// Renews when held by us, takes when free; 1 when we hold it afterwards.
const HOLD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisLeases {
    redis: Redis,
    hold: redis::Script,
    release: redis::Script,
}

impl RedisLeases {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            hold: redis::Script::new(HOLD),
            release: redis::Script::new(RELEASE),
        }
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

#[async_trait]
impl Leases for RedisLeases {
    async fn hold(&self, name: &str, ttl: Duration) -> Result<bool, StoreError> {
        let held: i64 = self
            .hold
            .key(self.redis.key(&format!("lease:{name}")))
            .arg(self.redis.instance())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(held == 1)
    }

    async fn release(&self, name: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .release
            .key(self.redis.key(&format!("lease:{name}")))
            .arg(self.redis.instance())
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
