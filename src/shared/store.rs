//! [`CallStore`] on Redis: the calls every instance sees.
//!
//! Keys (all under the one `{prefix}` hash tag, so each script may touch any of them):
//! - `call:<id>`: `<version>|<the call as JSON>`, the version for the compare-and-set. A plain
//!   string rather than a hash of two fields: a field as long as a call's JSON turns a hash
//!   from its compact encoding into a hash table, a few hundred bytes more per call. It
//!   expires `store.ttl_hours` after the call ends; a live call never expires.
//! - `calls`, `live`: sorted sets of ids scored by creation time (ms), every call and the live
//!   ones; `list` reads them newest first, a page at a time by score (so calls added
//!   meanwhile neither repeat nor skip one), and drops ids whose record expired.
//! - `sid:<sid>`: the id of the live call with that provider sid (the fallback for callbacks
//!   without our id; ended calls leave it, as in `MemoryStore`).
//! - `stats`: a hash of counters (`total`, `s:<status>` for the current status of each call,
//!   `ended`, `completed`, `dur_sum`, `dur_n`), and `day:<YYYY-MM-DD>` the calls created that
//!   day (UTC, kept two days). The counters cover every call since the prefix was first used:
//!   they are not decremented when a record expires (an expired record is gone, and with it
//!   what it would take off), so `/api/stats` is the deployment's history, not the retained
//!   calls'.
//!
//! A status callback costs two round trips: `GET` of the record and the compare-and-set
//! script, which also keeps the index, the live set, the counters and the expiry in step, and
//! appends the change to the event stream the other instances read (`shared::events`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::AsyncCommands as _;

use super::Redis;
use crate::calls::store::{CallStore, ListFilter, Mutation, Stats, StoreError};
use crate::core::call::{Applied, Call, CallId, CallSid, CallStatus};

/// How often `update` re-reads and re-applies after losing the compare-and-set to another
/// writer of the same call. Callbacks of one call are a handful; this bound only stops a
/// pathological storm from spinning forever.
const MAX_TRIES: usize = 64;

/// Ids read per round trip by `list`.
const PAGE: usize = 200;

/// Stores the call unless it exists (a retried insert whose answer was lost must not count
/// it twice), and appends its `created` event to the event stream. KEYS: record, calls, live,
/// stats, day, sid (or the record again when there is no sid), events. ARGV: id, record,
/// created ms, status, terminal, completed duration ('' none, else seconds; only for
/// completed calls), ttl secs, trim-below ms, has sid, instance, stream length.
const INSERT: &str = r"
if redis.call('SET', KEYS[1], ARGV[2], 'NX') == false then return 0 end
local bar = string.find(ARGV[2], '|', 1, true)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[11], '*', 'i', ARGV[10], 'k', 'created', 'c', string.sub(ARGV[2], bar + 1))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[8])
redis.call('HINCRBY', KEYS[4], 'total', 1)
redis.call('HINCRBY', KEYS[4], 's:' .. ARGV[4], 1)
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 172800)
if ARGV[5] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('HINCRBY', KEYS[4], 'ended', 1)
  if ARGV[4] == 'completed' then
    redis.call('HINCRBY', KEYS[4], 'completed', 1)
    if ARGV[6] ~= '' then
      redis.call('HINCRBY', KEYS[4], 'dur_sum', ARGV[6])
      redis.call('HINCRBY', KEYS[4], 'dur_n', 1)
    end
  end
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  if ARGV[9] == '1' then redis.call('SET', KEYS[6], ARGV[1], 'EX', ARGV[7]) end
end
return 1
";

/// Writes the call if its version is still the one read, and appends the change's event
/// (unless it is none) to the event stream; 0 when another writer came first (or the record
/// is gone). KEYS: record, live, stats, sid (or the record again when there is no sid),
/// events. ARGV: id, `<version read>|`, new record, old status, new status, ends now,
/// completed duration ('' none), ttl secs, sid op ('set', 'del' or ''), event kind
/// ('progress', 'final' or '' none), instance, stream length.
const UPDATE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
if ARGV[10] ~= '' then
  local bar = string.find(ARGV[3], '|', 1, true)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'i', ARGV[11], 'k', ARGV[10], 'c', string.sub(ARGV[3], bar + 1))
end
if ARGV[4] ~= ARGV[5] then
  redis.call('HINCRBY', KEYS[3], 's:' .. ARGV[4], -1)
  redis.call('HINCRBY', KEYS[3], 's:' .. ARGV[5], 1)
end
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('HINCRBY', KEYS[3], 'ended', 1)
  if ARGV[5] == 'completed' then
    redis.call('HINCRBY', KEYS[3], 'completed', 1)
    if ARGV[7] ~= '' then
      redis.call('HINCRBY', KEYS[3], 'dur_sum', ARGV[7])
      redis.call('HINCRBY', KEYS[3], 'dur_n', 1)
    end
  end
end
if ARGV[9] == 'set' then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[8])
elseif ARGV[9] == 'del' then
  redis.call('DEL', KEYS[4])
