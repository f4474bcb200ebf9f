//! Twilio Voice: the REST client, request signatures, TwiML, the webhook routes and
//! Twilio's wire names, plugged in by [`plug`].

pub mod client;
pub mod quiet_log;
pub mod signature;
pub mod twiml;
pub mod webhook;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

pub use client::TwilioClient;
pub use signature::SignatureVerifier;

use self::client::TwilioConfig;
use self::webhook::TwilioHooks;
use super::{Plug, PlugContext};
use crate::calls::poller::PollConfig;
use crate::config::{TwilioMode, TwilioSettings};
use crate::core::phone::PhoneNumber;

/// The account to place calls with, as the settings check validated it.
#[derive(Debug, Clone)]
pub struct Account {
    pub account_sid: String,
    pub auth_token: SecretString,
    pub from: PhoneNumber,
}

/// Twilio plugged in: the REST client, and the TwiML and status callback routes whose
/// signatures are checked with the account's auth token. In polling `mode` the TwiML goes
/// inline, nothing calls back, and the plug asks to be polled.
pub fn plug(
    account: Account,
    section: &TwilioSettings,
    mode: TwilioMode,
    ctx: PlugContext<'_>,
) -> anyhow::Result<Plug> {
    let polling = mode == TwilioMode::Polling;
    let client = TwilioClient::new(TwilioConfig {
        api_base: section.api_base.clone(),
        account_sid: account.account_sid,
        auth_token: account.auth_token.clone(),
        public_url: ctx.public_url.to_owned(),
        ring_timeout_secs: ctx.calls.ring_timeout_secs,
        time_limit_secs: ctx.calls.time_limit_secs,
        timeout: Duration::from_millis(section.request_timeout_ms),
        polling,
    })?;
    let hooks = TwilioHooks::new(
        SignatureVerifier::new(account.auth_token, ctx.public_url),
        ctx.body,
    )
    .with_announcement(&ctx.calls.record_announcement);
    Ok(Plug {
        telephony: Arc::new(client),
        routes: webhook::routes(Arc::new(hooks)),
        from: account.from.e164().to_owned(),
        polling: polling.then(|| PollConfig {
            ringing_every: Duration::from_millis(section.poll_ringing_ms),
            in_progress_every: Duration::from_millis(section.poll_in_progress_ms),
            max_requests: section.poll_max_requests,
        }),
    })
}
