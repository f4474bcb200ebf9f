//! The one dialogue every chat adapter speaks: a message or a button press from any platform
//! (a [`Conversation`] plus text or an [`Action`]) in, a typed [`Reply`] out.
//!
//! Adapters (Telegram, Slack, the web console) only receive, render and send: they build the
//! [`Conversation`] from what the platform delivered, ask [`Dialogue`] what to answer, and turn
//! the [`Reply`] into their markup (Telegram text and inline keyboards, Slack Block Kit, web
//! JSON). Every rule about who may do or see what lives here, once:
//!
//! | Rule | Where |
//! |---|---|
//! | `list` shows the calls placed from this conversation (Telegram chat or forum topic, Slack channel or DM in its team); the console, with its token, shows all | [`Conversation::scope`] |
//! | `status` and `cancel` by id only reach calls visible in this conversation | `Dialogue::find` |
//! | only the requester cancels (the console cancels any call) | `Dialogue::cancel` |
//! | someone who may not call is refused before anything but `help`, before any button, and privately | [`Dialogue::on_text`], [`Reply::private`] |
//! | a delivery is acted on once (one dedupe memo for every platform and every instance) | [`Dialogue::first_delivery`] |
//! | a confirmation is answered once, by its requester, within [`CONFIRM_TTL`], on whichever instance (one pending memo, one-time nonce taken atomically) | [`Dialogue::on_action`] |
//! | the same words everywhere | [`Reply::text`] (wording in [`crate::core::replies`]) |

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::AdapterContext;
use crate::calls::RequestError;
use crate::calls::memo::Space;
use crate::calls::service::{CallRequest, CancelError, Cancelled};
use crate::calls::store::{ListFilter, StoreError};
use crate::core::call::{Call, CallId, Origin, Platform};
use crate::core::command::{Command, ParseError};
use crate::core::phone::PhoneNumber;
use crate::core::policy::{Refusal, requester_key};
use crate::core::replies;
use crate::core::speech::Speech;

/// How long a confirmation can be pressed.
pub const CONFIRM_TTL: Duration = Duration::from_secs(120);
/// How long an answered or expired confirmation is remembered (to say "expired" rather than
/// "already answered").
const PENDING_KEEP: Duration = Duration::from_secs(3600);
/// Most confirmations waiting at once.
const PENDING_CAPACITY: u64 = 10_000;
/// How long a delivery id is remembered (platforms retry within minutes).
const DEDUPE_TTL: Duration = Duration::from_secs(3600);
/// Most delivery ids remembered.
const DEDUPE_CAPACITY: u64 = 100_000;
/// Calls `list` shows.
pub const LIST_LIMIT: usize = 10;
/// Calls read to find the asker's latest live call in a conversation.
const LIVE_SCAN: usize = 50;

/// Deliveries already taken (`platform:id`), in the memo.
const DELIVERIES: Space = Space {
    name: "delivery",
    capacity: DEDUPE_CAPACITY,
};
/// Confirmations waiting for their requester, by nonce, in the memo.
const PENDING: Space = Space {
    name: "confirm",
    capacity: PENDING_CAPACITY,
};

/// A call request held until its requester presses "Call" (in the memo as JSON, so that
/// whichever instance the press reaches can place it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    to: PhoneNumber,
    message: Option<String>,
    origin: Origin,
    expires: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "is_default")]
    speech: Speech,
}

fn is_default(speech: &Speech) -> bool {
    *speech == Speech::default()
}

impl Pending {
    fn request(self) -> CallRequest {
        CallRequest {
            to: self.to,
            message: self.message,
            origin: self.origin,
            speech: self.speech,
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a pending confirmation serializes")
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes)
            .inspect_err(|e| error!(error = %e, "unreadable pending confirmation"))
            .ok()
    }
}

/// Where a message was written, by whom.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Who asks and where: the origin a call placed from here gets.
    pub origin: Origin,
    /// The person's own team when the platform says it is not `origin.team` (Slack Connect):
    /// checked against the allow-list too, so a foreign member of a shared channel is not let
    /// in by the host's team entry.
    pub own_team: Option<String>,
    /// The thread that is a conversation of its own (a Telegram forum topic); a Slack reply
    /// thread is not one (its channel is).
    pub topic: Option<String>,
    /// The operator's own console (behind its token): sees and cancels every call, is never
    /// asked to confirm, and is not checked against the chat allow-lists.
    pub operator: bool,
}

