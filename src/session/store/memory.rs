//! [`MemoryStore`]: sessions in this process's memory, behind one lock (taken at lifecycle
//! points and by plugins' `session-kv` calls only). Nothing expires here: a session lives as
//! long as the process serves it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::RwLock;

use super::{KvError, SessionStore, StoreError};
use crate::session::{PluginData, Session, SessionId};

#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: RwLock<HashMap<SessionId, Entry>>,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    plugins: HashMap<String, PluginData>,
}

impl MemoryStore {
    fn with_data<T>(
        &self,
        id: &SessionId,
        plugin: &str,
        access: impl FnOnce(&mut PluginData) -> T,
    ) -> Result<T, KvError> {
        let mut sessions = self.sessions.write();
        let entry = sessions.get_mut(id).ok_or(KvError::UnknownSession)?;
        let data = match entry.plugins.get_mut(plugin) {
            Some(data) => data,
            None => entry.plugins.entry(plugin.to_owned()).or_default(),
        };
        Ok(access(data))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn durable(&self) -> bool {
        false
    }

    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let entry = Entry {
            session: session.clone(),
            plugins: HashMap::new(),
        };
        self.sessions.write().insert(session.id.clone(), entry);
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.sessions.read().get(id).map(|e| e.session.clone()))
    }

    async fn put(&self, session: &Session) -> Result<bool, StoreError> {
        let mut sessions = self.sessions.write();
        let Some(entry) = sessions.get_mut(&session.id) else {
            return Ok(false);
        };
        entry.session = session.clone();
        Ok(true)
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions.write().remove(id).is_some())
    }

    async fn list(&self) -> Result<Vec<Session>, StoreError> {
        let sessions = self.sessions.read();
        Ok(sessions.values().map(|e| e.session.clone()).collect())
    }

    async fn kv_sizes(&self, id: &SessionId) -> Result<BTreeMap<String, u64>, StoreError> {
        let sessions = self.sessions.read();
        let plugins = sessions.get(id).map(|entry| &entry.plugins);
        let sizes = plugins.into_iter().flatten();
        Ok(sizes
            .map(|(plugin, data)| (plugin.clone(), data.size() as u64))
            .collect())
    }

    async fn kv_get(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
    ) -> Result<Option<String>, KvError> {
        match self.with_data(id, plugin, |data| data.get(key).map(str::to_owned)) {
            // As the other stores: nothing is kept for a session that is gone.
            Err(KvError::UnknownSession) => Ok(None),
            got => got,
        }
    }

    async fn kv_set(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        value: &str,
    ) -> Result<(), KvError> {
        Ok(self.with_data(id, plugin, |data| data.set(key, value.to_owned()))??)
    }

    async fn kv_delete(&self, id: &SessionId, plugin: &str, key: &str) -> Result<(), KvError> {
        self.with_data(id, plugin, |data| data.delete(key))
    }

    async fn kv_increment(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        Ok(self.with_data(id, plugin, |data| data.increment(key, delta))??)
    }
}
