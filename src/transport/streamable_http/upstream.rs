//! [`StreamableHttpOutgoing`]: the upstream side for Streamable HTTP servers. Each connection is
//! one upstream MCP session: every message membrane sends is POSTed (requests concurrently,
//! notifications and answers in order), and whatever the server answers, as JSON or as an SSE
//! stream, comes back as inbound frames. The server's `Mcp-Session-Id` and protocol version are
//! learnt from the initialize exchange and sent on every later request; they never leave this
//! module. After the handshake a GET stream carries what the server starts on its own. SSE
//! streams that end before their answer are resumed with `Last-Event-ID`. An upstream that is
//! down, hangs past its timeout or answers with an HTTP error yields a JSON-RPC error for the
//! request; a 404 on the session ends the connection (the session is gone upstream). Closing
//! the connection DELETEs the upstream session. One `reqwest` client, and so one connection
//! pool, serves all sessions.
//!
//! An upstream is not trusted to behave: its SSE events are read by the bounded [`SseParser`]
//! (an event over the maximum message size is dropped as it streams, and its request answered
//! with an error), an event that trickles in and never ends times out, redirects are not
//! followed (a POST must not land on another service), its `retry` is clamped and reconnects
//! back off with jitter. Each answer's framing (JSON or SSE) is announced as soon as its
//! headers arrive, so the client side can answer in kind. https upstreams are checked against
//! the system's roots plus `[http] ca_file`, and may get a client certificate; configured
//! headers (`[http.upstream_headers]`) go on every request, and nothing of the client's does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::sse::{SseItem, SseParser};
use super::{
    LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, content_type_is, mirrored_headers,
};
use crate::protocol::{
    ErrorCode, INITIALIZE, Message, MessageKind, error_response, error_response_with_data,
};
use crate::transport::tls::{ClientTlsOptions, certificate_hint};
use crate::transport::{
    AnswerModes, Cancel, Closed, Connection, ConnectionCloser, Frame, Inbound, Listening,
    OUTBOX_DEPTH, OutgoingTransport, Queue, ResponseMode, TransportError, TransportType,
};

/// Timeouts, limits, TLS and headers of the upstream HTTP client.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    /// The longest wait for a response to begin, and for the next bytes of an SSE stream.
    pub response_timeout: Duration,
    /// The longest an SSE event may take from its first byte to its end.
    pub event_timeout: Duration,
    pub max_message_size: usize,
    pub tls: ClientTlsOptions,
    /// Sent on every request (credentials for the upstream, configured apart from the
    /// client's).
    pub headers: HeaderMap,
}

/// Opens upstream sessions on one Streamable HTTP endpoint.
#[derive(Debug, Clone)]
pub struct StreamableHttpOutgoing(Arc<Endpoint>);

/// The endpoint and how to reach it, shared by every upstream session on it.
#[derive(Debug)]
struct Endpoint {
    url: reqwest::Url,
    client: reqwest::Client,
    options: UpstreamOptions,
}

/// Resumptions of one POST's SSE stream in a row before giving up on its answer.
const MAX_RESUMPTIONS: u32 = 5;

/// The wait before resuming a stream when the server gave no `retry`, and the range a
/// server's `retry` is clamped to.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
const MIN_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A GET stream that stayed up this long was healthy: the next reconnect starts the backoff
/// afresh.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

/// Reconnect delays: exponential from the server's `retry`, with jitter, up to [`MAX_RETRY`].
fn backoff(retry: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(retry)
        .with_max_delay(MAX_RETRY)
        .with_jitter()
        .without_max_times()
        .build()
        // Jitter may add up to the delay itself: keep the cap a cap.
        .map(|delay| delay.min(MAX_RETRY))
}

/// Frames waiting for the pipeline before the upstream's readers wait.
const INBOUND_DEPTH: usize = 256;

impl StreamableHttpOutgoing {
    pub fn new(url: &str, options: UpstreamOptions) -> Result<Self, TransportError> {
        let url = reqwest::Url::parse(url).map_err(|e| TransportError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::Url {
                url: url.to_string(),
                reason: "not an http:// or https:// URL".into(),
            });
        }
        let client = crate::transport::tls::http_client(&options.tls)
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))?
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.response_timeout)
            .build()
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        Ok(Self(Arc::new(Endpoint {
            url,
            client,
            options,
        })))
    }
}

