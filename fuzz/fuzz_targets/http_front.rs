//! The HTTP front, driven in process: sequences of requests (any method, headers and body,
//! with well-formed MCP messages among them so that sessions open) go through the axum app of
//! `StreamableHttpIncoming` with every check, and on into a real pipeline and an upstream that
//! answers every request. Every response is a status from the expected set, nothing panics,
//! and sessions opened along the way are bounded by the session limit. Time is virtual, so
//! streams that would stay open are read for a moment of it and dropped.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use membrane::interceptor::{InterceptorChain, PauseController, PauseTimeoutPolicy};
use membrane::protocol::{Message, MessageKind};
use membrane::proxy::Pipeline;
use membrane::session::{SessionConfig, SessionManager};
use membrane::transport::streamable_http::{FrontOptions, HostPolicy, StreamableHttpIncoming};
use membrane::transport::{
    Closed, Connection, ConnectionCloser, Frame, Inbound, IncomingTransport, Listening, Outbox,
    OutgoingTransport, TransportError, TransportType,
};
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
struct Exchange {
    method: u8,
    session: Option<u8>,
    version: u8,
    accept: u8,
    json: bool,
    foreign_host: bool,
    origin: Option<bool>,
    last_event_id: Option<String>,
    body: Payload,
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(Vec<u8>),
    Initialize,
    Initialized,
    Call(i32, String),
    Answer(i32),
    Batch(Vec<i32>),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        let text = match self {
            Payload::Raw(bytes) => return bytes.clone(),
            Payload::Initialize => r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"0"}}}"#.to_owned(),
            Payload::Initialized => r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
            Payload::Call(id, tool) => serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string(),
            Payload::Answer(id) => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
            Payload::Batch(ids) => {
                let calls: Vec<String> = ids.iter().map(|id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)).collect();
                format!("[{}]", calls.join(","))
            }
        };
        text.into_bytes()
    }
}

const VERSIONS: [Option<&str>; 6] = [
    None,
    Some("2025-03-26"),
    Some("2025-06-18"),
    Some("2025-11-25"),
    Some("2026-07-28"),
    Some("1999-01-01"),
];
const ACCEPTS: [&str; 4] = [
    "application/json, text/event-stream",
    "application/json",
    "text/event-stream",
    "*/*",
];
const METHODS: [&str; 4] = ["POST", "GET", "DELETE", "PUT"];

/// An upstream that answers every request at once.
struct Echo;

#[async_trait::async_trait]
impl OutgoingTransport for Echo {
    fn transport_type(&self) -> TransportType {
        TransportType::Stdio
    }

    async fn connect(&self, _: &Listening) -> Result<Connection, TransportError> {
        let (outbox, queue) = Outbox::channel();
        let (frames, inbound) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(message) = queue.recv_async().await {
                if message.kind() != Some(MessageKind::Request) {
                    continue;
                }
                let id = message.id().unwrap_or("null");
                let answer = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-06-18"}}}}"#
                );
                if frames
                    .send(Frame::Message(Message::new(answer)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let inbound = futures::stream::unfold(inbound, |mut inbound| async move {
            inbound.recv().await.map(|frame| (frame, inbound))
        });
        Ok(Connection::new(
            TransportType::Stdio,
            Inbound::stream(inbound),
            outbox,
            Box::new(Done),
        ))
    }
}

struct Done;

#[async_trait::async_trait]
impl ConnectionCloser for Done {
    async fn close(self: Box<Self>, _grace: Duration) -> Closed {
        Closed {
            exit_code: None,
            description: "done".into(),
        }
    }
}

fn options() -> FrontOptions {
    FrontOptions {
        hosts: HostPolicy::new("127.0.0.1:8080".parse().unwrap(), &[]),
        allowed_origins: Vec::new(),
        tls: false,
        keep_alive: Duration::from_secs(15),
        retry: Duration::from_secs(1),
        max_message_size: 4096,
        max_batch_size: 8,
        max_streams: 4,
        event_retention_bytes: 16 * 1024,
        body_timeout: Duration::from_secs(5),
        body_budget: 1 << 20,
        send_timeout: Duration::from_secs(1),
        revive: false,
    }
}

async fn drive(exchanges: Vec<Exchange>) {
    let sessions = Arc::new(SessionManager::with_config(SessionConfig {
        max_sessions: 4,
        ..SessionConfig::default()
    }));
    let pipeline = Arc::new(Pipeline::new(
        sessions.clone(),
        Arc::new(ArcSwap::from_pointee(InterceptorChain::new())),
        Arc::new(PauseController::new(PauseTimeoutPolicy::Block)),
        4096,
    ));
    let mut incoming = StreamableHttpIncoming::new(options(), None, None);
    let app = incoming.router();
    let acceptor = tokio::spawn(async move {
        let echo: Arc<dyn OutgoingTransport> = Arc::new(Echo);
        while let Ok(Some(connection)) = incoming.accept().await {
            tokio::spawn(pipeline.open_session(connection, echo.clone()));
        }
    });
    let mut minted: Vec<String> = Vec::new();
    for exchange in exchanges.into_iter().take(16) {
        let mut request = Request::builder()
            .method(METHODS[usize::from(exchange.method) % METHODS.len()])
            .uri("/mcp")
            .header(
                "host",
                if exchange.foreign_host {
                    "evil.example"
                } else {
                    "127.0.0.1:8080"
                },
            )
            .header(
                "accept",
                ACCEPTS[usize::from(exchange.accept) % ACCEPTS.len()],
            )
            .header(
                "content-type",
                if exchange.json {
                    "application/json"
                } else {
                    "text/plain"
                },
            );
        if let Some(version) = VERSIONS[usize::from(exchange.version) % VERSIONS.len()] {
            request = request.header("mcp-protocol-version", version);
        }
        if let Some(foreign) = exchange.origin {
            request = request.header(
                "origin",
                if foreign {
                    "https://evil.example"
                } else {
                    "http://localhost:3000"
                },
            );
        }
        if let Some(pick) = exchange.session {
            let id = minted
                .get(usize::from(pick) % minted.len().max(1))
                .cloned()
                .unwrap_or_else(|| format!("unknown{pick}"));
            request = request.header("mcp-session-id", id);
        }
        if let Some(last) = &exchange.last_event_id
            && let Ok(value) = axum::http::HeaderValue::from_str(last)
        {
            request = request.header("last-event-id", value);
        }
        let Ok(request) = request.body(Body::from(exchange.body.bytes())) else {
            continue;
        };
        let response = app
            .clone()
            .oneshot(request)
            .await
            .expect("the app never fails");
        let status = response.status();
        assert!(
            matches!(
                status.as_u16(),
                200 | 202 | 400 | 403 | 404 | 405 | 406 | 408 | 409 | 413 | 415 | 429 | 502 | 503
            ),
            "unexpected status {status}"
        );
        if let Some(id) = response.headers().get("mcp-session-id") {
            minted.push(id.to_str().expect("visible ASCII").to_owned());
        }
        // Read what comes within a moment of virtual time; a stream that stays open is dropped.
        let mut body = response.into_body().into_data_stream();
        let read = async {
            while let Some(chunk) = body.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
        if status == StatusCode::OK {
            assert!(sessions.stats().active <= 4, "the session limit holds");
        }
    }
    sessions.close_all();
    acceptor.abort();
}

fuzz_target!(|exchanges: Vec<Exchange>| {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(drive(exchanges));
});
