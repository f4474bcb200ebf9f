//! Incoming messages and button presses: one plain `match` per command.

use compact_str::{CompactString, ToCompactString};
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide::payloads::{
    AnswerCallbackQuerySetters as _, EditMessageTextSetters as _, SendMessageSetters as _,
};
use teloxide::requests::Requester as _;
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageId,
    ReplyParameters, ThreadId, User,
};
use tracing::Instrument as _;
use tracing::{error, info, info_span, warn};

use super::Telegram;
use super::api;
use super::text::{self, Button, Where};
use crate::calls::RequestError;
use crate::calls::service::{CallRequest, Cancelled};
use crate::calls::store::ListFilter;
use crate::core::call::{Call, CallId, Origin, Platform};
use crate::core::command::{Command, ParseError};
use crate::core::replies;

/// How long a confirmation can be pressed.
const CONFIRM_TTL: Duration = Duration::from_secs(120);

/// Pending confirmations are forgotten this long after they expired.
const PENDING_KEEP: Duration = Duration::from_secs(3600);

/// Calls listed by `/calls`.
const LIST_LIMIT: usize = 10;

/// A request waiting for its requester to press [Call].
pub(crate) struct Pending {
    request: CallRequest,
    expires: DateTime<Utc>,
}

/// Where a reply goes: the chat, the forum topic and the message it answers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    pub chat: ChatId,
    pub thread: Option<ThreadId>,
    pub reply_to: Option<MessageId>,
}

impl Target {
    fn of(msg: &Message) -> Self {
        Self {
            chat: msg.chat.id,
            thread: topic(msg),
            reply_to: Some(msg.id),
        }
    }

    /// Where replies about a call go, from its stored Origin.
    pub(super) fn of_origin(origin: &Origin) -> Option<Self> {
        let chat = ChatId(origin.chat.parse().ok()?);
        let id =
            |s: &Option<CompactString>| s.as_deref().and_then(|s| s.parse().ok()).map(MessageId);
        Some(Self {
            chat,
            thread: id(&origin.thread).map(ThreadId),
            reply_to: id(&origin.message),
        })
    }
}

/// The forum topic a message was written in.
fn topic(msg: &Message) -> Option<ThreadId> {
    msg.is_topic_message.then_some(msg.thread_id).flatten()
}

/// "@alice", else the first name.
fn name(user: &User) -> String {
    match &user.username {
        Some(u) => format!("@{u}"),
        None => user.first_name.clone(),
    }
}

pub(super) fn cancel_keyboard(id: &CallId) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::callback(
        "✖️ Cancel",
        Button::Cancel(id.clone()).data(),
    )]])
}

impl Telegram {
    /// Sends a plain-text reply (retried); returns the message, or `None` if it could not be sent.
    pub(super) async fn reply(
        &self,
        to: Target,
        text: impl Into<String>,
        keyboard: Option<InlineKeyboardMarkup>,
    ) -> Option<Message> {
        self.reply_tries(to, text, keyboard, api::MAX_ATTEMPTS)
            .await
    }

    /// A reply that must arrive (a call's outcome): retried for minutes, not seconds.
    pub(super) async fn reply_must_arrive(&self, to: Target, text: impl Into<String>) {
        self.reply_tries(to, text, None, api::MUST_ARRIVE_ATTEMPTS)
            .await;
    }

    async fn reply_tries(
        &self,
        to: Target,
        text: impl Into<String>,
        keyboard: Option<InlineKeyboardMarkup>,
        attempts: u32,
    ) -> Option<Message> {
        let mut req = self.bot.send_message(to.chat, text);
        if let Some(thread) = to.thread {
            req = req.message_thread_id(thread);
        }
        if let Some(id) = to.reply_to {
            req = req.reply_parameters(ReplyParameters::new(id).allow_sending_without_reply());
        }
        if let Some(keyboard) = keyboard {
            req = req.reply_markup(keyboard);
        }
        match api::send_tries(&req, "sendMessage", attempts).await {
            Ok(msg) => Some(msg),
            Err(e) => {
                error!(chat = to.chat.0, error = %e, "could not send a telegram message");
                None
            }
        }
    }

