//! Usage limits, counted: the [`Ledger`] checks a request against the limits and counts it in
//! one atomic step, so two requests at once never both take the last place under a cap. One
//! process counts in memory ([`MemoryLedger`]); several instances count in one Redis, so that
//! together they never let a requester past the cap. Who may call what (identity,
//! destination) stays in [`crate::core::policy`]; only the counting lives behind this port.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::store::StoreError;
use crate::core::call::Origin;
use crate::core::phone::PhoneNumber;
use crate::core::policy::{Limits, Refusal, Usage};

/// One request's claim on the limits: who asks, whom to call, and the call it would be (its
/// entry in every window and in the live set).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub origin: &'a Origin,
    pub to: &'a PhoneNumber,
    pub call_id: &'a str,
}

/// A request counted against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// When it was counted, by the ledger's clock (the call's creation time).
    pub at: DateTime<Utc>,
    /// Calls live now, this one included (for the `callbot_active_calls` gauge).
    pub live: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(Admitted),
    /// A limit was reached; nothing was counted.
    Refused(Refusal),
}

#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Checks the claim against `limits` (in the order [`crate::core::policy::Limit`] lists them) and, when
    /// none is reached, counts it in every window and in the live set; atomically.
    async fn admit(&self, limits: &Limits, claim: &Claim<'_>) -> Result<Admission, StoreError>;
    /// Takes back what `admit` counted for a request that placed nothing.
    async fn take_back(&self, claim: &Claim<'_>, admitted: &Admitted) -> Result<(), StoreError>;
    /// The call ended: it leaves the live set. Returns the calls still live.
    async fn ended(&self, call_id: &str) -> Result<usize, StoreError>;
    /// Calls live now.
    async fn live(&self) -> Result<usize, StoreError>;
}

/// This process's usage, in memory: per-requester and per-destination windows, all requests
/// together, and the live calls.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    usage: Mutex<Usage>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn admit(&self, limits: &Limits, claim: &Claim<'_>) -> Result<Admission, StoreError> {
        let mut usage = self.usage.lock();
        // Read under the lock, so the windows get their times in order (their checks bisect
        // on that order).
        let now = Utc::now();
        if let Err(refusal) = limits.check(claim.origin, claim.to, &usage, now) {
            return Ok(Admission::Refused(refusal));
        }
        usage.record(claim.origin, claim.to, claim.call_id, now);
        usage.users.prune(now);
        usage.destinations.prune(now);
        usage.everyone.prune(now);
        Ok(Admission::Admitted(Admitted {
            at: now,
            live: usage.active(),
        }))
    }

    async fn take_back(&self, claim: &Claim<'_>, admitted: &Admitted) -> Result<(), StoreError> {
        self.usage
            .lock()
            .unrecord(claim.origin, claim.to, claim.call_id, admitted.at);
        Ok(())
    }

    async fn ended(&self, call_id: &str) -> Result<usize, StoreError> {
        let mut usage = self.usage.lock();
        usage.ended(call_id);
        Ok(usage.active())
    }

    async fn live(&self) -> Result<usize, StoreError> {
        Ok(self.usage.lock().active())
    }
}
