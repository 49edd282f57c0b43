//! Sessions, the spine of the proxy: [`Session`] is the record of one client's conversation
//! (transports on each side, upstream session id, principal, protocol version), kept with the
//! plugins' state in a [`SessionStore`] (memory, SQLite or Redis) and written at lifecycle
//! points only; [`LiveSession`] is what changes with every message (requests awaiting an
//! answer, the last activity, the close signal), in the memory of the process that serves it.
//! [`SessionManager`] creates, finds, revives, updates and ends both. Sessions know nothing of
//! transports: closing one only signals whoever serves it.

mod events;
mod live;
mod manager;
mod plugin_data;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::value::RawValue;

pub use events::EventWriter;
pub use live::{Activity, LiveSession, PendingRequest, Verdict};
pub use manager::{SessionConfig, SessionError, SessionManager, SessionNotice, SessionStats};
pub use plugin_data::{PLUGIN_DATA_LIMIT, PluginData, PluginDataError};
pub use store::{
    EventStore, KvError, MemoryStore, RedisStore, SessionStore, SqliteStore, StoreError, StoreSpec,
    StoredEvent, Stores,
};

use crate::auth::Principal;
use crate::transport::TransportType;

/// A session id minted by membrane: random, visible ASCII, cheap to clone.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// A new cryptographically random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string().into())
    }

    /// Whether this could be an id [`SessionId::generate`] made (32 hex digits): worth looking
    /// up in a store.
    pub fn is_well_formed(&self) -> bool {
        self.0.len() == 32 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as logs above debug show it: enough to tell sessions apart, too little to use
    /// one (the id is a bearer credential for its session).
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self.0.get(..8).unwrap_or(""))
    }
}

/// A session id cut short for logs; see [`SessionId::redacted`].
#[derive(Debug, Clone, Copy)]
pub struct Redacted<'a>(&'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.0)
    }
}

impl From<&str> for SessionId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Created; the initialize handshake has not completed.
    Initializing,
    /// Initialized: the only state in which a session may be revived.
    Active,
}

/// What the store keeps of a session (as JSON in the durable stores).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub client_transport: TransportType,
    pub upstream_transport: TransportType,
    /// The upstream server's own session id, when it has one (Streamable HTTP).
    pub upstream_session_id: Option<String>,
    /// Who opened the session, when the client side authenticates; only they may use it.
    pub principal: Option<Arc<Principal>>,
    pub status: SessionStatus,
    /// Proposed by the initialize request, then replaced by the one the server agreed to.
    pub protocol_version: Option<String>,
    /// The `clientInfo` and `serverInfo` of the handshake, as their JSON text (a parsed
    /// value would take several times the memory, in every session's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<Box<RawValue>>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Session {
    pub fn new(id: SessionId, client: TransportType, upstream: TransportType) -> Self {
        let now = SystemTime::now();
        Self {
            id,
            client_transport: client,
            upstream_transport: upstream,
            upstream_session_id: None,
            principal: None,
            status: SessionStatus::Initializing,
            protocol_version: None,
            client_info: None,
            server_info: None,
            created_at: now,
            updated_at: now,
        }
    }
}
