//! The one call-progress follower every chat adapter uses: it takes the CallEvent bus and
//! drives a [`Sink`] (Telegram, Slack), which only knows how to show a call's status message
//! and post its outcome in the call's thread.
//!
//! - **One worker per call.** A call's events go to a task of its own, in order; a backlog is
//!   coalesced to the newest state, so a slow or rate-limited chat never delays another call.
//!   The worker ends after the outcome is posted (exactly once per call).
//! - **Falling behind.** The bus keeps a bounded backlog per subscriber
//!   (`calls.event_bus_capacity`); a follower that falls further behind loses the oldest
//!   events (`RecvError::Lagged`), possibly some calls' final one. It then re-reads from the
//!   store the calls it follows and the calls of its platform created since the newest one it
//!   saw, finishes those that ended (outcome posted once) and starts following the live ones
//!   it did not know. Events still in the backlog that are older than what the store showed
//!   are ignored, so no worker is left waiting for a final event that already went by.
//! - **Several instances** ([`Coordination`]). Every instance sees every call's events (the
//!   Redis bridge brings the others'), so each has a worker per live call of its platform,
//!   but only the holder of the call's follow claim (a lease `follow:<call id>`, renewed by
//!   its worker every third of [`Coordination::ttl`]) shows the status message; the others
//!   keep the newest state and try the claim again at each renewal, so a dead owner's calls
//!   are taken over within the claim's time to live. A new owner re-reads the call from the
//!   store: the status message another instance posted is on the call, and is edited, not
//!   posted again. The outcome step is claimed once for all instances ([`Claims`]) by the
//!   owner, which then edits the status a last time and posts the outcome. An instance that
//!   starts, and every instance every `ttl`, looks at the live calls in the store and follows
//!   those it did not know (and finishes those it followed that ended meanwhile).
//!   What is left: an owner that dies after claiming the outcome and before posting it loses
//!   that outcome (one HTTP request wide), and one that dies after posting the status message
//!   and before storing its id leaves the next owner to post another.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::calls::claims::{Claims, Once};
use crate::calls::lease::{Leases, Solo};
use crate::calls::store::ListFilter;
use crate::calls::{CallEvent, CallService, EventKind};
use crate::core::call::{Call, CallId, Platform};

/// Where a chat platform shows a call: one status message edited as the call moves (with a
/// Cancel button while it is live), and the outcome posted once in the call's thread.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// What this call's chat shows so far (the status message's id, its text).
    type View: Default + Send + 'static;

    /// The platform whose calls this sink follows.
    fn platform(&self) -> Platform;

    /// Posts the status message the first time, edits it when its text changed (the edit that
    /// shows an ended call takes the Cancel button away, so it must arrive).
    async fn show_status(&self, view: &mut Self::View, call: &Call);

    /// Posts the outcome of an ended call in its thread. Called once per call.
    async fn post_outcome(&self, view: &mut Self::View, call: &Call);

    /// Posts that the call's recording is ready (its duration and our link to it) in its
    /// thread. Called once per recorded call, usually after the outcome.
    async fn post_recording(&self, call: &Call);
}

/// How long the outcome of an answered call waits for the answering-machine result when
/// detection was on and the result has not arrived (it comes on its own callback, which may
/// be overtaken by the final status callback).
const DETECTION_GRACE: Duration = Duration::from_secs(4);

/// The call as the store has it once its detection result arrived, or [`DETECTION_GRACE`]
/// passed (then the outcome says who answered is unknown).
async fn settle_detection(service: &CallService, mut call: Arc<Call>) -> Arc<Call> {
    let since = Instant::now();
    while call.awaits_detection() && since.elapsed() < DETECTION_GRACE {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match service.get(&call.id).await {
            Ok(Some(stored)) if stored.answered_by.is_some() => {
                Arc::make_mut(&mut call).answered_by = stored.answered_by;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(call_id = %call.id, error = %e, "could not re-read a call for its answering-machine result");
                break;
            }
        }
    }
    call
}

