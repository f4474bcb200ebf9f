//! The CallEvent bus: every change to a call, in the order the store applied them. With
//! several instances a bridge (`shared::events`) adds the other instances' events, marked
//! [`CallEvent::remote`] so that they are not sent back.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::core::call::Call;

/// Room for events a slow subscriber has not read yet; beyond it, it skips the oldest
/// (and should re-read the store). The production default of `calls.event_bus_capacity`.
pub const BUS_CAPACITY: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Progress,
    Final,
    /// The call's recording is ready (after its final status, usually).
    Recording,
}

#[derive(Debug, Clone)]
pub struct CallEvent {
    pub kind: EventKind,
    pub call: Arc<Call>,
    /// Published by another instance (brought here by the bridge), not by this one.
    pub remote: bool,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Progress => "progress",
            Self::Final => "final",
            Self::Recording => "recording",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Created, Self::Progress, Self::Final, Self::Recording]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<CallEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with room for [`BUS_CAPACITY`] unread events per subscriber.
    pub fn new() -> Self {
        Self::with_capacity(BUS_CAPACITY)
    }

    /// A bus with room for `capacity` unread events per subscriber (at least 1). Tests use a
    /// tiny one to make subscribers fall behind.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    pub fn publish(&self, kind: EventKind, call: Arc<Call>) {
        // No subscriber is fine: nobody is listening yet.
        let _ = self.tx.send(CallEvent {
            kind,
            call,
            remote: false,
        });
    }

    /// An event another instance published (the bridge brings it here).
    pub fn publish_remote(&self, kind: EventKind, call: Arc<Call>) {
        let _ = self.tx.send(CallEvent {
            kind,
            call,
            remote: true,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.tx.subscribe()
    }
}