#[async_trait]
impl OutgoingTransport for StreamableHttpOutgoing {
    fn transport_type(&self) -> TransportType {
        TransportType::StreamableHttp
    }

    async fn connect(&self, listening: &Listening) -> Result<Connection, TransportError> {
        Ok(self.open(None, None, None, listening.clone()).0)
    }

    async fn connect_stateless(
        &self,
        version: &str,
        forwarded: &HeaderMap,
    ) -> Result<Connection, TransportError> {
        let version = HeaderValue::from_str(version).map_err(std::io::Error::other)?;
        let never = Listening::while_held();
        Ok(self
            .open(None, Some(version), Some(forwarded.clone()), never)
            .0)
    }

    /// The upstream session goes on where it was: its id and version on every request, and
    /// the GET stream for what the server starts.
    async fn resume(
        &self,
        session_id: Option<&str>,
        version: &str,
        listening: &Listening,
    ) -> Result<Connection, TransportError> {
        let version = HeaderValue::from_str(version).map_err(std::io::Error::other)?;
        let id = session_id.map(str::to_owned);
        let (connection, session) = self.open(id, Some(version), None, listening.clone());
        session.follow_client_streams();
        Ok(connection)
    }
}

impl StreamableHttpOutgoing {
    /// A connection, and the upstream session it carries; `session_id` and `version` are known
    /// up front for a resumed session, and `forwarded` carries the client's headers of a
    /// stateless exchange.
    fn open(
        &self,
        session_id: Option<String>,
        version: Option<HeaderValue>,
        forwarded: Option<HeaderMap>,
        listening: Listening,
    ) -> (Connection, Arc<UpstreamSession>) {
        let frames = Queue::new(INBOUND_DEPTH);
        let session_id = Arc::new(session_id.map(OnceLock::from).unwrap_or_default());
        let answer_modes = AnswerModes::default();
        let session = Arc::new(UpstreamSession {
            http: self.0.clone(),
            session_id: session_id.clone(),
            answer_modes: answer_modes.clone(),
            protocol_version: version.map(OnceLock::from).unwrap_or_default(),
            stateless: forwarded,
            listening,
            listener: AtomicBool::new(false),
            position: Mutex::default(),
            frames: frames.clone(),
            ended: Cancel::new(),
            end_reason: OnceLock::new(),
            tasks: TaskTracker::new(),
        });
        // Requests go out on tasks of their own (a slow tool call must not hold up the rest);
        // notifications and answers are sent in turn.
        let outbox = Queue::new(OUTBOX_DEPTH);
        let sender = session.clone();
        outbox.consume(move |message| {
            let session = sender.clone();
            async move { session.send_message(message).await }
        });
        let mut connection = Connection::new(
            TransportType::StreamableHttp,
            Inbound::Queue(frames),
            outbox.clone().into(),
            Box::new(UpstreamCloser {
                session: session.clone(),
                outbox,
            }),
        );
        connection.peer_session_id = session_id;
        connection.answer_modes = answer_modes;
        (connection, session)
    }
}

/// One upstream MCP session.
struct UpstreamSession {
    http: Arc<Endpoint>,
    /// The server's `Mcp-Session-Id`, shared with whoever serves the connection (it goes into
    /// the session's record).
    session_id: Arc<OnceLock<String>>,
    /// Where the framing of each answer is announced.
    answer_modes: AnswerModes,
    protocol_version: OnceLock<HeaderValue>,
    /// For a stateless exchange: the client's headers to send on.
    stateless: Option<HeaderMap>,
    /// Whether the client side holds a stream for what the server starts: the GET stream is
    /// open (and the task that reads it runs) only meanwhile.
    listening: Listening,
    /// Whether the task that reads the GET stream runs (or, once the server said it has no
    /// such stream, never will again).
    listener: AtomicBool,
    /// Where the GET stream was, for the next one to resume it.
    position: Mutex<StreamPosition>,
    /// What the server sends, for the pipeline; closed when the connection is over.
    frames: Queue<Frame>,
    /// Fires when the connection is over: closed by membrane or lost upstream.
    ended: Cancel,
    end_reason: OnceLock<String>,
    tasks: TaskTracker,
}

/// How a GET stream ended.
enum Listened {
    /// For good: the session ended, or the server has no such stream.
    Over,
    /// The client side let go of its stream: a new one is opened when it holds one again.
    Released,
    /// The stream ended or could not be opened; `healthy` when it had lasted a while.
    Ended { healthy: bool },
}

