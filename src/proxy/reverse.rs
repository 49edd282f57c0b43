//! The reverse proxy: MCP clients reach membrane over Streamable HTTP at `/mcp` (axum), and
//! each session they open gets an upstream session of its own: a child process for a stdio
//! server, or a session with an HTTP server. Between the two runs the same pipeline as in every
//! mode ([`Pipeline::serve_session`]).
//!
//! membrane mints the session id the client sees, on the initialize response; the upstream's
//! own id stays inside its connection. A POST feeds its message into the session; a request's
//! answers come back as one JSON response when the answer is the first thing to arrive, and as
//! an SSE stream otherwise (progress, logs, server requests, then the answer). GET opens the
//! session's standalone stream, or resumes any stream of the session after `Last-Event-ID`;
//! DELETE ends the session upstream too. Headers, `Origin`, sizes and the session count are
//! checked first, each failure a plain HTTP status with a JSON-RPC error body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Pipeline;
use crate::protocol::{ErrorCode, INITIALIZE, Message, MessageKind, error_response};
use crate::session::{SessionError, SessionId};
use crate::transport::streamable_http::{
    AttachError, DEFAULT_PROTOCOL_VERSION, EventId, LAST_EVENT_ID, MCP_METHOD, MCP_NAME,
    MCP_PROTOCOL_VERSION, MCP_SESSION_ID, PROTOCOL_VERSIONS, STATELESS_PROTOCOL_VERSION,
    SessionStreams, StreamEvent, StreamId, accepts, allows_batches, allows_priming,
    decode_header_text, is_json_content, named_target,
};
use crate::transport::{
    Closed, Connection, ConnectionCloser, Frame, Outbox, OutgoingTransport, ResponseMode,
    TransportType, drain_until, receiver_stream,
};

/// How the HTTP endpoint behaves.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Browser origins allowed besides loopback ones (`*` allows any).
    pub allowed_origins: Vec<String>,
    /// The interval of keep-alive comments on idle SSE streams.
    pub keep_alive: Duration,
    /// Events each stream keeps for `Last-Event-ID` replay.
    pub event_retention: usize,
    /// The reconnection delay advertised to clients on priming events.
    pub retry: Duration,
    pub max_message_size: usize,
}

/// How long a request may go without any message back before its response becomes a stream
/// (so slow requests get keep-alives and can be resumed).
const STREAM_AFTER: Duration = Duration::from_secs(1);

/// The state the endpoint's handlers share.
pub struct ReverseProxy {
    pipeline: Arc<Pipeline>,
    upstream: Arc<dyn OutgoingTransport>,
    options: HttpOptions,
    clients: Mutex<HashMap<SessionId, Arc<ClientSession>>>,
    sessions_served: TaskTracker,
}

/// The client side of one session.
struct ClientSession {
    inbound: mpsc::Sender<Frame>,
    streams: Arc<SessionStreams>,
    /// How the latest answer was framed (mirrored in the stored session).
    response_mode: Mutex<ResponseMode>,
}

impl ClientSession {
    /// Feeds a message into the session; false when the session has ended.
    async fn send(&self, message: Message) -> bool {
        self.inbound.send(Frame::Message(message)).await.is_ok()
    }
}

