//! Telegram adapter (teloxide): chat messages in, call progress back into the same thread.
//!
//! - **Connection.** The real teloxide [`Bot`] pointed at `TELEGRAM_API_URL`. Long polling
//!   (default: `deleteWebhook`, then a `getUpdates` loop with an offset that stops on shutdown)
//!   or webhook (`setWebhook` with `secret_token` and `allowed_updates` at start;
//!   `POST /telegram/webhook` checks `X-Telegram-Bot-Api-Secret-Token` in constant time).
//! - **What it listens to** ([`text::addressed`]): any text in private chats; in groups only
//!   our commands (`/call`, `/call@thisbot`, …), messages that mention the bot and replies to it.
//! - **Replies** ([`handler`]): the [`crate::chat::dialogue`] answers, rendered as plain text and
//!   inline keyboards, go to the user's message, in its forum topic; call progress
//!   ([`progress`]) edits one status message and posts the outcome as a new reply, once.
//! - **Robustness.** Updates are deduplicated by `update_id` (the dialogue's one dedupe memo,
//!   shared by every instance); every Bot API request honours 429 `retry_after` and retries
//!   network errors with backoff ([`api`]). An update whose dedupe cannot be checked (the
//!   shared memo is down) is not confirmed: Telegram delivers it again.
//! - **One poller.** Telegram answers 409 Conflict when two `getUpdates` overlap, so long
//!   polling runs only on the instance holding the `telegram-polling` lease
//!   (`telegram.polling_lease_ms`): renewed every third of it, polling stops at once when it
//!   is lost, another instance takes it over within it when the holder dies, and a graceful
//!   stop gives it up. Webhook mode runs on every instance.
//! - **Start and health.** `getMe` at start: a token Telegram rejects stops the start with an
//!   error naming TELEGRAM_BOT_TOKEN; an unreachable Bot API is retried a few times, then
//!   stops it too. Long polling reports to [`crate::chat::health`]: failing `getUpdates`
//!   for longer than `health.adapter_down_ms` turns `/healthz` to 503.
//!
//! Messages are sent as plain text (no parse mode), so user text never needs escaping and
//! can never break the markup.

mod api;
mod handler;
mod progress;
mod text;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use teloxide::Bot;
use teloxide::RequestError;
use teloxide::payloads::{GetUpdatesSetters as _, SetWebhookSetters as _};
use teloxide::requests::{Request as _, Requester as _};
use teloxide::types::{AllowedUpdate, BotCommand, Update, UpdateKind, UserId};
use tracing::{error, info, warn};

use super::AdapterContext;
use crate::calls::lease::Leases;
use crate::calls::store::StoreError;
use crate::config::{TelegramMode, TelegramSettings};

/// The commands registered with setMyCommands at start (also the BotFather list).
const COMMANDS_JSON: &str = include_str!("../../../bots/telegram/commands.json");

/// Most seconds one `getUpdates` long poll waits for updates.
const POLL_TIMEOUT_SECS: u32 = 10;

/// How long a long poll may wait with this client timeout: 5 s below it, at most
/// [`POLL_TIMEOUT_SECS`] (0: short polling).
fn poll_wait_secs(request_timeout: Duration) -> u32 {
    let secs = request_timeout.as_secs().saturating_sub(5);
    u32::try_from(secs)
        .unwrap_or(u32::MAX)
        .min(POLL_TIMEOUT_SECS)
}

/// The updates we ask Telegram for.
const ALLOWED_UPDATES: [AllowedUpdate; 2] = [AllowedUpdate::Message, AllowedUpdate::CallbackQuery];

/// How long polling pauses when an update could not be taken (the shared memo is down).
const STALLED_PAUSE: Duration = Duration::from_secs(1);

/// The lease of the one instance that long-polls.
const POLLING_LEASE: &str = "telegram-polling";

/// Header Telegram sends the webhook secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Who the bot is (from getMe): needed to recognise mentions and replies to it in groups.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub id: UserId,
    pub username: String,
}

/// The adapter's shared state.
pub(crate) struct Telegram {
    bot: Bot,
    ctx: AdapterContext,
    me: Me,
}

/// Parses bots/telegram/commands.json.
pub(crate) fn commands() -> Vec<BotCommand> {
    serde_json::from_str(COMMANDS_JSON).expect("bots/telegram/commands.json is valid")
}

