//! Adapters behind the [`crate::calls::Telephony`] port. Each provider is one plug: a
//! factory that turns its settings section into a [`Plug`], the port calls are placed
//! through plus the routes its webhooks arrive on. `app.rs` calls one factory and merges
//! its routes; adding a provider touches only its own folder and that one line of wiring.
//!
//! - [`twilio`]: the Twilio Voice REST client, its signature check, TwiML and webhooks;
//! - [`simulator`]: the built-in simulator, which behaves like Twilio from the outside
//!   (signed callbacks over HTTP to Twilio's routes).

pub mod simulator;
pub mod twilio;

use std::sync::Arc;

use axum::Router;

use crate::calls::{CallService, Telephony};
use crate::config::CallSettings;

/// A telephony provider, ready to plug in.
pub struct Plug {
    pub telephony: Arc<dyn Telephony>,
    /// The provider's webhook routes. Their state is the engine, built after the provider
    /// (it places calls through `telephony`): `app.rs` supplies it with `with_state`.
    pub routes: Router<Arc<CallService>>,
    /// The caller id calls are placed from (E.164).
    pub from: String,
    /// Set when the provider does not call back: its calls are followed by the
    /// [`crate::calls::poller`], at this pace.
    pub polling: Option<crate::calls::poller::PollConfig>,
}

/// What every provider's factory gets besides its own settings section.
#[derive(Debug, Clone, Copy)]
pub struct PlugContext<'a> {
    /// Where the provider reaches our webhooks (no trailing slash).
    pub public_url: &'a str,
    /// Largest webhook body accepted and how long it may take to arrive.
    pub body: crate::body::BodyRules,
    /// Ring timeout and time limit of every call.
    pub calls: &'a CallSettings,
}
