//! Call progress back into Telegram, through the shared follower ([`crate::chat::follow`]):
//! one status message, edited as the call moves (with a Cancel button while it is live), and
//! the outcome as a new reply to the request, exactly once per call.

use std::sync::Arc;

use async_trait::async_trait;
use teloxide::types::MessageId;
use tracing::{info, warn};

use super::handler::{Target, cancel_keyboard};
use super::{Telegram, api};
use crate::chat::follow::{self, Follower, Sink};
use crate::core::call::{Call, Platform};
use crate::core::replies;

/// Follows the event bus until shutdown; subscribes before returning.
pub(super) fn spawn(tg: Arc<Telegram>) -> Follower {
    let ctx = &tg.ctx;
    let (service, shutdown) = (ctx.service.clone(), ctx.shutdown.clone());
    let coordination = ctx.follow.clone();
    follow::spawn(tg, service, coordination, shutdown)
}

/// What this call's chat shows so far.
#[derive(Default)]
pub(crate) struct View {
    status_message: Option<MessageId>,
    shown: Option<String>,
}

#[async_trait]
impl Sink for Telegram {
    type View = View;

    fn platform(&self) -> Platform {
        Platform::Telegram
    }

    async fn show_status(&self, view: &mut View, call: &Call) {
        let Some(target) = Target::of_origin(&call.origin) else {
            warn!(call_id = %call.id, chat = %call.origin.chat, "call has no telegram chat to report to");
            return;
        };
        if view.status_message.is_none() {
            // A confirmed request turns its question into the status message (and a status
            // message posted before the follower fell behind is in the store).
            view.status_message = call
                .origin
                .status_message
                .as_deref()
                .and_then(|s| s.parse().ok())
                .map(MessageId);
        }
        let live = !call.status.is_terminal();
        let line = replies::status_line(call);
        let keyboard = live.then(|| cancel_keyboard(&call.id));
        match view.status_message {
            None if live => {
                if let Some(sent) = self.reply(target, line.clone(), keyboard).await {
                    view.status_message = Some(sent.id);
                    view.shown = Some(line);
                    if let Err(e) = self
                        .ctx
                        .service
                        .set_status_message(&call.id, sent.id.0.to_string())
                        .await
                    {
                        warn!(call_id = %call.id, error = %e, "could not remember the status message");
                    }
                }
            }
            // Ended before anything was shown: the outcome says it all.
            None => {}
            Some(id) if view.shown.as_deref() != Some(line.as_str()) => {
                // The last edit takes the Cancel button away: it must arrive.
                let attempts = if live {
                    api::MAX_ATTEMPTS
                } else {
                    api::MUST_ARRIVE_ATTEMPTS
                };
                self.edit_tries(target.chat, id, line.clone(), keyboard, attempts)
                    .await;
                view.shown = Some(line);
            }
            Some(_) => {}
        }
    }

    async fn post_outcome(&self, _view: &mut View, call: &Call) {
        let Some(target) = Target::of_origin(&call.origin) else {
            return;
        };
        info!(call_id = %call.id, status = %call.status, "telegram outcome posted");
        self.reply_must_arrive(target, replies::outcome(call)).await;
    }

    async fn post_recording(&self, call: &Call) {
        let Some(target) = Target::of_origin(&call.origin) else {
            return;
        };
        let link = crate::chat::recording_link(&self.ctx.public_url, &call.id);
        info!(call_id = %call.id, "telegram recording posted");
        self.reply_must_arrive(target, replies::recording(call, &link))
            .await;
    }
}
