//! [`RedisStore`]: sessions in Redis (the `redis` crate's auto-reconnecting
//! `ConnectionManager`), shared by every membrane replica that names the same database. Each
//! session's keys share a hash tag (`membrane:{ID}:…`, so a cluster keeps them on one shard)
//! and expire together after the store's expiry without traffic (Redis TTLs, renewed by
//! [`SessionStore::refresh`]). Plugin state is one hash per session with its byte count per
//! plugin beside it; `set` and `increment` are Lua scripts, so the budget and the count hold
//! across replicas. Events are a list per session, trimmed to the byte budget by a script. A
//! removal is published on `membrane:removed`, so replicas end their live copy of the session.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, Script, ScriptInvocation};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{EventStore, KvError, SessionStore, StoreError, StoredEvent};
use crate::protocol::Message;
use crate::session::{PLUGIN_DATA_LIMIT, PluginDataError, Session, SessionId};

pub struct RedisStore {
    connection: ConnectionManager,
    /// Seconds a session's keys live without traffic.
    ttl: u64,
    scripts: Scripts,
    removed: broadcast::Sender<SessionId>,
    /// Stops the subscriber to removals when the store goes.
    stop: CancellationToken,
}

struct Scripts {
    set: Script,
    delete: Script,
    increment: Script,
    append: Script,
}

/// Where replicas announce removed sessions.
const REMOVED_CHANNEL: &str = "membrane:removed";

/// Removals waiting for the session manager before the oldest are dropped.
const REMOVALS_DEPTH: usize = 1024;

/// How long the subscriber to removals waits before it reconnects.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Sets a plugin's value within its byte budget. KEYS: session, kv, kvsize. ARGV: field,
/// plugin, key length, limit, ttl, value. Returns 0, -1 for no session, -2 when full.
const SET: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local keylen = tonumber(ARGV[3])
local size = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if old then size = size - keylen - string.len(old) end
size = size + keylen + string.len(ARGV[6])
if size > tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[2], size)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 0
";

/// Deletes a plugin's value. KEYS and ARGV as SET, without the value.
const DELETE: &str = r"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], ARGV[2], -(tonumber(ARGV[3]) + string.len(old)))
end
return 0
";

/// Adds to a plugin's integer with HINCRBY (exact 64-bit arithmetic) within its byte budget.
/// KEYS and ARGV as SET, with the delta last. Returns {0, new value as text}, or with an empty
/// text: -1 for no session, -2 when full, -3 not an integer, -4 overflow.
const INCREMENT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local added = redis.pcall('HINCRBY', KEYS[2], ARGV[1], ARGV[6])
if type(added) == 'table' and added.err then
  if string.find(string.lower(added.err), 'overflow') then return {-4, ''} end
  return {-3, ''}
end
local text = redis.call('HGET', KEYS[2], ARGV[1])
local keylen = tonumber(ARGV[3])
local size = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if old then size = size - keylen - string.len(old) end
size = size + keylen + string.len(text)
if size > tonumber(ARGV[4]) then
  if old then redis.call('HSET', KEYS[2], ARGV[1], old) else redis.call('HDEL', KEYS[2], ARGV[1]) end
  return {-2, ''}
end
redis.call('HSET', KEYS[3], ARGV[2], size)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {0, text}
";

/// Appends events and drops the oldest past the byte budget (of messages, not counting each
/// entry's `stream.seq` line). KEYS: events, event bytes. ARGV: budget, ttl, then the encoded
/// events.
const APPEND: &str = r"
local function size(entry)
  return string.len(entry) - string.find(entry, '\n', 1, true)
end
local bytes = tonumber(redis.call('GET', KEYS[2]) or '0')
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
  bytes = bytes + size(ARGV[i])
end
local budget = tonumber(ARGV[1])
while bytes > budget do
  local oldest = redis.call('LPOP', KEYS[1])
  if not oldest then bytes = 0 break end
  bytes = bytes - size(oldest)
