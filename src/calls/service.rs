//! CallService: the one entry point for placing, following and cancelling calls.
//! Every change goes through the store and is then published on the event bus.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::events::{CallEvent, EventBus, EventKind};
use super::queue::{DialQueue, QueueError};
use super::store::{CallStore, ListFilter, Stats, StoreError};
use super::usage::{Admission, Admitted, Claim, Ledger, MemoryLedger};
use super::{Audio, Hangup, Placed, Telephony, TelephonyError};
use crate::core::call::{
    Applied, Call, CallError, CallId, CallSid, CallStatus, MachineDetection, Origin, Recording,
    StatusUpdate,
};
use crate::core::phone::PhoneNumber;
use crate::core::policy::{Policy, Refusal, RefusalKind, Request};
use crate::core::replies;
use crate::core::speech::{Answer, Speech, Spoken, Voices};

/// How soon, and then how often at most, an ended call's leaving the live set is retried
/// when the ledger could not be reached.
const ENDED_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const ENDED_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);
const ENDED_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What a call says and sounds like when the request does not choose.
#[derive(Debug, Clone)]
pub struct CallDefaults {
    pub from: String,
    /// The default language's voice.
    pub voice: String,
    /// The default language.
    pub language: String,
    pub message: String,
    /// Answering-machine detection asked for every call.
    pub machine_detection: MachineDetection,
    /// Every call is recorded.
    pub record: bool,
    /// More languages a request may ask for, each with its voice (`[voices]`, tags as
    /// configured).
    pub voices: Vec<(String, String)>,
}

/// A request to place one call.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub to: PhoneNumber,
    pub message: Option<String>,
    pub origin: Origin,
    /// The language and repetition asked for.
    pub speech: Speech,
}

impl CallRequest {
    /// The call needs the provider to reach us during the call (a `<Gather>` posts its
    /// answer back): a provider mode without callbacks cannot place it.
    pub fn needs_callbacks(&self) -> bool {
        self.speech.question.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The access policy refused who asks; the text tells them their id.
    #[error("{0}")]
    Refused(Refusal),
    /// The access policy refused what was asked (destination, message).
    #[error("{0}")]
    Rejected(Refusal),
    /// A limit was reached (per requester, per destination, concurrent calls).
    #[error("{0}")]
    Limited(Refusal),
    #[error("{}", replies::queue_full(*.0))]
    QueueFull(usize),
    #[error("{}", replies::stopping())]
    Stopping,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a status callback was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    Applied(Applied),
    UnknownCall,
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("{}", replies::unknown_call(.0))]
    NotFound(String),
    #[error("{}", replies::already_ended(*.0))]
    AlreadyEnded(CallStatus),
    #[error("the telephony provider refused to hang up: {0}")]
    Telephony(#[from] TelephonyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// Never dialed: ended here, as canceled.
    BeforeDialing(Call),
    /// Hang-up sent to the provider; its callback brings the final status.
    HangupSent(Call),
}

pub struct CallService {
    policy: Policy,
    /// Per-requester, per-destination and global usage, and live calls: this process's, or
    /// shared by every instance.
    ledger: Arc<dyn Ledger>,
    store: Arc<dyn CallStore>,
    bus: EventBus,
    queue: Arc<dyn DialQueue>,
    telephony: Arc<dyn Telephony>,
    defaults: CallDefaults,
    /// The languages calls may be spoken in, from `defaults`.
    voices: Voices,
}

impl CallService {
    /// The service; it pushes accepted calls on `queue`, which the dialer reads.
    pub fn new(
        store: Arc<dyn CallStore>,
        telephony: Arc<dyn Telephony>,
        defaults: CallDefaults,
        policy: Policy,
        queue: Arc<dyn DialQueue>,
    ) -> Arc<Self> {
        Self::with_bus(
            store,
            telephony,
            defaults,
            policy,
            queue,
            EventBus::new(),
            Arc::new(MemoryLedger::new()),
        )
    }