/// How the followers of several instances share the calls: who shows a call (the follow
/// claim) and who posts its outcome (a step claimed once).
#[derive(Clone)]
pub struct Coordination {
    /// Per-call follow claims, `follow:<call id>`.
    pub leases: Arc<dyn Leases>,
    /// The `outcome` step of each call, claimed once.
    pub claims: Arc<dyn Claims>,
    /// How long a follow claim lasts unrenewed: a dead owner's calls are taken over within it.
    pub ttl: Duration,
    /// Other instances share the store: look for calls nobody follows, at start and every
    /// `ttl`, and re-read a call from the store when taking it over.
    pub shared: bool,
}

impl Coordination {
    /// One process: every claim is this instance's.
    pub fn solo() -> Self {
        Self {
            leases: Arc::new(Solo),
            claims: Arc::new(Once::new(100_000, Duration::from_secs(24 * 3600))),
            ttl: Duration::from_secs(10),
            shared: false,
        }
    }
}

impl Default for Coordination {
    fn default() -> Self {
        Self::solo()
    }
}

/// A running follower.
#[derive(Clone)]
pub struct Follower {
    workers: Arc<AtomicUsize>,
}

impl Follower {
    /// Calls being followed right now (one worker each).
    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::Acquire)
    }
}

/// Follows `service`'s calls of `sink`'s platform until `shutdown`. Subscribes before
/// returning, so no event published after this call is missed.
pub fn spawn<S: Sink>(
    sink: Arc<S>,
    service: Arc<CallService>,
    coordination: Coordination,
    shutdown: CancellationToken,
) -> Follower {
    let events = service.subscribe();
    let workers = Arc::new(AtomicUsize::new(0));
    let dispatcher = Dispatcher {
        platform: sink.platform(),
        sink,
        service,
        coordination,
        shutdown: shutdown.clone(),
        workers: HashMap::new(),
        ended: HashMap::new(),
        ended_limit: ENDED_PRUNE_AT,
        count: workers.clone(),
        seen_until: Utc::now(),
        finished: HashMap::new(),
        finished_by_resync: HashSet::new(),
        stale_left: 0,
    };
    tokio::spawn(dispatcher.run(events, shutdown));
    Follower { workers }
}

/// How far apart two calls' creation times may be from the order their `Created` events were
/// published in (the time is read before the call is stored; the event follows the store).
const CREATION_SKEW: TimeDelta = TimeDelta::seconds(5);

/// Most calls one resync reads from the store's newest (when far more were created while the
/// follower was behind, the oldest of them are not followed).
const RESYNC_SCAN_MAX: usize = 100_000;

/// How long a call that ended is remembered: events of it that arrive later (another
/// instance's, brought by the bridge after this one's final event) are ignored.
const ENDED_KEEP: Duration = Duration::from_secs(600);
const ENDED_PRUNE_AT: usize = 4096;

/// Routes each call's events to its worker, and resynchronises from the store after a lag.
struct Dispatcher<S: Sink> {
    platform: Platform,
    sink: Arc<S>,
    service: Arc<CallService>,
    coordination: Coordination,
    shutdown: CancellationToken,
    /// Live calls being followed.
    workers: HashMap<CallId, mpsc::UnboundedSender<Arc<Call>>>,
    /// Calls finished here lately, and when.
    ended: HashMap<CallId, Instant>,
    /// Size of `ended` at which it is pruned next.
    ended_limit: usize,
    count: Arc<AtomicUsize>,
    /// The newest creation time among the calls of this platform seen on the bus: every call
    /// created more than [`CREATION_SKEW`] before it has been seen (or found by a resync).
    seen_until: DateTime<Utc>,
    /// Calls finished here that were created within [`CREATION_SKEW`] of `seen_until`, by
    /// creation time: a resync reads those from the store again and must not finish them twice.
    finished: HashMap<CallId, DateTime<Utc>>,
    /// Calls a resync finished: events still in the backlog may be older than what it read.
    finished_by_resync: HashSet<CallId>,
    /// Events to receive before the backlog read at the last resync is gone.
    stale_left: usize,
}

