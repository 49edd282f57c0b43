//! Where sessions are kept between lifecycle points, and what outlives a process: the
//! [`SessionStore`] holds each [`Session`] record and the plugins' `session-kv` state (with
//! `increment` atomic in the store itself), the [`EventStore`] the SSE events a client may
//! resume after `Last-Event-ID`. Three backends, chosen by `[session] store`:
//! [`MemoryStore`] (this process only, the default), [`SqliteStore`] (one file that survives
//! restarts) and [`RedisStore`] (shared by replicas). Durable records expire when their session
//! has been idle for the store's expiry; every call is bounded in time by whoever calls it
//! ([`SessionManager`](super::SessionManager)), so a store that is down or slow yields an error,
//! never a hung request.

mod memory;
mod redis;
mod sqlite;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use super::{PluginDataError, Session, SessionId};
use crate::protocol::Message;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time, or cannot be reached.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    #[error("the session store failed: {0}")]
    Backend(String),
}

/// Why a plugin's `session-kv` call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Data(#[from] PluginDataError),
    #[error("no such session")]
    UnknownSession,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Session records and the plugins' state in them.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Whether sessions outlive this process (and may be revived from the store).
    fn durable(&self) -> bool;
    async fn insert(&self, session: &Session) -> Result<(), StoreError>;
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// Replaces a stored record; `false` when there is no such session (any more).
    async fn put(&self, session: &Session) -> Result<bool, StoreError>;
    /// Forgets a session, its plugins' state and its events; `false` when it was not stored.
    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError>;
    async fn list(&self) -> Result<Vec<Session>, StoreError>;
    /// Bytes of state each plugin keeps with a session.
    async fn kv_sizes(&self, id: &SessionId) -> Result<BTreeMap<String, u64>, StoreError>;
    /// These sessions saw traffic: their expiry starts over (nothing to do where sessions do
    /// not expire).
    async fn refresh(&self, ids: &[SessionId]) -> Result<(), StoreError> {
        let _ = ids;
        Ok(())
    }
    /// Drops what has expired; returns how many sessions went (nothing to do in a store that
    /// expires records itself, or keeps none beyond the process).
    async fn sweep(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn kv_get(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
    ) -> Result<Option<String>, KvError>;
    async fn kv_set(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        value: &str,
    ) -> Result<(), KvError>;
    async fn kv_delete(&self, id: &SessionId, plugin: &str, key: &str) -> Result<(), KvError>;
    /// Adds `delta` to the integer under `key` (absent counts as 0) atomically in the store,
    /// so concurrent increments from several processes all count; returns the new value.
    async fn kv_increment(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError>;

    /// Sessions removed by another process sharing the store, as they go; `None` when no other
    /// process can remove them.
    fn removals(&self) -> Option<broadcast::Receiver<SessionId>> {
        None
    }
}

/// One SSE event kept for replay: the stream it went out on, its place there, the message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub stream: u32,
    pub seq: u64,
    pub message: Message,
}

/// The SSE events of sessions, kept beyond this process for `Last-Event-ID` (the session's own
/// memory keeps them too, and answers first). Each session keeps its latest events up to a
/// budget in bytes.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events of one session in order, then drops its oldest past `budget` bytes.
    async fn append(
        &self,
        id: &SessionId,
        events: &[StoredEvent],
        budget: usize,
    ) -> Result<(), StoreError>;
    /// The kept events of `stream` after `seq`, in order.
    async fn after(
        &self,
        id: &SessionId,
        stream: u32,
        seq: u64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// `[session] store`: which backend keeps sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum StoreSpec {
    #[default]
    Memory,
    /// `sqlite:PATH`
    Sqlite(PathBuf),
    /// `redis://HOST:PORT/DB` (or `rediss://`)
    Redis(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        if spec == "memory" {
            Ok(Self::Memory)
        } else if let Some(path) = spec.strip_prefix("sqlite:") {
            match path.trim_start_matches("//") {
                "" => Err(
                    "sqlite: needs a file path, as in sqlite:/var/lib/membrane/sessions.db".into(),
                ),
                path => Ok(Self::Sqlite(path.into())),
            }
        } else if spec.starts_with("redis://") || spec.starts_with("rediss://") {
            Ok(Self::Redis(spec.to_owned()))
        } else {
            Err(format!(
                "unknown session store '{spec}': use \"memory\", \"sqlite:PATH\" or \"redis://HOST:PORT/DB\""
            ))
        }
    }
}

impl TryFrom<String> for StoreSpec {
    type Error = String;

    fn try_from(spec: String) -> Result<Self, String> {
        spec.parse()
    }
}

/// The stores one backend provides.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Arc<dyn SessionStore>,
    /// `None` in memory: the sessions' own streams keep their events.
    pub events: Option<Arc<dyn EventStore>>,
}

impl Stores {
    /// Opens the backend `spec` names; durable records expire after `expiry` without traffic,
    /// and calls to Redis give up after `timeout`. Redis is reached lazily (membrane starts while
    /// it is down, and refuses new sessions until it is back).
    pub fn open(spec: &StoreSpec, expiry: Duration, timeout: Duration) -> Result<Self, StoreError> {
        Ok(match spec {
            StoreSpec::Memory => Self {
                sessions: Arc::new(MemoryStore::default()),
                events: None,
            },
            StoreSpec::Sqlite(path) => {
                let store = Arc::new(SqliteStore::open(path, expiry)?);
                Self {
                    sessions: store.clone(),
                    events: Some(store),
                }
            }
            StoreSpec::Redis(url) => {
                let store = Arc::new(RedisStore::open(url, expiry, timeout)?);
                Self {
                    sessions: store.clone(),
                    events: Some(store),
                }
            }
        })
    }
}

/// Seconds since the Unix epoch, as stores write times.
fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_expected() {
        assert_eq!("memory".parse(), Ok(StoreSpec::Memory));
        assert_eq!(
            "sqlite:/var/lib/m.db".parse(),
            Ok(StoreSpec::Sqlite("/var/lib/m.db".into()))
        );
        assert_eq!(
            "sqlite:sessions.db".parse(),
            Ok(StoreSpec::Sqlite("sessions.db".into()))
        );
        assert_eq!(
            "redis://127.0.0.1:6379/0".parse(),
            Ok(StoreSpec::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!(
            "sqlite:"
                .parse::<StoreSpec>()
                .unwrap_err()
                .contains("file path")
        );
        assert!(
            "postgres://x"
                .parse::<StoreSpec>()
                .unwrap_err()
                .contains("redis://")
        );
    }
}
