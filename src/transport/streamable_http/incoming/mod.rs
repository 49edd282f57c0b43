//! [`StreamableHttpIncoming`]: the client side of Streamable HTTP, an [`IncomingTransport`]
//! like stdio: every MCP session a client opens (an `initialize` POST, or one stateless
//! exchange of 2026-07-28) is accepted as a [`Connection`] whose inbound frames are the
//! client's POSTs and whose outbox is routed onto the session's SSE streams
//! ([`SessionStreams`]). Whoever accepts it decides whether a session opens ([`Admission`]);
//! the request that opened it is answered accordingly. A request naming a session this process
//! does not serve opens a connection to resume it, when the session store outlives the process
//! (a restart, another replica). The axum app ([`StreamableHttpIncoming::router`])
//! is a stack of small checks ([`checks`]: Host, Origin, authentication, body bounds, headers,
//! session lookup) in front of three handlers ([`handlers`]: POST, GET, DELETE) and the
//! protected resource metadata. Serving the app on a socket is [`HttpServer`](super::super::http_server::HttpServer)'s job.

mod checks;
mod handlers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{get, post};
use tokio::sync::{Semaphore, mpsc};

pub use checks::HostPolicy;

use super::{SessionStreams, StreamId};
use crate::auth::{Authenticator, Principal};
use crate::protocol::{Message, MessageKind};
use crate::session::{EventWriter, SessionId};
use crate::transport::{
    AnswerModes, Closed, Connection, ConnectionCloser, Frame, Inbound, IncomingTransport,
    Listening, OUTBOX_DEPTH, Opening, Queue, TransportError, TransportType,
};

/// How the HTTP front behaves; every bound has a safe default in the configuration.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// The `Host` names clients may use (DNS rebinding is refused before anything else).
    pub hosts: HostPolicy,
    /// Browser origins allowed besides loopback ones (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// Whether clients reach membrane over TLS (for the URLs it publishes).
    pub tls: bool,
    /// The interval of keep-alive comments on idle SSE streams.
    pub keep_alive: Duration,
    /// The reconnection delay advertised to clients on priming events.
    pub retry: Duration,
    pub max_message_size: usize,
    /// Messages in one JSON-RPC batch (2025-03-26).
    pub max_batch_size: usize,
    /// Open SSE streams (POST streams awaiting answers, and the GET stream) per session.
    pub max_streams: usize,
    /// Bytes of events each session keeps for `Last-Event-ID` replay.
    pub event_retention_bytes: usize,
    /// Whether a session this process does not serve may be revived from the session store
    /// (the store outlives the process, or is shared by replicas).
    pub revive: bool,
    /// A request body must arrive whole within this.
    pub body_timeout: Duration,
    /// Request body bytes being received across all connections, beyond the first
    /// [`checks::OWN_BODY_ALLOWANCE`] of each; past it a body waits briefly, then gets 503.
    pub body_budget: usize,
    /// How long delivering an event may wait for a client that does not read its stream
    /// before that stream is dropped (the client may resume it).
    pub send_timeout: Duration,
}

/// Accepts MCP sessions over Streamable HTTP.
pub struct StreamableHttpIncoming {
    front: Arc<Front>,
    accepted: mpsc::Receiver<Connection>,
}

/// What the handlers share.
struct Front {
    options: FrontOptions,
    auth: Option<Arc<Authenticator>>,
    /// Where SSE events are kept beyond this process, with a durable session store.
    events: Option<EventWriter>,
    /// Live client sessions by the id membrane gave them.
    clients: Mutex<HashMap<SessionId, Arc<ClientSession>>>,
    /// Sessions being revived from the store, each shared by the requests that wait for it.
    revivals: Mutex<HashMap<SessionId, Revival>>,
    /// Where new connections wait to be accepted.
    accept: mpsc::Sender<Connection>,
    /// Permits of [`FrontOptions::body_budget`], one per byte.
    body_budget: Arc<Semaphore>,
}

/// One revival of a session, awaited by every request that names it meanwhile.
type Revival = futures::future::Shared<
    futures::future::BoxFuture<'static, Result<Arc<ClientSession>, checks::Refusal>>,
>;

/// Connections waiting to be accepted; more get 503 (the acceptor is overwhelmed).
const ACCEPT_QUEUE: usize = 1024;

/// Frames of one session waiting for the pipeline before a POST waits.
const INBOUND_DEPTH: usize = 64;

impl StreamableHttpIncoming {
    pub fn new(
        options: FrontOptions,
        auth: Option<Arc<Authenticator>>,
        events: Option<EventWriter>,
    ) -> Self {
        let (accept, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let budget = options.body_budget.min(Semaphore::MAX_PERMITS);
        let front = Arc::new(Front {
            options,
            auth,
            events,
            clients: Mutex::default(),
            revivals: Mutex::default(),
            accept,
            body_budget: Arc::new(Semaphore::new(budget)),
        });
        Self { front, accepted }
    }

    /// The app: `/mcp` behind its checks, and the protected resource metadata when
    /// authentication is on. The Host check comes first of all, then Origin; authentication
    /// guards `/mcp` only.
    pub fn router(&self) -> Router {
        let front = self.front.clone();
        let mcp = Router::new().route(
            "/mcp",
            post(handlers::post)
                .get(handlers::get)
                .delete(handlers::delete),
        );
        // Without [auth] no request pays for the authentication layer, and there is no
        // resource metadata to publish (the layer covers `/mcp` only, not the metadata).
        let app = match &front.auth {
            Some(_) => mcp
                .route_layer(axum::middleware::from_fn_with_state(
                    front.clone(),
                    checks::authenticate,
                ))
                .route(checks::METADATA_PATH, get(handlers::metadata))
                .route(
                    &format!("{}/mcp", checks::METADATA_PATH),
                    get(handlers::metadata),
                ),
            None => mcp,
        };
        app.layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
            ]),
        )
        .layer(axum::middleware::from_fn_with_state(
            front.clone(),
            checks::origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            front.clone(),
            checks::host,
        ))
        .with_state(front)
    }
}

