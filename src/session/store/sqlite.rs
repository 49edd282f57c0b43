//! [`SqliteStore`]: sessions in one SQLite file (rusqlite, SQLite bundled), so they survive a
//! restart of membrane. The file is in WAL mode; every call runs on the blocking pool, and each
//! change to a plugin's state is one `IMMEDIATE` transaction, so its byte budget and
//! `increment` hold even with several processes on the file. Expired sessions are dropped by
//! [`SessionStore::sweep`], which the session manager runs periodically.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{EventStore, KvError, SessionStore, StoreError, StoredEvent, unix_secs};
use crate::protocol::Message;
use crate::session::{PluginData, PluginDataError, Session, SessionId};

pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    expiry: Duration,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
    CREATE TABLE IF NOT EXISTS plugin_kv (
        session TEXT NOT NULL,
        plugin TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (session, plugin, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS events (
        session TEXT NOT NULL,
        stream INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        message BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_stream ON events (session, stream, seq);
";

/// How long a call waits for another process's write lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

impl SqliteStore {
    /// Opens (or creates) the store at `path`; records expire after `expiry` without traffic.
    pub fn open(path: &Path, expiry: Duration) -> Result<Self, StoreError> {
        let failed = |e: rusqlite::Error| {
            StoreError::Backend(format!("cannot open SQLite store {}: {e}", path.display()))
        };
        let connection = Connection::open(path).map_err(failed)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
        connection.execute_batch(SCHEMA).map_err(failed)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            expiry,
        })
    }

    fn expires_at(&self) -> i64 {
        unix_secs(SystemTime::now() + self.expiry)
    }

    /// Runs `work` on the connection, on the blocking pool.
    async fn run<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || work(&mut connection.lock()))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    /// Changes one plugin's state in one transaction: `change` gets its entries' total size
    /// and the current value under the key, and says what to write (`None` deletes).
    async fn change_kv<T: Send + 'static>(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        change: impl FnOnce(usize, Option<&str>) -> Result<(Option<String>, T), PluginDataError>
        + Send
        + 'static,
    ) -> Result<T, KvError> {
        let (id, plugin, key) = (id.to_string(), plugin.to_owned(), key.to_owned());
        self.run(move |connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM sessions WHERE id = ?1 AND expires_at > ?2",
                    params![id, unix_secs(SystemTime::now())],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            if exists.is_none() {
                return Err(KvError::UnknownSession);
            }
            let size: i64 = tx
                .query_row(
                    "SELECT COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(CAST(value AS BLOB))), 0)
                     FROM plugin_kv WHERE session = ?1 AND plugin = ?2",
                    params![id, plugin],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            let current = stored_value(&tx, &id, &plugin, &key).map_err(backend)?;
            let (next, result) = change(size as usize, current.as_deref())?;
            match next {
                Some(value) => tx.execute(
                    "INSERT INTO plugin_kv (session, plugin, key, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (session, plugin, key) DO UPDATE SET value = excluded.value",
                    params![id, plugin, key, value],
                ),
                None => tx.execute(
                    "DELETE FROM plugin_kv WHERE session = ?1 AND plugin = ?2 AND key = ?3",
                    params![id, plugin, key],
                ),
            }
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(result)
        })
        .await
    }
}

/// The value one plugin keeps under `key` in a session.
fn stored_value(
    connection: &Connection,
    id: &str,
    plugin: &str,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    connection
        .query_row(
            "SELECT value FROM plugin_kv WHERE session = ?1 AND plugin = ?2 AND key = ?3",
            params![id, plugin, key],
            |row| row.get(0),
        )
        .optional()
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        e => StoreError::Backend(e.to_string()),
    }
}

