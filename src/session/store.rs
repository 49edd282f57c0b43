//! [`SessionStore`]: where sessions live. The trait is async so a store can be a database;
//! [`MemoryStore`] keeps them in a map behind a lock, for a single membrane process.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{Session, SessionId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store failed: {0}")]
    Backend(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert(&self, session: Session) -> Result<(), StoreError>;
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    /// Applies `change` to the stored session; `false` when there is no such session.
    async fn update(
        &self,
        id: &SessionId,
        change: &mut (dyn for<'s> FnMut(&'s mut Session) + Send),
    ) -> Result<bool, StoreError>;
    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;
    async fn list(&self) -> Result<Vec<Session>, StoreError>;
}

/// Sessions in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: RwLock<HashMap<SessionId, Session>>,
}

impl MemoryStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SessionId, Session>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SessionId, Session>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, session: Session) -> Result<(), StoreError> {
        self.write().insert(session.id.clone(), session);
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.read().get(id).cloned())
    }

    async fn update(
        &self,
        id: &SessionId,
        change: &mut (dyn for<'s> FnMut(&'s mut Session) + Send),
    ) -> Result<bool, StoreError> {
        let mut sessions = self.write();
        Ok(sessions.get_mut(id).map(&mut *change).is_some())
    }

    async fn remove(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.write().remove(id))
    }

    async fn list(&self) -> Result<Vec<Session>, StoreError> {
        Ok(self.read().values().cloned().collect())
    }
}