/// Starts the adapter's background tasks and returns its routes. In polling mode it polls
/// only while this instance holds the polling lease in `leases`.
pub async fn start(
    settings: &TelegramSettings,
    ctx: AdapterContext,
    leases: Arc<dyn Leases>,
) -> anyhow::Result<Router> {
    let token = settings
        .bot_token
        .as_ref()
        .context("TELEGRAM_BOT_TOKEN is not set")?;
    let api_url = reqwest::Url::parse(&settings.api_url)
        .with_context(|| format!("TELEGRAM_API_URL is not a URL: {}", settings.api_url))?;
    let secret = match settings.mode {
        TelegramMode::Polling => None,
        TelegramMode::Webhook => Some(
            settings
                .webhook_secret
                .clone()
                .filter(|s| !s.expose_secret().is_empty())
                .context(
                    "TELEGRAM_MODE=webhook needs TELEGRAM_WEBHOOK_SECRET (1-256 characters A-Z, a-z, 0-9, _ and -): \
                     Telegram sends it with every update so nobody else can post to /telegram/webhook",
                )?,
        ),
    };
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    let client = teloxide::net::default_reqwest_settings()
        .timeout(timeout)
        .build()
        .context("could not build the Telegram HTTP client")?;
    let bot = Bot::with_client(token.expose_secret(), client).set_api_url(api_url);
    let me = match api::send(&bot.get_me(), "getMe").await {
        Ok(me) => me,
        Err(RequestError::Api(teloxide::ApiError::InvalidToken)) => anyhow::bail!(
            "Telegram rejected TELEGRAM_BOT_TOKEN (getMe: Unauthorized); copy the token again from @BotFather"
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "could not reach the Telegram Bot API at {} (getMe); check TELEGRAM_API_URL and the network",
                settings.api_url
            )));
        }
    };
    let me = Me {
        id: me.user.id,
        username: me.user.username.clone().unwrap_or_default(),
    };
    info!(bot = %me.username, mode = ?settings.mode, "telegram adapter starting");

    let tg = Arc::new(Telegram { bot, ctx, me });
    // Subscribe before any update is taken, so no call's events are missed.
    progress::spawn(tg.clone());

    if let Err(e) = api::send(&tg.bot.set_my_commands(commands()), "setMyCommands").await {
        warn!(error = %e, "could not register the bot's commands (setMyCommands)");
    }

    match secret {
        None => {
            // getUpdates does not work while a webhook is set.
            api::send(&tg.bot.delete_webhook(), "deleteWebhook")
                .await
                .context("could not clear the Telegram webhook (deleteWebhook)")?;
            // getMe just answered; a long poll in flight is not a failure, an error is.
            let health = tg.ctx.health.adapter("telegram");
            let lease = Lease {
                leases,
                ttl: Duration::from_millis(settings.polling_lease_ms),
                until: None,
            };
            tokio::spawn(poll(tg, poll_wait_secs(timeout), health, lease));
            Ok(Router::new())
        }
        Some(secret) => {
            let url = format!("{}/telegram/webhook", tg.ctx.public_url);
            let parsed = reqwest::Url::parse(&url)
                .with_context(|| format!("webhook URL {url} is not a URL"))?;
            api::send(
                &tg.bot
                    .set_webhook(parsed)
                    .secret_token(secret.expose_secret())
                    .allowed_updates(ALLOWED_UPDATES),
                "setWebhook",
            )
            .await
            .with_context(|| format!("Telegram refused the webhook {url} (setWebhook); it must be https on port 443, 80, 88 or 8443"))?;
            info!(%url, "telegram webhook set");
            Ok(Router::new()
                .route("/telegram/webhook", post(webhook))
                .with_state(Arc::new(Webhook { tg, secret })))
        }
    }
}

struct Webhook {
    tg: Arc<Telegram>,
    secret: SecretString,
}

fn webhook_metric(result: &'static str) {
    metrics::counter!("callbot_webhook_requests_total", "route" => "telegram", "result" => result)
        .increment(1);
}