    /// Edits one of our messages (without a keyboard unless one is given).
    pub(super) async fn edit(
        &self,
        chat: ChatId,
        id: MessageId,
        text: impl Into<String>,
        keyboard: Option<InlineKeyboardMarkup>,
    ) {
        self.edit_tries(chat, id, text, keyboard, api::MAX_ATTEMPTS)
            .await;
    }

    /// [`Self::edit`] with this many attempts.
    pub(super) async fn edit_tries(
        &self,
        chat: ChatId,
        id: MessageId,
        text: impl Into<String>,
        keyboard: Option<InlineKeyboardMarkup>,
        attempts: u32,
    ) {
        let mut req = self.bot.edit_message_text(chat, id, text);
        if let Some(keyboard) = keyboard {
            req = req.reply_markup(keyboard);
        }
        match api::send_tries(&req, "editMessageText", attempts).await {
            Ok(_) | Err(teloxide::RequestError::Api(teloxide::ApiError::MessageNotModified)) => {}
            Err(e) => {
                warn!(chat = chat.0, message = id.0, error = %e, "could not edit a telegram message")
            }
        }
    }

    pub(super) async fn on_message(&self, msg: &Message) {
        let (Some(body), Some(from)) = (msg.text(), msg.from.as_ref()) else {
            return;
        };
        if from.is_bot {
            return;
        }
        let place = if msg.chat.is_private() {
            Where::Private
        } else if msg.chat.is_group() || msg.chat.is_supergroup() {
            let reply_to_bot = msg
                .reply_to_message()
                .and_then(|m| m.from.as_ref())
                .is_some_and(|u| u.id == self.me.id);
            Where::Group { reply_to_bot }
        } else {
            return;
        };
        let Some(body) = text::addressed(place, body, &self.me.username) else {
            return;
        };
        let span = info_span!("telegram_message", chat = msg.chat.id.0, user = from.id.0);
        async {
            let target = Target::of(msg);
            let mut requester = Origin::new(Platform::Telegram, from.id.0.to_string());
            requester.chat = msg.chat.id.0.to_compact_string();
            let allowed = self.ctx.service.policy().check_identity(&requester).is_ok();
            let asker = allowed.then(|| crate::core::policy::requester_key(&requester));
            let command = match self
                .ctx
                .interpreter
                .interpret(&body, asker.as_deref())
                .await
            {
                Ok(Some(command)) => command,
                Ok(None) => {
                    self.reply(target, ParseError::NotUnderstood.to_string(), None)
                        .await;
                    return;
                }
                Err(e) => {
                    self.reply(target, e.to_string(), None).await;
                    return;
                }
            };
            if let Some(text) = self.dispatch(msg, from, command).await {
                self.reply(target, text, None).await;
            }
        }
        .instrument(span)
        .await;
    }

    /// Runs a command; returns the reply, if there is one to send now.
    async fn dispatch(&self, msg: &Message, from: &User, command: Command) -> Option<String> {
        let chat = msg.chat.id.0.to_string();
        match command {
            Command::Help => Some(format!(
                "{}\n\nYour Telegram id: {} (an admin adds it to the allow-list).",
                replies::help(),
                from.id.0
            )),
            Command::Call { to, message } => {
                let mut origin = Origin::new(Platform::Telegram, from.id.0.to_string());
                origin.chat = chat.as_str().into();
                origin.thread = topic(msg).map(|t| t.0.0.to_compact_string());
                origin.message = Some(msg.id.0.to_compact_string());
                origin.requester_name = Some(name(from).into());
                let request = CallRequest {
                    to,
                    message,
                    origin,
                };
                if self.ctx.confirm {
                    // Someone who may not call at all is told so now, not after pressing [Call].
                    if let Err(refusal) = self.ctx.service.policy().check_identity(&request.origin)
                    {
                        return Some(refusal.to_string());
                    }
                    self.ask_confirmation(Target::of(msg), request).await;
                    None
                } else {
                    self.place(request).await.err().filter(|t| !t.is_empty())
                }
            }
            Command::Status { id } => Some(match self.find(&chat, id.as_deref(), false).await {
                Ok(call) => format!(
                    "{}\n{}",
                    replies::status_line(&call),
                    replies::summary(&call)
                ),
                Err(text) => text,
            }),
            Command::List => {
                let filter = Self::filter(&chat);
                Some(match self.ctx.service.list(LIST_LIMIT, &filter).await {
                    Ok(calls) => replies::list(&calls),
                    Err(e) => {
                        error!(error = %e, "could not list calls");
                        "Sorry, I could not read the call log. Please try again.".to_owned()
                    }
                })
            }
            Command::Cancel { id } => {
                let call = match self.find(&chat, id.as_deref(), true).await {
                    Ok(call) => call,
                    Err(text) => return Some(text),
                };
                if call.origin.requester != from.id.0.to_string() {
                    return Some(
                        "Only the person who asked for this call can cancel it.".to_owned(),
                    );
                }
                match self.ctx.service.cancel(&call.id).await {
                    // The outcome ("canceled") follows as the call's final reply.
                    Ok(Cancelled::BeforeDialing(_)) => None,
                    Ok(Cancelled::HangupSent(call)) => {
                        Some(format!("Hanging up the call to {}…", call.to.display()))
                    }
                    Err(e) => Some(e.to_string()),
                }
            }
        }
    }