/// What a POST was for, as far as its response is concerned.
struct Sent {
    /// The request's id, when the message was a request.
    request_id: Option<String>,
    initialize: bool,
}

impl UpstreamSession {
    async fn send_message(self: &Arc<Self>, message: Message) {
        if message.kind() == Some(MessageKind::Request) {
            self.tasks.spawn(self.clone().post(message));
            return;
        }
        let initialized = message.method() == Some("notifications/initialized");
        self.clone().post(message).await;
        if initialized {
            self.follow_client_streams();
        }
    }

    async fn post(self: Arc<Self>, message: Message) {
        let sent = Sent {
            request_id: (message.kind() == Some(MessageKind::Request))
                .then(|| message.id().map(str::to_owned))
                .flatten(),
            initialize: message.method() == Some(INITIALIZE),
        };
        let mut request = self.request(self.http.client.post(self.http.url.clone()));
        if let Some(forwarded) = &self.stateless {
            request = request.headers(forwarded.clone());
            for (name, value) in mirrored_headers(&message) {
                request = request.header(name, value);
            }
        }
        let request = request
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(message.raw().clone());
        let Some(response) = self.send(request, &sent).await else {
            return;
        };
        let status = response.status();
        if !status.is_success() {
            return self.refused(response, &sent).await;
        }
        if sent.initialize
            && let Some(id) = response.headers().get(&MCP_SESSION_ID)
            && let Ok(id) = id.to_str()
        {
            let _ = self.session_id.set(id.to_owned());
        }
        if content_type_is(response.headers(), "text/event-stream") {
            if let Some(id) = &sent.request_id {
                self.answer_modes.announce(id, ResponseMode::SseStream);
            }
            self.read_events(response, sent).await;
        } else if content_type_is(response.headers(), "application/json") {
            if let Some(id) = &sent.request_id {
                self.answer_modes.announce(id, ResponseMode::Json);
            }
            self.read_json(response, &sent).await;
        } else if sent.request_id.is_some() {
            self.fail(
                &sent,
                &format!("upstream answered HTTP {status} with no message"),
            )
            .await;
        }
    }

