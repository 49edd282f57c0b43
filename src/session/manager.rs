//! [`SessionManager`]: the one way the proxy creates, reads, changes, revives and ends
//! sessions. It enforces the session limit and the idle timeout, hands each session it serves
//! a [`LiveSession`] (its hot state: requests awaiting answers, last activity, close signal),
//! and bounds every call to the store in time, so a store that is down or slow refuses new
//! sessions (with [`SessionError::Store`]) while the sessions it serves go on. Ending is two
//! steps: [`SessionManager::close`] (from anywhere: shutdown, idle timeout, a removal by
//! another replica) only fires the signal; whoever serves the session winds it down, answers
//! what is pending, then calls [`SessionManager::remove`]. A durable store's records are kept
//! fresh while their sessions see traffic, and swept when they expire. Sessions opened and
//! closed here are announced to [`SessionManager::subscribe`]rs (the admin API's live events).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{
    KvError, LiveSession, MemoryStore, Session, SessionId, SessionStatus, SessionStore, StoreError,
};
use crate::auth::Principal;
use crate::transport::TransportType;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub max_sessions: usize,
    /// Sessions with no traffic for this long are closed; `None` keeps them forever.
    pub idle_timeout: Option<Duration>,
    /// Requests awaiting an answer, per session and direction; more are refused.
    pub max_pending_requests: usize,
    /// The longest any call to the store may take.
    pub store_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            idle_timeout: None,
            max_pending_requests: 256,
            store_timeout: Duration::from_secs(2),
        }
    }
}

/// How long a durable store keeps a session without traffic when no idle timeout is set.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

impl SessionConfig {
    /// How long a durable store keeps a session without traffic.
    pub fn expiry(&self) -> Duration {
        self.idle_timeout.unwrap_or(DEFAULT_EXPIRY)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("too many sessions (the limit is {0})")]
    Limit(usize),
    #[error("no such session")]
    Unknown,
    #[error(
        "too many requests awaiting an answer in this session (the limit is {0}); wait for answers first"
    )]
    PendingLimit(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionStats {
    pub active: usize,
    pub created: u64,
    pub revived: u64,
    pub closed: u64,
    pub idle_closed: u64,
    pub rejected: u64,
}

/// A session began or ended here: what [`SessionManager::subscribe`] announces.
#[derive(Debug, Clone)]
pub enum SessionNotice {
    Opened(Session),
    Closed(SessionId),
}

pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    notices: broadcast::Sender<SessionNotice>,
    store_latency: Histogram,
    store_errors: AtomicU64,
    config: SessionConfig,
    /// The sessions served here; its size is the authority for the session limit.
    live: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
    created: AtomicU64,
    revived: AtomicU64,
    closed: AtomicU64,
    idle_closed: AtomicU64,
    rejected: AtomicU64,
}

