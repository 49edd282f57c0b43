//! An idle HTTP session has no task of its own. membrane's reverse proxy runs in this test's
//! process, in front of the rmcp SDK server over HTTP, and sessions are opened one after the
//! other over one keep-alive connection: once they are idle, the runtime has as many live tasks
//! as before they were opened, give or take the few of the connections membrane's HTTP client
//! pools to the server (shared by all sessions; a session of the build before had five).

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::http::{Http, rmcp_http_server};
use membrane::config::Config;
use membrane::interceptor::{InterceptorChain, PauseController, PauseTimeoutPolicy};
use membrane::proxy::{Pipeline, reverse};
use membrane::session::SessionManager;
use membrane::transport::{
    DEFAULT_MAX_MESSAGE_SIZE, HttpServer, OutgoingTransport, StreamableHttpIncoming,
    StreamableHttpOutgoing,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SESSIONS: usize = 40;
const WARM_UP: usize = 4;

fn live_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The count of live tasks once it has stopped falling (tasks that finish their work end a
/// moment after it).
async fn settled_tasks() -> usize {
    let mut last = live_tasks();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let now = live_tasks();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// `count` sessions, opened one after the other.
async fn open_sessions(url: &str, client: &reqwest::Client, count: usize) -> Vec<Http> {
    let mut sessions = Vec::new();
    for _ in 0..count {
        let mut session = Http::with_client(url, client.clone());
        session.initialize().await;
        sessions.push(session);
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_sessions_hold_no_task() {
    let (_server, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
    let config = Config::default();
    let pipeline = Arc::new(Pipeline::new(
        Arc::new(SessionManager::with_config(config.session_config())),
        Arc::new(ArcSwap::from_pointee(InterceptorChain::new())),
        Arc::new(PauseController::new(PauseTimeoutPolicy::Block)),
        DEFAULT_MAX_MESSAGE_SIZE,
    ));
    let upstream: Arc<dyn OutgoingTransport> = Arc::new(
        StreamableHttpOutgoing::new(&upstream_url, config.upstream_options().unwrap()).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = StreamableHttpIncoming::new(config.front_options(address), None, None);
    let server = HttpServer::new(listener, None, config.server_limits());
    let shutdown = CancellationToken::new();
    let proxy = tokio::spawn(reverse::run(
        pipeline.clone(),
        upstream,
        incoming,
        server,
        shutdown.clone(),
        Duration::from_secs(2),
    ));

    let url = format!("http://{address}/mcp");
    let client = common::http_client();
    // A few sessions first: the connections (client to membrane, membrane to the server), the
    // upkeep membrane starts once, and their tasks are there before counting.
    let _warm = open_sessions(&url, &client, WARM_UP).await;
    let before = settled_tasks().await;
    let sessions = open_sessions(&url, &client, SESSIONS).await;
    let after = settled_tasks().await;
    assert_eq!(pipeline.sessions.stats().active, WARM_UP + SESSIONS);
    assert!(
        after < before + SESSIONS / 4,
        "{SESSIONS} idle sessions added {} live tasks ({before} before, {after} after)",
        after.saturating_sub(before)
    );

    // Idle does not mean gone: each still answers, and goes idle again.
    for (n, session) in sessions.iter().enumerate() {
        let answer = session
            .call_tool(n as i64 + 1, "echo", json!({"message": "still here"}))
            .await;
        assert!(answer.to_string().contains("still here"), "{answer}");
    }
    let again = settled_tasks().await;
    assert!(
        again < before + SESSIONS / 4,
        "{again} live tasks after the calls ({before} before)"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("the proxy drains its sessions and stops")
        .unwrap();
}
