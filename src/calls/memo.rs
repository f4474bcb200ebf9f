//! Memo: the short-lived facts the chat side keeps between two deliveries (which deliveries
//! were already taken, the confirmations waiting for their requester, the model's answers).
//! With several instances they must be one memory, or a Slack retry landing on another
//! instance places a second call and a Confirm pressed on another instance finds nothing.
//!
//! One process keeps them in moka ([`MemoryMemo`], the embedded default); several share one
//! Redis (`shared::memo`). Every entry expires; every key lives in a [`Space`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use super::store::StoreError;

/// What a group of keys remembers. On Redis its keys are `{prefix}:memo:<name>:<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Space {
    pub name: &'static str,
    /// Most entries one process keeps of it (the memory memo; on Redis every key expires).
    pub capacity: u64,
}

#[async_trait]
pub trait Memo: Send + Sync + 'static {
    /// Marks `key` for `ttl`: true for the first to mark it (on every instance together),
    /// false while the mark lasts.
    async fn first(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Keeps `value` under `key` for `ttl`.
    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Replaces the value of `key` only while it is there (a taken key stays taken); true
    /// when it was replaced.
    async fn replace(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes `key` and returns its value: of several takers at once, one gets it.
    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// One process: a moka cache per space, bounded by its capacity, each entry with its own
/// time to live.
#[derive(Default)]
pub struct MemoryMemo {
    spaces: DashMap<&'static str, Cache<String, Entry>>,
}

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

/// Each entry lives for the ttl it was written with.
struct OwnTtl;

impl moka::Expiry<String, Entry> for OwnTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryMemo {
    fn space(&self, space: Space) -> Cache<String, Entry> {
        self.spaces
            .entry(space.name)
            .or_insert_with(|| {
                Cache::builder()
                    .max_capacity(space.capacity)
                    .expire_after(OwnTtl)
                    .build()
            })
            .clone()
    }
}

#[async_trait]
impl Memo for MemoryMemo {
    async fn first(&self, space: Space, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let entry = Entry {
            value: Arc::from([]),
            ttl,
        };
        Ok(self
            .space(space)
            .entry(key.to_owned())
            .or_insert(entry)
            .is_fresh())
    }

    async fn put(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            value: value.into(),
            ttl,
        };
        self.space(space).insert(key.to_owned(), entry);
        Ok(())
    }

    async fn replace(
        &self,
        space: Space,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let entry = Entry {
            value: value.into(),
            ttl,
        };
        let result = self
            .space(space)
            .entry(key.to_owned())
            .and_compute_with(|old| match old {
                Some(_) => Op::Put(entry),
                None => Op::Nop,
            });
        Ok(matches!(result, CompResult::ReplacedWith(_)))
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.space(space).get(key).map(|e| e.value.to_vec()))
    }

    async fn take(&self, space: Space, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.space(space).remove(key).map(|e| e.value.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPACE: Space = Space {
        name: "test",
        capacity: 100,
    };

    #[tokio::test]
    async fn first_take_and_replace_are_once() {
        let memo = MemoryMemo::default();
        let ttl = Duration::from_secs(60);
        assert!(memo.first(SPACE, "a", ttl).await.unwrap());
        assert!(!memo.first(SPACE, "a", ttl).await.unwrap());
        let other = Space {
            name: "other",
            capacity: 10,
        };
        assert!(
            memo.first(other, "a", ttl).await.unwrap(),
            "spaces are apart"
        );

        assert!(!memo.replace(SPACE, "v", b"0".to_vec(), ttl).await.unwrap());
        assert_eq!(memo.get(SPACE, "v").await.unwrap(), None);
        memo.put(SPACE, "v", b"1".to_vec(), ttl).await.unwrap();
        assert!(memo.replace(SPACE, "v", b"2".to_vec(), ttl).await.unwrap());
        assert_eq!(memo.get(SPACE, "v").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(memo.take(SPACE, "v").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(memo.take(SPACE, "v").await.unwrap(), None);
        assert!(!memo.replace(SPACE, "v", b"3".to_vec(), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let memo = MemoryMemo::default();
        memo.put(SPACE, "short", b"x".to_vec(), Duration::from_millis(30))
            .await
            .unwrap();
        memo.put(SPACE, "long", b"y".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(memo.get(SPACE, "short").await.unwrap(), None);
        assert_eq!(memo.get(SPACE, "long").await.unwrap(), Some(b"y".to_vec()));
    }
}