impl SessionManager {
    pub fn new(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            store,
            notices: broadcast::channel(256).0,
            store_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_errors: AtomicU64::new(0),
            config,
            live: Mutex::default(),
            created: AtomicU64::new(0),
            revived: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// A manager over an in-memory store.
    pub fn with_config(config: SessionConfig) -> Self {
        Self::new(Arc::new(MemoryStore::default()), config)
    }

    /// Creates a session for `principal`, or refuses when the limit is reached or the store
    /// does not take it.
    pub async fn create(
        &self,
        client: TransportType,
        upstream: TransportType,
        principal: Option<Arc<Principal>>,
    ) -> Result<Session, SessionError> {
        let mut session = Session::new(SessionId::generate(), client, upstream);
        session.principal = principal;
        self.go_live(&session.id)?;
        if let Err(e) = self.bounded(self.store.insert(&session)).await {
            self.live_sessions().remove(&session.id);
            return Err(e.into());
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %session.id, subject = session.principal.as_ref().map(|p| p.subject.as_str()), "session created");
        let _ = self.notices.send(SessionNotice::Opened(session.clone()));
        Ok(session)
    }

    /// Serves here a session the store keeps but this process does not (it was created before
    /// a restart, or by another replica): `None` when the store has no such session for
    /// `principal`, or when it cannot be revived (only a session with a Streamable HTTP
    /// upstream can: its upstream session goes on without this process, a child process does
    /// not).
    pub async fn revive(
        &self,
        id: &SessionId,
        principal: Option<&Arc<Principal>>,
        upstream: TransportType,
    ) -> Result<Option<Session>, SessionError> {
        if !self.store.durable() {
            return Ok(None);
        }
        let Some(session) = self.bounded(self.store.get(id)).await? else {
            return Ok(None);
        };
        let revivable = upstream == TransportType::StreamableHttp
            && session.upstream_transport == upstream
            && session.status == SessionStatus::Active;
        // One live here already is being wound down: gone as far as the caller is concerned.
        if !Principal::may_use(session.principal.as_deref(), principal.map(|p| &**p))
            || !revivable
            || !self.go_live(id)?
        {
            return Ok(None);
        }
        // A removal (a DELETE's winding down) may have ended between reading the record and
        // going live: it takes the record before the live session, so a record still there
        // means none did.
        let still_stored = self.bounded(self.store.get(id)).await;
        if !matches!(still_stored, Ok(Some(_))) {
            self.live_sessions().remove(id);
            return still_stored.map(|_| None).map_err(Into::into);
        }
        self.revived.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %id, "session revived from the store");
        let _ = self.notices.send(SessionNotice::Opened(session.clone()));
        Ok(Some(session))
    }

    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(self.bounded(self.store.get(id)).await?)
    }

    /// Applies `change` to the stored session (a lifecycle point) and stamps it; `false` when
    /// the store has no such session.
    pub async fn update(
        &self,
        id: &SessionId,
        change: impl FnOnce(&mut Session) + Send,
    ) -> Result<bool, SessionError> {
        let Some(mut session) = self.get(id).await? else {
            return Ok(false);
        };
        change(&mut session);
        session.updated_at = SystemTime::now();
        Ok(self.bounded(self.store.put(&session)).await?)
    }

    /// Every session in the store (served here or elsewhere).
    pub async fn list(&self) -> Result<Vec<Session>, SessionError> {
        Ok(self.bounded(self.store.list()).await?)
    }

    /// Bytes of state each plugin keeps with a session.
    pub async fn kv_sizes(&self, id: &SessionId) -> Result<BTreeMap<String, u64>, SessionError> {
        Ok(self.bounded(self.store.kv_sizes(id)).await?)
    }

    /// Whether the store answers (within the store timeout).
    pub async fn store_answers(&self) -> Result<(), SessionError> {
        let probe = SessionId::from("readiness-probe");
        self.bounded(self.store.get(&probe)).await.map(drop)?;
        Ok(())
    }

    /// Sessions opened and closed here from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionNotice> {
        self.notices.subscribe()
    }

    /// The hot state of a session served here; `None` for an unknown one.
    pub fn live(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.live_sessions().get(id).cloned()
    }

    /// Asks a live session to close: fires its signal. `false` when there is no such session
    /// here or it was already asked.
    pub fn close(&self, id: &SessionId) -> bool {
        let Some(live) = self.live(id) else {
            return false;
        };
        if live.closed().is_cancelled() {
            return false;
        }
        live.close();
        true
    }

    /// Ends a session wound down here: it is no longer live, and unless `keep` it is removed
    /// from the store too (a session kept there can be revived, by this process after a
    /// restart or by another replica).
    pub async fn remove(&self, id: &SessionId, keep: bool) -> Result<(), SessionError> {
        // The store first: while the session is live here it cannot be revived, so no request
        // can bring it back between the two.
        let stored = match keep {
            true => Ok(false),
            false => self.bounded(self.store.remove(id)).await,
        };
        let Some(live) = self.live_sessions().remove(id) else {
            return Ok(());
        };
        live.close();
        self.closed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %id, kept = keep, "session removed");
        let _ = self.notices.send(SessionNotice::Closed(id.clone()));
        stored.map(drop).map_err(Into::into)
    }

    /// Asks every live session to close (on shutdown). With a durable store they are kept
    /// there, to be revived when membrane is back.
    pub fn close_all(&self) {
        let live: Vec<Arc<LiveSession>> = self.live_sessions().values().cloned().collect();
        for session in live {
            if self.store.durable() {
                session.keep();
            }
            session.close();
        }
    }

    pub async fn kv_get(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
    ) -> Result<Option<String>, KvError> {
        self.bounded(self.store.kv_get(id, plugin, key)).await
    }

    pub async fn kv_set(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        value: &str,
    ) -> Result<(), KvError> {
        self.bounded(self.store.kv_set(id, plugin, key, value))
            .await
    }

    pub async fn kv_delete(&self, id: &SessionId, plugin: &str, key: &str) -> Result<(), KvError> {
        self.bounded(self.store.kv_delete(id, plugin, key)).await
    }

    pub async fn kv_increment(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        self.bounded(self.store.kv_increment(id, plugin, key, delta))
            .await
    }

    /// Closes every session without traffic for longer than the idle timeout; returns their ids.
    pub fn close_idle(&self) -> Vec<SessionId> {
        let Some(timeout) = self.config.idle_timeout else {
            return Vec::new();
        };
        let idle: Vec<(SessionId, Duration)> = self
            .live_sessions()
            .iter()
            .map(|(id, live)| (id.clone(), live.idle()))
            .filter(|(_, idle)| *idle >= timeout)
            .collect();
        let mut closed = Vec::new();
        for (id, idle) in idle {
            if self.close(&id) {
                tracing::info!(session = %id.redacted(), idle_secs = idle.as_secs(), "closed idle session");
                self.idle_closed.fetch_add(1, Ordering::Relaxed);
                closed.push(id);
            }
        }
        closed
    }

    /// Keeps sessions in order while the manager lives: closes idle ones, renews the store's
    /// expiry of those that saw traffic since the last round, drops expired records, and
    /// closes the live copy of each session another replica removes.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let period =
            (self.config.expiry() / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
        let mut removals = self.store.removals();
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                let removed = async {
                    match &mut removals {
                        Some(removals) => removals.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = ticker.tick() => {
                        let Some(manager) = manager.upgrade() else { break };
                        manager.maintain(period).await;
                    }
                    removed = removed => {
                        let Some(manager) = manager.upgrade() else { break };
                        match removed {
                            Ok(id) => {
                                if manager.close(&id) {
                                    tracing::info!(session = %id.redacted(), "session ended elsewhere");
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                                tracing::warn!(missed, "missed removals of sessions by other replicas");
                            }
                            Err(_) => removals = None,
                        }
                    }
                }
            }
        })
    }

    async fn maintain(&self, period: Duration) {
        self.close_idle();
        if !self.store.durable() {
            return;
        }
        let active: Vec<SessionId> = self
            .live_sessions()
            .iter()
            .filter(|(_, live)| live.idle() < period * 2)
            .map(|(id, _)| id.clone())
            .collect();
        if let Err(e) = self.bounded(self.store.refresh(&active)).await {
            tracing::warn!(error = %e, "could not renew the expiry of active sessions");
        }
        match self.bounded(self.store.sweep()).await {
            Ok(0) => {}
            Ok(gone) => tracing::debug!(gone, "expired sessions swept from the store"),
            Err(e) => tracing::warn!(error = %e, "could not sweep expired sessions"),
        }
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            active: self.live_sessions().len(),
            created: self.created.load(Ordering::Relaxed),
            revived: self.revived.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Makes `id` live here, within the session limit; `false` when it already is.
    fn go_live(&self, id: &SessionId) -> Result<bool, SessionError> {
        let mut live = self.live_sessions();
        if live.contains_key(id) {
            return Ok(false);
        }
        if live.len() >= self.config.max_sessions {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(SessionError::Limit(self.config.max_sessions));
        }
        let hot = LiveSession::new(self.config.max_pending_requests);
        hot.touch();
        live.insert(id.clone(), Arc::new(hot));
        Ok(true)
    }

    /// A store call (records or plugin state), given up after the store timeout.
    async fn bounded<T, E: From<StoreError>>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timeout = self.config.store_timeout;
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, call).await;
        self.store_latency.observe(started.elapsed().as_secs_f64());
        if !matches!(outcome, Ok(Ok(_))) {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        outcome.unwrap_or_else(|_| {
            let waited = timeout.as_millis();
            Err(StoreError::Unavailable(format!("no answer within {waited} ms")).into())
        })
    }

    /// Time of each call to the store, in seconds, and how many failed or timed out.
    pub fn store_metrics(&self) -> (Histogram, u64) {
        let errors = self.store_errors.load(Ordering::Relaxed);
        (self.store_latency.clone(), errors)
    }

    fn live_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<LiveSession>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDIO: TransportType = TransportType::Stdio;
    const HTTP: TransportType = TransportType::StreamableHttp;

    #[tokio::test]
    async fn create_update_close_and_stats() {
        let manager = SessionManager::with_config(SessionConfig::default());
        let session = manager.create(STDIO, STDIO, None).await.unwrap();
        let signal = manager.live(&session.id).unwrap().closed().clone();
        assert!(
            manager
                .update(&session.id, |s| s.protocol_version =
                    Some("2025-06-18".into()))
                .await
                .unwrap()
        );
        let stored = manager.get(&session.id).await.unwrap().unwrap();
        assert_eq!(stored.protocol_version.as_deref(), Some("2025-06-18"));
        assert!(stored.updated_at >= stored.created_at);

        assert!(manager.close(&session.id));
        assert!(signal.is_cancelled());
        assert!(
            manager.get(&session.id).await.unwrap().is_some(),
            "kept until wound down"
        );
        assert!(!manager.close(&session.id), "asked once");
        manager.remove(&session.id, false).await.unwrap();
        assert!(manager.get(&session.id).await.unwrap().is_none());
        assert!(manager.live(&session.id).is_none());
        let stats = manager.stats();
        assert_eq!((stats.active, stats.created, stats.closed), (0, 1, 1));
    }

    #[tokio::test]
    async fn refuses_sessions_beyond_the_limit() {
        let manager = SessionManager::with_config(SessionConfig {
            max_sessions: 2,
            ..Default::default()
        });
        let first = manager.create(STDIO, STDIO, None).await.unwrap();
        manager.create(STDIO, STDIO, None).await.unwrap();
        assert!(matches!(
            manager.create(STDIO, STDIO, None).await,
            Err(SessionError::Limit(2))
        ));
        manager.close(&first.id);
        assert!(
            manager.create(STDIO, STDIO, None).await.is_err(),
            "closing is not gone"
        );
        manager.remove(&first.id, false).await.unwrap();
        manager.create(STDIO, STDIO, None).await.unwrap();
        assert_eq!(manager.stats().rejected, 2);
    }

    #[tokio::test]
    async fn sessions_without_traffic_are_closed() {
        let manager = Arc::new(SessionManager::with_config(SessionConfig {
            idle_timeout: Some(Duration::from_millis(40)),
            ..Default::default()
        }));
        let idle = manager.create(STDIO, STDIO, None).await.unwrap().id;
        let busy = manager.create(STDIO, STDIO, None).await.unwrap().id;
        let (idle_signal, busy) = (
            manager.live(&idle).unwrap().closed().clone(),
            manager.live(&busy).unwrap(),
        );
        let busy_signal = busy.closed().clone();
        let _maintenance = manager.spawn_maintenance();
        // Traffic on one session (any message touches it) keeps it open.
        while !idle_signal.is_cancelled() {
            busy.touch();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            !busy_signal.is_cancelled(),
            "a session with traffic is not idle"
        );
        tokio::time::timeout(Duration::from_secs(5), busy_signal.cancelled())
            .await
            .expect("once its traffic stops, it is closed too");
        assert_eq!(manager.stats().idle_closed, 2);
    }

    #[tokio::test]
    async fn sessions_in_a_durable_store_are_revived_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let open = || {
            let store = super::super::SqliteStore::open(&path, Duration::from_secs(60)).unwrap();
            SessionManager::new(Arc::new(store), SessionConfig::default())
        };
        let alice = Arc::new(crate::auth::Principal {
            subject: "alice".into(),
            issuer: None,
            scopes: Default::default(),
            claims: Default::default(),
        });
        let (http, stdio) = {
            let before = open();
            let http = before
                .create(HTTP, HTTP, Some(alice.clone()))
                .await
                .unwrap()
                .id;
            let stdio = before
                .create(HTTP, STDIO, Some(alice.clone()))
                .await
                .unwrap()
                .id;
            for id in [&http, &stdio] {
                before
                    .update(id, |s| s.status = SessionStatus::Active)
                    .await
                    .unwrap();
            }
            before
                .kv_increment(&http, "budget", "calls", 3)
                .await
                .unwrap();
            before.close_all();
            before
                .remove(&http, before.live(&http).unwrap().kept())
                .await
                .unwrap();
            (http, stdio)
        };
        let after = open();
        let mallory = Arc::new(crate::auth::Principal {
            subject: "mallory".into(),
            ..(*alice).clone()
        });
        assert!(
            after
                .revive(&http, Some(&mallory), HTTP)
                .await
                .unwrap()
                .is_none()
        );
        assert!(after.revive(&http, None, HTTP).await.unwrap().is_none());
        assert!(
            after
                .revive(&stdio, Some(&alice), STDIO)
                .await
                .unwrap()
                .is_none(),
            "a child process does not outlive membrane"
        );
        let revived = after
            .revive(&http, Some(&alice), HTTP)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revived.id, http);
        assert!(after.live(&http).is_some());
        assert_eq!(
            after
                .kv_increment(&http, "budget", "calls", 1)
                .await
                .unwrap(),
            4,
            "plugin state survives"
        );
        assert_eq!(after.stats().revived, 1);
    }
}
