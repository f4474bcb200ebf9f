//! Claims: a step that must happen once for all instances together (posting a call's outcome
//! in its thread) is claimed first, and only the instance whose claim succeeded does it. With
//! one process the follower's one worker per call is the only one that asks ([`Once`]); on
//! Redis the claim is a `SET NX` that every instance shares.

use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use super::store::StoreError;
use crate::core::call::CallId;

#[async_trait]
pub trait Claims: Send + Sync + 'static {
    /// Claims `step` of `call`: true for the first claim only, from any instance.
    async fn claim_step(&self, call: &CallId, step: &str) -> Result<bool, StoreError>;
}

/// One process: a claim is remembered here, for `ttl` (the calls' own lifetime).
pub struct Once {
    taken: Cache<(CallId, String), ()>,
}

impl Once {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            taken: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl Claims for Once {
    async fn claim_step(&self, call: &CallId, step: &str) -> Result<bool, StoreError> {
        Ok(self
            .taken
            .entry((call.clone(), step.to_owned()))
            .or_insert(())
            .is_fresh())
    }
}
