//! Sessions that outlive a membrane process: on a SQLite file across restarts (`kill -9` and
//! SIGTERM), and on a real `redis-server` shared by two replicas behind a real round-robin
//! balancer (nginx), with the rmcp and Python SDK clients and a raw HTTP client; the store
//! going down and coming back; expiry.

mod common;

use std::time::Duration;

use common::http::{Background, Http, SseReader, free_port, membrane_reverse_on, rmcp_http_server};
use common::services::{Balancer, Redis, eventually};
use common::{WAIT, plugin, rmcp_server, tool_text, write_config};
use redis::AsyncCommands;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

/// `[session] store = STORE` and a rate limit of `max_calls` tool calls per session.
fn config(store: &str, max_calls: usize, extra: &str) -> String {
    format!(
        "[session]\nstore = {store:?}\n{extra}\n[[plugins]]\npath = {:?}\ngrants = [\"log\", \"session-kv\"]\n[plugins.config]\nmax_calls = {max_calls}\n",
        plugin("rate-limit")
    )
}

/// `membrane reverse` on `listen` with the config file `config`, in front of `upstream`.
async fn replica(
    listen: &str,
    config: &std::path::Path,
    upstream: &[&str],
) -> (Background, String) {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(upstream);
    membrane_reverse_on(listen, &args, &[]).await
}

fn echo_of(answer: &Value) -> String {
    tool_text(answer).to_owned()
}

fn over_budget(answer: &Value) -> bool {
    answer["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("call budget exhausted"))
}

/// POSTs a tool call and returns the id of the SSE stream that carried its answer, and the
/// answer.
async fn call_on_stream(client: &Http, id: i64, message: &str) -> (String, Value) {
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": message}}});
    let response = client.post(&call).await;
    assert_eq!(response.status(), 200);
    let mut events = SseReader::new(response);
    loop {
        let event = events.next().await.expect("the answer");
        if event.data.is_empty() {
            continue;
        }
        let stream = event
            .id
            .expect("events have ids")
            .split('.')
            .next()
            .unwrap()
            .to_owned();
        return (stream, serde_json::from_str(&event.data).unwrap());
    }
}

/// The data of the events a GET with `Last-Event-ID` replays, until the first that holds
/// `needle`. A process persists its events behind its clients (the store is never awaited on a
/// message's way out), so another replica may read the store a moment before the event a
/// client just saw is in it: each attempt gives up after a short while and the GET is made
/// again, within [`WAIT`] in all.
async fn replayed(client: &Http, last: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = client.get(Some(last)).await;
        assert_eq!(response.status(), 200, "resumed after {last}");
        let mut events = SseReader::new(response);
        let mut seen = String::new();
        while !seen.contains(needle) {
            let attempt = Duration::from_millis(500);
            match tokio::time::timeout(attempt, events.next()).await {
                Ok(Some(event)) => seen.push_str(&event.data),
                Ok(None) | Err(_) => break,
            }
        }
        if seen.contains(needle) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle} was not replayed in time: {seen}"
        );
    }
}

#[tokio::test]
async fn a_restart_on_sqlite_keeps_sessions_their_plugin_state_and_events() {
    let (_upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config("sqlite:sessions.db", 4, ""));
    let listen = format!("127.0.0.1:{}", free_port());
    let upstream = ["--upstream", upstream_url.as_str()];

    let (membrane, url) = replica(&listen, &config, &upstream).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    assert_eq!(
        echo_of(&client.call_tool(1, "echo", json!({"message": "one"})).await),
        "one"
    );
    let (stream, two) = call_on_stream(&client, 2, "two").await;
    assert_eq!(echo_of(&two), "two");
    // Events reach the store a moment after the client has them; a crash before that loses
    // them, rightly. Wait until "two" is stored, so that it is there to be replayed.
    let db = dir.path().join("sessions.db");
    eventually("the answer on the stream is stored", async || {
        let db = rusqlite::Connection::open(&db).unwrap();
        let stored: i64 = db
            .query_row(
                "SELECT count(*) FROM events WHERE message LIKE '%\"two\"%'",
                [],
                |row| row.get(0),
            )
            .unwrap_or(0);
        stored > 0
    })
    .await;

    // A crash in the middle of traffic: nothing of membrane runs to clean up.
    membrane.kill().await;
    let (membrane, _) = replica(&listen, &config, &upstream).await;

    // The same session id goes on: a stream it had is replayed from the store...
    let replay = replayed(&client, &format!("{stream}.0"), "two").await;
    assert!(replay.contains(r#""id":2"#), "{replay}");
    // ... its upstream session is re-attached (the rmcp server knows no other) ...
    assert_eq!(
        echo_of(
            &client
                .call_tool(3, "echo", json!({"message": "three"}))
                .await
        ),
        "three"
    );
    membrane.log.wait_for("session revived", 1).await;

    // ... and a clean stop keeps it too, upstream included.
    assert_eq!(membrane.stop().await, Some(0));
    let (membrane, _) = replica(&listen, &config, &upstream).await;
    assert_eq!(
        echo_of(
            &client
                .call_tool(4, "echo", json!({"message": "four"}))
                .await
        ),
        "four"
    );
    // The rate limit's budget (4 calls) counted all along.
    assert!(over_budget(
        &client
            .call_tool(5, "echo", json!({"message": "five"}))
            .await
    ));
    assert_eq!(client.delete().await.status(), 200);
    assert_eq!(
        client
            .post(&json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}))
            .await
            .status(),
        404
    );
    drop(membrane);
}