/// `POST /telegram/webhook`: checks the secret, records the update, answers at once.
async fn webhook(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(hook.secret.expose_secret().as_bytes())) {
        warn!("telegram webhook with a missing or wrong secret token");
        webhook_metric("bad_signature");
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Update>(&body) {
        Ok(update) => {
            if hook.tg.accept(update).await.is_err() {
                // Not taken: Telegram delivers it again.
                webhook_metric("unavailable");
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            webhook_metric("accepted");
        }
        // Telegram only sends JSON: a body that is not JSON at all is refused.
        Err(e) if e.is_syntax() || e.is_eof() => {
            warn!(error = %e, "telegram webhook body is not JSON");
            webhook_metric("malformed");
            return StatusCode::BAD_REQUEST;
        }
        // JSON we cannot model (a newer update type): answer 200 anyway, or Telegram would
        // redeliver an update we can never read.
        Err(e) => warn!(error = %e, "unreadable telegram update"),
    }
    StatusCode::OK
}

/// Fuzzing entry (fuzz/, tests/it/fuzz_replay.rs): a webhook body through teloxide's update
/// parsing and our "is this addressed to the bot" rules; panics only on a bug.
#[doc(hidden)]
pub fn fuzz_update(data: &[u8]) {
    if let Ok(update) = serde_json::from_slice::<Update>(data) {
        let _ = update.id.as_offset();
        if let teloxide::types::UpdateKind::Message(msg) = &update.kind {
            if let Some(t) = msg.text() {
                for place in [
                    text::Where::Private,
                    text::Where::Group {
                        reply_to_bot: false,
                    },
                ] {
                    if let Some(heard) = text::addressed(place, t, "callbot_bot") {
                        assert!(heard.len() <= t.len());
                    }
                }
            }
        }
    }
    // The text rules alone, on any text.
    let t = String::from_utf8_lossy(data);
    let group = text::addressed(
        text::Where::Group {
            reply_to_bot: false,
        },
        &t,
        "callbot_bot",
    );
    if let Some(heard) = group {
        assert!(heard.len() <= t.trim().len());
    }
}

/// The polling lease, as this instance holds it.
struct Lease {
    leases: Arc<dyn Leases>,
    ttl: Duration,
    /// Until when this instance may poll, by its own clock (the lease was written at the
    /// latest when it was asked for, so it lasts at least `ttl` from then); `None`: not held.
    until: Option<Instant>,
}

impl Lease {
    /// Takes the lease, or renews it when a third of it has passed; true while held. An
    /// error (the shared store cannot say) counts as not held: polling stops here.
    async fn hold(&mut self) -> Result<bool, StoreError> {
        let now = Instant::now();
        let held = self.until.filter(|until| *until > now);
        if held.is_some_and(|until| now < self.renew_at(until)) {
            return Ok(true);
        }
        let asked = self.leases.hold(POLLING_LEASE, self.ttl);
        // A renewal may not outlast the lease it renews.
        let answer = match held {
            Some(until) => tokio::time::timeout_at(until, asked)
                .await
                .unwrap_or_else(|_| Err(StoreError("no answer before the lease ran out".into()))),
            None => asked.await,
        };
        let was = self.until.take().is_some();
        match answer {
            Ok(true) => {
                if !was {
                    info!("telegram polling: this instance took the polling lease and polls");
                }
                self.until = Some(now + self.ttl);
                Ok(true)
            }
            Ok(false) => {
                if was {
                    warn!("telegram polling: the polling lease was lost; polling stops here");
                }
                Ok(false)
            }
            Err(e) => {
                warn!(error = %e, "telegram polling: could not hold the polling lease; polling stops here");
                Err(e)
            }
        }
    }

    /// When the lease held until `until` is renewed: a third of it after it was taken.
    fn renew_at(&self, until: Instant) -> Instant {
        until - self.ttl + self.ttl / 3
    }

    /// Sleeps until the next renewal is due (forever while not held).
    async fn renewal_due(&self) {
        match self.until {
            Some(until) => tokio::time::sleep_until(self.renew_at(until)).await,
            None => std::future::pending().await,
        }
    }

    /// Gives it up (a graceful stop), if held.
    async fn release(&mut self) {
        if self.until.take().is_some()
            && let Err(e) = self.leases.release(POLLING_LEASE).await
        {
            warn!(error = %e, "telegram polling: could not give up the polling lease");
        }
    }
}

/// The long-polling loop: runs until shutdown, polling while this instance holds the lease.
async fn poll(
    tg: Arc<Telegram>,
    wait_secs: u32,
    health: crate::chat::health::AdapterHealth,
    mut lease: Lease,
) {
    let mut offset: i32 = 0;
    let mut failures: u32 = 0;
    let shutdown = tg.ctx.shutdown.clone();
    'polling: loop {
        match lease.hold().await {
            Ok(true) => {}
            standby => {
                match standby {
                    // Another instance polls.
                    Ok(_) => health.ok(),
                    Err(e) => health.failing(format!(
                        "long polling: the polling lease cannot be held: {e}"
                    )),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(lease.ttl / 3) => continue,
                }
            }
        }
        let request = tg
            .bot
            .get_updates()
            .offset(offset)
            .timeout(wait_secs)
            .allowed_updates(ALLOWED_UPDATES)
            .send();
        tokio::pin!(request);
        // The poll runs while the lease is renewed; losing it drops the poll at once.
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break 'polling,
                result = &mut request => break result,
                () = lease.renewal_due() => {
                    if !matches!(lease.hold().await, Ok(true)) {
                        continue 'polling;
                    }
                }
            }
        };
        let wait = match result {
            Ok(updates) => {
                failures = 0;
                health.ok();
                let mut stalled = false;
                for update in updates {
                    let next = update.id.as_offset();
                    if tg.accept(update).await.is_err() {
                        // Not confirmed: a later poll gets it (and those after it) again.
                        stalled = true;
                        break;
                    }
                    offset = offset.max(next);
                }
                if !stalled {
                    continue;
                }
                STALLED_PAUSE
            }
            Err(RequestError::RetryAfter(secs)) => secs.duration(),
            Err(RequestError::Api(e)) => {
                // A webhook set by someone else, a revoked token: keep trying, slowly.
                failures += 1;
                error!(error = %e, "getUpdates refused");
                health.failing(format!("long polling: getUpdates refused: {e}"));
                api::backoff(failures).max(Duration::from_secs(5))
            }
            Err(e) => {
                failures += 1;
                warn!(error = %e, failures, "getUpdates failed; retrying");
                health.failing(format!("long polling: getUpdates failing: {e}"));
                api::backoff(failures)
            }
        };
        // The lease is kept through the pause (the next poll is this instance's).
        let resume = Instant::now() + wait;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break 'polling,
                () = tokio::time::sleep_until(resume) => break,
                () = lease.renewal_due() => {
                    if !matches!(lease.hold().await, Ok(true)) {
                        continue 'polling;
                    }
                }
            }
        }
    }
    lease.release().await;
    info!("telegram polling stopped");
}