    /// Adds the configured headers and the session's to a request.
    fn request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut request = request.headers(self.http.options.headers.clone());
        if let Some(id) = self.session_id.get() {
            request = request.header(&MCP_SESSION_ID, id.as_str());
        }
        if let Some(version) = self.protocol_version.get() {
            request = request.header(&MCP_PROTOCOL_VERSION, version);
        }
        request
    }

    /// Sends a request, bounded by the response timeout and the connection's end.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        sent: &Sent,
    ) -> Option<reqwest::Response> {
        let timeout = self.http.options.response_timeout;
        let result = tokio::select! {
            result = tokio::time::timeout(timeout, request.send()) => result,
            _ = self.ended.cancelled() => return None,
        };
        match result {
            Ok(Ok(response)) => Some(response),
            Ok(Err(e)) if e.is_timeout() && !e.is_connect() => {
                self.fail(sent, &format!("upstream did not answer within {timeout:?}"))
                    .await;
                None
            }
            Ok(Err(e)) => {
                let chain = error_chain(&e);
                let reason = match certificate_hint(&chain) {
                    Some(hint) => format!("upstream unreachable: {chain} ({hint})"),
                    None => format!("upstream unreachable: {chain}"),
                };
                self.fail(sent, &reason).await;
                None
            }
            Err(_) => {
                self.fail(sent, &format!("upstream did not answer within {timeout:?}"))
                    .await;
                None
            }
        }
    }

    /// An HTTP error status. 404 on a session means the server ended it; otherwise a JSON-RPC
    /// error in the body answers the request as it is, or one is made from the status.
    async fn refused(&self, response: reqwest::Response, sent: &Sent) {
        let status = response.status();
        if status == StatusCode::NOT_FOUND && self.session_id.get().is_some() {
            return self.lose("the upstream server ended the session (HTTP 404)");
        }
        let body = read_body(response, self.http.options.max_message_size)
            .await
            .unwrap_or_default();
        let message = Message::new(body.clone());
        let answers = message.kind() == Some(MessageKind::Error)
            && sent.request_id.is_some()
            && message.id() == sent.request_id.as_deref();
        if answers {
            let _ = self.frames.push(Frame::Message(message)).await;
            return;
        }
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let reason = format!("upstream answered HTTP {status}: {}", excerpt.trim());
        match sent.request_id.as_deref() {
            Some(id) => {
                tracing::warn!(id, "{reason}");
                // The status goes with the error, for a client that decides by it.
                let data = serde_json::json!({ "httpStatus": status.as_u16() });
                let error = error_response_with_data(
                    Some(id),
                    ErrorCode::UpstreamUnavailable,
                    &reason,
                    &data,
                );
                let _ = self.frames.push(Frame::Message(error)).await;
            }
            None => tracing::warn!("{reason}"),
        }
    }

    async fn read_json(&self, response: reqwest::Response, sent: &Sent) {
        let max = self.http.options.max_message_size;
        match read_body(response, max).await {
            Ok(body) if body.len() > max => {
                let frame = Frame::Oversized {
                    len: body.len(),
                    id: sent.request_id.clone(),
                    request: false,
                };
                let _ = self.frames.push(frame).await;
            }
            // An empty body (a notification's 202, say) carries nothing to pass on.
            Ok(body) if body.is_empty() => {
                if sent.request_id.is_some() {
                    self.fail(sent, "the upstream answered with an empty body")
                        .await;
                }
            }
            Ok(body) => self.deliver(Message::new(body), sent).await,
            Err(e) => {
                let reason = format!("reading the upstream's answer failed: {}", error_chain(&e));
                self.fail(sent, &reason).await
            }
        }
    }

    /// Relays an SSE response as it comes; resumes it when it ends before the answer.
    async fn read_events(&self, response: reqwest::Response, sent: Sent) {
        let mut position = StreamPosition::default();
        let mut response = response;
        let mut resumptions = 0;
        let mut delays = backoff(position.retry);
        loop {
            if self.relay(response, &sent, &mut position).await {
                return;
            }
            let Some(last) = position.last_event_id.clone() else {
                return self
                    .fail(&sent, "the upstream closed the stream before answering")
                    .await;
            };
            resumptions += 1;
            if resumptions > MAX_RESUMPTIONS {
                return self
                    .fail(
                        &sent,
                        "the upstream's stream kept breaking before the answer",
                    )
                    .await;
            }
            let delay = delays.next().unwrap_or(MAX_RETRY).max(position.retry);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.ended.cancelled() => return,
            }
            let get = self.resume_request(&last);
            let Some(next) = self.send(get, &sent).await else {
                return;
            };
            if !next.status().is_success() {
                return self.refused(next, &sent).await;
            }
            response = next;
        }
    }

    /// Relays one SSE response; true once the request it answers is answered (or there is
    /// none, or it cannot be any more).
    async fn relay(
        &self,
        response: reqwest::Response,
        sent: &Sent,
        position: &mut StreamPosition,
    ) -> bool {
        let mut body = response.bytes_stream();
        let mut parser = SseParser::new(self.http.options.max_message_size);
        let event_timeout = self.http.options.event_timeout;
        // When the event being read began: an event must end within `event_timeout`.
        let mut event_began: Option<Instant> = None;
        let mut items = Vec::new();
        loop {
            let trickle = async {
                match event_began {
                    Some(began) => tokio::time::sleep_until(began + event_timeout).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = trickle => {
                    let reason = format!("the upstream's event did not complete within {event_timeout:?}");
                    tracing::warn!("{reason}");
                    if sent.request_id.is_some() {
                        self.fail(sent, &reason).await;
                    }
                    return true;
                }
                _ = self.ended.cancelled() => return true,
            };
            let chunk = match chunk {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    tracing::debug!(error = %error_chain(&e), "upstream SSE stream broke");
                    return sent.request_id.is_none();
                }
                None => return sent.request_id.is_none(),
            };
            parser.feed(&chunk, &mut |item| items.push(item));
            event_began = match (parser.mid_event(), items.is_empty()) {
                (false, _) => None,
                (true, true) => event_began.or(Some(Instant::now())),
                (true, false) => Some(Instant::now()),
            };
            for item in items.drain(..) {
                if self.take(item, sent, position).await {
                    return true;
                }
            }
        }
    }

    /// Handles one SSE item; true when it was the answer `sent` waits for.
    async fn take(&self, item: SseItem, sent: &Sent, position: &mut StreamPosition) -> bool {
        match item {
            SseItem::Event(event) => {
                if let Some(id) = event.id {
                    position.last_event_id = Some(id);
                }
                if let Some(retry) = event.retry {
                    position.retry = Duration::from_millis(retry).clamp(MIN_RETRY, MAX_RETRY);
                }
                if event.data.is_empty() {
                    return false; // a priming event
                }
                let message = Message::new(event.data);
                let answer = sent.request_id.is_some()
                    && matches!(
                        message.kind(),
                        Some(MessageKind::Response | MessageKind::Error)
                    )
                    && message.id() == sent.request_id.as_deref();
                self.deliver(message, sent).await;
                answer
            }
            SseItem::Oversized { len, id, request } => {
                // Without an id to go by, an answer-shaped event on a request's stream is
                // taken to be its answer.
                let id = id.or_else(|| (!request).then(|| sent.request_id.clone()).flatten());
                let answer = !request && id.is_some() && id == sent.request_id;
                let _ = self
                    .frames
                    .push(Frame::Oversized { len, id, request })
                    .await;
                answer
            }
        }
    }

    /// From now on, the GET stream is open while the client side holds a stream of its own.
    fn follow_client_streams(self: &Arc<Self>) {
        let session = Arc::downgrade(self);
        self.listening.on_hold(move || {
            if let Some(session) = session.upgrade()
                && !session.ended.is_cancelled()
                && !session.listener.swap(true, Ordering::AcqRel)
            {
                session.tasks.spawn(session.clone().listen());
            }
        });
    }

    /// Keeps the GET stream open for what the server sends on its own while the client side
    /// holds a stream for it, reconnecting (and resuming) when it ends, backing off while it
    /// keeps failing; ends when the client side lets go (to be started again when it holds
    /// one), and for good when the server has none (405).
    async fn listen(self: Arc<Self>) {
        let listening = &self.listening;
        let mut position = std::mem::take(&mut *self.position());
        let mut delays = backoff(position.retry);
        while !self.ended.is_cancelled() {
            if listening.holders() == 0 {
                // Handed back before the flag, for a listener started right after this one.
                *self.position() = std::mem::take(&mut position);
                self.listener.store(false, Ordering::Release);
                // A stream held meanwhile either started a listener or finds this one going on.
                if listening.holders() == 0 || self.listener.swap(true, Ordering::AcqRel) {
                    return;
                }
                position = std::mem::take(&mut *self.position());
            }
            // Boxed: a stream's state lives only while it is open.
            match Box::pin(self.stream_while_held(&mut position)).await {
                // The flag stays up: no listener starts again.
                Listened::Over => return,
                Listened::Released => continue,
                Listened::Ended { healthy } => {
                    if healthy {
                        delays = backoff(position.retry);
                    }
                }
            }
            let delay = delays.next().unwrap_or(MAX_RETRY).max(position.retry);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.ended.cancelled() => return,
            }
        }
    }

    fn position(&self) -> std::sync::MutexGuard<'_, StreamPosition> {
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One GET stream, relayed until it ends, the client side lets go of its own stream, or
    /// the session ends.
    async fn stream_while_held(&self, position: &mut StreamPosition) -> Listened {
        let none = Sent {
            request_id: None,
            initialize: false,
        };
        let get = match position.last_event_id.clone() {
            Some(last) => self.resume_request(&last),
            None => self.request(self.http.client.get(self.http.url.clone())),
        };
        let get = get.header(header::ACCEPT, "text/event-stream");
        let began = Instant::now();
        let released = self.listening.released();
        tokio::pin!(released);
        let response = tokio::select! {
            response = get.send() => response,
            _ = self.ended.cancelled() => return Listened::Over,
            _ = &mut released => return Listened::Released,
        };
        match response {
            Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => {
                return Listened::Over;
            }
            Ok(response)
                if response.status() == StatusCode::NOT_FOUND
                    && self.session_id.get().is_some() =>
            {
                self.lose("the upstream server ended the session (HTTP 404)");
                return Listened::Over;
            }
            Ok(response)
                if response.status().is_success()
                    && content_type_is(response.headers(), "text/event-stream") =>
            {
                tokio::select! {
                    _ = self.relay(response, &none, position) => {}
                    // The client let go of its stream: so does membrane, until it is back.
                    _ = &mut released => return Listened::Released,
                }
            }
            Ok(response) => {
                tracing::debug!(status = %response.status(), "upstream refused the GET stream");
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "upstream GET stream failed");
            }
        }
        Listened::Ended {
            healthy: began.elapsed() >= HEALTHY_STREAM,
        }
    }

    fn resume_request(&self, last_event_id: &str) -> reqwest::RequestBuilder {
        self.request(self.http.client.get(self.http.url.clone()))
            .header(header::ACCEPT, "text/event-stream")
            .header(&LAST_EVENT_ID, last_event_id)
    }

    /// Passes a message from the server on; an initialize result sets the protocol version.
    async fn deliver(&self, message: Message, sent: &Sent) {
        if sent.initialize
            && message.kind() == Some(MessageKind::Response)
            && let Ok(value) = message.to_value()
            && let Some(version) = value["result"]["protocolVersion"].as_str()
            && let Ok(version) = HeaderValue::from_str(version)
        {
            let _ = self.protocol_version.set(version);
        }
        let _ = self.frames.push(Frame::Message(message)).await;
    }

    /// Answers a request that the upstream will not answer with a JSON-RPC error.
    async fn fail(&self, sent: &Sent, reason: &str) {
        tracing::warn!(id = sent.request_id.as_deref(), "{reason}");
        if let Some(id) = sent.request_id.as_deref() {
            let error = error_response(Some(id), ErrorCode::UpstreamUnavailable, reason);
            let _ = self.frames.push(Frame::Message(error)).await;
        }
    }

    /// The upstream session is gone: the connection ends.
    fn lose(&self, reason: &str) {
        tracing::info!("{reason}");
        let _ = self.end_reason.set(reason.to_owned());
        self.ended.cancel();
        self.frames.close();
    }
}