impl<S: Sink> Dispatcher<S> {
    async fn run(
        mut self,
        mut events: broadcast::Receiver<CallEvent>,
        shutdown: CancellationToken,
    ) {
        let shared = self.coordination.shared;
        // The first look is at once: the live calls an instance that starts picks up.
        let mut look = tokio::time::interval(self.coordination.ttl.max(Duration::from_millis(10)));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = events.recv() => event,
                _ = look.tick(), if shared => {
                    self.look().await;
                    continue;
                }
            };
            match event {
                Ok(event) => self.take(event),
                Err(RecvError::Lagged(skipped)) => {
                    warn!(
                        platform = %self.platform,
                        skipped,
                        "call follower fell behind the event bus; re-reading its calls from the store"
                    );
                    self.resync(skipped, events.len()).await;
                    // Everything published before the store was read is in the backlog now.
                    self.stale_left = events.len();
                    if self.stale_left == 0 {
                        self.finished_by_resync.clear();
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
        // Dropping the senders ends every worker once it has shown what it was given.
    }

    fn take(&mut self, event: CallEvent) {
        if self.stale_left > 0 {
            self.stale_left -= 1;
            if self.stale_left == 0 {
                // Cleared after this event, which may still be stale.
                let stale = self.finished_by_resync.contains(&event.call.id);
                self.finished_by_resync.clear();
                if stale {
                    return;
                }
            }
        }
        let call = event.call;
        if event.kind == EventKind::Recording {
            if call.origin.platform == self.platform {
                self.recording(call);
            }
            return;
        }
        if call.origin.platform != self.platform
            || self.finished_by_resync.contains(&call.id)
            || self.ended.contains_key(&call.id)
        {
            return;
        }
        if call.created_at > self.seen_until {
            self.seen_until = call.created_at;
            let oldest = self.seen_until - CREATION_SKEW;
            self.finished.retain(|_, created| *created >= oldest);
        }
        if event.kind == EventKind::Final || call.status.is_terminal() {
            // Final is published once per call, and nothing after it.
            self.finish(call);
        } else {
            self.send(call);
        }
    }

    /// Posts a call's recording, once for all instances (a claimed step), beside its worker:
    /// the recording usually arrives after the outcome, when the worker is gone.
    fn recording(&self, call: Arc<Call>) {
        let (sink, claims) = (self.sink.clone(), self.coordination.claims.clone());
        tokio::spawn(async move {
            for wait in [0, 250, 1000, 4000] {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match claims.claim_step(&call.id, "recording").await {
                    Ok(true) => return sink.post_recording(&call).await,
                    Ok(false) => return,
                    Err(e) => {
                        warn!(call_id = %call.id, error = %e, "could not claim the recording post; trying again")
                    }
                }
            }
        });
    }

    /// Gives `call` to its worker, starting one the first time.
    fn send(&mut self, call: Arc<Call>) {
        let tx = self.workers.entry(call.id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.count.fetch_add(1, Ordering::AcqRel);
            let job = Job {
                sink: self.sink.clone(),
                coordination: self.coordination.clone(),
                service: self.service.clone(),
                id: call.id.clone(),
                shutdown: self.shutdown.clone(),
            };
            tokio::spawn(work(job, rx, WorkerCount(self.count.clone())));
            tx
        });
        let _ = tx.send(call);
    }

    /// Gives an ended call to its worker (which posts the outcome and ends) and forgets it.
    fn finish(&mut self, call: Arc<Call>) {
        let id = call.id.clone();
        if call.created_at >= self.seen_until - CREATION_SKEW {
            self.finished.insert(id.clone(), call.created_at);
        }
        self.send(call);
        self.workers.remove(&id);
        self.ended.insert(id, Instant::now());
        if self.ended.len() >= self.ended_limit {
            self.ended.retain(|_, at| at.elapsed() < ENDED_KEEP);
            self.ended_limit = (self.ended.len() * 2).max(ENDED_PRUNE_AT);
        }
    }

    /// Several instances: follows the live calls of this platform in the store it does not
    /// follow yet (it started after them, or their events did not reach it), and finishes
    /// the calls it follows that are no longer live.
    async fn look(&mut self) {
        let filter = ListFilter {
            platform: Some(self.platform),
            live_only: true,
            ..ListFilter::default()
        };
        let live = match self.service.list(RESYNC_SCAN_MAX, &filter).await {
            Ok(calls) => calls,
            Err(e) => {
                warn!(error = %e, "could not read the live calls to follow");
                return;
            }
        };
        let ids: HashSet<CallId> = live.iter().map(|c| c.id.clone()).collect();
        for call in live {
            if !self.workers.contains_key(&call.id) && !self.ended.contains_key(&call.id) {
                self.send(Arc::new(call));
            }
        }
        // No event is taken while the store is read, so these ended before the list was read.
        let gone: Vec<CallId> = self
            .workers
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            match self.service.get(&id).await {
                Ok(Some(call)) if call.status.is_terminal() => self.finish(Arc::new(call)),
                Ok(Some(_)) => {}
                Ok(None) => {
                    warn!(call_id = %id, "a followed call is no longer in the store");
                    self.workers.remove(&id);
                }
                Err(e) => warn!(call_id = %id, error = %e, "could not re-read a followed call"),
            }
        }
    }

