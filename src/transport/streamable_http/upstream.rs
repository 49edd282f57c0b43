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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures::StreamExt;
use sse_stream::SseStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, content_type_is, mirrored_headers,
};
use crate::protocol::{
    ErrorCode, INITIALIZE, Message, MessageKind, error_response, error_response_with_data,
};
use crate::transport::{
    Closed, Connection, ConnectionCloser, Frame, Outbox, OutgoingTransport, TransportError,
    TransportType, drain_until, receiver_stream,
};

/// Timeouts and limits of the upstream HTTP client.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    /// The longest wait for a response to begin, and for the next bytes of an SSE stream.
    pub response_timeout: Duration,
    pub max_message_size: usize,
}

/// Opens upstream sessions on one Streamable HTTP endpoint.
#[derive(Debug, Clone)]
pub struct StreamableHttpOutgoing {
    url: reqwest::Url,
    client: reqwest::Client,
    options: UpstreamOptions,
}

/// Resumptions of one SSE stream (or reconnections of the GET stream) in a row before giving up.
const MAX_RECONNECTS: u32 = 5;

/// The wait before resuming a stream when the server gave no `retry`, and the most a server's
/// `retry` may ask for.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Frames waiting for the pipeline before the upstream's readers wait.
const INBOUND_DEPTH: usize = 256;

impl StreamableHttpOutgoing {
    pub fn new(url: &str, options: UpstreamOptions) -> Result<Self, TransportError> {
        let url = reqwest::Url::parse(url).map_err(|e| TransportError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let refuse = |reason: &str| TransportError::Url {
            url: url.to_string(),
            reason: reason.into(),
        };
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(refuse(
                    "https needs TLS, which this build leaves out for now",
                ));
            }
            _ => return Err(refuse("not an http:// URL")),
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.response_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        Ok(Self {
            url,
            client,
            options,
        })
    }
}

#[async_trait]
impl OutgoingTransport for StreamableHttpOutgoing {
    fn transport_type(&self) -> TransportType {
        TransportType::StreamableHttp
    }

    async fn connect(&self) -> Result<Connection, TransportError> {
        Ok(self.open(None))
    }

    async fn connect_stateless(
        &self,
        version: &str,
        forwarded: HeaderMap,
    ) -> Result<Connection, TransportError> {
        let version = HeaderValue::from_str(version).map_err(std::io::Error::other)?;
        Ok(self.open(Some((version, forwarded))))
    }
}

impl StreamableHttpOutgoing {
    /// A connection; `stateless` carries the protocol version and forwarded headers of a
    /// stateless exchange.
    fn open(&self, stateless: Option<(HeaderValue, HeaderMap)>) -> Connection {
        let (version, forwarded) = match stateless {
            Some((version, forwarded)) => (Some(version), Some(forwarded)),
            None => (None, None),
        };
        let (frames, inbound) = mpsc::channel(INBOUND_DEPTH);
        let session_id = Arc::new(OnceLock::new());
        let session = Arc::new(UpstreamSession {
            http: self.clone(),
            session_id: session_id.clone(),
            protocol_version: version.map(OnceLock::from).unwrap_or_default(),
            stateless: forwarded,
            frames,
            ended: CancellationToken::new(),
            end_reason: OnceLock::new(),
            tasks: TaskTracker::new(),
        });
        let (outbox, queue) = Outbox::channel();
        let finish = CancellationToken::new();
        let writer = tokio::spawn(session.clone().write(queue, finish.clone()));
        let ended = session.ended.clone();
        let inbound = receiver_stream(inbound).take_until(ended.cancelled_owned());
        Connection {
            transport_type: TransportType::StreamableHttp,
            inbound: Box::pin(inbound),
            outbox,
            closer: Box::new(UpstreamCloser {
                session,
                writer,
                finish,
            }),
            peer_session_id: session_id,
        }
    }
}

/// One upstream MCP session.
struct UpstreamSession {
    http: StreamableHttpOutgoing,
    /// The server's `Mcp-Session-Id`, shared with whoever serves the connection (it goes into
    /// the session's record).
    session_id: Arc<OnceLock<String>>,
    protocol_version: OnceLock<HeaderValue>,
    /// For a stateless exchange: the client's headers to send on.
    stateless: Option<HeaderMap>,
    frames: mpsc::Sender<Frame>,
    /// Fires when the connection is over: closed by membrane or lost upstream.
    ended: CancellationToken,
    end_reason: OnceLock<String>,
    tasks: TaskTracker,
}

/// What a POST was for, as far as its response is concerned.
struct Sent {
    /// The request's id, when the message was a request.
    request_id: Option<String>,
    initialize: bool,
}

impl UpstreamSession {
    /// Sends queued messages until `finish` fires, then what is still queued. Requests go out
    /// on tasks of their own (a slow tool call must not hold up the rest); notifications and
    /// answers are sent in turn.
    async fn write(self: Arc<Self>, queue: mpsc::Receiver<Message>, finish: CancellationToken) {
        drain_until(queue, finish, |message| self.send_message(message)).await;
    }