    /// [`CallService::new`] publishing on `bus` (`calls.event_bus_capacity`) and counting
    /// usage in `ledger`.
    pub fn with_bus(
        store: Arc<dyn CallStore>,
        telephony: Arc<dyn Telephony>,
        defaults: CallDefaults,
        policy: Policy,
        queue: Arc<dyn DialQueue>,
        bus: EventBus,
        ledger: Arc<dyn Ledger>,
    ) -> Arc<Self> {
        let voices = Voices::new(
            &defaults.language,
            &defaults.voice,
            defaults.voices.iter().cloned(),
        );
        Arc::new(Self {
            policy,
            ledger,
            store,
            bus,
            queue,
            telephony,
            defaults,
            voices,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.bus.subscribe()
    }

    pub fn is_simulated(&self) -> bool {
        self.telephony.is_simulated()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The language and voice `req` would be spoken in, or why it cannot be: a language
    /// with no voice configured, or a text longer than that voice speaks. Pure; `request`
    /// checks it again, and a chat checks it before asking to confirm.
    pub fn speech(&self, req: &CallRequest) -> Result<Spoken, Refusal> {
        let message = self.message_of(req);
        let question = req.speech.question.as_ref().map(|q| q.spoken());
        let mut texts = vec![message.as_str()];
        texts.extend(question.as_deref());
        self.voices.choose(&req.speech, &texts)
    }

    /// What the call says before any question: the request's message, else the default one
    /// (a call that only asks says nothing before its question).
    fn message_of(&self, req: &CallRequest) -> String {
        match req.message.as_deref().filter(|m| !m.trim().is_empty()) {
            Some(m) => m.to_owned(),
            None if req.speech.question.is_some() => String::new(),
            None => self.defaults.message.clone(),
        }
    }

    /// The callee's answer to the call's question (a `<Gather>` post). The first answer is
    /// kept and published; a repeated or late one changes nothing.
    pub async fn on_answer(
        &self,
        id: &CallId,
        answer: Answer,
    ) -> Result<StatusOutcome, StoreError> {
        Ok(
            match self
                .change(id, |call| call.answered(answer.clone()))
                .await?
            {
                Some((call, applied)) => {
                    if applied != Applied::Ignored {
                        info!(call_id = %call.id, "question answered");
                    }
                    StatusOutcome::Applied(applied)
                }
                None => StatusOutcome::UnknownCall,
            },
        )
    }

    /// Checks the access policy, records the call as queued and hands it to the dialer.
    /// One audit event per request, whatever the decision.
    pub async fn request(&self, req: CallRequest) -> Result<Call, RequestError> {
        let id = CallId::generate();
        // The language and voice asked for (refused below, after the identity checks, when
        // none is configured or the text is too long for the voice).
        let spoken = self.speech(&req);
        let message = self.message_of(&req);
        let times = req.speech.times();
        let (voice, language, chosen) = match &spoken {
            Ok(s) => (s.voice.clone(), s.language.clone(), s.chosen),
            Err(_) => (
                self.defaults.voice.to_string(),
                self.defaults.language.to_string(),
                false,
            ),
        };
        // The call as it would be placed, for the provider's own check (stamped with the
        // time it is admitted at below).
        let mut draft = Call::new(
            req.to,
            self.defaults.from.clone(),
            message,
            voice,
            language,
            req.origin,
            Utc::now(),
        )
        .with_id(id);
        draft.machine_detection = self.defaults.machine_detection;
        draft.record = self.defaults.record;
        draft.language_chosen = chosen;
        draft.say_loop = (times > 1).then_some(times);
        draft.question = req.speech.question.map(Box::new);
        let request = Request {
            origin: &draft.origin,
            to: &draft.to,
            message: req.message.as_deref(),
        };
        // Identity, destination, the voice and what the provider can carry first (pure);
        // then the limits, checked and counted in one step by the ledger.
        let decision = match self
            .policy
            .check_request(&request)
            .and_then(|()| spoken.map(drop))
            .and_then(|()| self.telephony.accepts(&draft))
        {
            Err(refusal) => Ok(Admission::Refused(refusal)),
            Ok(()) => {
                let claim = Claim {
                    origin: &draft.origin,
                    to: &draft.to,
                    call_id: draft.id.as_str(),
                };
                self.ledger.admit(&self.policy.limits, &claim).await
            }
        };
        let (verdict, reason) = match &decision {
            Ok(Admission::Admitted(_)) => ("allow", ""),
            Ok(Admission::Refused(refusal)) => ("refuse", refusal.code()),
            Err(_) => ("error", "usage_unavailable"),
        };
        info!(
            target: "callbot::audit",
            platform = %draft.origin.platform,
            requester = %draft.origin.requester,
            chat = %draft.origin.chat,
            destination = %draft.to,
            decision = verdict,
            reason,
            message_chars = req.message.as_ref().map_or(0, |m| m.chars().count()),
            "call request"
        );
        let admitted = match decision? {
            Admission::Admitted(admitted) => admitted,
            // The refusal keeps its type up to the adapter that renders it.
            Admission::Refused(refusal) => {
                return Err(match refusal.kind() {
                    RefusalKind::Identity => RequestError::Refused(refusal),
                    RefusalKind::Request => RequestError::Rejected(refusal),
                    RefusalKind::Limit => RequestError::Limited(refusal),
                });
            }
        };
        metrics::gauge!("callbot_active_calls").set(admitted.live as f64);
        let call = draft.queued_at(admitted.at);
        if let Err(e) = self.store.insert(call.clone()).await {
            self.take_back(&call, &admitted).await;
            return Err(e.into());
        }
        info!(
            call_id = %call.id,
            platform = %call.origin.platform,
            requester = %call.origin.requester,
            to = %call.to,
            "call queued"
        );
        self.bus.publish(EventKind::Created, Arc::new(call.clone()));
        match self.queue.push(&call.id).await {
            Ok(()) => Ok(call),
            Err(e) => {
                let (err, reason) = match e {
                    QueueError::Full(capacity) => {
                        let err = RequestError::QueueFull(capacity);
                        let reason = err.to_string();
                        (err, reason)
                    }
                    QueueError::Closed => (RequestError::Stopping, replies::stopping()),
                    QueueError::Store(e) => (
                        RequestError::Store(e),
                        "not placed: the dial queue could not be reached".to_owned(),
                    ),
                };
                // Nothing was placed, so nothing counts against the limits.
                self.take_back(&call, &admitted).await;
                // Should this fail too, the call stays queued without a queue entry, and
                // housekeeping (`recover`) fails it later: it is never dialed unannounced.
                self.fail(&call.id, None, reason, 0).await?;
                Err(err)
            }
        }
    }

    /// A request that placed nothing counts against no limit.
    async fn take_back(&self, call: &Call, admitted: &Admitted) {
        let claim = Claim {
            origin: &call.origin,
            to: &call.to,
            call_id: call.id.as_str(),
        };
        if let Err(e) = self.ledger.take_back(&claim, admitted).await {
            warn!(call_id = %call.id, error = %e, "could not take back a request's count; it counts until its windows pass");
        }
    }

    /// An ended call leaves the live set (wherever it was admitted). When the ledger cannot
    /// be reached, this is retried in the background until it can: the store already holds
    /// the call as ended, so no later callback would bring it here again.
    async fn left_live_set(&self, id: &CallId) {
        match self.ledger.ended(id.as_str()).await {
            Ok(live) => metrics::gauge!("callbot_active_calls").set(live as f64),
            Err(e) => {
                warn!(call_id = %id, error = %e, "could not take an ended call out of the live set; retrying");
                let ledger = self.ledger.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let mut wait = ENDED_RETRY_FIRST;
                    let since = tokio::time::Instant::now();
                    // After a day the live set has dropped the entry by itself.
                    while since.elapsed() < ENDED_RETRY_FOR {
                        tokio::time::sleep(wait).await;
                        match ledger.ended(id.as_str()).await {
                            Ok(live) => {
                                metrics::gauge!("callbot_active_calls").set(live as f64);
                                return;
                            }
                            Err(e) => {
                                warn!(call_id = %id, error = %e, "still cannot take an ended call out of the live set");
                                wait = (wait * 2).min(ENDED_RETRY_MAX);
                            }
                        }
                    }
                });
            }
        }
    }

    pub async fn get(&self, id: &CallId) -> Result<Option<Call>, StoreError> {
        self.store.get(id).await
    }

    pub async fn list(&self, limit: usize, filter: &ListFilter) -> Result<Vec<Call>, StoreError> {
        self.store.list(limit, filter).await
    }

    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.store.stats(Utc::now()).await
    }