    /// After `skipped` events were lost (and `backlog` are waiting): re-reads the calls this
    /// follower follows, and the calls of its platform it may never have seen.
    async fn resync(&mut self, skipped: u64, backlog: usize) {
        let followed: Vec<CallId> = self.workers.keys().cloned().collect();
        for id in followed {
            match self.service.get(&id).await {
                Ok(Some(call)) if call.status.is_terminal() => {
                    self.finished_by_resync.insert(id);
                    self.finish(Arc::new(call));
                }
                // Still live: show where it is now (its progress events may be lost).
                Ok(Some(call)) => self.send(Arc::new(call)),
                Ok(None) => {
                    warn!(call_id = %id, "a followed call is no longer in the store");
                    self.workers.remove(&id);
                }
                Err(e) => warn!(call_id = %id, error = %e, "could not re-read a followed call"),
            }
        }
        // Calls created since the newest one seen: at most one per lost or waiting event.
        let limit = usize::try_from(skipped)
            .unwrap_or(usize::MAX)
            .saturating_add(backlog)
            .saturating_add(1)
            .min(RESYNC_SCAN_MAX);
        let filter = ListFilter {
            platform: Some(self.platform),
            ..ListFilter::default()
        };
        let recent = match self.service.list(limit, &filter).await {
            Ok(calls) => calls,
            Err(e) => {
                warn!(error = %e, "could not read the newest calls after falling behind");
                return;
            }
        };
        let oldest = self.seen_until - CREATION_SKEW;
        // Newest first.
        for call in recent.into_iter().take_while(|c| c.created_at >= oldest) {
            if self.workers.contains_key(&call.id)
                || self.finished.contains_key(&call.id)
                || self.ended.contains_key(&call.id)
            {
                continue;
            }
            if call.status.is_terminal() {
                self.finished_by_resync.insert(call.id.clone());
                self.finish(Arc::new(call));
            } else {
                self.send(Arc::new(call));
            }
        }
    }
}

/// Counts a worker while it runs.
struct WorkerCount(Arc<AtomicUsize>);

impl Drop for WorkerCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Set while the follow claims cannot be reached (Redis down), so that is logged once.
static CLAIMS_FAILING: AtomicBool = AtomicBool::new(false);

/// What a worker needs besides its call's states.
struct Job<S: Sink> {
    sink: Arc<S>,
    coordination: Coordination,
    service: Arc<CallService>,
    id: CallId,
    shutdown: CancellationToken,
}