    fn filter(chat: &str) -> ListFilter {
        ListFilter {
            platform: Some(Platform::Telegram),
            chat: Some(chat.to_owned()),
            requester: None,
            ..ListFilter::default()
        }
    }

    /// A call of this chat: by id, or the latest (the latest live one when `live`).
    async fn find(&self, chat: &str, id: Option<&str>, live: bool) -> Result<Call, String> {
        let unknown = |id: &str| format!("I don't know a call with id {id} in this chat.");
        let found = match id {
            Some(id) => {
                let Some(call_id) = CallId::parse(id) else {
                    return Err(unknown(id));
                };
                self.ctx.service.get(&call_id).await.map(|c| {
                    c.filter(|c| c.origin.platform == Platform::Telegram && c.origin.chat == chat)
                })
            }
            None => self
                .ctx
                .service
                .list(if live { 50 } else { 1 }, &Self::filter(chat))
                .await
                .map(|calls| calls.into_iter().find(|c| !live || !c.status.is_terminal())),
        };
        match found {
            Ok(Some(call)) => Ok(call),
            Ok(None) => Err(match (id, live) {
                (Some(id), _) => unknown(id),
                (None, true) => "There is no call in progress to cancel.".to_owned(),
                (None, false) => "No calls yet.".to_owned(),
            }),
            Err(e) => {
                error!(error = %e, "could not read the call store");
                Err("Sorry, I could not read the call log. Please try again.".to_owned())
            }
        }
    }

