//! [`Memo`] on Redis: `{prefix}:memo:<space>:<key>`, every key written with a time to live.
//! Each operation is one command, atomic on the server: `first` is SET NX GET (Redis 7), `replace` SET XX,
//! `take` GETDEL.

use std::time::Duration;

use async_trait::async_trait;

use super::Redis;
use crate::calls::memo::{Memo, Space};
use crate::calls::store::StoreError;

/// Tries of `first` when Redis's reply does not come.
const FIRST_TRIES: u64 = 3;

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
    /// `SET key <token> NX GET`: nil when this call set it. A try whose reply was lost (a
    /// timeout, a dropped connection) is tried again with the same token, and finding its own
    /// token means the lost try had won: a delivery is never taken for its own duplicate.
    async fn first(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key(space, key);
        let token = format!("{:016x}", rand::random::<u64>());
        let mut tries = 0;
        loop {
            tries += 1;
            let before: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut self.redis.conn())
                .await;
            match before {
                Ok(None) => return Ok(true),
                Ok(Some(held)) => return Ok(held == token),
                Err(e)
                    if tries < FIRST_TRIES
                        && (e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) =>
                {
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                Err(e) => return Err(store_error(e)),
            }
        }
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
