//! The CallStore port and its in-memory backend (moka, bounded, with a TTL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use parking_lot::Mutex;
use serde::Serialize;

use crate::core::call::{Applied, Call, CallId, CallSid, CallStatus, Platform};

#[derive(Debug, thiserror::Error)]
#[error("call store: {0}")]
pub struct StoreError(pub String);

/// Narrows `list` to one platform / chat / requester.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub platform: Option<Platform>,
    pub chat: Option<String>,
    pub requester: Option<String>,
}

impl ListFilter {
    pub fn matches(&self, call: &Call) -> bool {
        self.platform.is_none_or(|p| call.origin.platform == p)
            && self.chat.as_ref().is_none_or(|c| call.origin.chat == c)
            && self
                .requester
                .as_ref()
                .is_none_or(|r| call.origin.requester == r)
    }
}

/// Counts for the console's stats strip and `GET /api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub total: u64,
    pub today: u64,
    pub active: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    /// Completed calls over calls that ended, in percent.
    pub answer_rate: Option<f64>,
    pub average_duration_secs: Option<f64>,
}

impl Stats {
    pub fn from_calls<'a>(calls: impl IntoIterator<Item = &'a Call>, now: DateTime<Utc>) -> Self {
        let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let mut stats = Stats::default();
        let (mut ended, mut completed, mut dur_sum, mut dur_n) = (0u64, 0u64, 0u64, 0u64);
        for call in calls {
            stats.total += 1;
            if call.created_at >= midnight {
                stats.today += 1;
            }
            *stats.by_status.entry(call.status.as_str()).or_default() += 1;
            if call.status.is_terminal() {
                ended += 1;
            } else {
                stats.active += 1;
            }
            if call.status == CallStatus::Completed {
                completed += 1;
                if let Some(d) = call.duration_secs {
                    dur_sum += u64::from(d);
                    dur_n += 1;
                }
            }
        }
        stats.answer_rate = (ended > 0).then(|| completed as f64 * 100.0 / ended as f64);
        stats.average_duration_secs = (dur_n > 0).then(|| dur_sum as f64 / dur_n as f64);
        stats
    }
}

/// A change applied by [`CallStore::update`]: `FnMut` so a backend may retry it on conflict.
pub type Mutation<'a> = &'a mut (dyn FnMut(&mut Call) -> Applied + Send);

#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    async fn insert(&self, call: Call) -> Result<(), StoreError>;
    async fn get(&self, id: &CallId) -> Result<Option<Call>, StoreError>;
    /// The call with this provider sid, while it is live (ended calls leave the index).
    async fn find_by_sid(&self, sid: &CallSid) -> Result<Option<CallId>, StoreError>;
    /// Applies `change` atomically. `None` when the call is unknown; otherwise the call after
    /// the change and what the change did (nothing is written when it did nothing).
    async fn update(
        &self,
        id: &CallId,
        change: Mutation<'_>,
    ) -> Result<Option<(Call, Applied)>, StoreError>;
    /// Newest first.
    async fn list(&self, limit: usize, filter: &ListFilter) -> Result<Vec<Call>, StoreError>;
    async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError>;
}

/// Calls in this process. Ended calls live in a moka cache bounded by count and forgotten
/// after `ttl` idle; live calls (queued, ringing, talking) are kept apart and never evicted:
/// losing one would lose its callbacks, its TwiML and its outcome message. Their number is
/// bounded by the dialer's queue and `limits.max_concurrent`. A call moves to the bounded
/// cache when it ends.
///
/// The sid index holds live calls only: callbacks find their call by the id in our callback
/// URL, and the index is the fallback for the few without it. A call leaves the index when
/// it ends, which halves the per-call cost of history (BENCHMARKS.md, memory).
pub struct MemoryStore {
    live: Cache<CallId, Arc<Mutex<Call>>>,
    ended: Cache<CallId, Arc<Mutex<Call>>>,
    by_sid: Cache<CallSid, CallId>,
}

impl MemoryStore {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            live: Cache::builder().build(),
            ended: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build(),
            by_sid: Cache::builder().build(),
        }
    }

    fn cell(&self, id: &CallId) -> Option<Arc<Mutex<Call>>> {
        self.live.get(id).or_else(|| self.ended.get(id))
    }

    /// Every call once (one that is moving from live to ended is in both for a moment).
    fn cells(&self) -> impl Iterator<Item = Arc<Mutex<Call>>> + '_ {
        let live: std::collections::HashSet<CallId> =
            self.live.iter().map(|(id, _)| (*id).clone()).collect();
        self.live.iter().map(|(_, c)| c).chain(
            self.ended
                .iter()
                .filter(move |(id, _)| !live.contains(&**id))
                .map(|(_, c)| c),
        )
    }

    fn snapshot(&self) -> Vec<Call> {
        self.cells().map(|c| c.lock().clone()).collect()
    }
}