/// Where a client is in an SSE stream: the last event id seen and the server's `retry`.
struct StreamPosition {
    last_event_id: Option<String>,
    retry: Duration,
}

impl Default for StreamPosition {
    fn default() -> Self {
        Self {
            last_event_id: None,
            retry: DEFAULT_RETRY,
        }
    }
}

/// Reads a body, stopping once it exceeds `max` bytes (the length read so far is kept).
async fn read_body(
    mut response: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            break;
        }
    }
    Ok(body.freeze())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct UpstreamCloser {
    session: Arc<UpstreamSession>,
    outbox: Queue<Message>,
}

#[async_trait]
impl ConnectionCloser for UpstreamCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        self.end(grace, true).await
    }

    async fn detach(self: Box<Self>, grace: Duration) -> Closed {
        self.end(grace, false).await
    }
}

impl UpstreamCloser {
    /// What is queued still goes out; then the upstream session is deleted, if `delete`.
    async fn end(self, grace: Duration, delete: bool) -> Closed {
        let UpstreamCloser { session, outbox } = self;
        outbox.close_within(grace).await;
        let lost = session.end_reason.get().cloned();
        if delete && lost.is_none() && session.session_id.get().is_some() {
            let delete = session.request(session.http.client.delete(session.http.url.clone()));
            match tokio::time::timeout(grace, delete.send()).await {
                Ok(Ok(response)) => {
                    tracing::debug!(status = %response.status(), "deleted the upstream session")
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %error_chain(&e), "deleting the upstream session failed")
                }
                Err(_) => tracing::debug!("deleting the upstream session timed out"),
            }
        }
        session.ended.cancel();
        session.frames.close();
        session.tasks.close();
        let _ = tokio::time::timeout(grace, session.tasks.wait()).await;
        Closed {
            exit_code: None,
            description: lost.unwrap_or_else(|| "session closed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> UpstreamOptions {
        UpstreamOptions {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            event_timeout: Duration::from_secs(1),
            max_message_size: 1024,
            tls: ClientTlsOptions::default(),
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn upstream_urls_are_checked_up_front() {
        for url in ["http://127.0.0.1:3000/mcp", "https://example.com/mcp"] {
            assert!(StreamableHttpOutgoing::new(url, options()).is_ok(), "{url}");
        }
        for (url, says) in [
            ("ftp://example.com/mcp", "not an http"),
            ("not a url", "invalid upstream URL"),
        ] {
            let error = StreamableHttpOutgoing::new(url, options()).unwrap_err();
            assert!(error.to_string().contains(says), "{url}: {error}");
        }
    }

    #[test]
    fn reconnects_back_off_within_bounds() {
        let delays: Vec<Duration> = backoff(MIN_RETRY).take(12).collect();
        assert!(
            delays.iter().all(|d| *d >= MIN_RETRY && *d <= MAX_RETRY),
            "{delays:?}"
        );
        assert!(delays[8] > delays[0], "they grow: {delays:?}");
    }
}
