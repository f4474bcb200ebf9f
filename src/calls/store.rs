//! The CallStore port and its in-memory backend (live calls in a DashMap; ended ones in moka,
//! bounded, with a TTL).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use moka::sync::Cache;
use parking_lot::Mutex;
use serde::Serialize;

use crate::core::call::{Applied, Call, CallId, CallSid, CallStatus, Platform};

#[derive(Debug, thiserror::Error)]
#[error("call store: {0}")]
pub struct StoreError(pub String);

/// Narrows `list` to one platform / chat / requester, or to calls still in progress.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub platform: Option<Platform>,
    /// The team (Slack workspace) the call was asked from: a channel shared between
    /// workspaces holds the calls of each.
    pub team: Option<String>,
    pub chat: Option<String>,
    /// The thread the call was asked from (a Telegram forum topic).
    pub thread: Option<String>,
    pub requester: Option<String>,
    /// Only calls without a final status (the reaper's question; a store can answer it
    /// without reading its history).
    pub live_only: bool,
}

impl ListFilter {
    pub fn matches(&self, call: &Call) -> bool {
        !(self.live_only && call.status.is_terminal())
            && self.platform.is_none_or(|p| call.origin.platform == p)
            && self.chat.as_ref().is_none_or(|c| call.origin.chat == c)
            && self
                .team
                .as_deref()
                .is_none_or(|t| call.origin.team.as_deref() == Some(t))
            && self
                .thread
                .as_deref()
                .is_none_or(|t| call.origin.thread.as_deref() == Some(t))
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
        let mut tally = Tally::new(now);
        for call in calls {
            tally.add(call);
        }
        tally.finish()
    }
}

/// [`Stats`] counted one call at a time, so a store can count under its own locks without
/// copying every call.
pub struct Tally {
    stats: Stats,
    midnight: DateTime<Utc>,
    ended: u64,
    completed: u64,
    duration_sum: u64,
    durations: u64,
}

impl Tally {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            stats: Stats::default(),
            midnight: now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc(),
            ended: 0,
            completed: 0,
            duration_sum: 0,
            durations: 0,
        }
    }

    pub fn add(&mut self, call: &Call) {
        let stats = &mut self.stats;
        stats.total += 1;
        if call.created_at >= self.midnight {
            stats.today += 1;
        }
        *stats.by_status.entry(call.status.as_str()).or_default() += 1;
        if call.status.is_terminal() {
            self.ended += 1;
        } else {
            stats.active += 1;
        }
        if call.status == CallStatus::Completed {
            self.completed += 1;
            if let Some(d) = call.duration_secs {
                self.duration_sum += u64::from(d);
                self.durations += 1;
            }
        }
    }

    pub fn finish(self) -> Stats {
        let mut stats = self.stats;
        stats.answer_rate =
            (self.ended > 0).then(|| self.completed as f64 * 100.0 / self.ended as f64);
        stats.average_duration_secs =
            (self.durations > 0).then(|| self.duration_sum as f64 / self.durations as f64);
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

/// Calls in this process. Live calls (queued, ringing, talking) are kept in a DashMap and
/// never evicted: losing one would lose its callbacks, what the call says and its outcome message.
/// Their number is bounded by the dialer's queue and `limits.max_concurrent`. A call moves
/// to a moka cache bounded by count, and forgotten after `ttl` idle, when it ends.
///
/// Every status callback reads and writes a live call, so that side is a plain sharded map:
/// an unbounded moka cache did the same job with read recording, housekeeping and bucket
/// rehashing on the callback path (BENCHMARKS.md, callbacks).
///
/// The sid index holds live calls only: callbacks find their call by the id in our callback
/// URL, and the index is the fallback for the few without it. A call leaves the index when
/// it ends, which halves the per-call cost of history (BENCHMARKS.md, memory).
pub struct MemoryStore {
    live: DashMap<CallId, Arc<Mutex<Call>>>,
    ended: Cache<CallId, Arc<Mutex<Call>>>,
    by_sid: DashMap<CallSid, CallId>,
}

impl MemoryStore {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            live: DashMap::new(),
            ended: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build(),
            by_sid: DashMap::new(),
        }
    }

    fn cell(&self, id: &CallId) -> Option<Arc<Mutex<Call>>> {
        // The guard is dropped before the ended cache is read. A miss there is asked with
        // `contains_key`, which moka does not count as a read: a flood of callbacks for calls
        // this instance never knew (after a restart) records nothing and runs no upkeep.
        let live = self.live.get(id).map(|c| c.value().clone());
        live.or_else(|| {
            if self.ended.contains_key(id) {
                self.ended.get(id)
            } else {
                None
            }
        })
    }

    /// Every call once (one that is moving from live to ended is in both for a moment).
    /// With `live_only`, the live calls alone: the history is not read.
    fn cells(&self, live_only: bool) -> impl Iterator<Item = Arc<Mutex<Call>>> + '_ {
        let live: Vec<Arc<Mutex<Call>>> = self.live.iter().map(|e| e.value().clone()).collect();
        // A call that ends meanwhile moves its cell, so the cell is what is compared.
        let seen: std::collections::HashSet<*const Mutex<Call>> =
            live.iter().map(Arc::as_ptr).collect();
        let ended = (!live_only).then(move || {
            self.ended
                .iter()
                .filter(move |(_, c)| !seen.contains(&Arc::as_ptr(c)))
                .map(|(_, c)| c)
        });
        live.into_iter().chain(ended.into_iter().flatten())
    }
}

