//! Call progress back into Telegram: one status message, edited as the call moves (with a
//! Cancel button while it is live), and the outcome as a new reply, exactly once per call.
//!
//! One worker per call takes that call's events in order (coalescing a backlog to the newest),
//! so a slow or rate-limited chat never delays another call's messages.

use std::collections::HashMap;
use std::sync::Arc;

use teloxide::types::MessageId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::handler::{Target, cancel_keyboard};
use super::{Telegram, api};
use crate::calls::{CallEvent, EventKind};
use crate::core::call::{Call, CallId, Platform};
use crate::core::replies;

/// Follows the event bus until shutdown; subscribes before returning.
pub(super) fn spawn(tg: Arc<Telegram>) {
    let mut events = tg.ctx.service.subscribe();
    tokio::spawn(async move {
        let mut workers: HashMap<CallId, mpsc::UnboundedSender<Arc<Call>>> = HashMap::new();
        loop {
            let event: CallEvent = tokio::select! {
                () = tg.ctx.shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(n)) => {
                        warn!(skipped = n, "telegram progress fell behind the event bus");
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            if event.call.origin.platform != Platform::Telegram {
                continue;
            }
            let id = event.call.id.clone();
            let tx = workers.entry(id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(follow(tg.clone(), rx));
                tx
            });
            let _ = tx.send(event.call);
            if event.kind == EventKind::Final {
                // Final is published once per call: the worker ends after showing it.
                workers.remove(&id);
            }
        }
    });
}

/// What this call's chat shows so far.
#[derive(Default)]
struct View {
    status_message: Option<MessageId>,
    shown: Option<String>,
}

async fn follow(tg: Arc<Telegram>, mut rx: mpsc::UnboundedReceiver<Arc<Call>>) {
    let mut view = View::default();
    while let Some(mut call) = rx.recv().await {
        while let Ok(newer) = rx.try_recv() {
            call = newer;
        }
        tg.show(&mut view, &call).await;
        if call.status.is_terminal() {
            break;
        }
    }
}

impl Telegram {
    async fn show(&self, view: &mut View, call: &Call) {
        let Some(target) = Target::of_origin(&call.origin) else {
            warn!(call_id = %call.id, chat = %call.origin.chat, "call has no telegram chat to report to");
            return;
        };
        if view.status_message.is_none() {
            // A confirmed request turns its question into the status message.
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
            // Ended before anything was shown: the outcome below says it all.
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
        if !live {
            info!(call_id = %call.id, status = %call.status, "telegram outcome posted");
            self.reply_must_arrive(target, replies::outcome(call)).await;
        }
    }
}
