//! Slack adapter (slack-morphism): the `/call` slash command, `@callbot` mentions and DMs,
//! the Cancel / confirmation buttons, and the status message that follows each call.
//!
//! ```text
//! POST /slack/commands      /call <number> [message] | help | status [id] | list | cancel <id>
//! POST /slack/events        url_verification; app_mention and message.im (same grammar)
//! POST /slack/interactions  block_actions: Cancel call, Call / Don't call (calls.confirm)
//! ```
//!
//! Every request is signature-checked ([`verify`]) before anything else; unsigned or stale
//! ones get 401 and change nothing. A signed request delivered again with the same timestamp
//! and signature (a replay inside the five-minute window) is answered with an empty 200 and
//! not acted on. A slash command is answered within [`ACK_BUDGET`]
//! whatever the interpreter or Twilio are doing: the work runs in its own task, and when it
//! is not done in time the answer follows through the command's `response_url`. Events and
//! interactions are acknowledged at once and handled in the background; events are deduped on
//! `event_id` (the dialogue's one dedupe store), so Slack's retries never place a second call.
//!
//! Progress reaches Slack only through CallEvents ([`progress`]): a Slack call's first event
//! posts the status message (chat.postMessage into the channel, or the thread of the
//! triggering message; `response_url` when the bot cannot post there), later ones chat.update
//! it, and the final one posts the outcome in its thread mentioning the requester.
//!
//! What to answer is the [`crate::chat::dialogue`]'s (the same rules and words as every other
//! adapter); this module receives, renders in mrkdwn and Block Kit, and sends. The team
//! allow-list is checked against the conversation's team and the person's own team (Slack
//! Connect). A refusal of who asks is shown to them alone (ephemeral) outside a DM.
//!
//! A `response_url` is posted to only when it points at `hooks.slack.com` or at the host of
//! `SLACK_API_URL`, and redirects are never followed; otherwise the answer goes through
//! chat.postEphemeral, chat.postMessage or the HTTP response.
//!
//! At start `auth.test` checks `SLACK_BOT_TOKEN` (and `apps.connections.open` checks
//! `SLACK_APP_TOKEN`): a token Slack rejects, or a Slack that cannot be reached after a few
//! tries, stops the start with an error naming the setting.
//!
//! With `SLACK_APP_TOKEN` the same handlers also serve Socket Mode ([`socket`]), which
//! reports its connection to [`crate::chat::health`].

pub mod api;
mod inbound;
mod progress;
mod socket;
mod texts;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use slack_morphism::prelude::SlackBlock;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use self::api::Api;
use self::inbound::{Envelope, EventCallback, Interaction, SlashCommand};
use self::texts::escape;
use self::verify::Verifier;
use super::AdapterContext;
use super::dialogue::{self, Action, Conversation};
use crate::calls::memo::Space;
use crate::calls::store::StoreError;
use crate::config::SlackSettings;
use crate::core::call::{Origin, Platform};
use crate::core::replies;

/// How long a slash command's answer may wait for the work it started (Slack allows 3 s;
/// the rest is margin for the network and a loaded machine).
pub const ACK_BUDGET: Duration = Duration::from_millis(1500);
/// How long a signed request's (timestamp, signature) is remembered against replays: the
/// signature check accepts timestamps up to five minutes either side of now, so ten minutes.
const REPLAY_TTL: Duration = Duration::from_secs(2 * verify::MAX_AGE_SECS as u64);
/// Request signatures remembered against replays, in the memo (every instance together: a
/// copy sent to another instance is a replay too).
const REPLAYS: Space = Space {
    name: "slack-replay",
    capacity: 100_000,
};

/// Starts the adapter's background tasks and returns its routes.
pub async fn start(settings: &SlackSettings, ctx: AdapterContext) -> anyhow::Result<Router> {
    let bot_token = settings
        .bot_token
        .as_ref()
        .context("SLACK_BOT_TOKEN is not set")?;
    if settings.signing_secret.is_none() && settings.app_token.is_none() {
        anyhow::bail!(
            "SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: Slack's requests to \
             /slack/* could not be verified. Set SLACK_SIGNING_SECRET (from the app's Basic \
             Information page), or SLACK_APP_TOKEN to use Socket Mode instead."
        );
    }
    let client = Arc::new(api::client(&settings.api_url));
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let api = Api::new(client.clone(), bot_token, timeout)?;
    let me = api.check_bot_token(&settings.api_url).await?;
    info!(team = %me.team, bot_user = %me.user, "Slack: SLACK_BOT_TOKEN accepted (auth.test)");
    if let Some(app_token) = &settings.app_token {
        api::check_app_token(&client, app_token, timeout, &settings.api_url).await?;
    }
    let socket_health = settings.app_token.as_ref().map(|_| {
        ctx.health
            .adapter_connecting("slack", "Socket Mode: not connected yet")
    });
    let slack = Arc::new(Slack {
        api,
        reply_hosts: ReplyHosts::new(&settings.api_url),
        socket_health,
        verifier: settings.signing_secret.as_ref().map(Verifier::new),
        ctx,
    });
    progress::spawn(slack.clone());
    if let Some(app_token) = &settings.app_token {
        socket::start(slack.clone(), client, app_token);
        info!("Slack: Socket Mode");
    }
    if slack.verifier.is_some() {
        info!(api_url = %settings.api_url, "Slack: request URLs under /slack/");
        Ok(routes(slack))
    } else {
        Ok(Router::new())
    }
}

