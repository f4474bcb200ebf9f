//! Call progress back into Slack, through the shared follower ([`crate::chat::follow`]): a
//! Slack call's first state posts the status message (chat.postMessage into the channel, or
//! the thread of the triggering message; the command's `response_url` when the bot cannot
//! post there), later ones chat.update it, and the final one posts the outcome in its thread
//! mentioning the requester, once.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tracing::{info, warn};

use super::api::{self, ApiError};
use super::{Slack, texts};
use crate::chat::follow::{self, Follower, Sink};
use crate::core::call::{Call, Platform};

/// Follows the event bus until shutdown; subscribes before returning.
pub(super) fn spawn(slack: Arc<Slack>) -> Follower {
    let ctx = &slack.ctx;
    let (service, shutdown) = (ctx.service.clone(), ctx.shutdown.clone());
    let coordination = ctx.follow.clone();
    follow::spawn(slack, service, coordination, shutdown)
}

/// Where a call's status message is (`None`: not posted yet).
#[derive(Debug, Default)]
pub(crate) struct View(Option<Shown>);

#[derive(Debug)]
enum Shown {
    Message {
        channel: String,
        ts: String,
        text: String,
    },
    /// Posted through the command's response_url (the bot is not in that channel).
    ResponseUrl {
        url: String,
        text: String,
    },
    Nowhere,
}

#[async_trait]
impl Sink for Slack {
    type View = View;

    fn platform(&self) -> Platform {
        Platform::Slack
    }

    async fn show_status(&self, view: &mut View, call: &Call) {
        match &mut view.0 {
            Some(shown) => self.update_status(shown, call).await,
            None => {
                let shown = view.0.insert(match &call.origin.status_message {
                    // Posted earlier (another instance, or before the follower fell behind):
                    // its text is unknown, so it is edited to this state.
                    Some(ts) => Shown::Message {
                        channel: call.origin.chat.to_string(),
                        ts: ts.to_string(),
                        text: String::new(),
                    },
                    None => self.post_status(call).await,
                });
                if matches!(shown, Shown::Message { .. }) && call.origin.status_message.is_some() {
                    self.update_status(shown, call).await;
                }
            }
        }
    }

    async fn post_outcome(&self, view: &mut View, call: &Call) {
        if let Some(shown) = &view.0 {
            self.send_outcome(shown, call).await;
        }
    }

    async fn post_recording(&self, call: &Call) {
        let o = &call.origin;
        let link = crate::chat::recording_link(&self.ctx.public_url, &call.id);
        let text = texts::recording_text(call, &link);
        // In the thread of the request, else of the status message (stored on the call).
        let thread = o.thread.as_deref().or(o.status_message.as_deref());
        let result = match self
            .api
            .post_message_tries(&o.chat, thread, &text, None, api::MUST_ARRIVE_TRIES)
            .await
        {
            Err(e) if e.is_unreachable_channel() && o.reply_url.is_some() => {
                let body = json!({ "response_type": "in_channel", "replace_original": false, "text": text });
                self.api
                    .respond_tries(
                        o.reply_url.as_deref().unwrap_or_default(),
                        &body,
                        api::MUST_ARRIVE_TRIES,
                    )
                    .await
            }
            r => r.map(drop),
        };
        match result {
            Ok(()) => info!(call_id = %call.id, "recording posted to Slack"),
            Err(e) => {
                warn!(call_id = %call.id, error = %e, "could not post the recording to Slack")
            }
        }
    }
}

impl Slack {
    async fn post_status(&self, call: &Call) -> Shown {
        let o = &call.origin;
        let text = texts::status_text(call);
        let blocks = texts::status_blocks(call);
        match self
            .api
            .post_message(&o.chat, o.thread.as_deref(), &text, Some(blocks.clone()))
            .await
        {
            Ok(ts) => {
                if let Err(e) = self
                    .ctx
                    .service
                    .set_status_message(&call.id, ts.clone())
                    .await
                {
                    warn!(call_id = %call.id, error = %e, "could not store the status message ts");
                }
                Shown::Message {
                    channel: o.chat.to_string(),
                    ts,
                    text,
                }
            }
            Err(e) if e.is_unreachable_channel() && o.reply_url.is_some() => {
                let url = o.reply_url.clone().unwrap_or_default();
                info!(call_id = %call.id, error = %e, "bot cannot post in the channel; using the response_url");
                let body = json!({ "response_type": "in_channel", "text": text, "blocks": blocks });
                match self.api.respond(&url, &body).await {
                    Ok(()) => Shown::ResponseUrl { url, text },
                    Err(e) => {
                        warn!(call_id = %call.id, error = %e, "could not post the status message");
                        Shown::Nowhere
                    }
                }
            }
            Err(e) => {
                warn!(call_id = %call.id, error = %e, "could not post the status message");
                Shown::Nowhere
            }
        }
    }

    /// Edits the status message when its text changed. The last edit (the one that takes
    /// the Cancel button away) must arrive, so it is tried as long as the outcome is.
    async fn update_status(&self, shown: &mut Shown, call: &Call) {
        let new = texts::status_text(call);
        let blocks = texts::status_blocks(call);
        let tries = if call.status.is_terminal() {
            api::MUST_ARRIVE_TRIES
        } else {
            api::MAX_TRIES
        };
        let result = match shown {
            Shown::Message { channel, ts, text } if *text != new => {
                let r = self.api.update(channel, ts, &new, blocks, tries).await;
                *text = new;
                r
            }
            Shown::ResponseUrl { url, text } if *text != new => {
                let body = json!({ "replace_original": true, "text": new, "blocks": blocks });
                let r = self.api.respond_tries(url, &body, tries).await;
                *text = new;
                r
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!(call_id = %call.id, error = %e, "could not update the status message");
        }
    }

    /// The final outcome, once, in the thread, mentioning the requester.
    async fn send_outcome(&self, shown: &Shown, call: &Call) {
        let o = &call.origin;
        let text = texts::outcome_text(call);
        const MUST: u32 = api::MUST_ARRIVE_TRIES;
        let result: Result<(), ApiError> = match shown {
            Shown::Message { channel, ts, .. } => {
                let thread = o.thread.as_deref().unwrap_or(ts);
                self.api
                    .post_message_tries(channel, Some(thread), &text, None, MUST)
                    .await
                    .map(drop)
            }
            Shown::ResponseUrl { url, .. } => {
                let body = json!({ "response_type": "in_channel", "replace_original": false, "text": text });
                self.api.respond_tries(url, &body, MUST).await
            }
            Shown::Nowhere => {
                match self
                    .api
                    .post_message_tries(&o.chat, o.thread.as_deref(), &text, None, MUST)
                    .await
                {
                    Err(e) if e.is_unreachable_channel() && o.reply_url.is_some() => {
                        let body = json!({ "response_type": "in_channel", "text": text });
                        self.api
                            .respond_tries(o.reply_url.as_deref().unwrap_or_default(), &body, MUST)
                            .await
                    }
                    r => r.map(drop),
                }
            }
        };
        match result {
            Ok(()) => info!(call_id = %call.id, status = %call.status, "outcome posted to Slack"),
            Err(e) => warn!(call_id = %call.id, error = %e, "could not post the outcome to Slack"),
        }
    }
}
