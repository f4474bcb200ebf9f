//! Socket Mode (`SLACK_APP_TOKEN`): slack-morphism's WebSocket listener feeds the same
//! handlers as the HTTP routes, so no public URL is needed. Slack signs nothing here: the
//! app-level token authenticates the connection itself.
//!
//! Its typed events are re-serialized into [`super::inbound`]'s models; the listener's
//! callbacks are plain `fn`s, so the adapter travels in the listener's user state.
//!
//! Health ([`crate::chat::health`]): a connection's `hello` reports the adapter connected; a
//! WebSocket error (the connection dropped) reports it failing until the next `hello`.
//! slack-morphism reconnects by itself and tells us nothing else, so a connection closed
//! cleanly by Slack that then cannot be reopened is not seen here.

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use tracing::{error, info, warn};

use super::Slack;
use super::api::{Client, Connector};
use super::inbound::{EventCallback, Interaction, SlashCommand};
use crate::calls::store::StoreError;

/// slack-morphism's callback error type (its own alias is crate-private).
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Connects in the background and keeps reconnecting until callbot stops.
pub fn start(slack: Arc<Slack>, client: Arc<Client>, app_token: &SecretString) {
    let shutdown = slack.ctx.shutdown.clone();
    let callbacks = SlackSocketModeListenerCallbacks::<Connector>::new()
        .with_command_events(on_command)
        .with_interaction_events(on_interaction)
        .with_push_events(on_push)
        // A closure: the hello event's type is not exported by slack-morphism.
        .with_hello_events(|event, _client, states| async move {
            on_hello(event.num_connections, states).await;
        });
    let environment = Arc::new(
        SlackClientEventsListenerEnvironment::new(client)
            .with_error_handler(on_error)
            .with_user_state(slack),
    );
    let listener = SlackClientSocketModeListener::new(
        &SlackClientSocketModeConfig::new(),
        environment,
        callbacks,
    );
    let token = SlackApiToken::new(app_token.expose_secret().to_owned().into());
    tokio::spawn(async move {
        if let Err(e) = listener.listen_for(&token).await {
            error!(error = %e, "Slack Socket Mode could not start");
            return;
        }
        listener.start().await;
        shutdown.cancelled().await;
        listener.shutdown().await;
    });
}

async fn adapter(states: &SlackClientEventsUserState) -> Result<Arc<Slack>, BoxError> {
    states
        .read()
        .await
        .get_user_state::<Arc<Slack>>()
        .cloned()
        .ok_or_else(|| "the Slack adapter is missing from the listener state".into())
}

/// Re-reads one of slack-morphism's models as ours.
fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> Result<B, BoxError> {
    Ok(serde_json::from_value(serde_json::to_value(a)?)?)
}

async fn on_command(
    event: SlackCommandEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let slack = adapter(&states).await?;
    let command: SlashCommand = convert(&event)?;
    let reply = slack.ack_command(command).await;
    let mut content = SlackMessageContent::new().with_text(reply.text);
    content.blocks = reply.blocks;
    Ok(SlackCommandEventResponse::new(content)
        .with_response_type(SlackMessageResponseType::Ephemeral))
}

async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let slack = adapter(&states).await?;
    let callback: EventCallback = convert(&event)?;
    // A store error leaves the envelope unacknowledged (`on_error`): Slack delivers it again.
    slack.on_event(callback).await?;
    Ok(())
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let slack = adapter(&states).await?;
    let interaction: Interaction = convert(&event)?;
    tokio::spawn(async move { slack.on_interaction(interaction).await });
    Ok(())
}

async fn on_hello(connections: u32, states: SlackClientEventsUserState) {
    info!(connections, "Slack Socket Mode connected");
    if let Ok(slack) = adapter(&states).await
        && let Some(health) = &slack.socket_health
    {
        health.ok();
    }
}

fn on_error(
    err: BoxError,
    _client: Arc<Client>,
    states: SlackClientEventsUserState,
) -> HttpStatusCode {
    let lost = matches!(
        err.downcast_ref::<SlackClientError>(),
        Some(SlackClientError::SocketModeProtocolError(_))
    );
    if lost {
        warn!(error = %err, "Slack Socket Mode connection lost; reconnecting");
        // The callback is synchronous; the state lock is only ever written at start.
        if let Ok(state) = states.try_read()
            && let Some(slack) = state.get_user_state::<Arc<Slack>>()
            && let Some(health) = &slack.socket_health
        {
            health.failing(format!("Socket Mode disconnected: {err}"));
        }
    } else if err.downcast_ref::<StoreError>().is_some() {
        // Not acknowledged: Slack delivers the envelope again.
        return HttpStatusCode::SERVICE_UNAVAILABLE;
    } else {
        warn!(error = %err, "Slack Socket Mode event failed");
    }
    HttpStatusCode::OK
}
