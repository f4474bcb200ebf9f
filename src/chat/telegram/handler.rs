//! Incoming messages and button presses, handed to the [`crate::chat::dialogue`]; its replies
//! rendered as plain text and inline keyboards.

use compact_str::{CompactString, ToCompactString};

use teloxide::payloads::{
    AnswerCallbackQuerySetters as _, EditMessageTextSetters as _, SendMessageSetters as _,
};
use teloxide::requests::Requester as _;
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageId,
    ReplyParameters, ThreadId, User,
};
use tracing::Instrument as _;
use tracing::{error, info_span, warn};

use super::Telegram;
use super::api;
use super::text::{self, Button, Where};
use crate::chat::dialogue::{Action, Conversation, Reply};
use crate::core::call::{CallId, Origin, Platform};
use crate::core::replies;

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
            let mut origin = Origin::new(Platform::Telegram, from.id.0.to_string());
            origin.chat = msg.chat.id.0.to_compact_string();
            origin.thread = topic(msg).map(|t| t.0.0.to_compact_string());
            origin.message = Some(msg.id.0.to_compact_string());
            origin.requester_name = Some(name(from).into());
            let conv = Conversation {
                topic: origin.thread.as_deref().map(str::to_owned),
                ..Conversation::chat(origin)
            };
            let reply = self.ctx.dialogue().on_text(&conv, &body).await;
            match reply {
                // The status message (a reply to this one) says it.
                r if r.followed() => {}
                Reply::Confirm { ref nonce, .. } => {
                    let keyboard = InlineKeyboardMarkup::new([[
                        InlineKeyboardButton::callback(
                            "📞 Call",
                            Button::Confirm(nonce.clone()).data(),
                        ),
                        InlineKeyboardButton::callback(
                            "✖️ Cancel",
                            Button::Decline(nonce.clone()).data(),
                        ),
                    ]]);
                    let Some(sent) = self.reply(target, reply.text(), Some(keyboard)).await else {
                        return;
                    };
                    // The question becomes the call's status message; Telegram's clock dates it.
                    self.ctx
                        .dialogue()
                        .prompt_shown(nonce, &sent.id.0.to_string(), sent.date)
                        .await;
                }
                reply => {
                    self.reply(target, reply.text(), None).await;
                }
            }
        }
        .instrument(span)
        .await;
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
        let button = q.data.as_deref().and_then(Button::parse);
        let message = q.message.as_ref().map(|m| (m.chat().id, m.id()));
        let (Some(button), Some((chat, id))) = (button, message) else {
            return replies::button_invalid();
        };
        let mut origin = Origin::new(Platform::Telegram, q.from.id.0.to_string());
        origin.chat = chat.0.to_compact_string();
        origin.requester_name = Some(name(&q.from).into());
        let topic = q
            .message
            .as_ref()
            .and_then(|m| m.regular_message())
            .and_then(topic)
            .map(|t| t.0.0.to_string());
        let conv = Conversation {
            topic,
            ..Conversation::chat(origin)
        };
        // A confirmation question, as opposed to a call's status message.
        let on_question = !matches!(button, Button::Cancel(_));
        let action = match button {
            Button::Confirm(nonce) => Action::Confirm(nonce),
            Button::Decline(nonce) => Action::Decline(nonce),
            Button::Cancel(call) => Action::Cancel(call.to_string()),
        };
        let reply = self.ctx.dialogue().on_action(&conv, action).await;
        let text = reply.text();
        // A question answered for good loses its buttons (a placed call's question becomes
        // its status message, edited by the call's events).
        let settled = matches!(
            reply,
            Reply::Declined
                | Reply::Expired
                | Reply::Refused(_)
                | Reply::NotRecorded
                | Reply::Sorry
        );
        if on_question && settled {
            self.edit(chat, id, text.clone(), None).await;
        }
        text
    }
}