end
return 1
";

pub struct RedisStore {
    redis: Redis,
    /// The event stream (`shared::events`): every change is appended in the script that
    /// writes it, so the other instances hear of it with no round trip of its own.
    events: String,
    stream_len: usize,
    /// How long an ended call is kept (`store.ttl_hours`).
    ttl: Duration,
    insert: redis::Script,
    update: redis::Script,
}

impl RedisStore {
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self {
            events: redis.key(super::events::STREAM),
            stream_len: super::events::STREAM_LEN,
            redis,
            ttl: ttl.max(Duration::from_secs(1)),
            insert: redis::Script::new(INSERT),
            update: redis::Script::new(UPDATE),
        }
    }

    fn record(&self, id: &str) -> String {
        self.redis.key(&format!("call:{id}"))
    }

    fn sid_key(&self, sid: &CallSid) -> String {
        self.redis.key(&format!("sid:{sid}"))
    }

    fn day_key(&self, at: DateTime<Utc>) -> String {
        self.redis.key(&format!("day:{}", at.format("%Y-%m-%d")))
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// Pages of ids, newest first, and their records: the matching calls, up to `limit`.
    async fn read_pages(
        &self,
        set: &str,
        limit: usize,
        filter: &ListFilter,
    ) -> Result<(Vec<Call>, Vec<String>), StoreError> {
        let mut conn = self.redis.conn();
        let mut found = Vec::new();
        let mut expired = Vec::new();
        // Pages by score (creation time), not by rank: a call created or pruned while the
        // pages are read shifts every rank after it, which would repeat or skip a call. `max`
        // is the score the last page ended on, `ties` how many read so far carry it.
        let mut max = "+inf".to_owned();
        let mut ties = 0usize;
        while found.len() < limit {
            let page = PAGE.min(limit - found.len()).max(1);
            let scored: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(set)
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(ties)
                .arg(page)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            let Some(&(_, last)) = scored.last() else {
                break;
            };
            let ids: Vec<String> = scored.iter().map(|(id, _)| id.clone()).collect();
            let keys: Vec<String> = ids.iter().map(|id| self.record(id)).collect();
            let records: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(store_error)?;
            for (id, record) in ids.iter().zip(records) {
                let Some(record) = record else {
                    expired.push(id.clone());
                    continue;
                };
                match decode(&record) {
                    Ok((_, call)) if filter.matches(&call) => found.push(call),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(call_id = %id, error = %e, "unreadable call record skipped")
                    }
                }
                if found.len() == limit {
                    break;
                }
            }
            if scored.len() < page {
                break;
            }
            let at_last = scored.iter().rev().take_while(|(_, s)| *s == last).count();
            if max == last.to_string() {
                ties += at_last;
            } else {
                max = last.to_string();
                ties = at_last;
            }
        }
        Ok((found, expired))
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

/// A record's version (with its `|`, as the update script compares it) and its call.
fn decode(record: &str) -> Result<(&str, Call), StoreError> {
    let unreadable = |e: &dyn std::fmt::Display| StoreError(format!("unreadable call record: {e}"));
    let bar = record.find('|').ok_or_else(|| unreadable(&"no version"))?;
    let call = serde_json::from_str(&record[bar + 1..]).map_err(|e| unreadable(&e))?;
    Ok((&record[..=bar], call))
}

fn encode(version: u64, call: &Call) -> Result<String, StoreError> {
    let json = serde_json::to_string(call)
        .map_err(|e| StoreError(format!("call not serializable: {e}")))?;
    Ok(format!("{version}|{json}"))
}

/// The duration argument of the scripts: the seconds of a completed call that has them.
fn completed_duration(call: &Call) -> String {
    match (call.status, call.duration_secs) {
        (CallStatus::Completed, Some(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[async_trait]
impl CallStore for RedisStore {
    async fn insert(&self, call: Call) -> Result<(), StoreError> {
        let record = self.record(call.id.as_str());
        let created = call.created_at.timestamp_millis();
        // Ids older than any record can be are dropped from `calls` as new ones come (a day
        // beyond the ttl: a call ends well within a day of being created).
        let trim_below = created - (self.ttl_secs() as i64 + 86_400) * 1000;
        let sid = call.sid.as_ref().map(|s| self.sid_key(s));
        let _: i64 = self
            .insert
            .key(&record)
            .key(self.redis.key("calls"))
            .key(self.redis.key("live"))
            .key(self.redis.key("stats"))
            .key(self.day_key(call.created_at))
            .key(sid.as_deref().unwrap_or(&record))
            .key(&self.events)
            .arg(call.id.as_str())
            .arg(encode(1, &call)?)
            .arg(created)
            .arg(call.status.as_str())
            .arg(if call.status.is_terminal() { "1" } else { "0" })
            .arg(completed_duration(&call))
            .arg(self.ttl_secs())
            .arg(trim_below)
            .arg(if sid.is_some() { "1" } else { "0" })
            .arg(self.redis.instance())
            .arg(self.stream_len)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, id: &CallId) -> Result<Option<Call>, StoreError> {
        let record: Option<String> = self
            .redis
            .conn()
            .get(self.record(id.as_str()))
            .await
            .map_err(store_error)?;
        Ok(record
            .as_deref()
            .map(decode)
            .transpose()?
            .map(|(_, call)| call))
    }

    async fn find_by_sid(&self, sid: &CallSid) -> Result<Option<CallId>, StoreError> {
        let id: Option<String> = self
            .redis
            .conn()
            .get(self.sid_key(sid))
            .await
            .map_err(store_error)?;
        Ok(id.as_deref().and_then(CallId::parse))
    }

    async fn update(
        &self,
        id: &CallId,
        change: Mutation<'_>,
    ) -> Result<Option<(Call, Applied)>, StoreError> {
        let record = self.record(id.as_str());
        let mut conn = self.redis.conn();
        for _ in 0..MAX_TRIES {
            let stored: Option<String> = conn.get(&record).await.map_err(store_error)?;
            let Some(stored) = stored else {
                return Ok(None);
            };
            let (version, before) = decode(&stored)?;
            let next: u64 = version
                .trim_end_matches('|')
                .parse()
                .map_err(|_| StoreError("unreadable call record: bad version".into()))?;
            let mut call = before.clone();
            let applied = change(&mut call);
            if call == before {
                return Ok(Some((call, applied)));
            }
            let ends = !before.status.is_terminal() && call.status.is_terminal();
            // The index holds live calls: a new sid joins it, an ended call leaves it.
            let (sid_key, sid_op) = match (&before.sid, &call.sid) {
                (_, Some(sid)) if ends => (Some(self.sid_key(sid)), "del"),
                (None, Some(sid)) if !call.status.is_terminal() => (Some(self.sid_key(sid)), "set"),
                _ => (None, ""),
            };
            let written: i64 = self
                .update
                .key(&record)
                .key(self.redis.key("live"))
                .key(self.redis.key("stats"))
                .key(sid_key.as_deref().unwrap_or(&record))
                .key(&self.events)
                .arg(id.as_str())
                .arg(version)
                .arg(encode(next + 1, &call)?)
                .arg(before.status.as_str())
                .arg(call.status.as_str())
                .arg(if ends { "1" } else { "0" })
                .arg(if ends {
                    completed_duration(&call)
                } else {
                    String::new()
                })
                .arg(self.ttl_secs())
                .arg(sid_op)
                .arg(match applied {
                    Applied::Ignored => "",
                    Applied::Progress => "progress",
                    Applied::Final => "final",
                })
                .arg(self.redis.instance())
                .arg(self.stream_len)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            if written == 1 {
                return Ok(Some((call, applied)));
            }
            metrics::counter!("callbot_store_conflicts_total").increment(1);
            tokio::task::yield_now().await;
        }
        Err(StoreError(format!(
            "call {id} changed by others {MAX_TRIES} times in a row; not updated"
        )))
    }

    async fn list(&self, limit: usize, filter: &ListFilter) -> Result<Vec<Call>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let set = self
            .redis
            .key(if filter.live_only { "live" } else { "calls" });
        let (calls, expired) = self.read_pages(&set, limit, filter).await?;
        if !expired.is_empty() {
            // Removed after reading, so the pages above did not shift under the reader.
            let mut pipe = redis::pipe();
            pipe.zrem(self.redis.key("calls"), &expired).ignore();
            pipe.zrem(self.redis.key("live"), &expired).ignore();
            let pruned: Result<(), _> = pipe.query_async(&mut self.redis.conn()).await;
            if let Err(e) = pruned {
                tracing::debug!(error = %e, "expired calls not pruned from the lists this time");
            }
        }
        Ok(calls)
    }

    async fn stats(&self, now: DateTime<Utc>) -> Result<Stats, StoreError> {
        let (counters, today): (std::collections::HashMap<String, i64>, Option<i64>) =
            redis::pipe()
                .hgetall(self.redis.key("stats"))
                .get(self.day_key(now))
                .query_async(&mut self.redis.conn())
                .await
                .map_err(store_error)?;
        let count = |name: &str| counters.get(name).copied().unwrap_or(0).max(0) as u64;
        let mut stats = Stats {
            total: count("total"),
            today: today.unwrap_or(0).max(0) as u64,
            ..Stats::default()
        };
        for status in CallStatus::ALL {
            let n = count(&format!("s:{}", status.as_str()));
            if n > 0 {
                stats.by_status.insert(status.as_str(), n);
                if !status.is_terminal() {
                    stats.active += n;
                }
            }
        }
        let (ended, completed) = (count("ended"), count("completed"));
        let (dur_sum, dur_n) = (count("dur_sum"), count("dur_n"));
        stats.answer_rate = (ended > 0).then(|| completed as f64 * 100.0 / ended as f64);
        stats.average_duration_secs = (dur_n > 0).then(|| dur_sum as f64 / dur_n as f64);
        Ok(stats)
    }
}