impl ReverseProxy {
    pub fn new(
        pipeline: Arc<Pipeline>,
        upstream: Arc<dyn OutgoingTransport>,
        options: HttpOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            pipeline,
            upstream,
            options,
            clients: Mutex::new(HashMap::new()),
            sessions_served: TaskTracker::new(),
        })
    }

    /// The `/mcp` endpoint.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .layer(DefaultBodyLimit::max(self.options.max_message_size))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` fires, then ends every session (children and
    /// upstream sessions included) before returning.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        // Nagle would hold back the small writes of SSE events and JSON answers.
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let sessions = self.pipeline.sessions.clone();
        // Ending the sessions ends their streams, which lets the server finish.
        let stop = async move {
            shutdown.cancelled().await;
            sessions.close_all().await;
        };
        axum::serve(listener, self.router())
            .with_graceful_shutdown(stop)
            .await?;
        self.sessions_served.close();
        self.sessions_served.wait().await;
        Ok(())
    }

    fn client(&self, id: &SessionId) -> Option<Arc<ClientSession>> {
        self.clients().get(id).cloned()
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<ClientSession>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session (for an initialize request, or for one stateless exchange): the
    /// session, its upstream side, and the task that serves it.
    async fn open_session(
        self: &Arc<Self>,
        stateless: Option<(&str, HeaderMap)>,
    ) -> Result<(SessionId, Arc<ClientSession>), Refusal> {
        let sessions = &self.pipeline.sessions;
        let mut session = sessions
            .create(
                TransportType::StreamableHttp,
                self.upstream.transport_type(),
            )
            .await
            .map_err(|e| match e {
                SessionError::Limit(_) => rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::InvalidRequest,
                    &e.to_string(),
                ),
                e => rpc_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::InvalidRequest,
                    &e.to_string(),
                ),
            })?;
        let connected = match stateless {
            Some((version, forwarded)) => {
                session.protocol_version = Some(version.to_owned());
                self.upstream.connect_stateless(version, forwarded).await
            }
            None => self.upstream.connect().await,
        };
        let upstream = match connected {
            Ok(upstream) => upstream,
            Err(e) => {
                let _ = sessions.remove(&session.id).await;
                let reason = format!("could not reach the upstream server: {e}");
                tracing::warn!("{reason}");
                return Err(rpc_error(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::UpstreamUnavailable,
                    &reason,
                ));
            }
        };
        let (connection, client) = client_connection(self.options.event_retention);
        let id = session.id.clone();
        self.clients().insert(id.clone(), client.clone());
        let proxy = self.clone();
        self.sessions_served.spawn(async move {
            let id = session.id.clone();
            if let Err(e) = proxy
                .pipeline
                .serve_session(session, connection, upstream)
                .await
            {
                tracing::warn!(session = %id, error = %e, "session failed");
            }
            proxy.clients().remove(&id);
        });
        Ok((id, client))
    }

    /// Ends a session: unknown to clients at once, wound down (upstream included) by its task.
    async fn end_session(&self, id: &SessionId) {
        self.clients().remove(id);
        let _ = self.pipeline.sessions.close(id).await;
    }

    /// Records how the session's answers are framed, when that changes.
    async fn note_response_mode(&self, id: &SessionId, client: &ClientSession, mode: ResponseMode) {
        let changed = {
            let mut current = client
                .response_mode
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *current, mode) != mode
        };
        if changed {
            let _ = self
                .pipeline
                .sessions
                .update(id, |s| s.response_mode = mode)
                .await;
        }
    }

    /// `Origin` is either absent (not a browser), loopback, or allowed by configuration.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let allowed = self
            .options
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
            || is_loopback_origin(origin);
        if allowed {
            Ok(())
        } else {
            tracing::warn!(origin, "refused a request from a foreign origin");
            Err(rpc_error(
                StatusCode::FORBIDDEN,
                ErrorCode::InvalidRequest,
                &format!("origin {origin} is not allowed"),
            ))
        }
    }

    /// The session a request names: 400 without one, 404 for one that does not exist.
    fn session_of(&self, headers: &HeaderMap) -> Result<(SessionId, Arc<ClientSession>), Refusal> {
        let Some(id) = headers.get(&MCP_SESSION_ID) else {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "missing Mcp-Session-Id header (only initialize starts a session)",
            ));
        };
        let id = SessionId::from(id.to_str().unwrap_or(""));
        match self.client(&id) {
            Some(client) => Ok((id, client)),
            None => Err(session_not_found()),
        }
    }
}

/// The client side of a session as a [`Connection`]: POSTed messages are its inbound frames;
/// what the pipeline sends it is routed onto the session's streams.
fn client_connection(retention: usize) -> (Connection, Arc<ClientSession>) {
    let (inbound, frames) = mpsc::channel::<Frame>(64);
    let streams = Arc::new(SessionStreams::new(retention));
    let (outbox, queue) = Outbox::channel();
    let finish = CancellationToken::new();
    let router = tokio::spawn(route_to_client(queue, streams.clone(), finish.clone()));
    let connection = Connection {
        transport_type: TransportType::StreamableHttp,
        inbound: Box::pin(receiver_stream(frames)),
        outbox,
        closer: Box::new(ClientCloser {
            router,
            finish,
            streams: streams.clone(),
        }),
        peer_session_id: Default::default(),
    };
    let client = ClientSession {
        inbound,
        streams,
        response_mode: Mutex::new(ResponseMode::Unknown),
    };
    (connection, Arc::new(client))
}

