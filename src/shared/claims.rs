//! [`Claims`] on Redis: `{prefix}:claim:<call>:<step>` is set once (`SET NX`), by the instance
//! that does the step, and kept for the time it is given (a day: see `app::shared_follow`).

use std::time::Duration;

use async_trait::async_trait;

use super::Redis;
use crate::calls::claims::Claims;
use crate::calls::store::StoreError;
use crate::core::call::CallId;

pub struct RedisClaims {
    redis: Redis,
    ttl: Duration,
}

impl RedisClaims {
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self { redis, ttl }
    }
}

#[async_trait]
impl Claims for RedisClaims {
    async fn claim_step(&self, call: &CallId, step: &str) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.redis.key(&format!("claim:{call}:{step}")))
            .arg(self.redis.instance())
            .arg("NX")
            .arg("PX")
            .arg(
                u64::try_from(self.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| StoreError(format!("redis: {e}")))?;
        Ok(set.is_some())
    }
}