/// Shows one call's states in order, the newest of a backlog only, while this instance holds
/// the call's follow claim, until its outcome is posted (here or by another instance) or the
/// dispatcher stops following it.
async fn work<S: Sink>(
    job: Job<S>,
    mut rx: mpsc::UnboundedReceiver<Arc<Call>>,
    _count: WorkerCount,
) {
    let Job {
        sink,
        coordination: co,
        service,
        id,
        shutdown,
    } = job;
    let lease = format!("follow:{id}");
    let renew_every = (co.ttl / 3).max(Duration::from_millis(1));
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut view = S::View::default();
    let mut latest: Option<Arc<Call>> = None;
    // A state arrived that is not shown yet.
    let mut fresh = false;
    // Statuses shown so far: a state with fewer is older than what is shown.
    let mut shown = 0;
    // Whether this instance held the claim at the last look, and when it looked.
    let mut holding = false;
    let mut looked: Option<Instant> = None;
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            message = rx.recv(), if open => match message {
                Some(mut call) => {
                    while let Ok(next) = rx.try_recv() {
                        call = newest(call, next);
                    }
                    latest = Some(match latest.take() {
                        Some(known) => newest(known, call),
                        None => call,
                    });
                    fresh = true;
                }
                None => {
                    open = false;
                    // Stopped following a live call (shutdown); an ended one waits until its
                    // outcome is posted by someone.
                    if shutdown.is_cancelled()
                        || !latest.as_ref().is_some_and(|c| c.status.is_terminal())
                    {
                        break;
                    }
                }
            },
            () = shutdown.cancelled(), if !open => break,
            _ = renew.tick() => looked = None,
        }
        let Some(mut call) = latest.clone() else {
            continue;
        };
        // At each renewal, and for a state that arrives when the last look is that old.
        if looked.is_none_or(|at| at.elapsed() >= renew_every) {
            looked = Some(Instant::now());
            let held = match co.leases.hold(&lease, co.ttl).await {
                Ok(held) => {
                    if CLAIMS_FAILING.swap(false, Ordering::AcqRel) {
                        info!("follow claims answer again");
                    }
                    held
                }
                Err(e) => {
                    // Once per outage, not once per call and renewal.
                    if !CLAIMS_FAILING.swap(true, Ordering::AcqRel) {
                        warn!(call_id = %id, error = %e, "could not take or renew follow claims; calls are shown again when they answer");
                    }
                    false
                }
            };
            if held && !holding && co.shared {
                // Taking the call over (or over from the start): the store has its newest
                // state and the status message another instance posted.
                match service.get(&id).await {
                    Ok(Some(stored)) => {
                        let message = stored.origin.status_message.clone();
                        call = newest(call, Arc::new(stored));
                        if call.origin.status_message.is_none() && message.is_some() {
                            Arc::make_mut(&mut call).origin.status_message = message;
                        }
                        latest = Some(call.clone());
                        fresh = true;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(call_id = %id, error = %e, "could not re-read a call taken over")
                    }
                }
            }
            holding = held;
        }
        if !holding {
            continue;
        }
        if call.status.is_terminal() {
            match co.claims.claim_step(&id, "outcome").await {
                Ok(true) => {
                    let call = settle_detection(&service, call).await;
                    sink.show_status(&mut view, &call).await;
                    sink.post_outcome(&mut view, &call).await;
                }
                // Another instance posted it (and showed the final status before).
                Ok(false) => {}
                Err(e) => {
                    warn!(call_id = %id, error = %e, "could not claim the outcome; trying again");
                    looked = None;
                    continue;
                }
            }
            break;
        }
        if !fresh || call.history.len() < shown {
            continue;
        }
        fresh = false;
        shown = call.history.len();
        sink.show_status(&mut view, &call).await;
    }
    if holding {
        // Hands the call over at once (after its outcome, or on a graceful stop).
        if let Err(e) = co.leases.release(&lease).await {
            warn!(call_id = %id, error = %e, "could not release the follow claim");
        }
    }
}

