//! [`DialQueue`] on Redis: the stream `{prefix}:dial` with one consumer group, `dialers`, in
//! which each instance reads as the consumer named after itself.
//!
//! - `push` is one script: refuse at `queue_capacity` entries, else `XADD`.
//! - `next` reads new entries with `XREADGROUP … BLOCK` on a connection of its own (a blocking
//!   read on the shared, multiplexed connection would hold up every other command behind it),
//!   and every quarter of the claim time first takes, with `XAUTOCLAIM`, entries another
//!   consumer has held without renewing for longer than the claim time (it died).
//! - While this instance dials an entry it renews it (`XCLAIM … JUSTID` to itself, which
//!   resets the entry's idle time) every third of the claim time, so a slow dial (retries,
//!   Retry-After) is never taken from a live instance.
//! - `ack` (`XACK` + `XDEL`, one script) comes only after the dial's result is recorded, so the
//!   stream holds exactly the calls waiting or being dialed, and its length is the depth.
//! - On a graceful stop the unread entries stay in the stream for the other instances, and
//!   entries read but not dialed are handed back with `XCLAIM … IDLE <claim time>`: the next
//!   `XAUTOCLAIM` of any instance takes them at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use parking_lot::Mutex;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions};
use tracing::warn;

use super::Redis;
use crate::calls::queue::{Delivery, DialQueue, QueueError};
use crate::calls::store::StoreError;
use crate::core::call::CallId;

const GROUP: &str = "dialers";

/// Entries one `XAUTOCLAIM` takes at most: a dead instance's whole share comes back in a few
/// round trips, not one per blocking read. What is taken but not yet handed to the dialer
/// waits in `claimed`, held (and renewed) like the rest.
const CLAIM_BATCH: usize = 32;

/// Longest a blocking read waits before the reader looks for stale entries again.
const MAX_BLOCK: Duration = Duration::from_secs(2);

/// A consumer of the group with nothing pending and silent this long is removed (housekeeping):
/// every process start adds one.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(3600);

/// Refuses at capacity, else adds. The new length, or -1 when full.
const PUSH: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return -1
end
redis.call('XADD', KEYS[1], '*', 'call', ARGV[2])
return redis.call('XLEN', KEYS[1])
";

/// Done: out of the pending list and out of the stream. The new length.
const ACK: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return redis.call('XLEN', KEYS[1])
";

/// Renews the entries ARGV[3..] that consumer ARGV[2] still holds; returns those it no longer
/// holds (acknowledged, or taken by another consumer after this one fell silent).
const RENEW: &str = r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
";

/// Before a create: true (1) when consumer ARGV[2] still holds entry ARGV[3], whose idle time
/// then starts again; 0 when another consumer took it over or it is gone. One script, so no
/// `XAUTOCLAIM` of another instance comes between the look and the renewal.
const KEEP: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] and p[1][2] == ARGV[2] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  return 1
end
return 0
";

/// Removes consumers with nothing pending, silent for ARGV[2] ms. Atomic, so no entry is
/// delivered to one between the look and the removal (its pending entry would be lost).
const FORGET: &str = r"
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone = gone + 1
  end
end
return gone
";

pub struct RedisQueue {
    redis: Redis,
    /// For the blocking reads alone.
    reader: ConnectionManager,
    key: String,
    capacity: usize,
    claim: Duration,
    push: redis::Script,
    ack: redis::Script,
    renew: redis::Script,
    keep: redis::Script,
    forget: redis::Script,
    /// Entries this instance read and is dialing (renewed until settled).
    /// Each with the number of its hold (`Delivery::hold`).
    held: Mutex<HashMap<String, u64>>,
    /// Numbers the holds.
    holds: AtomicU64,
    /// Taken over from dead consumers, not yet handed to the dialer.
    claimed: Mutex<std::collections::VecDeque<Delivery>>,
    /// Where the claim scan goes on, and when it last went round.
    claims: Mutex<(String, Option<Instant>)>,
}