    /// Applies a change and publishes what it did.
    async fn change(
        &self,
        id: &CallId,
        mut f: impl FnMut(&mut Call) -> Applied + Send,
    ) -> Result<Option<(Arc<Call>, Applied)>, StoreError> {
        // Shared with the event bus, not copied for it: a status callback copies its call
        // once, out of the store.
        let result = self
            .store
            .update(id, &mut f)
            .await?
            .map(|(call, applied)| (Arc::new(call), applied));
        if let Some((call, applied)) = &result {
            match applied {
                Applied::Ignored => {}
                Applied::Progress => self.bus.publish(EventKind::Progress, call.clone()),
                Applied::Final => {
                    self.left_live_set(&call.id).await;
                    metrics::counter!("callbot_calls_total", "status" => call.status.as_str())
                        .increment(1);
                    info!(call_id = %call.id, status = %call.status, duration = ?call.duration_secs, "call ended");
                    self.bus.publish(EventKind::Final, call.clone());
                }
            }
        }
        Ok(result)
    }

    /// A status callback from the provider. `id` comes from our callback URL; the sid
    /// index is the fallback for callbacks without it.
    pub async fn on_status(
        &self,
        id: Option<&CallId>,
        update: &StatusUpdate,
    ) -> Result<StatusOutcome, StoreError> {
        let id = match id {
            Some(id) => Some(id.clone()),
            None => match &update.sid {
                Some(sid) => self.store.find_by_sid(sid).await?,
                None => None,
            },
        };
        let Some(id) = id else {
            return Ok(StatusOutcome::UnknownCall);
        };
        let now = Utc::now();
        Ok(
            match self.change(&id, |call| call.apply(update, now)).await? {
                Some((_, applied)) => StatusOutcome::Applied(applied),
                None => StatusOutcome::UnknownCall,
            },
        )
    }

