//! Leases: a job that must run on one instance at a time (Telegram polling, the reaper and
//! other housekeeping) runs only while its instance holds the job's lease. With one process
//! the lease is always held ([`Solo`]); on Redis it is a key with a time to live that its
//! holder renews, and that another instance takes when the holder stops renewing it.

use std::time::Duration;

use async_trait::async_trait;

use super::store::StoreError;

#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Takes the lease `name` for `ttl`, or renews it when this instance already holds it.
    /// True while this instance holds it. Renew well within `ttl` (a third of it).
    async fn hold(&self, name: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Gives the lease up at once (a graceful stop), if this instance holds it.
    async fn release(&self, name: &str) -> Result<(), StoreError>;
}

/// One process: every lease is always held.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

#[async_trait]
impl Leases for Solo {
    async fn hold(&self, _name: &str, _ttl: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn release(&self, _name: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
