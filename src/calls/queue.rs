//! The dial queue: calls accepted and stored, waiting for the dialer. [`CallService::request`]
//! pushes a call's id after storing it; the [`dialer`] takes deliveries and acknowledges each
//! one only once the dial's result is recorded in the store.
//!
//! Delivery is at least once: a shared queue hands an entry whose dialer died to another
//! dialer, marked [`Delivery::redelivered`]. The dialer makes that exactly once: it dials only
//! a call the store still shows queued without a sid, and asks the provider's call list before
//! creating a redelivered one (the dead dialer may have sent the create).
//!
//! In one process the queue is a bounded tokio channel ([`MemoryQueue`]); on Redis it is a
//! stream with one consumer group (`shared::queue`).
//!
//! [`CallService::request`]: super::CallService::request
//! [`dialer`]: super::dialer

use std::collections::HashSet;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};

use super::store::StoreError;
use crate::core::call::CallId;

/// Why a call could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds its capacity.
    #[error("the dial queue is full ({0} calls)")]
    Full(usize),
    /// This instance's dialer has stopped.
    #[error("the dialer has stopped")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One call handed to a dialer, to be acknowledged ([`DialQueue::ack`]) once its result is
/// recorded, or handed back ([`DialQueue::release`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub call: CallId,
    /// The queue's name for this entry (empty in memory).
    pub entry: String,
    /// Handed to a dialer before (one that died or stopped): the create may have been sent
    /// already.
    pub redelivered: bool,
    /// Which of this instance's holds of the entry this is: the same entry taken over by
    /// another instance and later taken back is a new hold, and the dialer of the old one
    /// must not go on (0 in memory).
    pub hold: u64,
}

impl Delivery {
    pub fn new(call: CallId) -> Self {
        Self {
            call,
            entry: String::new(),
            redelivered: false,
            hold: 0,
        }
    }
}

#[async_trait]
pub trait DialQueue: Send + Sync + 'static {
    /// Queues a stored call for dialing.
    async fn push(&self, call: &CallId) -> Result<(), QueueError>;
    /// The next call to dial; waits for one. `None` once the queue is closed and empty.
    /// Cancel-safe in that a delivery lost with a dropped future is not lost for good: a
    /// shared queue hands it out again after its claim time.
    async fn next(&self) -> Result<Option<Delivery>, StoreError>;
    /// The call's result is recorded: the entry is done.
    async fn ack(&self, delivery: &Delivery) -> Result<(), StoreError>;
    /// Hands a delivery back undialed. True when another dialer will take it; false when
    /// none will (one process), and the caller must settle the call itself.
    async fn release(&self, delivery: &Delivery) -> Result<bool, StoreError>;
    /// Asked right before each create request: true when this dialer still holds `delivery`,
    /// and its claim time starts again; false when another dialer took it over (this one was
    /// cut off from the queue for longer than the claim time, say while it waited out a
    /// Retry-After), and the caller must drop it without a create. An error means the queue
    /// cannot tell: the caller must not create either.
    async fn keep(&self, _delivery: &Delivery) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Stops holding a delivery without settling it (its result could not be recorded): a
    /// shared queue hands it out again after its claim time.
    fn abandon(&self, _delivery: &Delivery) {}
    /// Calls waiting or being dialed.
    async fn depth(&self) -> Result<usize, StoreError>;
    /// Every call that has an entry (waiting or being dialed), for recovery; `None` when
    /// the queue cannot tell (one process: it dies with its dialer, so nothing is orphaned).
    async fn calls(&self) -> Result<Option<HashSet<CallId>>, StoreError>;
    /// This instance stops taking calls. Returns the calls still waiting that no other
    /// instance will dial (the caller fails them with a reason); a shared queue leaves them
    /// to the others and returns none.
    async fn close(&self) -> Result<Vec<CallId>, StoreError>;
    /// Housekeeping of the queue itself (one instance at a time).
    async fn tidy(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// After the dials in flight settled (or the grace period ran out): deliveries this
    /// instance read but never dialed go back to the others at once.
    async fn leave(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The dial queue of one process: a bounded channel. Nobody else can dial its calls, so on
/// stop the calls still in it are handed back to be failed with a reason.
pub struct MemoryQueue {
    tx: mpsc::Sender<CallId>,
    rx: Mutex<mpsc::Receiver<CallId>>,
    capacity: usize,
}

impl MemoryQueue {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: Mutex::new(rx),
            capacity,
        }
    }
}

#[async_trait]
impl DialQueue for MemoryQueue {
    async fn push(&self, call: &CallId) -> Result<(), QueueError> {
        match self.tx.try_send(call.clone()) {
            Ok(()) => {
                metrics::gauge!("callbot_queue_depth").increment(1.0);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Full(self.capacity)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueError::Closed),
        }
    }

    async fn next(&self) -> Result<Option<Delivery>, StoreError> {
        let id = self.rx.lock().await.recv().await;
        if id.is_some() {
            metrics::gauge!("callbot_queue_depth").decrement(1.0);
        }
        Ok(id.map(Delivery::new))
    }

    async fn ack(&self, _delivery: &Delivery) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(&self, _delivery: &Delivery) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn depth(&self) -> Result<usize, StoreError> {
        Ok(self.tx.max_capacity() - self.tx.capacity())
    }

    async fn calls(&self) -> Result<Option<HashSet<CallId>>, StoreError> {
        Ok(None)
    }

    async fn close(&self) -> Result<Vec<CallId>, StoreError> {
        let mut rx = self.rx.lock().await;
        rx.close();
        let mut left = Vec::new();
        while let Some(id) = rx.recv().await {
            metrics::gauge!("callbot_queue_depth").decrement(1.0);
            left.push(id);
        }
        Ok(left)
    }
}