    /// The provider's answering-machine result (`answered_by`: its own words, "human",
    /// "machine_end_beep"…). Taken once, in any order with the status callbacks.
    pub async fn on_detection(
        &self,
        id: Option<&CallId>,
        sid: Option<&CallSid>,
        answered_by: &str,
    ) -> Result<StatusOutcome, StoreError> {
        let Some(id) = self.callback_call(id, sid).await? else {
            return Ok(StatusOutcome::UnknownCall);
        };
        Ok(
            match self.change(&id, |call| call.detected(answered_by)).await? {
                Some((_, applied)) => StatusOutcome::Applied(applied),
                None => StatusOutcome::UnknownCall,
            },
        )
    }

    /// The provider's recording of a call is ready. Taken once (a repeat changes nothing);
    /// the first report publishes [`EventKind::Recording`], which the chat posts.
    pub async fn on_recording(
        &self,
        id: Option<&CallId>,
        sid: Option<&CallSid>,
        recording: Recording,
    ) -> Result<StatusOutcome, StoreError> {
        let Some(id) = self.callback_call(id, sid).await? else {
            return Ok(StatusOutcome::UnknownCall);
        };
        let mut fresh = false;
        let result = self
            .store
            .update(&id, &mut |call: &mut Call| {
                fresh = call.recorded(recording.clone());
                Applied::Ignored
            })
            .await?;
        Ok(match result {
            Some((call, _)) => {
                if fresh {
                    info!(call_id = %call.id, duration = ?call.recording.as_ref().and_then(|r| r.duration_secs), "call recorded");
                    self.bus.publish(EventKind::Recording, Arc::new(call));
                }
                StatusOutcome::Applied(if fresh {
                    Applied::Progress
                } else {
                    Applied::Ignored
                })
            }
            None => StatusOutcome::UnknownCall,
        })
    }

