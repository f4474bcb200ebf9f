//! The engine and its ports: [`CallService`] takes requests and status updates, the
//! [`dialer`] places queued calls at a steady rate, [`store::CallStore`] keeps them and
//! [`events::EventBus`] tells the chat adapters what happened. Adapters implement the
//! [`Telephony`], [`store::CallStore`], [`queue::DialQueue`] and [`lease::Leases`] ports;
//! nothing here imports an adapter.

pub mod claims;
pub mod dialer;
pub mod events;
pub mod lease;
pub mod memo;
pub mod pacing;
pub mod poller;
pub mod queue;
pub mod reaper;
pub mod service;
pub mod store;
pub mod usage;

use std::time::Duration;

use async_trait::async_trait;

use crate::core::call::{Call, CallError, CallSid, CallStatus, StatusUpdate};
use crate::core::policy::Refusal;

pub use events::{CallEvent, EventBus, EventKind};
pub use queue::{DialQueue, MemoryQueue};
pub use service::{CallService, RequestError};
pub use store::{CallStore, MemoryStore, Stats};

/// What the provider said when it accepted a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub sid: CallSid,
    pub status: CallStatus,
}

/// A recording's audio, streamed from the provider as it arrives.
pub struct Audio {
    pub content_type: String,
    /// Bytes, when the provider said.
    pub length: Option<u64>,
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
}

/// How to end a live call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// Not answered yet (queued or ringing): the call is withdrawn.
    Cancel,
    /// Answered: the call is ended.
    Complete,
}

/// A telephony failure, keeping the provider's code and message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelephonyError {
    /// The provider answered with an error.
    #[error("{message} (HTTP {http_status}{})", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Api {
        http_status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
        /// From a 429's Retry-After header.
        retry_after: Option<Duration>,
    },
    #[error("the telephony provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke after the request may have been sent: it may have taken effect.
    #[error("could not reach the telephony provider: {0}")]
    Network(String),
    /// No connection could be made: the request was never sent.
    #[error("could not reach the telephony provider: {0}")]
    Unreachable(String),
    #[error("unexpected answer from the telephony provider: {0}")]
    Protocol(String),
    /// The provider accepted the request (2xx) but its answer was cut off or unreadable:
    /// the call exists, only its sid is unknown. Never retried: that would place it twice.
    #[error("the telephony provider accepted the request but its answer was unreadable: {0}")]
    Unconfirmed(String),
}

impl TelephonyError {
    /// 429, 5xx, timeouts and connection errors may succeed on a later try.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { http_status, .. } => *http_status == 429 || *http_status >= 500,
            Self::Timeout(_) | Self::Network(_) | Self::Unreachable(_) => true,
            Self::Protocol(_) | Self::Unconfirmed(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The reason stored on a failed call and shown to its requester.
    pub fn to_call_error(&self) -> CallError {
        match self {
            Self::Api { code, message, .. } => CallError {
                code: *code,
                message: message.clone(),
            },
            other => CallError {
                code: None,
                message: other.to_string(),
            },
        }
    }
}

/// The port to a telephony provider (each one plugs in under `telephony/`).
#[async_trait]
pub trait Telephony: Send + Sync + 'static {
    /// Asks the provider to place `call`; it fetches what to say from us and posts its status
    /// callbacks back to us.
    async fn place(&self, call: &Call) -> Result<Placed, TelephonyError>;
    /// Ends a live call.
    async fn hangup(&self, sid: &CallSid, how: Hangup) -> Result<(), TelephonyError>;
    /// The provider's current view of a call (status, duration), for the stale-call reaper.
    async fn fetch(&self, sid: &CallSid) -> Result<StatusUpdate, TelephonyError>;
    /// One status request for the [`poller`]: like [`Telephony::fetch`], but a single
    /// request, never retried (the poller paces and counts its requests itself).
    async fn poll(&self, sid: &CallSid) -> Result<StatusUpdate, TelephonyError> {
        self.fetch(sid).await
    }
    /// Whether the provider can carry this call as it is configured, checked when the call is
    /// requested (before it counts against any limit): without a public URL the instructions
    /// travel inline, with a size limit, and features that need a callback cannot work.
    fn accepts(&self, _call: &Call) -> Result<(), Refusal> {
        Ok(())
    }
    /// Calls from `call.from` to `call.to` the provider created at or after `since`, newest
    /// first: after a create whose answer never came (timeout, dropped connection), the one
    /// it may have placed. Providers that cannot lose an answer have none.
    async fn recent_calls(
        &self,
        _call: &Call,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Placed>, TelephonyError> {
        Ok(Vec::new())
    }
    /// The audio of the recording with the provider's id `sid` (the provider's credentials
    /// stay with it: callers get the bytes, never a URL).
    async fn recording(&self, sid: &str) -> Result<Audio, TelephonyError>;
    /// True when no real calls are placed.
    fn is_simulated(&self) -> bool;
}