fn encode(session: &Session) -> Result<String, StoreError> {
    serde_json::to_string(session).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode(record: &str) -> Result<Session, StoreError> {
    serde_json::from_str(record)
        .map_err(|e| StoreError::Backend(format!("a stored session is unreadable: {e}")))
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn durable(&self) -> bool {
        true
    }

    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        let (id, record, expires) = (session.id.to_string(), encode(session)?, self.expires_at());
        self.run(move |connection| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO sessions (id, record, expires_at) VALUES (?1, ?2, ?3)",
                    params![id, record, expires],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let id = id.to_string();
        let record: Option<String> = self
            .run(move |connection| {
                connection
                    .query_row(
                        "SELECT record FROM sessions WHERE id = ?1 AND expires_at > ?2",
                        params![id, unix_secs(SystemTime::now())],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(backend)
            })
            .await?;
        record.as_deref().map(decode).transpose()
    }

    async fn put(&self, session: &Session) -> Result<bool, StoreError> {
        let (id, record, expires) = (session.id.to_string(), encode(session)?, self.expires_at());
        self.run(move |connection| {
            let changed = connection
                .execute(
                    "UPDATE sessions SET record = ?2, expires_at = ?3 WHERE id = ?1",
                    params![id, record, expires],
                )
                .map_err(backend)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let removed = tx
                .execute("DELETE FROM sessions WHERE id = ?1", params![id])
                .map_err(backend)?;
            tx.execute("DELETE FROM plugin_kv WHERE session = ?1", params![id])
                .map_err(backend)?;
            tx.execute("DELETE FROM events WHERE session = ?1", params![id])
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Session>, StoreError> {
        let records: Vec<String> = self
            .run(move |connection| {
                let mut query = connection
                    .prepare("SELECT record FROM sessions WHERE expires_at > ?1")
                    .map_err(backend)?;
                let rows = query
                    .query_map(params![unix_secs(SystemTime::now())], |row| row.get(0))
                    .map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)
            })
            .await?;
        records.iter().map(|record| decode(record)).collect()
    }

    async fn refresh(&self, ids: &[SessionId]) -> Result<(), StoreError> {
        let (ids, expires) = (
            ids.iter().map(SessionId::to_string).collect::<Vec<_>>(),
            self.expires_at(),
        );
        self.run(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            {
                let mut update = tx
                    .prepare("UPDATE sessions SET expires_at = ?2 WHERE id = ?1")
                    .map_err(backend)?;
                for id in &ids {
                    update.execute(params![id, expires]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn sweep(&self) -> Result<u64, StoreError> {
        self.run(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            let now = unix_secs(SystemTime::now());
            let gone = tx
                .execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])
                .map_err(backend)?;
            tx.execute(
                "DELETE FROM plugin_kv WHERE session NOT IN (SELECT id FROM sessions)",
                [],
            )
            .map_err(backend)?;
            tx.execute(
                "DELETE FROM events WHERE session NOT IN (SELECT id FROM sessions)",
                [],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(gone as u64)
        })
        .await
    }

    async fn kv_sizes(&self, id: &SessionId) -> Result<BTreeMap<String, u64>, StoreError> {
        let id = id.to_string();
        self.run(move |connection| {
            let mut query = connection
                .prepare_cached(
                    "SELECT plugin, SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(CAST(value AS BLOB)))
                     FROM plugin_kv WHERE session = ?1 GROUP BY plugin",
                )
                .map_err(backend)?;
            let rows = query
                .query_map(params![id], |row| {
                    Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
                })
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn kv_get(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
    ) -> Result<Option<String>, KvError> {
        let (id, plugin, key) = (id.to_string(), plugin.to_owned(), key.to_owned());
        self.run(move |connection| {
            stored_value(connection, &id, &plugin, &key).map_err(|e| KvError::Store(backend(e)))
        })
        .await
    }

    async fn kv_set(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        value: &str,
    ) -> Result<(), KvError> {
        let (value, key_len) = (value.to_owned(), key.len());
        self.change_kv(id, plugin, key, move |size, current| {
            PluginData::fits(size, current, key_len, &value)?;
            Ok((Some(value), ()))
        })
        .await
    }

    async fn kv_delete(&self, id: &SessionId, plugin: &str, key: &str) -> Result<(), KvError> {
        self.change_kv(id, plugin, key, |_, _| Ok((None, ()))).await
    }

    async fn kv_increment(
        &self,
        id: &SessionId,
        plugin: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        let key_owned = key.to_owned();
        self.change_kv(id, plugin, key, move |size, current| {
            let next = PluginData::incremented(&key_owned, current, delta)?;
            let value = next.to_string();
            PluginData::fits(size, current, key_owned.len(), &value)?;
            Ok((Some(value), next))
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        id: &SessionId,
        events: &[StoredEvent],
        budget: usize,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        let events = events.to_vec();
        self.run(move |connection| {
            let tx = connection.transaction().map_err(backend)?;
            {
                let mut insert = tx
                    .prepare(
                        "INSERT INTO events (session, stream, seq, message) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(backend)?;
                for event in &events {
                    insert
                        .execute(params![
                            id,
                            event.stream,
                            event.seq as i64,
                            event.message.raw().as_ref()
                        ])
                        .map_err(backend)?;
                }
                // Keep the newest events within the budget: find the newest one that no
                // longer fits, and drop it and everything older.
                let mut newest_first = tx
                    .prepare(
                        "SELECT rowid, LENGTH(message) FROM events WHERE session = ?1 ORDER BY rowid DESC",
                    )
                    .map_err(backend)?;
                let mut rows = newest_first.query(params![id]).map_err(backend)?;
                let (mut kept, mut cut) = (0usize, None);
                while let Some(row) = rows.next().map_err(backend)? {
                    let (rowid, len): (i64, i64) =
                        (row.get(0).map_err(backend)?, row.get(1).map_err(backend)?);
                    kept += len as usize;
                    if kept > budget {
                        cut = Some(rowid);
                        break;
                    }
                }
                drop(rows);
                if let Some(cut) = cut {
                    tx.execute(
                        "DELETE FROM events WHERE session = ?1 AND rowid <= ?2",
                        params![id, cut],
                    )
                    .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn after(
        &self,
        id: &SessionId,
        stream: u32,
        seq: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let id = id.to_string();
        self.run(move |connection| {
            let mut query = connection
                .prepare(
                    "SELECT seq, message FROM events WHERE session = ?1 AND stream = ?2 AND seq > ?3 ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = query
                .query_map(params![id, stream, seq as i64], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .map_err(backend)?;
            rows.map(|row| {
                let (seq, bytes) = row.map_err(backend)?;
                Ok(StoredEvent {
                    stream,
                    seq: seq as u64,
                    message: Message::new(bytes),
                })
            })
            .collect()
        })
        .await
    }
}
