//! The event bridge: every instance sees every call's events (chat followers, the console's
//! live log), whichever instance applied the change.
//!
//! This instance's events are appended to one Redis Stream, `{prefix}:events` (capped with
//! `MAXLEN ~`) — by the Redis store itself, in the script that writes each change, when the
//! app runs on it (the bridge then only reads); a reader follows the stream with `XREAD BLOCK` from where it left off and
//! republishes the other instances' entries on the local bus, marked remote so that they are
//! not appended again. An entry carries the call as it was after the change (JSON), not just
//! its id: a follower orders a call's states by their history and the live log shows each
//! step, which re-reading the store (one more round trip per event per instance, and only
//! the newest state) would not give.
//!
//! Entries a reader missed (Redis down, or trimmed before it read them) are not replayed:
//! followers look at the live calls in the store periodically, which covers them.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadReply;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Redis;
use crate::calls::{CallEvent, EventBus, EventKind};
use crate::core::call::Call;

/// How long one `XREAD` waits for entries before it is asked again (and shutdown is seen).
const BLOCK: Duration = Duration::from_secs(2);
/// Most entries appended in one round trip, and read in one.
const BATCH: usize = 512;
/// The stream's key, under the prefix.
pub const STREAM: &str = "events";

/// Entries the stream keeps (about: `MAXLEN ~`). At ~1 KiB each, about 10 MiB; a reader more
/// than this far behind loses the oldest (and the followers' periodic look covers them).
pub const STREAM_LEN: usize = 10_000;

/// The bridge between this instance's [`EventBus`] and the other instances'.
pub struct EventBridge {
    redis: Redis,
    key: String,
    max_len: usize,
    /// Whether this bridge appends the local bus's events (false when the store does).
    append: bool,
}

impl EventBridge {
    pub fn new(redis: Redis) -> Self {
        Self::with_len(redis, STREAM_LEN)
    }

    /// A bridge whose stream keeps about `max_len` entries.
    pub fn with_len(redis: Redis, max_len: usize) -> Self {
        let key = redis.key(STREAM);
        Self {
            redis,
            key,
            max_len: max_len.max(1),
            append: true,
        }
    }

    /// A bridge that only reads: this instance's events are already in the stream, appended
    /// by the Redis store in the script that wrote each change (`shared::store`), which saves
    /// a round trip per change and cannot lose an event the store kept.
    pub fn appended_by_the_store(mut self) -> Self {
        self.append = false;
        self
    }

    /// Subscribes to `bus` and finds the stream's end before returning, so this instance's
    /// events from now on are appended and the others' from now on are republished; runs
    /// until `shutdown`.
    pub async fn start(self, bus: &EventBus, shutdown: CancellationToken) -> anyhow::Result<()> {
        let local = self.append.then(|| bus.subscribe());
        let last = self.stream_end().await?;
        let this = Arc::new(self);
        if let Some(local) = local {
            tokio::spawn(this.clone().append(local, shutdown.clone()));
        }
        tokio::spawn(this.read(bus.clone(), last, shutdown));
        Ok(())
    }

    /// The id of the stream's newest entry (`0-0` when it has none).
    async fn stream_end(&self) -> anyhow::Result<String> {
        let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(newest
            .ids
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |e| e.id))
    }

    /// Appends this instance's events, as many as are waiting in one round trip.
    async fn append(
        self: Arc<Self>,
        mut local: broadcast::Receiver<CallEvent>,
        shutdown: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => return,
                event = local.recv() => event,
            };
            if matches!(first, Err(RecvError::Closed)) {
                return;
            }
            let mut batch = Vec::new();
            take(&mut batch, first);
            while batch.len() < BATCH {
                match local.try_recv() {
                    Ok(event) => take(&mut batch, Ok(event)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        take(&mut batch, Err(RecvError::Lagged(n)));
                    }
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for event in &batch {
                let call = match serde_json::to_string(&*event.call) {
                    Ok(json) => json,
                    Err(e) => {
                        warn!(call_id = %event.call.id, error = %e, "could not serialise a call event");
                        continue;
                    }
                };
                pipe.cmd("XADD")
                    .arg(&self.key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.max_len)
                    .arg("*")
                    .arg("i")
                    .arg(self.redis.instance())
                    .arg("k")
                    .arg(event.kind.as_str())
                    .arg("c")
                    .arg(call)
                    .ignore();
            }
            match pipe.query_async::<()>(&mut self.redis.conn()).await {
                Ok(()) => {
                    if failing {
                        warn!("the event bridge appends again");
                        failing = false;
                    }
                }
                Err(e) => {
                    metrics::counter!("callbot_event_bridge_dropped_total")
                        .increment(batch.len() as u64);
                    // Once per outage, not once per event.
                    if !failing {
                        warn!(error = %e, "could not append call events to Redis; other instances miss them");
                        failing = true;
                    }
                }
            }
        }
    }

    /// Republishes the other instances' entries on this instance's bus, from `last` on.
    async fn read(self: Arc<Self>, bus: EventBus, mut last: String, shutdown: CancellationToken) {
        let mut conn = None;
        let mut failing = false;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let c = match &mut conn {
                Some(c) => c,
                None => match self.redis.blocking_conn(BLOCK).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        if !failing {
                            warn!(error = %e, "the event bridge cannot reach Redis; retrying");
                            failing = true;
                        }
                        pause(&shutdown).await;
                        continue;
                    }
                },
            };
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(2000))
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&last);
            let read = xread.query_async::<Option<StreamReadReply>>(c);
            let reply = tokio::select! {
                () = shutdown.cancelled() => return,
                reply = read => reply,
            };
            match reply {
                Ok(reply) => {
                    failing = false;
                    for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        last.clone_from(&entry.id);
                        if entry.get::<String>("i").as_deref() == Some(self.redis.instance()) {
                            continue;
                        }
                        let kind = entry.get::<String>("k").and_then(|k| EventKind::parse(&k));
                        let call = entry
                            .get::<Vec<u8>>("c")
                            .and_then(|c| serde_json::from_slice::<Call>(&c).ok());
                        match (kind, call) {
                            (Some(kind), Some(call)) => bus.publish_remote(kind, Arc::new(call)),
                            _ => {
                                warn!(id = %entry.id, "unreadable entry in the event stream; skipped")
                            }
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "could not read call events from Redis; retrying");
                        failing = true;
                    }
                    conn = None;
                    pause(&shutdown).await;
                }
            }
        }
    }
}

/// Keeps this instance's own events for the stream; counts what was lost.
fn take(batch: &mut Vec<CallEvent>, event: Result<CallEvent, RecvError>) {
    match event {
        Ok(event) if !event.remote => batch.push(event),
        Ok(_) | Err(RecvError::Closed) => {}
        Err(RecvError::Lagged(skipped)) => {
            metrics::counter!("callbot_event_bridge_dropped_total").increment(skipped);
            warn!(
                skipped,
                "the event bridge fell behind this instance's bus; other instances miss these events"
            );
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(250)) => {}
    }
}