#[async_trait]
impl IncomingTransport for StreamableHttpIncoming {
    fn transport_type(&self) -> TransportType {
        TransportType::StreamableHttp
    }

    /// The next session a client opens; `None` once the app and its handlers are gone.
    async fn accept(&mut self) -> Result<Option<Connection>, TransportError> {
        Ok(self.accepted.recv().await)
    }
}

impl Front {
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<ClientSession>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn revivals(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Revival>> {
        self.revivals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client(&self, id: &SessionId) -> Option<Arc<ClientSession>> {
        self.clients().get(id).cloned()
    }

    /// Ends a session from the client's side (DELETE, the end of a stateless exchange): it is
    /// unknown to clients at once, and its inbound side ends, which winds the session down.
    fn end(&self, id: &SessionId) {
        if let Some(client) = self.clients().remove(id) {
            client.end();
        }
    }
}

/// The client side of one session.
struct ClientSession {
    /// Given once a session is opened for it.
    id: OnceLock<SessionId>,
    principal: Option<Arc<Principal>>,
    /// What the client sends, for the pipeline; closed when the client ends the session.
    inbound: Queue<Frame>,
    streams: Arc<SessionStreams>,
    answer_modes: AnswerModes,
    /// Held while the client's standalone stream is open.
    listening: Listening,
}

impl ClientSession {
    /// Feeds a message into the session; false when the session has ended.
    async fn send(&self, message: Message) -> bool {
        self.inbound.push(Frame::Message(message)).await
    }

    /// The client ends the session: what it sent is still carried through, and then its
    /// side of the session is over.
    fn end(&self) {
        self.inbound.close();
    }

    /// Whether `principal` may use this session: the one that opened it.
    fn belongs_to(&self, principal: Option<&Arc<Principal>>) -> bool {
        Principal::may_use(self.principal.as_deref(), principal.map(|p| &**p))
    }
}

/// A new client side and the connection that carries it to the pipeline; it joins the
/// front's sessions once admitted.
fn client_connection(front: &Arc<Front>, opening: Opening) -> (Connection, Arc<ClientSession>) {
    let inbound = Queue::new(INBOUND_DEPTH);
    let streams = Arc::new(SessionStreams::new(
        front.options.event_retention_bytes,
        front.options.max_streams,
    ));
    let client = Arc::new(ClientSession {
        id: OnceLock::new(),
        principal: opening.principal.clone(),
        inbound: inbound.clone(),
        streams: streams.clone(),
        answer_modes: AnswerModes::default(),
        listening: Listening::while_held(),
    });
    // Each message for the client is routed onto its stream as it comes; nothing waits for
    // them meanwhile.
    let outbox = Queue::new(OUTBOX_DEPTH);
    let (routing, send_timeout) = (client.clone(), front.options.send_timeout);
    outbox.consume(move |message| {
        let client = routing.clone();
        async move { deliver(&client, message, send_timeout).await }
    });
    let mut connection = Connection::new(
        TransportType::StreamableHttp,
        Inbound::Queue(inbound),
        outbox.clone().into(),
        Box::new(ClientCloser {
            front: Arc::downgrade(front),
            client: client.clone(),
            outbox,
        }),
    );
    connection.answer_modes = client.answer_modes.clone();
    connection.listening = client.listening.clone();
    connection.opening = opening;
    (connection, client)
}

/// Routes a message for the client onto its stream. A client that does not take an event
/// within `send_timeout` loses that stream (its events stay for a resuming GET), so one stalled
/// reader cannot hold up the session.
async fn deliver(client: &ClientSession, message: Message, send_timeout: Duration) {
    let messages = match message.kind() {
        // A batch of answers (2025-03-26) is split: each answer follows its own request.
        Some(MessageKind::Batch) => message.batch_elements().unwrap_or_default(),
        _ => vec![message],
    };
    // With an upstream that frames its own answers, a POST stream is used for other messages
    // only once it is known to be an event stream.
    let undecided_ok = !client.answer_modes.announced();
    for message in messages {
        let delivery = client.streams.route(message, undecided_ok);
        let stream: StreamId = delivery.event.id.stream;
        if let Some(to) = delivery.to
            && to.send_timeout(delivery.event, send_timeout).await.is_err()
        {
            let session = client.id.get().map(SessionId::as_str);
            tracing::debug!(
                session,
                stream = stream.0,
                "a client did not read its stream in time; it can resume it"
            );
            client.streams.detach(stream, &to);
        }
    }
}

struct ClientCloser {
    front: std::sync::Weak<Front>,
    client: Arc<ClientSession>,
    outbox: Queue<Message>,
}

#[async_trait]
impl ConnectionCloser for ClientCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        if !self.outbox.close_within(grace).await {
            tracing::warn!("a client stopped reading; its last messages are dropped");
        }
        self.client.streams.close();
        self.closing();
        Closed {
            exit_code: None,
            description: "client session ended".into(),
        }
    }

    /// The session is no longer known to the front: a request on it gets 404.
    fn closing(&self) {
        if let (Some(front), Some(id)) = (self.front.upgrade(), self.client.id.get()) {
            let mut clients = front.clients();
            if clients
                .get(id)
                .is_some_and(|live| Arc::ptr_eq(live, &self.client))
            {
                clients.remove(id);
            }
        }
    }
}