/// Routes each message for the client onto its stream, waiting while that stream's reader is
/// slow; a reader that went away is detached (its events stay for a resuming GET).
async fn route_to_client(
    queue: mpsc::Receiver<Message>,
    streams: Arc<SessionStreams>,
    finish: CancellationToken,
) {
    drain_until(queue, finish, |message| deliver(&streams, message)).await;
    streams.close();
}

async fn deliver(streams: &SessionStreams, message: Message) {
    let messages = match message.kind() {
        // A batch of answers (2025-03-26) is split: each answer follows its own request.
        Some(MessageKind::Batch) => message.batch_elements().unwrap_or_default(),
        _ => vec![message],
    };
    for message in messages {
        let delivery = streams.route(message);
        let stream = delivery.event.id.stream;
        if let Some(to) = delivery.to
            && to.send(delivery.event).await.is_err()
        {
            streams.detach(stream, &to);
        }
    }
}

struct ClientCloser {
    router: tokio::task::JoinHandle<()>,
    finish: CancellationToken,
    streams: Arc<SessionStreams>,
}

#[async_trait::async_trait]
impl ConnectionCloser for ClientCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        self.finish.cancel();
        if tokio::time::timeout(grace, self.router).await.is_err() {
            tracing::warn!("a client stopped reading; its last messages are dropped");
        }
        self.streams.close();
        Closed {
            exit_code: None,
            description: "client session ended".into(),
        }
    }
}

/// A POST: one JSON-RPC message (or a 2025-03-26 batch) into its session.
async fn handle_post(
    State(proxy): State<Arc<ReverseProxy>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (proxy, headers) = (&proxy, &headers);
    proxy.check_origin(headers)?;
    if !is_json_content(headers) {
        return Err(rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            "Content-Type must be application/json",
        ));
    }
    if !(accepts(headers, "application/json") && accepts(headers, "text/event-stream")) {
        return Err(rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::InvalidRequest,
            "Accept must list application/json and text/event-stream",
        ));
    }
    let version = protocol_version(headers)?;
    let message = Message::new(body);
    let kind = message
        .validate()
        .map_err(|e| rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()))?;
    if kind == MessageKind::Batch && !allows_batches(version) {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            &format!("JSON-RPC batches are not part of protocol version {version}"),
        ));
    }
    let initialize = kind == MessageKind::Request && message.method() == Some(INITIALIZE);
    let has_session = headers.contains_key(&MCP_SESSION_ID);
    let stateless = !initialize && !has_session && version >= STATELESS_PROTOCOL_VERSION;
    let (id, client) = if stateless {
        check_mirrored_headers(headers, &message)?;
        proxy
            .open_session(Some((version, forwarded_headers(headers))))
            .await?
    } else if initialize && !has_session {
        proxy.open_session(None).await?
    } else {
        proxy.session_of(headers)?
    };
    // A stateless exchange is a session of one request, ended once it is answered.
    let exchange = stateless.then(|| ExchangeGuard {
        proxy: proxy.clone(),
        id: id.clone(),
    });
    let requests = match kind {
        MessageKind::Request => vec![message.clone()],
        MessageKind::Batch => message
            .batch_elements()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.kind() == Some(MessageKind::Request))
            .collect(),
        _ => Vec::new(),
    };
    if requests.is_empty() {
        return if client.send(message).await {
            Ok(StatusCode::ACCEPTED.into_response())
        } else {
            Err(session_not_found())
        };
    }
    let (stream, mut answers) = client.streams.open(&requests);
    if !client.send(message).await {
        return Err(session_not_found());
    }
    // The answer goes back as JSON when it comes first, and soon; otherwise the response is a
    // stream: of what comes before the answer, or of keep-alives while a slow request runs.
    let first = match tokio::time::timeout(STREAM_AFTER, answers.recv()).await {
        Ok(Some(first)) => Some(first),
        Ok(None) => return Err(session_not_found()),
        Err(_) => None,
    };
    let answer = first.as_ref().filter(|first| {
        requests.len() == 1
            && matches!(
                first.message.kind(),
                Some(MessageKind::Response | MessageKind::Error)
            )
            && first.message.id() == requests[0].id()
    });
    if initialize && answer.is_some_and(|a| a.message.kind() == Some(MessageKind::Error)) {
        // No session came of it: end ours rather than keep a session nobody can use.
        proxy.end_session(&id).await;
        return Ok(json_response(&answer.expect("checked").message));
    }
    let mode = match answer {
        Some(_) => ResponseMode::Json,
        None => ResponseMode::SseStream,
    };
    proxy.note_response_mode(&id, &client, mode).await;
    let mut response = match answer {
        Some(answer) => {
            let status = match exchange {
                Some(_) => stateless_status(&answer.message, &requests[0]),
                None => StatusCode::OK,
            };
            (status, json_response(&answer.message)).into_response()
        }
        None => {
            let priming = (allows_priming(version) && exchange.is_none())
                .then(|| priming_event(stream, proxy.options.retry));
            let first = first.map(|first| Ok(sse_event(first)));
            let events = futures::stream::iter(priming.into_iter().chain(first))
                .chain(live_events(answers))
                // The exchange ends with its stream.
                .map(move |event| {
                    let _ = &exchange;
                    event
                });
            sse_response(events, proxy.options.keep_alive)
        }
    };
    if initialize {
        let value = HeaderValue::from_str(id.as_str()).expect("session ids are visible ASCII");
        response.headers_mut().insert(MCP_SESSION_ID, value);
    }
    Ok(response)
}

