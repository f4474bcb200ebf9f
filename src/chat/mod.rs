//! Chat adapters: each takes commands in and follows CallEvents to post progress back.
//!
//! Every adapter speaks the same [`dialogue`] (the rules and the typed replies) and only
//! receives, renders and sends. Every adapter gets the same [`AdapterContext`]: the call service, the command
//! [`Interpreter`] (grammar first, then the optional LLM fallback), the public URL and the
//! shutdown token. An adapter's `start` spawns its background tasks (polling, the event
//! follower) and returns the routes it serves on our one axum Router.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::calls::CallService;
use crate::core::command::{self, Command, ParseError};
#[cfg(feature = "llm")]
use crate::core::phone::PhoneError;
use crate::core::phone::Region;

pub mod dialogue;
pub mod follow;
pub mod health;
#[cfg(feature = "slack")]
pub mod slack;
#[cfg(feature = "telegram")]
pub mod telegram;
pub mod web;

/// Turns a chat message into a command: the grammar first (fast, free, deterministic); the
/// language model only when the grammar found no request or no number.
pub struct Interpreter {
    region: Region,
    #[cfg(feature = "llm")]
    llm: Option<Arc<crate::llm::LlmParser>>,
}

impl Interpreter {
    pub fn new(region: Region) -> Self {
        Self {
            region,
            #[cfg(feature = "llm")]
            llm: None,
        }
    }

    /// Adds the natural-language fallback.
    #[cfg(feature = "llm")]
    pub fn with_llm(mut self, llm: Option<Arc<crate::llm::LlmParser>>) -> Self {
        self.llm = llm;
        self
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// `Ok(None)`: not for us. `Err`: a call request we cannot accept (show the reason).
    /// The model is asked only for someone who may place calls (`requester` is `Some`, the
    /// key of [`crate::core::policy::requester_key`]): a stranger's messages must not spend
    /// the operator's tokens; and each requester only `limits.llm_per_user_minute` times a
    /// minute.
    pub async fn interpret(
        &self,
        text: &str,
        requester: Option<&str>,
    ) -> Result<Option<Command>, ParseError> {
        let grammar = command::parse(text, self.region);
        #[cfg(not(feature = "llm"))]
        let _ = requester;
        #[cfg(feature = "llm")]
        if let (Some(llm), Some(requester)) = (self.llm.as_ref(), requester) {
            let ask_model = match &grammar {
                Ok(None) => true,
                Err(
                    ParseError::Number(PhoneError::NoNumber(_)) | ParseError::TrailingText { .. },
                ) => true,
                // A number was found but is invalid: the grammar's reason is the answer.
                _ => false,
            };
            if ask_model && !text.trim().is_empty() {
                return llm.interpret(text, self.region, requester).await;
            }
        }
        grammar
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
    /// Where adapters with a connection of their own report it (`GET /healthz`).
    pub health: Arc<health::Health>,
    /// The dialogue's memory (deliveries taken, confirmations waiting, Slack's replay
    /// guard), one for every adapter and, on Redis, for every instance: see [`dialogue`].
    pub memory: Arc<dyn crate::calls::memo::Memo>,
    /// How the call followers of several instances share the calls (one process: all here).
    pub follow: follow::Coordination,
}

/// Our link to a call's recording (the console API streams it, behind the web token).
pub fn recording_link(public_url: &str, id: &crate::core::call::CallId) -> String {
    format!(
        "{}/api/calls/{id}/recording",
        public_url.trim_end_matches('/')
    )
}