impl Conversation {
    /// A chat conversation.
    pub fn chat(origin: Origin) -> Self {
        Self {
            origin,
            own_team: None,
            topic: None,
            operator: false,
        }
    }

    /// The console.
    pub fn operator(origin: Origin) -> Self {
        Self {
            operator: true,
            ..Self::chat(origin)
        }
    }

    /// The calls this conversation sees.
    pub fn scope(&self) -> ListFilter {
        if self.operator {
            return ListFilter::default();
        }
        ListFilter {
            platform: Some(self.origin.platform),
            team: self.origin.team.as_deref().map(str::to_owned),
            chat: Some(self.origin.chat.to_string()),
            thread: self.topic.clone(),
            ..ListFilter::default()
        }
    }

    fn sees(&self, call: &Call) -> bool {
        self.scope().matches(call)
    }

    fn is_requester_of(&self, origin: &Origin) -> bool {
        self.operator
            || (origin.platform == self.origin.platform
                && origin.requester == self.origin.requester)
    }
}

/// A button press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// "Call" on the confirmation with this nonce.
    Confirm(String),
    /// "Don't call" on the confirmation with this nonce.
    Decline(String),
    /// "Cancel" on a live call's status message (the call id as the platform sent it).
    Cancel(String),
}

/// What the dialogue answers. Typed until an adapter renders it.
#[derive(Debug)]
pub enum Reply {
    /// The call was requested; its progress follows from its events.
    Placed(Box<Call>),
    /// Asks before dialing: the adapter shows "Call" / "Don't call" carrying `nonce`.
    Confirm {
        nonce: String,
        to: PhoneNumber,
        message: Option<String>,
        /// How it will be spoken when not the default way: "in Hindi (hi-IN), twice".
        spoken: Option<String>,
    },
    /// The access policy said no (who asks, what was asked, or a limit).
    Refused(Refusal),
    /// A call request we could not read (a bad number, text after it, …).
    Unreadable(ParseError),
    NotUnderstood,
    /// Usage, with the asker's id on a chat platform (what the allow-list takes).
    Help {
        asker: Option<(Platform, String)>,
    },
    Status(Box<Call>),
    List(Vec<Call>),
    /// "Don't call" was pressed.
    Declined,
    /// The confirmation was pressed after [`CONFIRM_TTL`].
    Expired,
    /// The confirmation was already answered (its nonce is used).
    AlreadyAnswered,
    /// Someone other than the requester pressed or asked.
    NotYours {
        /// The requester's name as the platform showed it, if it did.
        name: Option<String>,
        /// The requester's platform id (Slack mentions them with it).
        requester: String,
        confirm: bool,
    },
    /// No call with this id in this conversation.
    UnknownCall(String),
    /// `status` where nothing was called yet.
    NoCalls,
    /// `cancel` with nothing of the asker's in progress here.
    NoLiveCall,
    /// Canceled before it was dialed.
    Canceled(Box<Call>),
    /// The hang-up was sent; the final status follows.
    HangingUp(Box<Call>),
    /// Cancel did not work (the call had ended, the provider refused).
    CancelFailed(CancelError),
    /// Recorded but not dialed (queue full, shutting down): the call ends failed with this
    /// reason and its outcome follows like any other.
    NotPlaced(RequestError),
    /// The request could not be stored, so it was not taken (the store is down).
    NotRecorded,
    /// Our store failed.
    Sorry,
}

