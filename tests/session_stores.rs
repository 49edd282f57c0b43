//! The session stores held to one behaviour: the in-memory store, a SQLite file, and a real
//! `redis-server`; plus what only shared stores must do: count increments from two processes
//! (two store instances, as two replicas) exactly, and tell one replica what another removed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::services::Redis;
use membrane::protocol::Message;
use membrane::session::{
    EventStore, KvError, MemoryStore, PLUGIN_DATA_LIMIT, PluginDataError, RedisStore, Session,
    SessionId, SessionStore, SqliteStore, StoredEvent,
};
use membrane::transport::TransportType;

fn session(id: &str) -> Session {
    let mut session = Session::new(
        SessionId::from(id),
        TransportType::StreamableHttp,
        TransportType::StreamableHttp,
    );
    session.upstream_session_id = Some(format!("upstream-{id}"));
    session
}

/// What every backend must do alike (Redis is held to it by the tests with a real
/// `redis-server`).
async fn behaves_as_a_session_store(store: &dyn SessionStore) {
    let (a, b) = (session("a"), session("b"));
    store.insert(&a).await.unwrap();
    store.insert(&b).await.unwrap();
    let got = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(got.upstream_session_id.as_deref(), Some("upstream-a"));
    let mut changed = got.clone();
    changed.protocol_version = Some("2025-06-18".into());
    assert!(store.put(&changed).await.unwrap());
    let got = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(got.protocol_version.as_deref(), Some("2025-06-18"));
    assert!(!store.put(&session("nobody")).await.unwrap());
    assert_eq!(store.list().await.unwrap().len(), 2);

    assert_eq!(store.kv_increment(&a.id, "p", "n", 5).await.unwrap(), 5);
    assert_eq!(store.kv_increment(&a.id, "p", "n", -7).await.unwrap(), -2);
    assert_eq!(
        store.kv_get(&a.id, "q", "n").await.unwrap(),
        None,
        "per plugin"
    );
    assert_eq!(
        store.kv_get(&b.id, "p", "n").await.unwrap(),
        None,
        "per session"
    );
    store.kv_set(&a.id, "p", "s", "text").await.unwrap();
    assert!(matches!(
        store.kv_increment(&a.id, "p", "s", 1).await,
        Err(KvError::Data(PluginDataError::NotInteger(_)))
    ));
    store
        .kv_set(&a.id, "p", "m", &i64::MAX.to_string())
        .await
        .unwrap();
    assert!(matches!(
        store.kv_increment(&a.id, "p", "m", 1).await,
        Err(KvError::Data(PluginDataError::Overflow(_)))
    ));
    let limit = PLUGIN_DATA_LIMIT;
    assert!(matches!(
        store.kv_set(&a.id, "p", "big", &"x".repeat(limit)).await,
        Err(KvError::Data(PluginDataError::Full))
    ));
    store.kv_delete(&a.id, "p", "s").await.unwrap();
    store.kv_delete(&a.id, "p", "m").await.unwrap();
    store.kv_delete(&a.id, "p", "n").await.unwrap();
    store
        .kv_set(&a.id, "p", "big", &"x".repeat(limit - 3))
        .await
        .expect("deleting gives the budget back");
    assert!(matches!(
        store.kv_set(&a.id, "p", "i", "1").await,
        Err(KvError::Data(PluginDataError::Full))
    ));
    assert!(matches!(
        store.kv_increment(&session("nobody").id, "p", "n", 1).await,
        Err(KvError::UnknownSession)
    ));

    assert!(store.remove(&a.id).await.unwrap());
    assert!(!store.remove(&a.id).await.unwrap());
    assert!(store.get(&a.id).await.unwrap().is_none());
    assert_eq!(store.kv_get(&a.id, "p", "big").await.unwrap(), None);
    store.remove(&b.id).await.unwrap();
}

