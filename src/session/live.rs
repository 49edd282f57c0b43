//! [`LiveSession`]: what changes with every message of a session that this process serves,
//! kept in its memory rather than in the [`SessionStore`](super::SessionStore): the requests
//! awaiting an answer (in each direction, bounded), the time of the last message, counts of
//! messages and verdicts for operators, and the signal that asks the session to close. The pipeline holds it for the session's life, so a
//! message touches no global lock and no store; the store is written at lifecycle points only
//! (created, initialized, plugin state changed, closing, removed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::transport::Cancel;

use super::SessionError;
use crate::protocol::{Direction, Message, id_key};

/// A request that went one way and awaits its answer from the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The JSON-RPC id as JSON text, as the requester wrote it.
    pub id: String,
    pub method: String,
    pub sent_at: SystemTime,
    /// The request itself, kept when a plugin wants its answer.
    pub request: Option<Message>,
}

/// Requests awaiting answers, by the way they travelled, each keyed by the
/// [`id_key`] of its id.
#[derive(Debug, Default)]
struct PendingRequests {
    client_to_server: HashMap<String, PendingRequest>,
    server_to_client: HashMap<String, PendingRequest>,
}

impl PendingRequests {
    fn travelling(&mut self, direction: Direction) -> &mut HashMap<String, PendingRequest> {
        match direction {
            Direction::ClientToServer => &mut self.client_to_server,
            Direction::ServerToClient => &mut self.server_to_client,
        }
    }
}

/// The hot state of one session served here.
pub struct LiveSession {
    closed: Cancel,
    /// Called once when the session is asked to close (its server's way to hear it without a
    /// task waiting).
    on_close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Closed to be revived later (membrane is stopping and the store outlives it): the
    /// session stays in the store and its upstream session is left open.
    kept: AtomicBool,
    pending: Mutex<PendingRequests>,
    max_pending: usize,
    /// When the session was created, and milliseconds after that of its last message.
    began: Instant,
    last_active: AtomicU64,
    /// Messages that arrived, client to server and server to client.
    messages: [AtomicU64; 2],
    /// Interceptors' verdicts other than continue, by [`Verdict`].
    verdicts: [AtomicU64; 4],
}

/// A verdict an operator counts: what interceptors did to a session's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Blocked,
    Mocked,
    Modified,
    Held,
}

/// What a live session did so far, for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub blocked: u64,
    pub mocked: u64,
    pub modified: u64,
    pub held: u64,
    pub pending_requests: usize,
    pub last_active: SystemTime,
}

impl LiveSession {
    pub(super) fn new(max_pending: usize) -> Self {
        Self {
            closed: Cancel::new(),
            on_close: Mutex::new(None),
            kept: AtomicBool::new(false),
            pending: Mutex::default(),
            max_pending,
            began: Instant::now(),
            last_active: AtomicU64::new(0),
            messages: Default::default(),
            verdicts: Default::default(),
        }
    }

    /// Fires when the session is asked to close.
    pub fn closed(&self) -> &Cancel {
        &self.closed
    }

    /// Asks the session to close: fires [`LiveSession::closed`] and calls what
    /// [`LiveSession::on_close`] left.
    pub fn close(&self) {
        self.closed.cancel();
        let on_close = self.on_close_slot().take();
        if let Some(on_close) = on_close {
            on_close();
        }
    }

    /// Calls `then` once the session is asked to close: now, if it has been.
    pub fn on_close(&self, then: impl FnOnce() + Send + 'static) {
        let mut slot = self.on_close_slot();
        if self.closed.is_cancelled() {
            drop(slot);
            then();
        } else {
            *slot = Some(Box::new(then));
        }
    }