impl Reply {
    /// The plain text every adapter shows (Slack escapes it, Telegram sends it as is).
    pub fn text(&self) -> String {
        match self {
            Self::Placed(call) => replies::placed(call),
            Self::Confirm {
                to,
                message,
                spoken,
                ..
            } => replies::confirm_question(to, message.as_deref(), spoken.as_deref()),
            Self::Refused(r) => replies::refusal(r),
            Self::Unreadable(ParseError::NotUnderstood) | Self::NotUnderstood => {
                replies::not_understood()
            }
            Self::Unreadable(e) => e.to_string(),
            Self::Help { asker: None } => replies::help(),
            Self::Help {
                asker: Some((platform, id)),
            } => replies::help_with_id(*platform, id),
            Self::Status(call) => replies::status(call),
            Self::List(calls) => replies::list(calls),
            Self::Declined => replies::declined(),
            Self::Expired => replies::expired(),
            Self::AlreadyAnswered => replies::already_answered(),
            Self::NotYours { name, confirm, .. } => {
                replies::only_requester(name.as_deref(), *confirm)
            }
            Self::UnknownCall(id) => replies::unknown_call(id),
            Self::NoCalls => replies::no_calls(),
            Self::NoLiveCall => replies::no_live_call(),
            Self::Canceled(call) => replies::canceled(call),
            Self::HangingUp(call) => replies::hanging_up(call),
            Self::CancelFailed(e) => e.to_string(),
            Self::NotPlaced(e) => e.to_string(),
            Self::NotRecorded => replies::not_recorded(),
            Self::Sorry => replies::sorry(),
        }
    }

    /// Shown only to the asker (a Slack ephemeral message in a channel): refusing who asks
    /// tells their id, which is nobody else's business.
    pub fn private(&self) -> bool {
        matches!(self, Self::Refused(r) if r.kind() == crate::core::policy::RefusalKind::Identity)
    }

    /// The call's own messages say it in the conversation (its status message, its outcome):
    /// an adapter answering in the thread need not say it again.
    pub fn followed(&self) -> bool {
        matches!(self, Self::Placed(_) | Self::NotPlaced(_))
    }
}

/// The dialogue of one adapter context (cheap: borrowed).
pub struct Dialogue<'a> {
    ctx: &'a AdapterContext,
}

impl AdapterContext {
    /// The dialogue every adapter speaks.
    pub fn dialogue(&self) -> Dialogue<'_> {
        Dialogue { ctx: self }
    }
}

