//! Chat adapters: each takes commands in and follows CallEvents to post progress back.
//!
//! Every adapter gets the same [`AdapterContext`]: the call service, the command
//! [`Interpreter`] (grammar first, then the optional LLM fallback), the public URL and the
//! shutdown token. An adapter's `start` spawns its background tasks (polling, the event
//! follower) and returns the routes it serves on our one axum Router.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::calls::CallService;
use crate::core::command::{self, Command, ParseError};
use crate::core::phone::Region;

#[cfg(feature = "slack")]
pub mod slack;
#[cfg(feature = "telegram")]
pub mod telegram;
pub mod web;

/// Turns a chat message into a command: the grammar first (fast, free, deterministic).
pub struct Interpreter {
    region: Region,
}

impl Interpreter {
    pub fn new(region: Region) -> Self {
        Self { region }
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// `Ok(None)`: not for us. `Err`: a call request we cannot accept (show the reason).
    pub async fn interpret(&self, text: &str) -> Result<Option<Command>, ParseError> {
        command::parse(text, self.region)
    }
}

/// What every chat adapter is given.
#[derive(Clone)]
pub struct AdapterContext {
    pub service: Arc<CallService>,
    pub interpreter: Arc<Interpreter>,
    /// Base URL the platforms reach us at (no trailing slash).
    pub public_url: String,
    /// Ask for confirmation before dialing (`calls.confirm`).
    pub confirm: bool,
    /// Cancelled when callbot stops.
    pub shutdown: CancellationToken,
}