#[async_trait]
impl CallStore for MemoryStore {
    async fn insert(&self, call: Call) -> Result<(), StoreError> {
        let id = call.id.clone();
        if call.status.is_terminal() {
            self.ended.insert(id, Arc::new(Mutex::new(call)));
        } else {
            if let Some(sid) = &call.sid {
                self.by_sid.insert(sid.clone(), id.clone());
            }
            self.live.insert(id, Arc::new(Mutex::new(call)));
        }
        Ok(())
    }

    async fn get(&self, id: &CallId) -> Result<Option<Call>, StoreError> {
        Ok(self.cell(id).map(|c| c.lock().clone()))
    }

    async fn find_by_sid(&self, sid: &CallSid) -> Result<Option<CallId>, StoreError> {
        Ok(self.by_sid.get(sid))
    }

    async fn update(
        &self,
        id: &CallId,
        change: Mutation<'_>,
    ) -> Result<Option<(Call, Applied)>, StoreError> {
        let Some(cell) = self.cell(id) else {
            return Ok(None);
        };
        let (call, applied, new_sid) = {
            let mut call = cell.lock();
            let had_sid = call.sid.is_some();
            let applied = change(&mut call);
            let new_sid = if had_sid { None } else { call.sid.clone() };
            (call.clone(), applied, new_sid)
        };
        if call.status.is_terminal() {
            if let Some(sid) = &call.sid {
                self.by_sid.invalidate(sid);
            }
            if self.live.contains_key(id) {
                // Into the bounded cache first, so a reader always finds it somewhere.
                self.ended.insert(id.clone(), cell);
                self.live.invalidate(id);
            }
        } else if let Some(sid) = new_sid {
            self.by_sid.insert(sid, id.clone());
        }
        Ok(Some((call, applied)))
    }

    async fn list(&self, limit: usize, filter: &ListFilter) -> Result<Vec<Call>, StoreError> {
        let mut calls: Vec<Call> = self
            .cells()
            .filter_map(|c| {
                let c = c.lock();
                filter.matches(&c).then(|| c.clone())
            })
            .collect();
        calls.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        calls.truncate(limit);
        Ok(calls)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        Ok(Stats::from_calls(&self.snapshot(), now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::call::{Origin, Platform, StatusUpdate};
    use crate::core::phone::PhoneNumber;

    fn call(n: u32) -> Call {
        Call::new(
            PhoneNumber::from_e164(&format!("+91987650{n:04}")).unwrap(),
            "+15005550006",
            "hello".into(),
            "alice",
            "en-US",
            Origin::new(Platform::Web, "web"),
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn live_calls_are_never_evicted_and_ended_ones_are_bounded() {
        let store = MemoryStore::new(10, Duration::from_secs(3600));
        let calls: Vec<Call> = (0..200).map(call).collect();
        for c in &calls {
            store.insert(c.clone()).await.unwrap();
        }
        store.live.run_pending_tasks();
        store.ended.run_pending_tasks();
        for c in &calls {
            assert!(
                store.get(&c.id).await.unwrap().is_some(),
                "a live call is kept"
            );
        }
        assert_eq!(
            store
                .list(1000, &ListFilter::default())
                .await
                .unwrap()
                .len(),
            200
        );
        let done = StatusUpdate {
            status: Some(CallStatus::Completed),
            duration_secs: Some(3),
            ..StatusUpdate::default()
        };
        for c in &calls {
            let ended = store
                .update(&c.id, &mut |call: &mut Call| call.apply(&done, Utc::now()))
                .await
                .unwrap()
                .unwrap()
                .0;
            assert!(ended.status.is_terminal());
        }
        store.live.run_pending_tasks();
        store.ended.run_pending_tasks();
        assert_eq!(store.live.entry_count(), 0);
        let kept = store
            .list(1000, &ListFilter::default())
            .await
            .unwrap()
            .len();
        assert!(
            kept <= 10,
            "ended calls are bounded by the capacity: {kept}"
        );
    }
}