fn routes(slack: Arc<Slack>) -> Router {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/events", post(events))
        .route("/slack/interactions", post(interactions))
        .with_state(slack)
}

pub(crate) struct Slack {
    ctx: AdapterContext,
    api: Api,
    /// `None` in Socket Mode without a signing secret (no HTTP routes then).
    verifier: Option<Verifier>,
    /// Where a response_url may point.
    reply_hosts: ReplyHosts,
    /// Socket Mode's connection, as `/healthz` sees it (`None`: HTTP only).
    socket_health: Option<crate::chat::health::AdapterHealth>,
}

/// Where a `response_url` may point: Slack's `https://hooks.slack.com`, or the scheme and host
/// of `SLACK_API_URL` (a proxy in front of Slack, or a test's fake). A response_url is a URL
/// the request itself names, so anything else would let a forged or replayed request make
/// callbot post (with call details) wherever it likes.
struct ReplyHosts {
    api: Option<(String, String)>,
}

/// The host Slack's response_urls use.
const SLACK_HOOKS_HOST: &str = "hooks.slack.com";

impl ReplyHosts {
    fn new(api_url: &str) -> Self {
        let api = url::Url::parse(api_url).ok().and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some((u.scheme().to_owned(), host))
        });
        Self { api }
    }

    fn allows(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else {
            return false;
        };
        let Some(host) = u.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        (u.scheme() == "https" && host == SLACK_HOOKS_HOST)
            || self
                .api
                .as_ref()
                .is_some_and(|(scheme, api_host)| u.scheme() == scheme && host == *api_host)
    }
}

/// Who asked and where the answer goes.
#[derive(Debug, Clone)]
struct Who {
    /// The team the request came through (the envelope's `team_id`).
    team: String,
    /// The person's own team when Slack says it differs (Slack Connect: `user_team`).
    user_team: Option<String>,
    user: String,
    name: Option<String>,
    channel: String,
    /// Thread to reply in (events); `None` for slash commands (the status message starts one).
    thread: Option<String>,
    /// The triggering message's ts (events).
    message: Option<String>,
    /// The command's response_url, when it points at Slack ([`ReplyHosts`]).
    reply_url: Option<String>,
}

impl Who {
    /// The dialogue's view: the conversation is the channel (or DM) in its team.
    fn conversation(&self) -> Conversation {
        let mut o = Origin::new(Platform::Slack, self.user.clone());
        o.team = Some(self.team.as_str().into());
        o.chat = self.channel.as_str().into();
        o.thread = self.thread.as_deref().map(Into::into);
        o.message = self.message.as_deref().map(Into::into);
        o.requester_name = self.name.as_ref().map(|n| format!("@{n}").into());
        o.reply_url = self.reply_url.clone();
        Conversation {
            own_team: self.user_team.clone(),
            ..Conversation::chat(o)
        }
    }

    /// A direct message with the bot (nobody else reads it).
    fn in_dm(&self) -> bool {
        self.channel.starts_with('D')
    }
}

/// A message to show: mrkdwn text, optionally with blocks.
#[derive(Debug, Clone)]
struct Reply {
    text: String,
    blocks: Option<Vec<SlackBlock>>,
}

impl Reply {
    fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            blocks: None,
        }
    }

    fn ephemeral(&self) -> serde_json::Value {
        let mut v = json!({ "response_type": "ephemeral", "text": self.text });
        if let Some(blocks) = &self.blocks {
            v["blocks"] = serde_json::to_value(blocks).unwrap_or_default();
        }
        v
    }
}

