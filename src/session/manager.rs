//! [`SessionManager`]: the one way the proxy creates, reads, changes and ends sessions. It
//! enforces the session limit and the idle timeout, and hands each session it serves a
//! [`LiveSession`] (its hot state: requests awaiting answers, last activity, close signal).
//! Ending is two steps: [`SessionManager::close`] (from anywhere: shutdown, idle timeout) only
//! fires the signal; whoever serves the session winds it down, answers what is pending, then
//! calls [`SessionManager::remove`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{
    LiveSession, MemoryStore, PluginData, Session, SessionId, SessionStatus, SessionStore,
    StoreError,
};
use crate::auth::Principal;
use crate::transport::TransportType;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub max_sessions: usize,
    /// Sessions with no traffic for this long are closed; `None` keeps them forever.
    pub idle_timeout: Option<Duration>,
    /// Requests awaiting an answer, per session and direction; more are refused.
    pub max_pending_requests: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            idle_timeout: None,
            max_pending_requests: 256,
        }
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
    pub closed: u64,
    pub idle_closed: u64,
    pub rejected: u64,
}

pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    config: SessionConfig,
    /// The sessions served here; its size is the authority for the session limit.
    live: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
    created: AtomicU64,
    closed: AtomicU64,
    idle_closed: AtomicU64,
    rejected: AtomicU64,
}

impl SessionManager {
    pub fn new(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            store,
            config,
            live: Mutex::default(),
            created: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// A manager over an in-memory store.
    pub fn with_config(config: SessionConfig) -> Self {
        Self::new(Arc::new(MemoryStore::default()), config)
    }

    /// Creates a session for `principal`, or refuses when the limit is reached.
    pub async fn create(
        &self,
        client: TransportType,
        upstream: TransportType,
        principal: Option<Arc<Principal>>,
    ) -> Result<Session, SessionError> {
        let mut session = Session::new(SessionId::generate(), client, upstream);
        session.principal = principal;
        {
            let mut live = self.live_sessions();
            if live.len() >= self.config.max_sessions {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(SessionError::Limit(self.config.max_sessions));
            }
            let hot = LiveSession::new(self.config.max_pending_requests);
            hot.touch();
            live.insert(session.id.clone(), Arc::new(hot));
        }
        if let Err(e) = self.store.insert(session.clone()).await {
            self.live_sessions().remove(&session.id);
            return Err(e.into());
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %session.id, subject = session.principal.as_ref().map(|p| p.subject.as_str()), "session created");
        Ok(session)
    }

    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(self.store.get(id).await?)
    }

    /// Applies `change` to the stored session (a lifecycle point) and stamps it.
    pub async fn update(
        &self,
        id: &SessionId,
        mut change: impl FnMut(&mut Session) + Send,
    ) -> Result<bool, SessionError> {
        let now = SystemTime::now();
        Ok(self
            .store
            .update(id, &mut |session| {
                change(session);
                session.updated_at = now;
            })
            .await?)
    }

    /// The hot state of a session served here; `None` for an unknown one.
    pub fn live(&self, id: &SessionId) -> Option<Arc<LiveSession>> {
        self.live_sessions().get(id).cloned()
    }

    /// Asks a live session to close: marks it closing and fires its signal. `false` when there
    /// is no such session or it was already asked.
    pub async fn close(&self, id: &SessionId) -> Result<bool, SessionError> {
        let Some(live) = self.live(id) else {
            return Ok(false);
        };
        if live.closed().is_cancelled() {
            return Ok(false);
        }
        live.closed().cancel();
        self.update(id, |s| s.status = SessionStatus::Closing)
            .await?;
        Ok(true)
    }

    /// Forgets a session once it is wound down; returns its last state.
    pub async fn remove(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let Some(live) = self.live_sessions().remove(id) else {
            return Ok(None);
        };
        live.closed().cancel();
        self.closed.fetch_add(1, Ordering::Relaxed);
        let mut session = self.store.remove(id).await?;
        if let Some(session) = &mut session {
            session.status = SessionStatus::Closed;
        }
        tracing::debug!(session = %id, "session removed");
        Ok(session)
    }

    /// Asks every live session to close (on shutdown).
    pub async fn close_all(&self) {
        let ids: Vec<SessionId> = self.live_sessions().keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.close(&id).await {
                tracing::warn!(session = %id.redacted(), error = %e, "closing session failed");
            }
        }
    }

    /// Runs `access` on what `plugin` keeps in the session. Not counted as activity.
    pub async fn plugin_data<T: Send>(
        &self,
        id: &SessionId,
        plugin: &str,
        access: impl FnOnce(&mut PluginData) -> T + Send,
    ) -> Result<T, SessionError> {
        let mut access = Some(access);
        let mut result = None;
        self.store
            .update(id, &mut |session| {
                let data = match session.plugin_data.get_mut(plugin) {
                    Some(data) => data,
                    None => session.plugin_data.entry(plugin.to_owned()).or_default(),
                };
                result = access.take().map(|access| access(data));
            })
            .await?;
        result.ok_or(SessionError::Unknown)
    }

    /// Closes every session without traffic for longer than the idle timeout; returns their ids.
    pub async fn close_idle(&self) -> Result<Vec<SessionId>, SessionError> {
        let Some(timeout) = self.config.idle_timeout else {
            return Ok(Vec::new());
        };
        let idle: Vec<(SessionId, Duration)> = self
            .live_sessions()
            .iter()
            .map(|(id, live)| (id.clone(), live.idle()))
            .filter(|(_, idle)| *idle >= timeout)
            .collect();
        let mut closed = Vec::new();
        for (id, idle) in idle {
            if self.close(&id).await? {
                tracing::info!(session = %id.redacted(), idle_secs = idle.as_secs(), "closed idle session");
                self.idle_closed.fetch_add(1, Ordering::Relaxed);
                closed.push(id);
            }
        }
        Ok(closed)
    }

    /// Runs [`SessionManager::close_idle`] periodically while the manager lives.
    pub fn spawn_idle_reaper(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let period = (self.config.idle_timeout? / 4).max(Duration::from_millis(10));
        let manager = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let Some(manager) = manager.upgrade() else {
                    break;
                };
                if let Err(e) = manager.close_idle().await {
                    tracing::warn!(error = %e, "closing idle sessions failed");
                }
            }
        }))
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            active: self.live_sessions().len(),
            created: self.created.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    fn live_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<LiveSession>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDIO: TransportType = TransportType::Stdio;

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

        assert!(manager.close(&session.id).await.unwrap());
        assert!(signal.is_cancelled());
        let closing = manager.get(&session.id).await.unwrap().unwrap();
        assert_eq!(
            closing.status,
            SessionStatus::Closing,
            "kept until wound down"
        );
        assert!(!manager.close(&session.id).await.unwrap(), "asked once");
        let removed = manager.remove(&session.id).await.unwrap().unwrap();
        assert_eq!(removed.status, SessionStatus::Closed);
        assert!(manager.get(&session.id).await.unwrap().is_none());
        assert!(manager.remove(&session.id).await.unwrap().is_none());
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
        manager.close(&first.id).await.unwrap();
        assert!(
            manager.create(STDIO, STDIO, None).await.is_err(),
            "closing is not gone"
        );
        manager.remove(&first.id).await.unwrap();
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
        let _reaper = manager.spawn_idle_reaper().unwrap();
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
}