/// Events come back in order, per stream, within the budget.
async fn behaves_as_an_event_store(store: &dyn EventStore) {
    let id = SessionId::from("events");
    let event = |stream, seq, text: &str| StoredEvent {
        stream,
        seq,
        message: Message::new(format!(r#"{{"jsonrpc":"2.0","method":"{text}"}}"#)),
    };
    let size = event(1, 1, "aaaa").message.raw().len();
    store
        .append(&id, &[event(1, 1, "aaaa"), event(2, 1, "bbbb")], size * 3)
        .await
        .unwrap();
    store
        .append(&id, &[event(1, 2, "cccc"), event(1, 3, "dddd")], size * 3)
        .await
        .unwrap();
    let after = store.after(&id, 1, 1).await.unwrap();
    assert_eq!(after, vec![event(1, 2, "cccc"), event(1, 3, "dddd")]);
    assert!(
        store.after(&id, 1, 0).await.unwrap().len() == 2,
        "the oldest went for the budget"
    );
    assert_eq!(
        store.after(&id, 2, 0).await.unwrap(),
        vec![event(2, 1, "bbbb")]
    );
    assert!(store.after(&id, 7, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_memory_store_keeps_sessions() {
    behaves_as_a_session_store(&MemoryStore::default()).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_sessions_and_events_and_expires_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path, Duration::from_secs(60)).unwrap();
    behaves_as_a_session_store(&store).await;
    behaves_as_an_event_store(&store).await;

    let kept = session("kept");
    store.insert(&kept).await.unwrap();
    drop(store);
    let reopened = SqliteStore::open(&path, Duration::ZERO).unwrap();
    assert!(reopened.get(&kept.id).await.unwrap().is_some(), "survives");
    reopened
        .refresh(std::slice::from_ref(&kept.id))
        .await
        .unwrap();
    assert!(
        reopened.get(&kept.id).await.unwrap().is_none(),
        "expired once its expiry is up"
    );
    assert_eq!(reopened.sweep().await.unwrap(), 1);
}

#[tokio::test]
async fn the_redis_store_keeps_sessions_and_events() {
    let redis = Redis::start().await;
    let store = RedisStore::open(
        &redis.url(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .unwrap();
    behaves_as_a_session_store(&store).await;
    behaves_as_an_event_store(&store).await;
}

/// `increment` from two replicas at once adds up exactly, and a removal on one reaches the
/// other.
async fn replicas_count_together(a: Arc<dyn SessionStore>, b: Arc<dyn SessionStore>) {
    let shared = session("shared");
    a.insert(&shared).await.unwrap();
    let per_replica = 200;
    let count = |store: Arc<dyn SessionStore>| {
        let id = shared.id.clone();
        tokio::spawn(async move {
            for _ in 0..per_replica {
                store
                    .kv_increment(&id, "rate-limit", "calls", 1)
                    .await
                    .unwrap();
            }
        })
    };
    let (one, two) = (count(a.clone()), count(b.clone()));
    one.await.unwrap();
    two.await.unwrap();
    assert_eq!(
        b.kv_get(&shared.id, "rate-limit", "calls")
            .await
            .unwrap()
            .as_deref(),
        Some(&*(2 * per_replica).to_string())
    );
    a.remove(&shared.id).await.unwrap();
}

#[tokio::test]
async fn two_replicas_on_redis_count_exactly_and_hear_removals() {
    let redis = Redis::start().await;
    let open = || {
        Arc::new(
            RedisStore::open(
                &redis.url(),
                Duration::from_secs(60),
                Duration::from_secs(2),
            )
            .unwrap(),
        )
    };
    let (a, b) = (open(), open());
    let mut removals = b.removals().expect("replicas hear removals");
    // The subscription is made in the background: wait until a removal comes through.
    let probe = session("probe");
    let heard = async {
        loop {
            a.insert(&probe).await.unwrap();
            a.remove(&probe.id).await.unwrap();
            if let Ok(Ok(id)) =
                tokio::time::timeout(Duration::from_millis(200), removals.recv()).await
            {
                return id;
            }
        }
    };
    let id = tokio::time::timeout(common::WAIT, heard)
        .await
        .expect("subscribed in time");
    assert_eq!(id, probe.id);
    replicas_count_together(a, b).await;
    assert_eq!(removals.recv().await.unwrap(), session("shared").id);
}

#[tokio::test]
async fn two_processes_on_one_sqlite_file_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let open = || Arc::new(SqliteStore::open(&path, Duration::from_secs(60)).unwrap());
    replicas_count_together(open(), open()).await;
}