impl Telegram {
    /// Takes an update once (by update_id, on every instance together) and handles it in the
    /// background. An error when it cannot be known whether it was taken already (the shared
    /// memo is down): the caller has Telegram deliver it again.
    async fn accept(self: &Arc<Self>, update: Update) -> Result<(), StoreError> {
        let first = self
            .ctx
            .dialogue()
            .first_delivery(&format!("telegram:{}", update.id.0))
            .await
            .inspect_err(|e| warn!(update_id = update.id.0, error = %e, "could not dedupe a telegram update; it will be delivered again"))?;
        if !first {
            info!(update_id = update.id.0, "duplicate telegram update ignored");
            return Ok(());
        }
        let tg = self.clone();
        tokio::spawn(async move {
            match &update.kind {
                UpdateKind::Message(msg) => tg.on_message(msg).await,
                UpdateKind::CallbackQuery(q) => tg.on_callback(q).await,
                _ => {}
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::{Command, parse};
    use crate::core::phone::Region;

    #[test]
    fn every_registered_command_is_understood() {
        let commands = commands();
        assert!(!commands.is_empty());
        for c in commands {
            assert!(c.command.len() <= 32 && c.description.len() <= 256);
            let text = match c.command.as_str() {
                "call" => "/call +91 98765 43210".to_owned(),
                other => format!("/{other}@callbot_test_bot"),
            };
            let parsed = parse(&text, Region::parse("IN").unwrap());
            assert!(
                matches!(parsed, Ok(Some(_))),
                "/{} is not understood: {parsed:?}",
                c.command
            );
        }
        assert_eq!(
            parse("/start", Region::parse("IN").unwrap()),
            Ok(Some(Command::Help))
        );
    }
}