/// A dialogue reply in Slack's markup (mrkdwn, Block Kit).
fn render(reply: &dialogue::Reply) -> Reply {
    match reply {
        dialogue::Reply::Confirm { nonce, .. } => {
            let text = escape(&reply.text());
            Reply {
                blocks: Some(texts::confirm_blocks(&text, nonce)),
                text,
            }
        }
        // Slack names the requester with a mention.
        dialogue::Reply::NotYours {
            requester, confirm, ..
        } => Reply::text(replies::only_requester(
            Some(&texts::mention(requester)),
            *confirm,
        )),
        reply => Reply::text(escape(&reply.text())),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP routes

fn webhook_metric(route: &'static str, result: &'static str) {
    metrics::counter!("callbot_webhook_requests_total", "route" => route, "result" => result)
        .increment(1);
}

impl Slack {
    /// The body as text if the request is signed by Slack and not a copy of one already
    /// taken; 401 when unsigned, an empty 200 for a replay, 503 when the shared memo cannot
    /// say (Slack retries).
    async fn verified<'a>(
        &self,
        route: &'static str,
        headers: &HeaderMap,
        body: &'a Bytes,
    ) -> Result<&'a str, (StatusCode, &'static str)> {
        let reject = |reason: &dyn std::fmt::Display| {
            warn!(route, %reason, "rejected a request not signed by Slack");
            webhook_metric(route, "bad_signature");
            (StatusCode::UNAUTHORIZED, "invalid Slack signature")
        };
        let Some(verifier) = &self.verifier else {
            return Err((StatusCode::NOT_FOUND, "not found"));
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return Err(reject(&"body is not UTF-8"));
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        verifier
            .verify(
                header(verify::SIGNATURE_HEADER),
                header(verify::TIMESTAMP_HEADER),
                text,
            )
            .map_err(|e| reject(&e))?;
        let (Some(signature), Some(timestamp)) = (
            header(verify::SIGNATURE_HEADER),
            header(verify::TIMESTAMP_HEADER),
        ) else {
            return Err(reject(&"missing signature headers"));
        };
        let fresh = self
            .ctx
            .memory
            .first(REPLAYS, &format!("{timestamp}:{signature}"), REPLAY_TTL)
            .await;
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(route, error = %e, "could not check a Slack request against replays; Slack will retry it");
                webhook_metric(route, "unavailable");
                return Err((StatusCode::SERVICE_UNAVAILABLE, "try again later"));
            }
        };
        if !fresh {
            // Slack signs each delivery anew (retries carry a new timestamp): the very same
            // signature again is a copy of a request we already took.
            info!(route, "ignored a replayed Slack request");
            webhook_metric(route, "replayed");
            return Err((StatusCode::OK, ""));
        }
        webhook_metric(route, "accepted");
        Ok(text)
    }
}

async fn commands(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match slack.verified("/slack/commands", &headers, &body).await {
        Ok(body) => body,
        Err(res) => return res.into_response(),
    };
    let Ok(cmd) = serde_urlencoded::from_str::<SlashCommand>(body) else {
        return (StatusCode::BAD_REQUEST, "not a slash command").into_response();
    };
    Json(slack.ack_command(cmd).await.ephemeral()).into_response()
}

async fn events(State(slack): State<Arc<Slack>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match slack.verified("/slack/events", &headers, &body).await {
        Ok(body) => body,
        Err(res) => return res.into_response(),
    };
    let envelope = match serde_json::from_str::<Envelope>(body) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "unreadable Slack event");
            return (StatusCode::BAD_REQUEST, "unreadable event").into_response();
        }
    };
    match envelope {
        Envelope::UrlVerification { challenge } => {
            Json(json!({ "challenge": challenge })).into_response()
        }
        Envelope::EventCallback(cb) => {
            if let Some(retry) = headers.get("x-slack-retry-num") {
                debug!(event_id = %cb.event_id, ?retry, "Slack retried an event");
            }
            match slack.on_event(*cb).await {
                Ok(()) => StatusCode::OK.into_response(),
                // Slack delivers it again later.
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response(),
            }
        }
        Envelope::Other => StatusCode::OK.into_response(),
    }
}

#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

async fn interactions(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match slack.verified("/slack/interactions", &headers, &body).await {
        Ok(body) => body,
        Err(res) => return res.into_response(),
    };
    let interaction = serde_urlencoded::from_str::<InteractionForm>(body)
        .ok()
        .and_then(|f| serde_json::from_str::<Interaction>(&f.payload).ok());
    let Some(interaction) = interaction else {
        return (StatusCode::BAD_REQUEST, "unreadable interaction").into_response();
    };
    let slack = slack.clone();
    tokio::spawn(async move { slack.on_interaction(interaction).await });
    StatusCode::OK.into_response()
}