/// A GET: the standalone stream, or the rest of a stream after `Last-Event-ID`.
async fn handle_get(
    State(proxy): State<Arc<ReverseProxy>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let headers = &headers;
    proxy.check_origin(headers)?;
    if !accepts(headers, "text/event-stream") {
        return Err(rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::InvalidRequest,
            "Accept must list text/event-stream",
        ));
    }
    stateful(headers)?;
    let (_, client) = proxy.session_of(headers)?;
    let attached = match headers.get(&LAST_EVENT_ID) {
        Some(last) => {
            let last: EventId = last
                .to_str()
                .ok()
                .and_then(|last| last.parse().ok())
                .ok_or_else(|| {
                    rpc_error(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRequest,
                        "malformed Last-Event-ID",
                    )
                })?;
            client.streams.resume(last)
        }
        None => client
            .streams
            .attach_standalone()
            .map(|(backlog, live)| (backlog, Some(live))),
    };
    let (replay, live) = attached.map_err(|e| {
        let status = match e {
            AttachError::Conflict => StatusCode::CONFLICT,
            AttachError::UnknownStream => StatusCode::BAD_REQUEST,
            AttachError::Closed => StatusCode::NOT_FOUND,
        };
        rpc_error(status, ErrorCode::InvalidRequest, &e.to_string())
    })?;
    let replay = futures::stream::iter(replay.into_iter().map(|event| Ok(sse_event(event))));
    let events = replay.chain(futures::stream::iter(live).flat_map(live_events));
    Ok(sse_response(events, proxy.options.keep_alive))
}

/// A DELETE: the session ends, upstream too.
async fn handle_delete(
    State(proxy): State<Arc<ReverseProxy>>,
    headers: HeaderMap,
) -> Result<StatusCode, Refusal> {
    proxy.check_origin(&headers)?;
    stateful(&headers)?;
    let (id, _) = proxy.session_of(&headers)?;
    proxy.end_session(&id).await;
    tracing::info!(session = %id, "client ended the session");
    Ok(StatusCode::OK)
}

/// Ends a stateless exchange's session when dropped: after its answer, or when its client
/// goes away.
struct ExchangeGuard {
    proxy: Arc<ReverseProxy>,
    id: SessionId,
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        let (proxy, id) = (self.proxy.clone(), self.id.clone());
        tokio::spawn(async move { proxy.end_session(&id).await });
    }
}