    /// The call a callback is about: by our id in its URL, else by the provider's sid.
    async fn callback_call(
        &self,
        id: Option<&CallId>,
        sid: Option<&CallSid>,
    ) -> Result<Option<CallId>, StoreError> {
        match (id, sid) {
            (Some(id), _) => Ok(Some(id.clone())),
            (None, Some(sid)) => self.store.find_by_sid(sid).await,
            (None, None) => Ok(None),
        }
    }

    /// The audio of a call's recording, streamed from the provider.
    pub async fn recording_audio(&self, recording: &Recording) -> Result<Audio, TelephonyError> {
        self.telephony.recording(&recording.sid).await
    }

    /// A status the poller fetched: the same state machine and follow-up as a callback
    /// ([`CallService::on_status`]), and the request counted on the call in the same store
    /// change. `None` when the call is unknown.
    pub async fn polled(
        &self,
        id: &CallId,
        update: &StatusUpdate,
    ) -> Result<Option<Call>, StoreError> {
        let now = Utc::now();
        let result = self
            .change(id, |call| {
                call.polls = call.polls.saturating_add(1);
                call.apply(update, now)
            })
            .await?;
        Ok(result.map(|(call, _)| Arc::unwrap_or_clone(call)))
    }

    /// The live call of ours with this provider sid.
    pub async fn call_with_sid(&self, sid: &CallSid) -> Result<Option<CallId>, StoreError> {
        self.store.find_by_sid(sid).await
    }

    /// The provider accepted the call. Returns the call; `None` if it is unknown.
    pub async fn placed(
        &self,
        id: &CallId,
        placed: &Placed,
        attempts: u32,
    ) -> Result<Option<Call>, StoreError> {
        let update = StatusUpdate {
            sid: Some(placed.sid.clone()),
            status: Some(placed.status),
            ..StatusUpdate::default()
        };
        let now = Utc::now();
        let result = self
            .change(id, |call| {
                call.attempts = attempts;
                call.placed_at.get_or_insert(now);
                call.apply(&update, now)
            })
            .await?;
        Ok(result.map(|(call, _)| Arc::unwrap_or_clone(call)))
    }

    /// Ends a call as failed with a reason the requester will read.
    pub async fn fail(
        &self,
        id: &CallId,
        code: Option<i64>,
        message: String,
        attempts: u32,
    ) -> Result<Option<Call>, StoreError> {
        let error = CallError { code, message };
        let now = Utc::now();
        let result = self
            .change(id, |call| {
                call.attempts = call.attempts.max(attempts);
                call.fail(error.clone(), now)
            })
            .await?;
        Ok(result.map(|(call, _)| Arc::unwrap_or_clone(call)))
    }

    /// Remembers the chat message that shows this call's progress.
    pub async fn set_status_message(
        &self,
        id: &CallId,
        message_id: String,
    ) -> Result<(), StoreError> {
        self.store
            .update(id, &mut |call: &mut Call| {
                call.origin.status_message = Some(message_id.as_str().into());
                Applied::Ignored
            })
            .await?;
        Ok(())
    }

    /// Cancels a call: ends it here if it was not dialed yet, else asks the provider to hang up.
    pub async fn cancel(&self, id: &CallId) -> Result<Cancelled, CancelError> {
        let call = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        if call.status.is_terminal() {
            return Err(CancelError::AlreadyEnded(call.status));
        }
        match &call.sid {
            None => {
                let now = Utc::now();
                let result = self
                    .change(id, |c| {
                        if c.sid.is_some() {
                            return Applied::Ignored;
                        }
                        c.finish(CallStatus::Canceled, None, now)
                    })
                    .await?;
                match result {
                    Some((call, Applied::Final)) => {
                        Ok(Cancelled::BeforeDialing(Arc::unwrap_or_clone(call)))
                    }
                    // The dialer got a sid in the meantime: hang up at the provider instead.
                    Some((call, _)) if !call.status.is_terminal() => {
                        Box::pin(self.cancel(&call.id)).await
                    }
                    Some((call, _)) => Err(CancelError::AlreadyEnded(call.status)),
                    None => Err(CancelError::NotFound(id.to_string())),
                }
            }
            Some(sid) => {
                self.hangup(sid, call.status).await?;
                Ok(Cancelled::HangupSent(call))
            }
        }
    }