    /// Places the call; progress replies follow from the call's events. `Err`: the reply.
    async fn place(&self, request: CallRequest) -> Result<Call, String> {
        match self.ctx.service.request(request).await {
            Ok(call) => {
                info!(call_id = %call.id, "telegram call requested");
                Ok(call)
            }
            // The call record exists and ends as failed with this reason: its final reply says so.
            Err(e @ (RequestError::QueueFull(_) | RequestError::Stopping)) => {
                info!(error = %e, "call not placed");
                Err(String::new())
            }
            Err(RequestError::Store(e)) => {
                error!(error = %e, "could not record a call request");
                Err(
                    "Sorry, something went wrong and the call was not placed. Please try again."
                        .to_owned(),
                )
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn ask_confirmation(&self, target: Target, request: CallRequest) {
        let nonce = text::nonce();
        let question = match &request.message {
            Some(m) => format!("Call {} and say “{m}”?", request.to.display()),
            None => format!("Call {}?", request.to.display()),
        };
        let keyboard = InlineKeyboardMarkup::new([[
            InlineKeyboardButton::callback("📞 Call", Button::Confirm(nonce.clone()).data()),
            InlineKeyboardButton::callback("✖️ Cancel", Button::Decline(nonce.clone()).data()),
        ]]);
        let Some(sent) = self.reply(target, question, Some(keyboard)).await else {
            return;
        };
        // Telegram's clock dates the question; ours bounds it if the two disagree.
        let asked = sent.date.min(Utc::now());
        let expires = asked + chrono::Duration::from_std(CONFIRM_TTL).unwrap_or_default();
        let mut request = request;
        request.origin.status_message = Some(sent.id.0.to_compact_string());
        let mut pending = self.pending.lock();
        let forget = Utc::now() - chrono::Duration::from_std(PENDING_KEEP).unwrap_or_default();
        pending.retain(|_, p| p.expires > forget);
        pending.insert(nonce, Pending { request, expires });
    }

    pub(super) async fn on_callback(&self, q: &CallbackQuery) {
        let span = info_span!("telegram_button", user = q.from.id.0);
        let answer = self.press(q).instrument(span).await;
        let req = self.bot.answer_callback_query(q.id.clone()).text(answer);
        if let Err(e) = api::send(&req, "answerCallbackQuery").await {
            warn!(error = %e, "could not answer a callback query");
        }
    }

    /// Handles a button press; returns the short text shown to the presser.
    async fn press(&self, q: &CallbackQuery) -> String {
        let Some(button) = q.data.as_deref().and_then(Button::parse) else {
            return "This button is no longer valid.".to_owned();
        };
        let presser = q.from.id.0.to_string();
        let message = q.message.as_ref().map(|m| (m.chat().id, m.id()));
        match button {
            Button::Confirm(nonce) => {
                let Some((chat, id)) = message else {
                    return "This button is no longer valid.".to_owned();
                };
                let request = {
                    let mut pending = self.pending.lock();
                    match pending.get(&nonce) {
                        None => return "This request was already answered.".to_owned(),
                        Some(p) if p.request.origin.requester != presser => {
                            let who = p.request.origin.requester_name.clone().unwrap_or_default();
                            return format!("Only {who} can confirm this call.");
                        }
                        Some(p) if p.expires <= Utc::now() => {
                            pending.remove(&nonce);
                            None
                        }
                        Some(_) => pending.remove(&nonce).map(|p| p.request),
                    }
                };
                let Some(request) = request else {
                    self.edit(
                        chat,
                        id,
                        "⌛ This request expired. Send it again to place the call.",
                        None,
                    )
                    .await;
                    return "This request expired.".to_owned();
                };
                match self.place(request).await {
                    Ok(call) => format!("Calling {}…", call.to.display()),
                    Err(reason) if reason.is_empty() => "The call could not be placed.".to_owned(),
                    Err(reason) => {
                        self.edit(chat, id, reason.clone(), None).await;
                        reason
                    }
                }
            }
            Button::Decline(nonce) => {
                let Some((chat, id)) = message else {
                    return "This button is no longer valid.".to_owned();
                };
                {
                    let mut pending = self.pending.lock();
                    match pending.get(&nonce) {
                        None => return "This request was already answered.".to_owned(),
                        Some(p) if p.request.origin.requester != presser => {
                            return "Only the person who asked can answer this.".to_owned();
                        }
                        Some(_) => {
                            pending.remove(&nonce);
                        }
                    }
                }
                self.edit(chat, id, "✖️ Call not placed.", None).await;
                "Not calling.".to_owned()
            }
            Button::Cancel(call_id) => {
                let call = match self.ctx.service.get(&call_id).await {
                    Ok(Some(call))
                        if call.origin.platform == Platform::Telegram
                            && message
                                .is_none_or(|(chat, _)| chat.0.to_string() == call.origin.chat) =>
                    {
                        call
                    }
                    Ok(_) => return "I don't know this call.".to_owned(),
                    Err(e) => {
                        error!(error = %e, "could not read the call store");
                        return "Sorry, something went wrong. Please try again.".to_owned();
                    }
                };
                if call.origin.requester != presser {
                    return "Only the person who asked for this call can cancel it.".to_owned();
                }
                match self.ctx.service.cancel(&call.id).await {
                    Ok(Cancelled::BeforeDialing(_)) => "Canceled.".to_owned(),
                    Ok(Cancelled::HangupSent(_)) => "Hanging up…".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
        }
    }
}