#[tokio::test]
async fn a_session_with_a_stdio_server_ends_with_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[session]\nstore = \"sqlite:sessions.db\"\n");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = rmcp_server();
    let upstream = ["--", server.to_str().unwrap()];
    let (membrane, url) = replica(&listen, &config, &upstream).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    membrane.kill().await;
    let (_membrane, _) = replica(&listen, &config, &upstream).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        client.post(&ping).await.status(),
        404,
        "its server died with membrane: the client initializes anew"
    );
    client.session = None;
    client.initialize().await;
    assert_eq!(
        client.request(2, "ping", json!({})).await["result"],
        json!({})
    );
}

/// Two replicas on one Redis, `--upstream` the rmcp server.
async fn replicas(toml: &str, upstream: &[&str]) -> (tempfile::TempDir, [(Background, String); 2]) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), toml);
    let a = replica("127.0.0.1:0", &config, upstream).await;
    let b = replica("127.0.0.1:0", &config, upstream).await;
    (dir, [a, b])
}

fn backend(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned()
}

#[tokio::test]
async fn replicas_on_redis_share_sessions_budgets_ends_and_streams() {
    let redis = Redis::start().await;
    let (_upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let upstream = ["--upstream", upstream_url.as_str()];
    let (_dir, [(a, url_a), (b, url_b)]) = replicas(&config(&redis.url(), 4, ""), &upstream).await;

    // A raw client that alternates between the replicas by itself.
    let mut on_a = Http::new(&url_a);
    on_a.initialize().await;
    let on_b = Http {
        url: url_b.clone(),
        ..Http::new(&url_b)
    };
    let on_b = Http {
        session: on_a.session.clone(),
        ..on_b
    };
    assert_eq!(
        echo_of(&on_b.call_tool(1, "echo", json!({"message": "b1"})).await),
        "b1"
    );
    b.log.wait_for("session revived", 1).await;
    let (stream, a2) = call_on_stream(&on_a, 2, "a2").await;
    assert_eq!(echo_of(&a2), "a2");
    // A stream served by one replica resumes on the other.
    let replay = replayed(&on_b, &format!("{stream}.0"), "a2").await;
    assert!(replay.contains(r#""id":2"#), "{replay}");
    assert_eq!(
        echo_of(&on_b.call_tool(3, "echo", json!({"message": "b3"})).await),
        "b3"
    );
    assert_eq!(
        echo_of(&on_a.call_tool(4, "echo", json!({"message": "a4"})).await),
        "a4"
    );
    // One budget of 4 calls, counted by both replicas.
    assert!(over_budget(
        &on_b.call_tool(5, "echo", json!({"message": "b5"})).await
    ));
    assert!(over_budget(
        &on_a.call_tool(6, "echo", json!({"message": "a6"})).await
    ));

    // A DELETE on one replica ends the session on both.
    assert_eq!(on_a.delete().await.status(), 200);
    b.log.wait_for("session ended elsewhere", 1).await;
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    assert_eq!(on_b.post(&ping).await.status(), 404);
    assert_eq!(on_a.post(&ping).await.status(), 404);
    drop((a, b));
}

#[tokio::test]
async fn sdk_clients_behind_a_round_robin_balancer_keep_one_session() {
    let redis = Redis::start().await;
    let (_upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let upstream = ["--upstream", upstream_url.as_str()];
    let (_dir, [(a, url_a), (b, url_b)]) = replicas(&config(&redis.url(), 3, ""), &upstream).await;
    let balancer = Balancer::start(&[backend(&url_a), backend(&url_b)]).await;

    // The rmcp client: every request may land on either replica.
    common::tls_provider();
    let transport = StreamableHttpClientTransport::from_uri(balancer.url.as_str());
    let client = tokio::time::timeout(WAIT, ().serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake through the balancer");
    let mut outcomes = Vec::new();
    for n in 0..4 {
        let call = CallToolRequestParams::new("echo".to_owned()).with_arguments(
            json!({"message": format!("m{n}")})
                .as_object()
                .unwrap()
                .clone(),
        );
        outcomes.push(
            client
                .call_tool(call)
                .await
                .map(|r| format!("{:?}", r.content)),
        );
    }
    for (n, outcome) in outcomes.iter().take(3).enumerate() {
        assert!(
            outcome.as_ref().unwrap().contains(&format!("m{n}")),
            "{outcome:?}"
        );
    }
    let fourth = format!("{:?}", outcomes[3]);
    assert!(
        fourth.contains("call budget exhausted"),
        "one budget of 3 across replicas: {fourth}"
    );
    client.cancel().await.unwrap();

    // The Python SDK client, through the same balancer, in a session (and in the stateless
    // revision, where any replica takes any request anyway).
    for mode in ["legacy", "auto"] {
        let seen =
            common::python_client(&["--mode", mode, "list-and-call"], &balancer.url, &[]).await;
        assert_eq!(seen["ok"], true, "{seen}");
        assert_eq!(seen["echo"], "hello from python", "{seen}");
    }

    // Both replicas served sessions they had not opened.
    let revived = a.log.text().matches("session revived").count()
        + b.log.text().matches("session revived").count();
    assert!(revived >= 2, "requests alternated between the replicas");
}

#[tokio::test]
async fn a_stdio_session_lives_on_its_replica() {
    let redis = Redis::start().await;
    let server = rmcp_server();
    let toml = format!("[session]\nstore = {:?}\n", redis.url());
    let (_dir, [(_a, url_a), (_b, url_b)]) =
        replicas(&toml, &["--", server.to_str().unwrap()]).await;
    let mut on_a = Http::new(&url_a);
    on_a.initialize().await;
    let on_b = Http {
        session: on_a.session.clone(),
        ..Http::new(&url_b)
    };
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(
        on_b.post(&ping).await.status(),
        404,
        "its child runs on the other replica"
    );
    assert_eq!(
        on_a.request(2, "ping", json!({})).await["result"],
        json!({})
    );
}

#[tokio::test]
async fn a_store_outage_refuses_new_sessions_only_and_heals() {
    let mut redis = Redis::start().await;
    let (_upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[session]\nstore = {:?}\nstore_timeout_ms = 500\n",
        redis.url()
    );
    let config = write_config(dir.path(), &toml);
    let (_membrane, url) = replica("127.0.0.1:0", &config, &["--upstream", &upstream_url]).await;
    let mut running = Http::new(&url);
    running.initialize().await;

    redis.stop().await;
    let mut refused = Http::new(&url);
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": common::initialize_params(refused.version)});
    let response = refused.post(&initialize).await;
    assert_eq!(response.status(), 503, "no store, no new session");
    assert!(response.headers().contains_key("retry-after"));
    let body = response.text().await.unwrap();
    assert!(body.contains("session store"), "{body}");
    // The session already served goes on.
    assert_eq!(
        echo_of(&running.call_tool(1, "echo", json!({"message": "on"})).await),
        "on"
    );

    redis.restart().await;
    eventually("new sessions once the store is back", async || {
        refused.post(&initialize).await.status() == 200
    })
    .await;
    refused.initialize().await;
    assert_eq!(
        echo_of(
            &refused
                .call_tool(2, "echo", json!({"message": "new"}))
                .await
        ),
        "new"
    );
}

#[tokio::test]
async fn idle_sessions_expire_in_the_store() {
    let redis = Redis::start().await;
    let (_upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let upstream = ["--upstream", upstream_url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    for store in [redis.url(), "sqlite:sessions.db".into()] {
        let config = write_config(
            dir.path(),
            &format!("[session]\nstore = {store:?}\nidle_timeout_secs = 1\n"),
        );
        let listen = format!("127.0.0.1:{}", free_port());
        let (membrane, url) = replica(&listen, &config, &upstream).await;
        let mut client = Http::new(&url);
        client.initialize().await;
        let id = client.session.clone().unwrap();
        // Left behind by a crash: only the store's own expiry can end it.
        membrane.kill().await;
        if store.starts_with("redis") {
            let key = format!("membrane:{{{id}}}:session");
            let mut redis = redis.connection().await;
            let ttl: i64 = redis.ttl(&key).await.unwrap();
            assert!(
                (0..=2).contains(&ttl),
                "the record expires by itself: {ttl}"
            );
            eventually("Redis expires the session", async || {
                !redis.exists::<_, bool>(&key).await.unwrap()
            })
            .await;
        }
        let (membrane, _) = replica(&listen, &config, &upstream).await;
        if store.starts_with("sqlite") {
            eventually("the sweep drops the session", async || {
                let db = rusqlite::Connection::open(dir.path().join("sessions.db")).unwrap();
                let left: i64 = db
                    .query_row(
                        "SELECT COUNT(*) FROM sessions WHERE id = ?1",
                        [&id],
                        |row| row.get(0),
                    )
                    .unwrap();
                left == 0
            })
            .await;
        }
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        assert_eq!(client.post(&ping).await.status(), 404, "{store}: expired");
        drop(membrane);
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}