/// The later of two states of one call (an ended one is the last).
fn newest(a: Arc<Call>, b: Arc<Call>) -> Arc<Call> {
    if a.status.is_terminal() || (!b.status.is_terminal() && b.history.len() < a.history.len()) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;

    use super::*;
    use crate::calls::service::{CallDefaults, CallRequest};
    use crate::calls::{EventBus, Hangup, MemoryStore, Placed, Telephony, TelephonyError};
    use crate::config::Settings;
    use crate::core::call::{CallSid, CallStatus, Origin, StatusUpdate};
    use crate::core::phone::{PhoneNumber, Region};

    /// Never asked: these tests run no dialer.
    struct NoTelephony;

    #[async_trait]
    impl Telephony for NoTelephony {
        async fn place(&self, _: &Call) -> Result<Placed, TelephonyError> {
            Err(TelephonyError::Unreachable(
                "no telephony in this test".into(),
            ))
        }
        async fn hangup(&self, _: &CallSid, _: Hangup) -> Result<(), TelephonyError> {
            Err(TelephonyError::Unreachable(
                "no telephony in this test".into(),
            ))
        }
        async fn fetch(&self, _: &CallSid) -> Result<StatusUpdate, TelephonyError> {
            Err(TelephonyError::Unreachable(
                "no telephony in this test".into(),
            ))
        }
        async fn recording(&self, _: &str) -> Result<crate::calls::Audio, TelephonyError> {
            Err(TelephonyError::Protocol("no recordings here".into()))
        }
        fn is_simulated(&self) -> bool {
            true
        }
    }

    /// A chat that records what it was asked to show, one await per post (a network).
    #[derive(Default)]
    struct Recorder {
        outcomes: Mutex<HashMap<CallId, usize>>,
        /// Outcomes posted for a call whose status was never shown.
        unseen: Mutex<usize>,
    }

    #[async_trait]
    impl Sink for Recorder {
        /// The statuses shown.
        type View = Vec<CallStatus>;

        fn platform(&self) -> Platform {
            Platform::Telegram
        }

        async fn show_status(&self, view: &mut Vec<CallStatus>, call: &Call) {
            tokio::task::yield_now().await;
            view.push(call.status);
        }

        async fn post_outcome(&self, view: &mut Vec<CallStatus>, call: &Call) {
            tokio::task::yield_now().await;
            if view.last() != Some(&call.status) {
                *self.unseen.lock() += 1;
            }
            *self.outcomes.lock().entry(call.id.clone()).or_default() += 1;
        }

        async fn post_recording(&self, _call: &Call) {}
    }

    fn service(bus_capacity: usize) -> Arc<CallService> {
        let mut settings = Settings::defaults();
        settings.access.open = true;
        let l = &mut settings.limits;
        l.max_concurrent = u32::MAX;
        l.per_user_hour = u32::MAX;
        l.per_user_day = u32::MAX;
        l.per_destination_hour = u32::MAX;
        l.global_hour = u32::MAX;
        l.global_day = u32::MAX;
        CallService::with_bus(
            Arc::new(MemoryStore::new(100_000, Duration::from_secs(3600))),
            Arc::new(NoTelephony),
            CallDefaults {
                voices: Default::default(),
                from: "+15005550006".into(),
                voice: "alice".into(),
                language: "en-US".into(),
                message: "hello".into(),
                machine_detection: Default::default(),
                record: false,
            },
            settings.policy(),
            Arc::new(crate::calls::MemoryQueue::new(10_000)),
            EventBus::with_capacity(bus_capacity),
            Arc::new(crate::calls::usage::MemoryLedger::new()),
        )
    }

    async fn place(service: &CallService, platform: Platform, n: usize) -> Vec<CallId> {
        let region = Region::parse("IN").unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let mut origin = Origin::new(platform, format!("user{i}"));
            origin.chat = format!("{i}").into();
            let call = service
                .request(CallRequest {
                    to: PhoneNumber::parse("+91 98765 43210", region).unwrap(),
                    message: None,
                    origin,
                    speech: Default::default(),
                })
                .await
                .unwrap();
            ids.push(call.id);
        }
        ids
    }

    async fn end(service: &CallService, ids: &[CallId], status: CallStatus) {
        for id in ids {
            let update = StatusUpdate {
                status: Some(status),
                ..StatusUpdate::default()
            };
            service.on_status(Some(id), &update).await.unwrap();
        }
    }

    /// Waits (bounded) until `f` holds, giving the follower's tasks the thread meanwhile.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The test: a bus of 4 and 1,000 calls ending at once. Everything here runs on
    /// one thread, so the follower cannot read a single event while the calls are created or
    /// while they end: it falls 996 events behind both times, and must find every call (and
    /// every outcome) in the store.
    #[tokio::test]
    async fn a_thousand_calls_ending_at_once_on_a_bus_of_four_get_one_outcome_each() {
        let service = service(4);
        let sink = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let follower = spawn(
            sink.clone(),
            service.clone(),
            Coordination::solo(),
            stop.clone(),
        );
        let mut probe = service.subscribe();

        let ids = place(&service, Platform::Telegram, 1000).await;
        // Another platform's calls are not followed.
        let others = place(&service, Platform::Slack, 10).await;
        until("a worker for every call", || follower.workers() == 1000).await;

        // The other platform's first, so that the events still waiting after the overflow
        // are final events of calls the follower has just finished from the store.
        end(&service, &others, CallStatus::Busy).await;
        end(&service, &ids, CallStatus::Completed).await;
        assert!(
            matches!(probe.recv().await, Err(RecvError::Lagged(_))),
            "the bus overflowed"
        );
        until("every outcome", || sink.outcomes.lock().len() == 1000).await;
        until("no worker left", || follower.workers() == 0).await;

        // One more call, after the burst: its outcome is the signal that everything before
        // it has been shown (a second outcome for any call would have come by then).
        let last = place(&service, Platform::Telegram, 1).await;
        until("the last call's worker", || follower.workers() == 1).await;
        end(&service, &last, CallStatus::NoAnswer).await;
        until("the last outcome", || sink.outcomes.lock().len() == 1001).await;
        until("no worker left", || follower.workers() == 0).await;

        let outcomes = sink.outcomes.lock().clone();
        for id in ids.iter().chain(&last) {
            assert_eq!(outcomes.get(id), Some(&1), "call {id}");
        }
        assert!(others.iter().all(|id| !outcomes.contains_key(id)));
        assert_eq!(
            *sink.unseen.lock(),
            0,
            "every outcome follows its final status"
        );
        stop.cancel();
    }

    /// Calls created and ended while the follower was behind (it never saw them) still get
    /// their outcome; the events left in the backlog after the resync start no worker.
    #[tokio::test]
    async fn calls_born_and_ended_while_behind_get_their_outcome_once() {
        let service = service(4);
        let sink = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let follower = spawn(
            sink.clone(),
            service.clone(),
            Coordination::solo(),
            stop.clone(),
        );

        let ids = place(&service, Platform::Telegram, 50).await;
        end(&service, &ids, CallStatus::Failed).await;
        until("every outcome", || sink.outcomes.lock().len() == 50).await;
        until("no worker left", || follower.workers() == 0).await;

        let last = place(&service, Platform::Telegram, 1).await;
        end(&service, &last, CallStatus::Completed).await;
        until("the last outcome", || sink.outcomes.lock().len() == 51).await;
        until("no worker left", || follower.workers() == 0).await;
        assert!(sink.outcomes.lock().values().all(|n| *n == 1));
        stop.cancel();
    }

    #[test]
    fn the_newest_state_wins_and_an_ended_one_is_last() {
        let region = Region::parse("IN").unwrap();
        let to = PhoneNumber::parse("+91 98765 43210", region).unwrap();
        let queued = Call::new(
            to,
            "+15005550006",
            "hi".into(),
            "alice",
            "en-US",
            Origin::new(Platform::Telegram, "u"),
            Utc::now(),
        );
        let mut ringing = queued.clone();
        let ring = StatusUpdate {
            status: Some(CallStatus::Ringing),
            ..StatusUpdate::default()
        };
        ringing.apply(&ring, Utc::now());
        let mut ended = ringing.clone();
        ended.finish(CallStatus::Canceled, None, Utc::now());
        let (queued, ringing, ended) = (Arc::new(queued), Arc::new(ringing), Arc::new(ended));
        assert_eq!(
            newest(queued.clone(), ringing.clone()).status,
            CallStatus::Ringing
        );
        assert_eq!(
            newest(ringing.clone(), queued.clone()).status,
            CallStatus::Ringing
        );
        assert_eq!(
            newest(ended.clone(), ringing.clone()).status,
            CallStatus::Canceled
        );
        assert_eq!(newest(queued, ended).status, CallStatus::Canceled);
    }
}