    async fn send_message(self: &Arc<Self>, message: Message) {
        if message.kind() == Some(MessageKind::Request) {
            self.tasks.spawn(self.clone().post(message));
            return;
        }
        let initialized = message.method() == Some("notifications/initialized");
        self.clone().post(message).await;
        if initialized {
            self.tasks.spawn(self.clone().listen());
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
            self.read_events(response, sent).await;
        } else if content_type_is(response.headers(), "application/json") {
            self.read_json(response, &sent).await;
        } else if sent.request_id.is_some() {
            self.fail(
                &sent,
                &format!("upstream answered HTTP {status} with no message"),
            )
            .await;
        }
    }

    /// Adds the session's headers to a request.
    fn request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut request = request;
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
                let reason = format!("upstream unreachable: {}", error_chain(&e));
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
            let _ = self.frames.send(Frame::Message(message)).await;
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
                let _ = self.frames.send(Frame::Message(error)).await;
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
                let _ = self.frames.send(frame).await;
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
            if resumptions > MAX_RECONNECTS {
                return self
                    .fail(
                        &sent,
                        "the upstream's stream kept breaking before the answer",
                    )
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(position.retry) => {}
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

    /// Relays one SSE response; true once the request it answers is answered (or there is none).
    async fn relay(
        &self,
        response: reqwest::Response,
        sent: &Sent,
        position: &mut StreamPosition,
    ) -> bool {
        let mut events = std::pin::pin!(SseStream::from_bytes_stream(response.bytes_stream()));
        let max = self.http.options.max_message_size;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = self.ended.cancelled() => return true,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upstream SSE stream broke");
                    return sent.request_id.is_none();
                }
                None => return sent.request_id.is_none(),
            };
            if let Some(id) = event.id {
                position.last_event_id = Some(id);
            }
            if let Some(retry) = event.retry {
                position.retry = Duration::from_millis(retry).min(MAX_RETRY);
            }
            let Some(data) = event.data.filter(|data| !data.is_empty()) else {
                continue; // a priming event, or a comment
            };
            if data.len() > max {
                let frame = Frame::Oversized {
                    len: data.len(),
                    id: None,
                    request: false,
                };
                let _ = self.frames.send(frame).await;
                continue;
            }
            let message = Message::new(data);
            let answer = sent.request_id.is_some()
                && matches!(
                    message.kind(),
                    Some(MessageKind::Response | MessageKind::Error)
                )
                && message.id() == sent.request_id.as_deref();
            self.deliver(message, sent).await;
            if answer {
                return true;
            }
        }
    }

    /// Keeps the GET stream open for what the server sends on its own, reconnecting (and
    /// resuming) when it ends; gives up when the server has none (405) or after repeated failures.
    async fn listen(self: Arc<Self>) {
        let none = Sent {
            request_id: None,
            initialize: false,
        };
        let mut position = StreamPosition::default();
        let mut failures = 0;
        while failures < MAX_RECONNECTS && !self.ended.is_cancelled() {
            let get = match position.last_event_id.clone() {
                Some(last) => self.resume_request(&last),
                None => self.request(self.http.client.get(self.http.url.clone())),
            };
            let get = get.header(header::ACCEPT, "text/event-stream");
            let response = tokio::select! {
                response = get.send() => response,
                _ = self.ended.cancelled() => return,
            };
            match response {
                Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                Ok(response)
                    if response.status().is_success()
                        && content_type_is(response.headers(), "text/event-stream") =>
                {
                    failures = 0;
                    self.relay(response, &none, &mut position).await;
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "upstream refused the GET stream");
                    failures += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "upstream GET stream failed");
                    failures += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(position.retry) => {}
                _ = self.ended.cancelled() => return,
            }
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
        let _ = self.frames.send(Frame::Message(message)).await;
    }

    /// Answers a request that the upstream will not answer with a JSON-RPC error.
    async fn fail(&self, sent: &Sent, reason: &str) {
        tracing::warn!(id = sent.request_id.as_deref(), "{reason}");
        if let Some(id) = sent.request_id.as_deref() {
            let error = error_response(Some(id), ErrorCode::UpstreamUnavailable, reason);
            let _ = self.frames.send(Frame::Message(error)).await;
        }
    }

    /// The upstream session is gone: the connection ends.
    fn lose(&self, reason: &str) {
        tracing::info!("{reason}");
        let _ = self.end_reason.set(reason.to_owned());
        self.ended.cancel();
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
    writer: tokio::task::JoinHandle<()>,
    finish: CancellationToken,
}

#[async_trait]
impl ConnectionCloser for UpstreamCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        let UpstreamCloser {
            session,
            writer,
            finish,
        } = *self;
        // What is queued still goes out; then the upstream session is deleted.
        finish.cancel();
        let _ = tokio::time::timeout(grace, writer).await;
        let lost = session.end_reason.get().cloned();
        if lost.is_none() && session.session_id.get().is_some() {
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
            max_message_size: 1024,
        }
    }

    #[test]
    fn upstream_urls_are_checked_up_front() {
        assert!(StreamableHttpOutgoing::new("http://127.0.0.1:3000/mcp", options()).is_ok());
        for (url, says) in [
            ("https://example.com/mcp", "TLS"),
            ("ftp://example.com/mcp", "not an http"),
            ("not a url", "invalid upstream URL"),
        ] {
            let error = StreamableHttpOutgoing::new(url, options()).unwrap_err();
            assert!(error.to_string().contains(says), "{url}: {error}");
        }
    }
}