impl Dialogue<'_> {
    /// True the first time a delivery (`platform:id`) is seen, by any instance: Telegram's
    /// update_id, Slack's event_id. A repeated or replayed delivery is never acted on twice.
    /// An error (the shared memo is down) means it cannot be known yet: the adapter has the
    /// platform deliver it again later rather than act on it.
    pub async fn first_delivery(&self, key: &str) -> Result<bool, StoreError> {
        self.ctx.memory.first(DELIVERIES, key, DEDUPE_TTL).await
    }

    /// Who asks, against the allow-lists (the console is the operator's own).
    fn identity(&self, conv: &Conversation) -> Result<(), Refusal> {
        if conv.operator {
            return Ok(());
        }
        let policy = self.ctx.service.policy();
        policy.check_identity(&conv.origin)?;
        if let Some(own) = conv
            .own_team
            .as_deref()
            .filter(|t| conv.origin.team.as_deref() != Some(*t))
        {
            let mut theirs = conv.origin.clone();
            theirs.team = Some(own.into());
            policy.check_identity(&theirs)?;
        }
        Ok(())
    }

    /// A message: interpreted, then answered.
    pub async fn on_text(&self, conv: &Conversation, text: &str) -> Reply {
        let identity = self.identity(conv);
        // The model is asked only for someone who may call: a stranger's messages do not
        // spend the operator's tokens.
        let asker = identity.is_ok().then(|| {
            if conv.operator {
                "web:web".to_owned()
            } else {
                requester_key(&conv.origin)
            }
        });
        let command = match self.ctx.interpreter.interpret(text, asker.as_deref()).await {
            Ok(Some(command)) => command,
            Ok(None) | Err(ParseError::NotUnderstood) => return Reply::NotUnderstood,
            Err(e) => return Reply::Unreadable(e),
        };
        if command == Command::Help {
            return Reply::Help {
                asker: (!conv.operator)
                    .then(|| (conv.origin.platform, conv.origin.requester.to_string())),
            };
        }
        // Someone who may not call reads nothing either (a call's number, its status), and
        // is told before any button.
        if let Err(refusal) = identity {
            info!(
                platform = %conv.origin.platform,
                requester = %conv.origin.requester,
                "request refused: not on the allow-list"
            );
            return Reply::Refused(refusal);
        }
        match command {
            Command::Call {
                to,
                message,
                speech,
            } => {
                let request = CallRequest {
                    to,
                    message,
                    origin: conv.origin.clone(),
                    speech,
                };
                if self.ctx.confirm && !conv.operator {
                    // A language without a voice, or a text too long for it, is refused
                    // before the button (and again when the call is requested).
                    let spoken = match self.ctx.service.speech(&request) {
                        Ok(spoken) => spoken,
                        Err(refusal) => return Reply::Refused(refusal),
                    };
                    let note = replies::spoken_as(
                        spoken.chosen.then_some(spoken.language.as_str()),
                        request.speech.times(),
                    );
                    self.ask(request, (!note.is_empty()).then_some(note)).await
                } else {
                    self.place(request).await
                }
            }
            Command::Status { id } => match self.find(conv, id.as_deref(), false).await {
                Ok(call) => Reply::Status(Box::new(call)),
                Err(reply) => reply,
            },
            Command::List => match self.ctx.service.list(LIST_LIMIT, &conv.scope()).await {
                Ok(calls) => Reply::List(calls),
                Err(e) => {
                    error!(error = %e, "could not list calls");
                    Reply::Sorry
                }
            },
            Command::Cancel { id } => match self.find(conv, id.as_deref(), true).await {
                Ok(call) => self.cancel(conv, &call).await,
                Err(reply) => reply,
            },
            Command::Help => unreachable!("answered above"),
        }
    }

    /// A button press.
    pub async fn on_action(&self, conv: &Conversation, action: Action) -> Reply {
        match action {
            Action::Confirm(nonce) => {
                let p = match self.pending(conv, &nonce).await {
                    Ok(p) => p,
                    Err(reply) => return reply,
                };
                // Whoever takes it acts on it (one take wins on every instance together): a
                // double press places one call. What was taken is the latest version (with
                // the status message the prompt became).
                let p = match self.ctx.memory.take(PENDING, &nonce).await {
                    Ok(Some(taken)) => Pending::decode(&taken).unwrap_or(p),
                    Ok(None) => return Reply::AlreadyAnswered,
                    Err(e) => {
                        error!(error = %e, "could not take a pending confirmation");
                        return Reply::Sorry;
                    }
                };
                if p.expires <= Utc::now() {
                    return Reply::Expired;
                }
                self.place(p.request()).await
            }
            Action::Decline(nonce) => {
                if let Err(reply) = self.pending(conv, &nonce).await {
                    return reply;
                }
                match self.ctx.memory.take(PENDING, &nonce).await {
                    Ok(Some(_)) => Reply::Declined,
                    Ok(None) => Reply::AlreadyAnswered,
                    Err(e) => {
                        error!(error = %e, "could not take a pending confirmation");
                        Reply::Sorry
                    }
                }
            }
            Action::Cancel(id) => {
                if let Err(refusal) = self.identity(conv) {
                    return Reply::Refused(refusal);
                }
                match self.find(conv, Some(&id), false).await {
                    Ok(call) => self.cancel(conv, &call).await,
                    Err(reply) => reply,
                }
            }
        }
    }

    /// The confirmation `nonce`, if it waits and `conv` is its requester.
    async fn pending(&self, conv: &Conversation, nonce: &str) -> Result<Pending, Reply> {
        let p = match self.ctx.memory.get(PENDING, nonce).await {
            Ok(Some(bytes)) => Pending::decode(&bytes).ok_or(Reply::Sorry)?,
            Ok(None) => return Err(Reply::AlreadyAnswered),
            Err(e) => {
                error!(error = %e, "could not read a pending confirmation");
                return Err(Reply::Sorry);
            }
        };
        if !conv.is_requester_of(&p.origin) {
            return Err(not_yours(&p.origin, true));
        }
        Ok(p)
    }

    /// The confirmation with `nonce` was shown as `message` (its id on the platform) at
    /// `shown_at` (the platform's clock; ours bounds it): a call it places edits that message.
    pub async fn prompt_shown(&self, nonce: &str, message: &str, shown_at: DateTime<Utc>) {
        let memory = &self.ctx.memory;
        let p = match memory.get(PENDING, nonce).await {
            Ok(Some(bytes)) => Pending::decode(&bytes),
            Ok(None) => None,
            Err(e) => {
                error!(error = %e, "could not read a pending confirmation");
                None
            }
        };
        let Some(mut p) = p else { return };
        p.origin.status_message = Some(message.into());
        p.expires = shown_at.min(Utc::now()) + ttl();
        // Only while it waits: a press answered in between stays answered.
        if let Err(e) = memory
            .replace(PENDING, nonce, p.encode(), PENDING_KEEP)
            .await
        {
            error!(error = %e, "could not record where a confirmation was shown");
        }
    }

    async fn ask(&self, request: CallRequest, spoken: Option<String>) -> Reply {
        let nonce = nonce();
        let (to, message) = (request.to.clone(), request.message.clone());
        let pending = Pending {
            to: request.to,
            message: request.message,
            origin: request.origin,
            expires: Utc::now() + ttl(),
            speech: request.speech,
        };
        if let Err(e) = self
            .ctx
            .memory
            .put(PENDING, &nonce, pending.encode(), PENDING_KEEP)
            .await
        {
            error!(error = %e, "could not keep a confirmation");
            return Reply::Sorry;
        }
        Reply::Confirm {
            nonce,
            to,
            message,
            spoken,
        }
    }

    async fn place(&self, request: CallRequest) -> Reply {
        match self.ctx.service.request(request).await {
            Ok(call) => {
                info!(call_id = %call.id, platform = %call.origin.platform, "call requested");
                Reply::Placed(Box::new(call))
            }
            Err(
                RequestError::Refused(refusal)
                | RequestError::Rejected(refusal)
                | RequestError::Limited(refusal),
            ) => Reply::Refused(refusal),
            Err(RequestError::Store(e)) => {
                error!(error = %e, "could not record a call request; refused");
                Reply::NotRecorded
            }
            Err(e) => {
                info!(error = %e, "call not placed");
                Reply::NotPlaced(e)
            }
        }
    }

    /// A call this conversation sees: by id, or the latest (the asker's latest live one when
    /// `live`).
    async fn find(&self, conv: &Conversation, id: Option<&str>, live: bool) -> Result<Call, Reply> {
        let service = &self.ctx.service;
        let found = match id {
            Some(id) => {
                let Some(call_id) = CallId::parse(id) else {
                    return Err(Reply::UnknownCall(id.to_owned()));
                };
                service
                    .get(&call_id)
                    .await
                    .map(|c| c.filter(|c| conv.sees(c)))
            }
            None if live => {
                let mine = ListFilter {
                    live_only: true,
                    requester: (!conv.operator).then(|| conv.origin.requester.to_string()),
                    ..conv.scope()
                };
                service
                    .list(LIVE_SCAN, &mine)
                    .await
                    .map(|calls| calls.into_iter().next())
            }
            None => service
                .list(1, &conv.scope())
                .await
                .map(|calls| calls.into_iter().next()),
        };
        match found {
            Ok(Some(call)) => Ok(call),
            Ok(None) => Err(match (id, live) {
                (Some(id), _) => Reply::UnknownCall(id.to_owned()),
                (None, true) => Reply::NoLiveCall,
                (None, false) => Reply::NoCalls,
            }),
            Err(e) => {
                error!(error = %e, "could not read the call store");
                Err(Reply::Sorry)
            }
        }
    }

    /// Cancels a call for its requester (or the operator).
    async fn cancel(&self, conv: &Conversation, call: &Call) -> Reply {
        if !conv.is_requester_of(&call.origin) {
            return not_yours(&call.origin, false);
        }
        info!(call_id = %call.id, requester = %conv.origin.requester, "cancel asked");
        match self.ctx.service.cancel(&call.id).await {
            Ok(Cancelled::BeforeDialing(call)) => Reply::Canceled(Box::new(call)),
            Ok(Cancelled::HangupSent(call)) => Reply::HangingUp(Box::new(call)),
            Err(CancelError::Store(e)) => {
                error!(error = %e, "could not cancel a call");
                Reply::Sorry
            }
            Err(e) => Reply::CancelFailed(e),
        }
    }
}

fn not_yours(origin: &Origin, confirm: bool) -> Reply {
    Reply::NotYours {
        name: origin.requester_name.as_deref().map(str::to_owned),
        requester: origin.requester.to_string(),
        confirm,
    }
}

fn ttl() -> chrono::Duration {
    chrono::Duration::from_std(CONFIRM_TTL).unwrap_or_default()
}

/// A one-time nonce for a confirmation: 96 random bits, base64url (16 characters, fits
/// Telegram's 64-byte callback data and Slack's button value).
pub fn nonce() -> String {
    use base64::Engine as _;
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