/// The HTTP status of a stateless answer (2026-07-28): errors that clients act on by status
/// get theirs. A failed `server/discover` is a 400 with a legacy body, so the client falls back
/// to `initialize`; an HTTP error from the upstream keeps its status.
fn stateless_status(answer: &Message, request: &Message) -> StatusCode {
    if answer.kind() != Some(MessageKind::Error) {
        return StatusCode::OK;
    }
    let Ok(value) = answer.to_value() else {
        return StatusCode::OK;
    };
    let error = &value["error"];
    if let Some(status) = error["data"]["httpStatus"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
    {
        return status;
    }
    match error["code"].as_i64() {
        _ if request.method() == Some(SERVER_DISCOVER) => StatusCode::BAD_REQUEST,
        Some(METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(HEADER_MISMATCH | MISSING_CAPABILITY | UNSUPPORTED_VERSION) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

const SERVER_DISCOVER: &str = "server/discover";
const METHOD_NOT_FOUND: i64 = -32601;
const HEADER_MISMATCH: i64 = ErrorCode::HeaderMismatch.code();
const MISSING_CAPABILITY: i64 = -32021;
const UNSUPPORTED_VERSION: i64 = -32022;

/// 2026-07-28: `Mcp-Method` and `Mcp-Name` must say what the body says (an intermediary that
/// decides by the body must not let a header tell the upstream something else).
fn check_mirrored_headers(headers: &HeaderMap, message: &Message) -> Result<(), Refusal> {
    let mismatch = |what: &str| {
        let error = error_response(
            message.id(),
            ErrorCode::HeaderMismatch,
            &format!("Header mismatch: {what}"),
        );
        Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            body: error.raw().clone(),
        })
    };
    let Some(method) = message.method() else {
        return Ok(());
    };
    match headers.get(&MCP_METHOD).map(|v| v.to_str().unwrap_or("")) {
        Some(header) if header == method => {}
        Some(header) => {
            return mismatch(&format!("Mcp-Method {header} is not the body's {method}"));
        }
        None => return mismatch("Mcp-Method is missing"),
    }
    if let Some(name) = named_target(message) {
        let header = headers
            .get(&MCP_NAME)
            .and_then(|v| v.to_str().ok())
            .and_then(decode_header_text);
        if header.as_deref() != Some(name.as_str()) {
            return mismatch(&format!("Mcp-Name does not match the body's {name}"));
        }
    }
    Ok(())
}

/// The client headers an upstream must see too: the tool parameters mirrored into
/// `Mcp-Param-*`.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("mcp-param-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// GET and DELETE belong to the revisions with sessions; from 2026-07-28 on they are 405.
fn stateful(headers: &HeaderMap) -> Result<(), Refusal> {
    if protocol_version(headers)? >= STATELESS_PROTOCOL_VERSION {
        return Err(rpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest,
            "protocol version 2026-07-28 has no sessions and no GET stream",
        ));
    }
    Ok(())
}

/// The request's protocol revision: its header, or the oldest for clients that send none.
fn protocol_version(headers: &HeaderMap) -> Result<&'static str, Refusal> {
    let Some(value) = headers.get(&MCP_PROTOCOL_VERSION) else {
        return Ok(DEFAULT_PROTOCOL_VERSION);
    };
    let value = value.to_str().unwrap_or("");
    PROTOCOL_VERSIONS
        .into_iter()
        .find(|known| *known == value)
        .ok_or_else(|| {
            rpc_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                &format!(
                    "unsupported MCP-Protocol-Version {value}; supported: {}",
                    PROTOCOL_VERSIONS.join(", ")
                ),
            )
        })
}

fn live_events(live: mpsc::Receiver<StreamEvent>) -> impl Stream<Item = Result<Event, Infallible>> {
    receiver_stream(live).map(|event| Ok(sse_event(event)))
}

fn sse_event(event: StreamEvent) -> Event {
    let data = String::from_utf8_lossy(event.message.raw());
    Event::default().id(event.id.to_string()).data(data)
}

/// An event with an id and no data before the first message, so a client can resume a stream
/// even if it breaks before anything else arrives; it carries the reconnection delay.
fn priming_event(stream: StreamId, retry: Duration) -> Result<Event, Infallible> {
    let id = EventId { stream, seq: 0 };
    Ok(Event::default().id(id.to_string()).retry(retry).data(""))
}

fn sse_response(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    keep_alive: Duration,
) -> Response {
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    // Tells buffering proxies in front of membrane to pass events on at once.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

fn json_response(message: &Message) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        message.raw().clone(),
    )
        .into_response()
}

/// A request membrane turns away: an HTTP status with a JSON-RPC error body.
struct Refusal {
    status: StatusCode,
    body: Bytes,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let json = [(header::CONTENT_TYPE, "application/json")];
        (self.status, json, self.body).into_response()
    }
}

fn rpc_error(status: StatusCode, code: ErrorCode, reason: &str) -> Refusal {
    Refusal {
        status,
        body: error_response(None, code, reason).raw().clone(),
    }
}

fn session_not_found() -> Refusal {
    rpc_error(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        "session not found: it ended or never existed; initialize a new one",
    )
}

/// An origin on this machine: `http(s)://localhost`, `127.0.0.1` or `[::1]`, any port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn loopback_origins() {
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback_origin(origin), "{origin}");
        }
        for origin in [
            "https://evil.example",
            "null",
            "http://localhost.evil.example",
            "http://10.0.0.1",
        ] {
            assert!(!is_loopback_origin(origin), "{origin}");
        }
    }
}