/// A cell ordered by its call's creation time, then by when it was seen (so two equal times
/// never compare the cells).
struct ByCreation {
    created: DateTime<Utc>,
    seq: usize,
    cell: Arc<Mutex<Call>>,
}

impl PartialEq for ByCreation {
    fn eq(&self, other: &Self) -> bool {
        (self.created, self.seq) == (other.created, other.seq)
    }
}

impl Eq for ByCreation {}

impl PartialOrd for ByCreation {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByCreation {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.created, Reverse(self.seq)).cmp(&(other.created, Reverse(other.seq)))
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
        Ok(self.by_sid.get(sid).map(|id| id.value().clone()))
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
                self.by_sid.remove(sid);
            }
            if self.live.contains_key(id) {
                // Into the bounded cache first, so a reader always finds it somewhere.
                self.ended.insert(id.clone(), cell);
                self.live.remove(id);
            }
        } else if let Some(sid) = new_sid {
            self.by_sid.insert(sid, id.clone());
        }
        Ok(Some((call, applied)))
    }

    /// The newest `limit` matching calls. Only those are copied: the rest are compared by
    /// creation time under their lock and left alone.
    async fn list(&self, limit: usize, filter: &ListFilter) -> Result<Vec<Call>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A min-heap of the newest `limit` seen so far; the oldest of them is on top.
        let mut newest: BinaryHeap<Reverse<ByCreation>> = BinaryHeap::new();
        for (seq, cell) in self.cells(filter.live_only).enumerate() {
            let created = {
                let call = cell.lock();
                if !filter.matches(&call) {
                    continue;
                }
                call.created_at
            };
            let entry = ByCreation { created, seq, cell };
            if newest.len() < limit {
                newest.push(Reverse(entry));
            } else if let Some(mut oldest) = newest.peek_mut()
                && entry > oldest.0
            {
                *oldest = Reverse(entry);
            }
        }
        let mut calls: Vec<Call> = newest
            .into_iter()
            .map(|Reverse(e)| e.cell.lock().clone())
            .collect();
        calls.sort_by_key(|c| Reverse(c.created_at));
        Ok(calls)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        let mut tally = Tally::new(now);
        for cell in self.cells(false) {
            tally.add(&cell.lock());
        }
        Ok(tally.finish())
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
        store.ended.run_pending_tasks();
        assert_eq!(store.live.len(), 0);
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

    #[tokio::test]
    async fn list_gives_the_newest_first_and_live_only_skips_the_history() {
        let store = MemoryStore::new(1000, Duration::from_secs(3600));
        let start = Utc::now();
        let mut calls = Vec::new();
        // Inserted out of order, so the order comes from the creation times.
        for n in [7u32, 3, 9, 0, 5, 1, 8, 2, 6, 4] {
            let mut c = call(n);
            c.created_at = start + chrono::Duration::seconds(i64::from(n));
            calls.push(c.clone());
            store.insert(c).await.unwrap();
        }
        let done = StatusUpdate {
            status: Some(CallStatus::Completed),
            duration_secs: Some(10),
            ..StatusUpdate::default()
        };
        // Calls 0..5 end; 5..10 stay live.
        for c in calls
            .iter()
            .filter(|c| c.created_at < start + chrono::Duration::seconds(5))
        {
            store
                .update(&c.id, &mut |call: &mut Call| call.apply(&done, Utc::now()))
                .await
                .unwrap();
        }
        let secs = |calls: &[Call]| -> Vec<i64> {
            calls
                .iter()
                .map(|c| (c.created_at - start).num_seconds())
                .collect()
        };
        let all = ListFilter::default();
        assert_eq!(secs(&store.list(3, &all).await.unwrap()), [9, 8, 7]);
        assert_eq!(
            secs(&store.list(100, &all).await.unwrap()),
            [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
        );
        assert!(store.list(0, &all).await.unwrap().is_empty());
        let live = ListFilter {
            live_only: true,
            ..ListFilter::default()
        };
        assert_eq!(
            secs(&store.list(100, &live).await.unwrap()),
            [9, 8, 7, 6, 5]
        );
        let stats = store.stats(Utc::now()).await.unwrap();
        assert_eq!((stats.total, stats.active), (10, 5));
        assert_eq!(stats.by_status.get("completed"), Some(&5));
        assert_eq!(stats.average_duration_secs, Some(10.0));
    }
}