end
redis.call('SET', KEYS[2], bytes, 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
";

/// What a session keeps in Redis, each a key of its own: the record, the plugins' state and
/// its byte count per plugin, the events and their byte count.
const PARTS: [&str; 5] = ["session", "kv", "kvsize", "events", "evbytes"];

/// The key of one part of a session's state; the hash tag keeps them on one shard.
fn key(id: &SessionId, part: &str) -> String {
    format!("membrane:{{{id}}}:{part}")
}

/// A plugin's key within the session's hash.
fn field(plugin: &str, key: &str) -> String {
    format!("{plugin}\u{1f}{key}")
}

fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn kv_error(e: RedisError) -> KvError {
    KvError::Store(store_error(e))
}

impl RedisStore {
    /// A store on the Redis at `url`, reached lazily; records expire after `expiry` without
    /// traffic, and each call gives up after `timeout`. Must be called within a Tokio runtime
    /// (a task follows removals by other replicas).
    pub fn open(url: &str, expiry: Duration, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Backend(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(store_error)?;
        let (removed, _) = broadcast::channel(REMOVALS_DEPTH);
        let stop = CancellationToken::new();
        tokio::spawn(follow_removals(client, removed.clone(), stop.clone()));
        Ok(Self {
            connection,
            ttl: expiry.as_secs().max(1),
            scripts: Scripts {
                set: Script::new(SET),
                delete: Script::new(DELETE),
                increment: Script::new(INCREMENT),
                append: Script::new(APPEND),
            },
            removed,
            stop,
        })
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// An invocation of one of the plugin-state scripts, with what they all take: KEYS session,
    /// kv, kvsize; ARGV field, plugin, key length, limit, ttl (the script's own argument next).
    fn kv_script<'a>(
        &self,
        script: &'a Script,
        id: &SessionId,
        plugin: &str,
        name: &str,
    ) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for part in ["session", "kv", "kvsize"] {
            invocation.key(key(id, part));
        }
        invocation
            .arg(field(plugin, name))
            .arg(plugin)
            .arg(name.len())
            .arg(PLUGIN_DATA_LIMIT)
            .arg(self.ttl);
        invocation
    }

    async fn write(&self, session: &Session, only_if_stored: bool) -> Result<bool, StoreError> {
        let record =
            serde_json::to_string(session).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut set = redis::cmd("SET");
        set.arg(key(&session.id, "session"))
            .arg(record)
            .arg("EX")
            .arg(self.ttl);
        if only_if_stored {
            set.arg("XX");
        }
        let written: Option<String> = set
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(written.is_some())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Hears removals on [`REMOVED_CHANNEL`] and passes them on, resubscribing whenever the
/// connection drops, until `stop` fires.
async fn follow_removals(
    client: redis::Client,
    removed: broadcast::Sender<SessionId>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(REMOVED_CHANNEL).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            subscribed = subscribed => subscribed,
            _ = stop.cancelled() => return,
        };
        match subscribed {
            Ok(mut pubsub) => {
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = stop.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    if let Ok(id) = message.get_payload::<String>() {
                        let _ = removed.send(SessionId::from(id.as_str()));
                    }
                }
                tracing::debug!("lost the subscription to removed sessions; resubscribing");
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to removed sessions yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn durable(&self) -> bool {
        true
    }

    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        self.write(session, false).await.map(drop)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let record: Option<String> = self
            .connection()
            .get(key(id, "session"))
            .await
            .map_err(store_error)?;
        record
            .map(|record| {
                serde_json::from_str(&record).map_err(|e| {
                    StoreError::Backend(format!("a stored session is unreadable: {e}"))
                })
            })
            .transpose()
    }

    async fn put(&self, session: &Session) -> Result<bool, StoreError> {
        self.write(session, true).await
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let keys = PARTS.map(|part| key(id, part));
        let (removed, _): (u64, u64) = redis::pipe()
            .del(&keys[..])
            .publish(REMOVED_CHANNEL, id.as_str())
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(removed > 0)
    }

    async fn list(&self) -> Result<Vec<Session>, StoreError> {
        let mut connection = self.connection();
        let keys: Vec<String> = {
            let mut scan = connection
                .scan_match::<_, String>("membrane:{*}:session")
                .await
                .map_err(store_error)?;
            let mut keys = Vec::new();
            while let Some(key) = scan.next().await {
                keys.push(key.map_err(store_error)?);
            }
            keys
        };
        let mut sessions = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(256) {
            let records: Vec<Option<String>> = connection.mget(chunk).await.map_err(store_error)?;
            for record in records.into_iter().flatten() {
                if let Ok(session) = serde_json::from_str(&record) {
                    sessions.push(session);
                }
            }
        }
        Ok(sessions)
    }

    async fn refresh(&self, ids: &[SessionId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            for part in PARTS {
                pipe.expire(key(id, part), self.ttl as i64).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.connection())
            .await
            .map_err(store_error)
    }

    async fn kv_sizes(&self, id: &SessionId) -> Result<BTreeMap<String, u64>, StoreError> {
        self.connection()
            .hgetall(key(id, "kvsize"))
            .await
            .map_err(store_error)
    }

    async fn kv_get(
        &self,
        id: &SessionId,
        plugin: &str,
        name: &str,
    ) -> Result<Option<String>, KvError> {
        self.connection()
            .hget(key(id, "kv"), field(plugin, name))
            .await
            .map_err(kv_error)
    }

    async fn kv_set(
        &self,
        id: &SessionId,
        plugin: &str,
        name: &str,
        value: &str,
    ) -> Result<(), KvError> {
        let outcome: i64 = self
            .kv_script(&self.scripts.set, id, plugin, name)
            .arg(value)
            .invoke_async(&mut self.connection())
            .await
            .map_err(kv_error)?;
        match outcome {
            -1 => Err(KvError::UnknownSession),
            -2 => Err(PluginDataError::Full.into()),
            _ => Ok(()),
        }
    }

    async fn kv_delete(&self, id: &SessionId, plugin: &str, name: &str) -> Result<(), KvError> {
        self.kv_script(&self.scripts.delete, id, plugin, name)
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map(drop)
            .map_err(kv_error)
    }

    async fn kv_increment(
        &self,
        id: &SessionId,
        plugin: &str,
        name: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        let outcome: (i64, String) = self
            .kv_script(&self.scripts.increment, id, plugin, name)
            .arg(delta)
            .invoke_async(&mut self.connection())
            .await
            .map_err(kv_error)?;
        match outcome {
            (0, text) => text
                .parse()
                .map_err(|_| PluginDataError::NotInteger(name.to_owned()).into()),
            (-1, _) => Err(KvError::UnknownSession),
            (-2, _) => Err(PluginDataError::Full.into()),
            (-4, _) => Err(PluginDataError::Overflow(name.to_owned()).into()),
            _ => Err(PluginDataError::NotInteger(name.to_owned()).into()),
        }
    }

    fn removals(&self) -> Option<broadcast::Receiver<SessionId>> {
        Some(self.removed.subscribe())
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append(
        &self,
        id: &SessionId,
        events: &[StoredEvent],
        budget: usize,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.append.key(key(id, "events"));
        invocation.key(key(id, "evbytes")).arg(budget).arg(self.ttl);
        for event in events {
            let mut entry = format!("{}.{}\n", event.stream, event.seq).into_bytes();
            entry.extend_from_slice(event.message.raw());
            invocation.arg(entry);
        }
        invocation
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map(drop)
            .map_err(store_error)
    }

    async fn after(
        &self,
        id: &SessionId,
        stream: u32,
        seq: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let entries: Vec<Vec<u8>> = self
            .connection()
            .lrange(key(id, "events"), 0, -1)
            .await
            .map_err(store_error)?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                let newline = memchr::memchr(b'\n', &entry)?;
                let (head, body) = (
                    std::str::from_utf8(&entry[..newline]).ok()?,
                    &entry[newline + 1..],
                );
                let (event_stream, event_seq) = head.split_once('.')?;
                let (event_stream, event_seq): (u32, u64) =
                    (event_stream.parse().ok()?, event_seq.parse().ok()?);
                (event_stream == stream && event_seq > seq).then(|| StoredEvent {
                    stream,
                    seq: event_seq,
                    message: Message::new(bytes::Bytes::copy_from_slice(body)),
                })
            })
            .collect())
    }
}
