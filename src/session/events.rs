//! [`EventWriter`]: the persistence worker between the sessions' SSE streams and a durable
//! [`EventStore`]. Routing an event only queues it (the store is never awaited on a message's
//! way to its client); one task writes what is queued in batches, each session's events in
//! order, trimmed to the retention budget. When the store falls behind and the queue is full,
//! events are dropped from the durable copy only (the session's own memory still has them for
//! a resume on this process), and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::{EventStore, SessionId, StoreError, StoredEvent};

/// Events queued for the store before new ones are dropped from it.
const QUEUE: usize = 8192;

/// Events written in one round at most.
const BATCH: usize = 512;

/// Queues SSE events for a durable store; cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    store: Arc<dyn EventStore>,
    queue: mpsc::Sender<(SessionId, StoredEvent)>,
    dropped: Arc<AtomicU64>,
}

impl EventWriter {
    /// Starts the worker that writes to `store`, keeping `budget` bytes of events per session.
    /// It ends when every writer is dropped.
    pub fn spawn(store: Arc<dyn EventStore>, budget: usize) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(write(store.clone(), queued, budget));
        Self {
            store,
            queue,
            dropped: Arc::default(),
        }
    }

    /// Queues an event of session `id` for the store.
    pub fn write(&self, id: &SessionId, event: StoredEvent) {
        if self.queue.try_send((id.clone(), event)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "the event store falls behind: events are kept in memory only"
                );
            }
        }
    }

    /// The stored events of `stream` after `seq`, for a client resuming a stream this process
    /// does not have.
    pub async fn after(
        &self,
        id: &SessionId,
        stream: u32,
        seq: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.store.after(id, stream, seq).await
    }
}

async fn write(
    store: Arc<dyn EventStore>,
    mut queued: mpsc::Receiver<(SessionId, StoredEvent)>,
    budget: usize,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        // Each session's events stay in order; sessions are written one after another.
        let mut by_session: HashMap<SessionId, Vec<StoredEvent>> = HashMap::new();
        let mut order = Vec::new();
        for (id, event) in batch.drain(..) {
            by_session
                .entry(id.clone())
                .or_insert_with(|| {
                    order.push(id);
                    Vec::new()
                })
                .push(event);
        }
        for id in order {
            let events = &by_session[&id];
            if let Err(e) = store.append(&id, events, budget).await {
                tracing::warn!(session = %id.redacted(), error = %e, lost = events.len(), "could not store events for replay");
            }
        }
    }
}
