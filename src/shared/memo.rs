//! [`Memo`] on Redis: `{prefix}:memo:<space>:<key>`, every key written with a time to live.
//! Each operation is one command, atomic on the server: `first` is SET NX, `replace` SET XX,
//! `take` GETDEL (Redis 6.2 or later).

use std::time::Duration;

use async_trait::async_trait;

use super::Redis;
use crate::calls::memo::{Memo, Space};
use crate::calls::store::StoreError;

pub struct RedisMemo {
    redis: Redis,
}

impl RedisMemo {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, space: Space, key: &str) -> String {
        self.redis.key(&format!("memo:{}:{key}", space.name))
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Memo for RedisMemo {
    async fn first(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(space, key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let _: Option<String> = redis::cmd("SET")
            .arg(self.key(space, key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn replace(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(space, key))
            .arg(value)
            .arg("XX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET")
            .arg(self.key(space, key))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)
    }

    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GETDEL")
            .arg(self.key(space, key))
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)
    }
}