    /// Closes calls that are not final `max_age` after they were created: the provider's
    /// final status if it has one; otherwise hang up and fail them with a reason.
    /// Returns how many were closed.
    pub async fn reap(&self, max_age: std::time::Duration) -> Result<usize, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(max_age).unwrap_or_default();
        let stale: Vec<Call> = self
            .store
            .list(
                usize::MAX,
                &ListFilter {
                    live_only: true,
                    ..ListFilter::default()
                },
            )
            .await?
            .into_iter()
            .filter(|c| c.sid.is_some() && c.dialed_at() < cutoff)
            .collect();
        let mut closed = 0;
        for call in stale {
            let Some(sid) = &call.sid else { continue };
            let result = match self.telephony.fetch(sid).await {
                Ok(update) if update.status.is_some_and(CallStatus::is_terminal) => {
                    self.on_status(Some(&call.id), &update).await?;
                    true
                }
                Ok(_) => {
                    let _ = self.hangup(sid, call.status).await;
                    let reason = "no final status from the provider within the time limit; hung up";
                    self.fail(&call.id, None, reason.to_owned(), 0)
                        .await?
                        .is_some()
                }
                Err(TelephonyError::Api {
                    http_status: 404, ..
                }) => {
                    let reason = "the provider has no record of this call";
                    self.fail(&call.id, None, reason.to_owned(), 0)
                        .await?
                        .is_some()
                }
                Err(e) => {
                    warn!(call_id = %call.id, error = %e, "reaper could not fetch the call; will retry");
                    false
                }
            };
            closed += usize::from(result);
        }
        Ok(closed)
    }

    /// Fails the calls an instance stored but never queued (it died in between, or the queue
    /// refused and the failure could not be recorded either): queued without a sid, with no
    /// queue entry, created more than `after` ago. Their requester was never told the call
    /// was accepted, so they are not dialed now, and the thread still gets an outcome.
    /// Does nothing where the queue cannot tell (one process). Returns how many it failed.
    pub async fn recover(&self, after: std::time::Duration) -> Result<usize, StoreError> {
        // The entries first, the calls second: an entry is acknowledged only after its call's
        // result is recorded, so a call still queued now had no entry when they were read.
        let Some(queued) = self.queue.calls().await? else {
            return Ok(0);
        };
        let cutoff = Utc::now() - chrono::Duration::from_std(after).unwrap_or_default();
        let orphans: Vec<CallId> = self
            .store
            .list(
                usize::MAX,
                &ListFilter {
                    live_only: true,
                    ..ListFilter::default()
                },
            )
            .await?
            .into_iter()
            .filter(|c| c.status == CallStatus::Queued && c.sid.is_none())
            .filter(|c| c.created_at < cutoff && !queued.contains(&c.id))
            .map(|c| c.id)
            .collect();
        let mut failed = 0;
        for id in orphans {
            let error = CallError {
                code: None,
                message: "not placed: the callbot instance that took it stopped before queueing it"
                    .to_owned(),
            };
            let now = Utc::now();
            let result = self
                .change(&id, |call| {
                    if call.status != CallStatus::Queued || call.sid.is_some() {
                        return Applied::Ignored;
                    }
                    call.fail(error.clone(), now)
                })
                .await?;
            if let Some((_, Applied::Final)) = result {
                warn!(call_id = %id, "a call stored but never queued was failed");
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Housekeeping of the dial queue itself.
    pub async fn tidy_queue(&self) -> Result<(), StoreError> {
        self.queue.tidy().await
    }

    /// Hangs up a live call at the provider (used by cancel and by the dialer when a call
    /// was canceled while its create request was in flight).
    pub async fn hangup(&self, sid: &CallSid, status: CallStatus) -> Result<(), TelephonyError> {
        let how = if status == CallStatus::InProgress {
            Hangup::Complete
        } else {
            Hangup::Cancel
        };
        let result = self.telephony.hangup(sid, how).await;
        if let Err(e) = &result {
            warn!(%sid, error = %e, "hang-up failed");
        }
        result
    }
}