/// Fuzzing entry (fuzz/, tests/it/fuzz_replay.rs): the parsing the three Slack routes do
/// after the signature check, on one input; panics only on a bug.
#[doc(hidden)]
pub fn fuzz_inbound(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    if let Ok(cmd) = serde_urlencoded::from_str::<SlashCommand>(&body) {
        let text = slash_text(&cmd.text);
        assert!(text.len() <= cmd.text.len() + "call ".len());
    }
    if let Ok(Envelope::EventCallback(cb)) = serde_json::from_str::<Envelope>(&body) {
        if let Some(said) = cb.said() {
            assert!(said.text.len() <= cb.event.text.as_deref().unwrap_or_default().len());
            assert_ne!(
                cb.bot_user(),
                Some(said.user.as_str()),
                "our own message is never heard"
            );
        }
    }
    let _ = serde_urlencoded::from_str::<InteractionForm>(&body)
        .ok()
        .and_then(|f| serde_json::from_str::<Interaction>(&f.payload).ok());
    let _ = inbound::unescape(&body);
}

// ---------------------------------------------------------------------------------------
// Handling (shared by HTTP and Socket Mode)

impl Slack {
    /// Runs a slash command in its own task and answers with its reply if that is ready
    /// within [`ACK_BUDGET`]; otherwise answers "working on it" and the reply follows
    /// through the response_url.
    async fn ack_command(self: &Arc<Self>, cmd: SlashCommand) -> Reply {
        let (tx, mut rx) = oneshot::channel::<Reply>();
        let slack = self.clone();
        tokio::spawn(async move {
            let reply = render(&slack.on_command(&cmd).await);
            if let Err(reply) = tx.send(reply) {
                // The acknowledgement went out without it.
                let result = match slack.reply_url(cmd.response_url.as_deref()) {
                    Some(url) => slack.api.respond(&url, &reply.ephemeral()).await,
                    None => {
                        slack
                            .api
                            .post_ephemeral(&cmd.channel_id, &cmd.user_id, &reply.text)
                            .await
                    }
                };
                if let Err(e) = result {
                    warn!(error = %e, "could not send a late slash-command reply");
                }
            }
        });
        match tokio::time::timeout(ACK_BUDGET, &mut rx).await {
            Ok(Ok(reply)) => reply,
            _ => {
                rx.close();
                rx.try_recv()
                    .unwrap_or_else(|_| Reply::text(replies::working()))
            }
        }
    }

    async fn on_command(&self, cmd: &SlashCommand) -> dialogue::Reply {
        let who = Who {
            team: cmd.team_id.clone(),
            user_team: cmd.user_team.clone(),
            user: cmd.user_id.clone(),
            name: cmd.user_name.clone(),
            channel: cmd.channel_id.clone(),
            thread: None,
            message: None,
            reply_url: self.reply_url(cmd.response_url.as_deref()),
        };
        info!(user = %who.user, channel = %who.channel, command = %cmd.command, "Slack slash command");
        self.act(&who, &slash_text(&inbound::unescape(&cmd.text)))
            .await
    }

    /// An Events API callback: deduped, filtered, then handled in the background. An error
    /// when it cannot be known whether it was taken already (the shared memo is down).
    async fn on_event(self: &Arc<Self>, cb: EventCallback) -> Result<(), StoreError> {
        let first = self
            .ctx
            .dialogue()
            .first_delivery(&format!("slack:{}", cb.event_id))
            .await
            .inspect_err(|e| warn!(event_id = %cb.event_id, error = %e, "could not dedupe a Slack event; Slack will retry it"))?;
        if !first {
            debug!(event_id = %cb.event_id, "duplicate Slack event ignored");
            return Ok(());
        }
        let Some(said) = cb.said() else {
            return Ok(());
        };
        let who = Who {
            team: cb.team_id.clone(),
            user_team: cb.event.user_team.clone(),
            user: said.user.clone(),
            name: None,
            channel: said.channel.clone(),
            thread: Some(said.thread_ts.clone()),
            message: Some(said.ts.clone()),
            reply_url: None,
        };
        info!(user = %who.user, channel = %who.channel, event_id = %cb.event_id, "Slack message for callbot");
        let slack = self.clone();
        tokio::spawn(async move {
            let answer = slack.act(&who, &inbound::unescape(&said.text)).await;
            if answer.followed() {
                // The status message in the thread says it.
                return;
            }
            let reply = render(&answer);
            let result = if answer.private() && !who.in_dm() {
                // Only the asker reads it (a refusal names their id).
                slack
                    .api
                    .post_ephemeral(&who.channel, &who.user, &reply.text)
                    .await
            } else {
                slack
                    .api
                    .post_message(
                        &who.channel,
                        who.thread.as_deref(),
                        &reply.text,
                        reply.blocks,
                    )
                    .await
                    .map(|_| ())
            };
            if let Err(e) = result {
                warn!(error = %e, channel = %who.channel, "could not reply in Slack");
            }
        });
        Ok(())
    }