fn store_error(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisQueue {
    /// Opens the queue (creating the stream and its group when missing) and starts renewing
    /// what this instance holds. `url` is `redis`'s URL: the blocking reads get a connection of
    /// their own.
    pub async fn start(
        redis: Redis,
        url: &str,
        capacity: usize,
        claim: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let shown = super::redacted(url);
        let block = Self::block_for(claim);
        let reader = redis::Client::open(url.trim())
            .with_context(|| format!("REDIS_URL {shown} is not a Redis URL"))?
            .get_connection_manager_with_config(
                ConnectionManagerConfig::new()
                    .set_response_timeout(Some(block + Duration::from_secs(2)))
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1)),
            )
            .await
            .with_context(|| format!("could not connect to Redis at {shown}"))?;
        let queue = Arc::new(Self {
            key: redis.key("dial"),
            redis,
            reader,
            capacity,
            claim,
            push: redis::Script::new(PUSH),
            ack: redis::Script::new(ACK),
            renew: redis::Script::new(RENEW),
            keep: redis::Script::new(KEEP),
            forget: redis::Script::new(FORGET),
            held: Mutex::new(HashMap::new()),
            holds: AtomicU64::new(0),
            claimed: Mutex::new(std::collections::VecDeque::new()),
            claims: Mutex::new(("0-0".to_owned(), None)),
        });
        queue
            .create_group()
            .await
            .context("could not open the dial queue on Redis")?;
        tokio::spawn(renew_held(Arc::downgrade(&queue)));
        Ok(queue)
    }

    fn block_for(claim: Duration) -> Duration {
        (claim / 4).clamp(Duration::from_millis(10), MAX_BLOCK)
    }

    /// The group reads from the start of the stream, so entries pushed before it existed
    /// (a stream deleted and pushed to again) are not skipped.
    async fn create_group(&self) -> Result<(), StoreError> {
        let created: redis::RedisResult<()> = self
            .redis
            .conn()
            .xgroup_create_mkstream(&self.key, GROUP, "0")
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(store_error),
        }
    }

    /// A delivery of `entry`; an entry naming no call (not ours to read) is dropped.
    async fn delivery(&self, entry: &StreamId, redelivered: bool) -> Option<Delivery> {
        let call = entry.get::<String>("call").and_then(|c| CallId::parse(&c));
        let Some(call) = call else {
            warn!(entry = %entry.id, "dial queue entry without a call id; dropped");
            let _ = self.ack_entry(&entry.id).await;
            return None;
        };
        let hold = self.holds.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut held = self.held.lock();
            if held.contains_key(&entry.id) {
                // Its own entry, idle past the claim time while this instance could not renew
                // it (Redis was unreachable): it is being dialed here already.
                return None;
            }
            held.insert(entry.id.clone(), hold);
        }
        Some(Delivery {
            call,
            entry: entry.id.clone(),
            redelivered,
            hold,
        })
    }

    fn claim_due(&self) -> bool {
        let (cursor, last) = &*self.claims.lock();
        cursor != "0-0" || last.is_none_or(|t| t.elapsed() >= Self::block_for(self.claim))
    }

    /// One entry held by a consumer silent for the claim time, taken over.
    async fn claim_one(&self) -> Result<Option<Delivery>, StoreError> {
        let cursor = self.claims.lock().0.clone();
        let reply: StreamAutoClaimReply = self
            .redis
            .conn()
            .xautoclaim_options(
                &self.key,
                GROUP,
                self.redis.instance(),
                millis(self.claim),
                &cursor,
                StreamAutoClaimOptions::default().count(CLAIM_BATCH),
            )
            .await
            .map_err(store_error)?;
        {
            let mut claims = self.claims.lock();
            if reply.next_stream_id == "0-0" {
                claims.1 = Some(Instant::now());
            }
            claims.0 = reply.next_stream_id;
        }
        for entry in &reply.claimed {
            if let Some(d) = self.delivery(entry, true).await {
                self.claimed.lock().push_back(d);
            }
        }
        Ok(self.claimed.lock().pop_front())
    }

    async fn read_one(&self) -> Result<Option<Delivery>, StoreError> {
        let block = Self::block_for(self.claim);
        let options = StreamReadOptions::default()
            .group(GROUP, self.redis.instance())
            .count(1)
            .block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = self
            .reader
            .clone()
            .xread_options(&[&self.key], &[">"], &options)
            .await;
        let reply = match read {
            Ok(reply) => reply,
            // The stream (and its group) was deleted: open it again.
            Err(e) if e.code() == Some("NOGROUP") => {
                self.create_group().await?;
                return Ok(None);
            }
            Err(e) => return Err(store_error(e)),
        };
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            if let Some(d) = self.delivery(&entry, false).await {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    async fn ack_entry(&self, entry: &str) -> Result<(), StoreError> {
        self.held.lock().remove(entry);
        let len: i64 = self
            .ack
            .key(&self.key)
            .arg(GROUP)
            .arg(entry)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        metrics::gauge!("callbot_queue_depth").set(len as f64);
        Ok(())
    }

    /// Whether `delivery` is still this instance's current hold of its entry.
    fn holds_now(&self, delivery: &Delivery) -> bool {
        self.held.lock().get(&delivery.entry) == Some(&delivery.hold)
    }

    /// Stops renewing `delivery`'s entry, unless a newer hold of it is being dialed.
    fn forget(&self, delivery: &Delivery) {
        let mut held = self.held.lock();
        if held.get(&delivery.entry) == Some(&delivery.hold) {
            held.remove(&delivery.entry);
        }
    }

    /// Makes `entries` (held by this consumer) due for the next `XAUTOCLAIM` of any instance.
    async fn hand_back(&self, entries: &[String]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(self.redis.instance())
            .arg(0)
            .arg(entries)
            .arg("IDLE")
            .arg(millis(self.claim))
            .arg("JUSTID")
            .query_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Renews what this instance holds; forgets what it no longer holds.
    async fn renew(&self) -> Result<(), StoreError> {
        let held: Vec<String> = self.held.lock().keys().cloned().collect();
        if held.is_empty() {
            return Ok(());
        }
        let lost: Vec<String> = self
            .renew
            .key(&self.key)
            .arg(GROUP)
            .arg(self.redis.instance())
            .arg(&held)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        let mut mine = self.held.lock();
        for entry in lost {
            mine.remove(&entry);
        }
        Ok(())
    }
}

/// Every third of the claim time, renews the entries this instance is dialing; ends with the
/// queue.
async fn renew_held(queue: Weak<RedisQueue>) {
    let every = match queue.upgrade() {
        Some(q) => q.claim / 3,
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(queue) = queue.upgrade() else { return };
        if let Err(e) = queue.renew().await {
            warn!(error = %e, "could not renew the dial queue entries in flight");
        }
    }
}

#[async_trait]
impl DialQueue for RedisQueue {
    async fn push(&self, call: &CallId) -> Result<(), QueueError> {
        let len: i64 = self
            .push
            .key(&self.key)
            .arg(self.capacity)
            .arg(call.as_str())
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        if len < 0 {
            return Err(QueueError::Full(self.capacity));
        }
        metrics::gauge!("callbot_queue_depth").set(len as f64);
        Ok(())
    }

    async fn next(&self) -> Result<Option<Delivery>, StoreError> {
        loop {
            if let Some(d) = self.claimed.lock().pop_front() {
                return Ok(Some(d));
            }
            if self.claim_due()
                && let Some(d) = self.claim_one().await?
            {
                return Ok(Some(d));
            }
            if let Some(d) = self.read_one().await? {
                return Ok(Some(d));
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.ack_entry(&delivery.entry).await
    }

    async fn keep(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        if !self.holds_now(delivery) {
            // Lost at a renewal, or lost and taken back since: a newer hold dials it.
            return Ok(false);
        }
        let kept: i64 = self
            .keep
            .key(&self.key)
            .arg(GROUP)
            .arg(self.redis.instance())
            .arg(&delivery.entry)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        if kept == 0 {
            self.forget(delivery);
        }
        Ok(kept == 1 && self.holds_now(delivery))
    }

    fn abandon(&self, delivery: &Delivery) {
        self.forget(delivery);
    }

    async fn release(&self, delivery: &Delivery) -> Result<bool, StoreError> {
        self.forget(delivery);
        self.hand_back(std::slice::from_ref(&delivery.entry))
            .await?;
        Ok(true)
    }

    async fn depth(&self) -> Result<usize, StoreError> {
        self.redis.conn().xlen(&self.key).await.map_err(store_error)
    }

    async fn calls(&self) -> Result<Option<HashSet<CallId>>, StoreError> {
        let mut calls = HashSet::new();
        let mut start = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = self
                .redis
                .conn()
                .xrange_count(&self.key, &start, "+", 1000)
                .await
                .map_err(store_error)?;
            let Some(last) = page.ids.last() else { break };
            start = format!("({}", last.id);
            calls.extend(
                page.ids
                    .iter()
                    .filter_map(|e| e.get::<String>("call"))
                    .filter_map(|c| CallId::parse(&c)),
            );
        }
        Ok(Some(calls))
    }

    /// Removes the group's consumers long gone with nothing pending: every process start
    /// adds one.
    async fn tidy(&self) -> Result<(), StoreError> {
        let gone: u64 = self
            .forget
            .key(&self.key)
            .arg(GROUP)
            .arg(millis(FORGET_CONSUMER_AFTER))
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        if gone > 0 {
            tracing::info!(gone, "dial queue: consumers of stopped instances removed");
        }
        Ok(())
    }

    async fn close(&self) -> Result<Vec<CallId>, StoreError> {
        // The unread entries stay in the stream: the other instances dial them.
        Ok(Vec::new())
    }

    async fn leave(&self) -> Result<(), StoreError> {
        // Read but never dialed: a blocking read cut short by the stop, or a dial abandoned.
        // Entries still being dialed (past the grace period) are left to the claim time.
        let pending: redis::streams::StreamPendingCountReply = self
            .redis
            .conn()
            .xpending_consumer_count(&self.key, GROUP, "-", "+", 1000, self.redis.instance())
            .await
            .map_err(store_error)?;
        // Taken over but never handed to the dialer: back to the others too.
        for d in self.claimed.lock().drain(..) {
            self.forget(&d);
        }
        let held = self.held.lock().clone();
        let unread: Vec<String> = pending
            .ids
            .into_iter()
            .map(|p| p.id)
            .filter(|id| !held.contains_key(id))
            .collect();
        self.hand_back(&unread).await
    }
}