    fn on_close_slot(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn FnOnce() + Send>>> {
        self.on_close.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the session to be kept for a later revival when it closes.
    pub fn keep(&self) {
        self.kept.store(true, Ordering::Relaxed);
    }

    /// Whether the session is to be kept when it closes.
    pub fn kept(&self) -> bool {
        self.kept.load(Ordering::Relaxed)
    }

    /// The session saw a message now.
    pub fn touch(&self) {
        let now = self.began.elapsed().as_millis() as u64;
        self.last_active.store(now, Ordering::Relaxed);
    }

    /// How long since the session's last message.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
        self.began.elapsed().saturating_sub(last)
    }

    /// Counts a message that arrived travelling `direction`.
    pub fn count_message(&self, direction: Direction) {
        let index = match direction {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        };
        self.messages[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_verdict(&self, verdict: Verdict) {
        self.verdicts[verdict as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// What the session did so far.
    pub fn activity(&self) -> Activity {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Activity {
            client_to_server: count(&self.messages[0]),
            server_to_client: count(&self.messages[1]),
            blocked: count(&self.verdicts[Verdict::Blocked as usize]),
            mocked: count(&self.verdicts[Verdict::Mocked as usize]),
            modified: count(&self.verdicts[Verdict::Modified as usize]),
            held: count(&self.verdicts[Verdict::Held as usize]),
            pending_requests: self.pending_count(),
            last_active: SystemTime::now() - self.idle(),
        }
    }

    /// Remembers a request so its answer can be matched to it (by [`id_key`]), with the
    /// request itself when `kept`, and marks the session active; refuses one past the bound of requests awaiting an answer.
    pub fn record_request(
        &self,
        direction: Direction,
        request_id: &str,
        method: &str,
        kept: Option<Message>,
    ) -> Result<(), SessionError> {
        self.touch();
        let key = id_key(request_id);
        let mut pending = self.pending();
        let pending = pending.travelling(direction);
        if pending.len() >= self.max_pending && !pending.contains_key(key.as_ref()) {
            return Err(SessionError::PendingLimit(self.max_pending));
        }
        let request = PendingRequest {
            id: request_id.to_owned(),
            method: method.to_owned(),
            sent_at: SystemTime::now(),
            request: kept,
        };
        pending.insert(key.into_owned(), request);
        Ok(())
    }

    /// Takes the pending request that travelled `direction` with this id (in any spelling of
    /// it), if any, and marks the session active.
    pub fn resolve_request(
        &self,
        direction: Direction,
        request_id: &str,
    ) -> Option<PendingRequest> {
        self.touch();
        let key = id_key(request_id);
        self.pending().travelling(direction).remove(key.as_ref())
    }

    /// Takes every request that travelled `direction` and is still unanswered.
    pub fn drain_pending(&self, direction: Direction) -> Vec<PendingRequest> {
        let mut pending = self.pending();
        pending
            .travelling(direction)
            .drain()
            .map(|(_, request)| request)
            .collect()
    }

    /// Requests awaiting an answer, both ways.
    pub fn pending_count(&self) -> usize {
        let pending = self.pending();
        pending.client_to_server.len() + pending.server_to_client.len()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingRequests> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlates_requests_by_direction_and_id() {
        let live = LiveSession::new(8);
        let c2s = Direction::ClientToServer;
        live.record_request(c2s, "1", "tools/call", None).unwrap();
        live.record_request(
            Direction::ServerToClient,
            "1",
            "sampling/createMessage",
            None,
        )
        .unwrap();
        assert_eq!(
            live.resolve_request(c2s, "1.0").unwrap().method,
            "tools/call"
        );
        assert!(live.resolve_request(c2s, "1").is_none());
        let left = live.drain_pending(Direction::ServerToClient);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].method, "sampling/createMessage");
        assert_eq!(live.pending_count(), 0);
    }

    #[test]
    fn requests_past_the_bound_are_refused() {
        let live = LiveSession::new(2);
        let c2s = Direction::ClientToServer;
        live.record_request(c2s, "1", "ping", None).unwrap();
        live.record_request(c2s, "2", "ping", None).unwrap();
        assert!(matches!(
            live.record_request(c2s, "3", "ping", None),
            Err(SessionError::PendingLimit(2))
        ));
        live.record_request(Direction::ServerToClient, "3", "ping", None)
            .expect("each direction has its own bound");
        live.resolve_request(c2s, "1");
        live.record_request(c2s, "3", "ping", None)
            .expect("an answer makes room");
    }
}