    /// Interprets a text and does what it asks.
    async fn act(&self, who: &Who, text: &str) -> dialogue::Reply {
        self.ctx.dialogue().on_text(&who.conversation(), text).await
    }

    /// A response_url we may post to; a foreign one is dropped and logged.
    fn reply_url(&self, url: Option<&str>) -> Option<String> {
        let url = url?;
        if self.reply_hosts.allows(url) {
            return Some(url.to_owned());
        }
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        warn!(%host, "ignored a response_url that is not Slack's; answering through the Web API instead");
        None
    }

    async fn on_interaction(&self, i: Interaction) {
        if i.kind != "block_actions" {
            return;
        }
        let who = Who {
            team: i.team.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
            user_team: i.user.team_id.clone(),
            user: i.user.id.clone(),
            name: i.user.username.clone(),
            channel: i.channel.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            thread: None,
            message: None,
            reply_url: None,
        };
        for action in &i.actions {
            let value = action.value.clone().unwrap_or_default();
            let (action, on_question) = match action.action_id.as_str() {
                texts::CANCEL_CALL => (Action::Cancel(value), false),
                texts::CONFIRM_CALL => (Action::Confirm(value), true),
                texts::DECLINE_CALL => (Action::Decline(value), true),
                other => {
                    debug!(action_id = other, "unknown Slack action");
                    continue;
                }
            };
            info!(user = %who.user, ?action, "Slack button clicked");
            let reply = self
                .ctx
                .dialogue()
                .on_action(&who.conversation(), action)
                .await;
            let text = render(&reply).text;
            // A question answered for good is replaced by its answer; anything else (someone
            // else's click, a used button, a Cancel) is told to the clicker alone. The status
            // message itself changes with the call's events.
            let settled = !matches!(
                reply,
                dialogue::Reply::NotYours { .. }
                    | dialogue::Reply::AlreadyAnswered
                    | dialogue::Reply::Refused(_)
            );
            if on_question && settled {
                self.replace(&i, &text).await;
            } else {
                self.tell(&i, &text).await;
            }
        }
    }

    /// An ephemeral note to whoever clicked.
    async fn tell(&self, i: &Interaction, text: &str) {
        let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": text });
        self.answer_interaction(i, &body, text).await;
    }

    /// Replaces the message whose button was clicked.
    async fn replace(&self, i: &Interaction, text: &str) {
        let body = json!({ "replace_original": true, "text": text });
        self.answer_interaction(i, &body, text).await;
    }

    /// Through the interaction's response_url when it is Slack's; otherwise an ephemeral
    /// message to the clicker in the channel.
    async fn answer_interaction(&self, i: &Interaction, body: &serde_json::Value, text: &str) {
        let result = match self.reply_url(i.response_url.as_deref()) {
            Some(url) => self.api.respond(&url, body).await,
            None => match &i.channel {
                Some(channel) => self.api.post_ephemeral(&channel.id, &i.user.id, text).await,
                None => return,
            },
        };
        if let Err(e) = result {
            warn!(error = %e, "could not answer a Slack interaction");
        }
    }
}

/// `/call` text without a verb means "call": `/call +91 …` → `call +91 …`; the other
/// commands (`help`, `status [id]`, `list`, `cancel <id>`) and texts that already start with
/// a verb pass through.
fn slash_text(text: &str) -> String {
    let text = text.trim();
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let passes = matches!(
        first.trim_start_matches('/'),
        "" | "help"
            | "?"
            | "usage"
            | "commands"
            | "status"
            | "list"
            | "calls"
            | "history"
            | "log"
            | "cancel"
            | "hangup"
            | "hang"
            | "call"
            | "dial"
            | "ring"
            | "phone"
    );
    if first.is_empty() {
        "help".to_owned()
    } else if passes {
        text.to_owned()
    } else {
        format!("call {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_text_adds_the_verb_only_for_numbers() {
        assert_eq!(
            slash_text("+91 98765 43210 and say hi"),
            "call +91 98765 43210 and say hi"
        );
        assert_eq!(slash_text("  "), "help");
        assert_eq!(slash_text("help"), "help");
        assert_eq!(slash_text("status abc"), "status abc");
        assert_eq!(slash_text("list"), "list");
        assert_eq!(slash_text("cancel abc"), "cancel abc");
        assert_eq!(slash_text("call 98765 43210"), "call 98765 43210");
    }
}
