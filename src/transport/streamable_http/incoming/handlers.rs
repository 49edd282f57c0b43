//! The front's handlers, once its checks have passed. POST feeds one message (or a
//! 2025-03-26 batch) into its session, opening the session first for `initialize` or a
//! stateless request; the answers of its requests come back as one JSON response or as an SSE
//! stream. With an upstream that frames its own answers (HTTP), the response takes the
//! upstream's framing; otherwise membrane answers in JSON when the answer is the first thing
//! to arrive, within a second, and streams otherwise. GET opens the session's standalone
//! stream or resumes one after `Last-Event-ID`; DELETE ends the session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::checks::{
    AcceptsEvents, AcceptsMcp, Caller, ClientOf, McpBody, Refusal, Stateful, Version, endpoint_url,
    insufficient_scope, lookup,
};
use super::{ClientSession, Front, client_connection};
use crate::protocol::{ErrorCode, INITIALIZE, Message, MessageKind, error_response};
use crate::session::SessionId;
use crate::transport::streamable_http::{
    AttachError, EventId, LAST_EVENT_ID, MCP_METHOD, MCP_NAME, MCP_SESSION_ID,
    STATELESS_PROTOCOL_VERSION, StreamEvent, StreamId, allows_batches, allows_priming,
    decode_header_text, named_target,
};
use crate::transport::{Admission, Opening, ResponseMode, receiver_stream};

/// How long a request may go without any message back before its response becomes a stream
/// (so slow requests get keep-alives and can be resumed), when membrane chooses the framing.
const STREAM_AFTER: Duration = Duration::from_secs(1);

/// A POST: one JSON-RPC message (or a 2025-03-26 batch) into its session.
pub async fn post(
    State(front): State<Arc<Front>>,
    Version(version): Version,
    _: AcceptsMcp,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: McpBody,
) -> Result<Response, Refusal> {
    let message = Message::new(body.bytes.clone());
    let kind = message
        .validate()
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.code(), &e.to_string()))?;
    let elements = match kind {
        MessageKind::Batch => batch_elements(&front, &message, version)?,
        _ => vec![message.clone()],
    };
    if let (Some(auth), Some(principal)) = (&front.auth, &caller)
        && !auth.scopes.is_empty()
    {
        for element in &elements {
            let Some(method) = element.method() else {
                continue;
            };
            let tool = named_target(element);
            let missing = auth.scopes.missing(principal, method, tool.as_deref());
            if !missing.is_empty() {
                let missing: Vec<String> = missing.into_iter().collect();
                tracing::info!(subject = %principal.subject, method, ?missing, "refused for lack of scope");
                return Err(insufficient_scope(&front, &headers, element.id(), &missing));
            }
        }
    }
    let initialize = kind == MessageKind::Request && message.method() == Some(INITIALIZE);
    let has_session = headers.contains_key(&MCP_SESSION_ID);
    let stateless = !initialize && !has_session && version >= STATELESS_PROTOCOL_VERSION;
    let (client, guard) = if stateless {
        check_mirrored_headers(&headers, &message)?;
        let exchange = Some((version.to_owned(), forwarded_headers(&headers)));
        let client = open(&front, caller, exchange).await?;
        // A stateless exchange is a session of one request, ended with its response.
        let guard = SessionGuard::new(&front, &client);
        (client, Some(guard))
    } else if initialize && !has_session {
        let client = open(&front, caller, None).await?;
        (client.clone(), Some(SessionGuard::new(&front, &client)))
    } else {
        (lookup(&front, &headers, caller.as_ref()).await?, None)
    };
    let requests: Vec<Message> = elements
        .into_iter()
        .filter(|m| m.kind() == Some(MessageKind::Request))
        .collect();
    if requests.is_empty() {
        return if client.send(message).await {
            Ok(StatusCode::ACCEPTED.into_response())
        } else {
            Err(Refusal::session_not_found())
        };
    }
    let (stream, mut answers) = client.streams.open(&requests).map_err(|e| match e {
        AttachError::TooMany => Refusal::answering(
            StatusCode::TOO_MANY_REQUESTS,
            requests[0].id(),
            ErrorCode::LimitExceeded,
            &e.to_string(),
        ),
        _ => Refusal::session_not_found(),
    })?;
    // With one request, an upstream that frames its own answers tells how it answers this one.
    let single = (requests.len() == 1).then(|| requests[0].id()).flatten();
    let mut announced = single.and_then(|id| client.answer_modes.expect(id));
    if !client.send(message).await {
        return Err(Refusal::session_not_found());
    }
    let first = first_event(
        &mut answers,
        &mut announced,
        !client.answer_modes.announced(),
    )
    .await;
    if let Some(id) = single {
        client.answer_modes.forget(id);
    }
    let first = match first {
        First::Event(event) => Some(event),
        First::Stream => None,
        First::Ended => return Err(Refusal::session_not_found()),
    };
    let answer = first.as_ref().filter(|first| {
        single.is_some()
            && matches!(
                first.message.kind(),
                Some(MessageKind::Response | MessageKind::Error)
            )
            && first.message.id() == single
    });
    let answered = answer.is_some();
    if initialize {
        if answer.is_some_and(|a| a.message.kind() == Some(MessageKind::Error)) {
            // No session came of it: the guard ends ours rather than keep one nobody can use.
            return Ok(json_response(&answer.expect("checked").message));
        }
        if let Some(guard) = guard {
            guard.disarm();
        }
        let mut response = respond(
            &front, &client, stream, version, first, answered, answers, None,
        );
        let id = client.id.get().expect("admitted sessions have an id");
        let value = HeaderValue::from_str(id.as_str()).expect("session ids are visible ASCII");
        response.headers_mut().insert(MCP_SESSION_ID, value);
        return Ok(response);
    }
    // Past initialize, a guard is a stateless exchange's.
    let exchange = guard;
    if let (Some(answer), true) = (answer, stateless) {
        return Ok((
            stateless_status(&answer.message, &requests[0]),
            json_response(&answer.message),
        )
            .into_response());
    }
    Ok(respond(
        &front, &client, stream, version, first, answered, answers, exchange,
    ))
}

/// What came first for a POST stream.
enum First {
    Event(StreamEvent),
    /// The response is to be a stream (the upstream streams it, or it takes a while).
    Stream,
    /// The session ended.
    Ended,
}

/// Waits for the first message of a POST stream, or for word that its response streams: from
/// the upstream's announcement, or (when membrane chooses) after [`STREAM_AFTER`].
async fn first_event(
    answers: &mut mpsc::Receiver<StreamEvent>,
    announced: &mut Option<tokio::sync::oneshot::Receiver<ResponseMode>>,
    we_choose: bool,
) -> First {
    let patience = async {
        if we_choose {
            tokio::time::sleep(STREAM_AFTER).await
        } else {
            std::future::pending().await
        }
    };
    let announcement = async {
        match announced {
            Some(mode) => match mode.await {
                Ok(ResponseMode::SseStream) => {}
                // JSON (or no word): wait for the answer itself.
                _ => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        first = answers.recv() => first.map_or(First::Ended, First::Event),
        _ = announcement => First::Stream,
        _ = patience => First::Stream,
    }
}

/// The response for a POST stream: JSON when `first` is its one answer, else an SSE stream of
/// what came and what follows (primed, for clients that resume, when the revision has them; a
/// stateless exchange, which cannot be resumed, ends its session with its stream).
#[allow(clippy::too_many_arguments)]
fn respond(
    front: &Front,
    client: &ClientSession,
    stream: StreamId,
    version: &str,
    first: Option<StreamEvent>,
    answered: bool,
    answers: mpsc::Receiver<StreamEvent>,
    exchange: Option<SessionGuard>,
) -> Response {
    if let (Some(first), true) = (&first, answered) {
        client.streams.discard(stream);
        return json_response(&first.message);
    }
    client.streams.streaming(stream);
    let priming = (allows_priming(version) && exchange.is_none())
        .then(|| priming_event(stream, front.options.retry));
    let first = first.map(|first| Ok(sse_event(first)));
    let events = futures::stream::iter(priming.into_iter().chain(first))
        .chain(live_events(answers))
        // A stateless exchange ends with its stream.
        .map(move |event| {
            let _ = &exchange;
            event
        });
    sse_response(events, front.options.keep_alive)
}

/// A GET: the standalone stream, or the rest of a stream after `Last-Event-ID`.
pub async fn get(
    State(front): State<Arc<Front>>,
    _: AcceptsEvents,
    _: Stateful,
    ClientOf(client): ClientOf,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let standalone = client.streams.standalone();
    let mut takes_server_messages = true;
    let attached = match headers.get(&LAST_EVENT_ID) {
        Some(last) => {
            let last: EventId = last
                .to_str()
                .ok()
                .and_then(|last| last.parse().ok())
                .ok_or_else(|| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRequest,
                        "malformed Last-Event-ID",
                    )
                })?;
            match client.streams.resume(last) {
                Err(AttachError::UnknownStream) if front.events.is_some() => {
                    Ok(resume_stored(&front, &client, last).await?)
                }
                resumed => {
                    takes_server_messages = last.stream == standalone;
                    resumed
                }
            }
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
            AttachError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        };
        Refusal::new(status, ErrorCode::InvalidRequest, &e.to_string())
    })?;
    // While this stream is open, an HTTP upstream keeps its own GET stream open for it.
    let held = (takes_server_messages && live.is_some()).then(|| client.listening.hold());
    let replay = futures::stream::iter(replay.into_iter().map(|event| Ok(sse_event(event))));
    let live = futures::stream::iter(live).flat_map(live_events);
    let events = replay.chain(live).map(move |event| {
        let _held = &held;
        event
    });
    Ok(sse_response(events, front.options.keep_alive))
}

/// Resumes a stream this process does not have (it was served before a restart, or by another
/// replica) from the event store: what it kept after `last`, then this process's standalone
/// stream, unless someone already reads that.
async fn resume_stored(
    front: &Front,
    client: &ClientSession,
    last: EventId,
) -> Result<(Vec<StreamEvent>, Option<mpsc::Receiver<StreamEvent>>), Refusal> {
    let (Some(events), Some(id)) = (&front.events, client.id.get()) else {
        return Err(Refusal::session_not_found());
    };
    let stored = events
        .after(id, last.stream.0, last.seq)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InvalidRequest,
                &format!("cannot replay the stream: {e}"),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        })?;
    let mut replay: Vec<StreamEvent> = stored
        .into_iter()
        .map(|event| StreamEvent {
            id: EventId {
                stream: StreamId(event.stream),
                seq: event.seq,
            },
            message: event.message,
        })
        .collect();
    let live = match client.streams.attach_standalone() {
        Ok((backlog, live)) => {
            replay.extend(backlog);
            Some(live)
        }
        Err(_) => None,
    };
    Ok((replay, live))
}

/// A DELETE: the session ends, upstream too.
pub async fn delete(
    State(front): State<Arc<Front>>,
    _: Stateful,
    ClientOf(client): ClientOf,
) -> StatusCode {
    if let Some(id) = client.id.get() {
        front.end(id);
        tracing::info!(session = %id.redacted(), "client ended the session");
    }
    StatusCode::OK
}

/// The protected resource metadata (RFC 9728) of the endpoint.
pub async fn metadata(State(front): State<Arc<Front>>, headers: HeaderMap) -> Response {
    let Some(auth) = &front.auth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let document = auth.metadata.document(&endpoint_url(&front, &headers));
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// Opens a session: the new client side goes to whoever accepts connections, and the request
/// learns whether a session came of it.
async fn open(
    front: &Arc<Front>,
    principal: Option<Arc<crate::auth::Principal>>,
    stateless: Option<(String, HeaderMap)>,
) -> Result<Arc<ClientSession>, Refusal> {
    let (opening, outcome) = Opening::awaiting(principal, stateless);
    admit(front, opening, outcome).await
}

/// Revives a session this process does not serve from the session store (it was opened
/// before a restart, or on another replica). Concurrent requests for the same session share
/// one revival.
pub(super) async fn revive(
    front: &Arc<Front>,
    id: SessionId,
    principal: Option<Arc<crate::auth::Principal>>,
) -> Result<Arc<ClientSession>, Refusal> {
    let revival = {
        let mut revivals = front.revivals();
        revivals
            .entry(id.clone())
            .or_insert_with(|| {
                let (front, id) = (front.clone(), id.clone());
                async move {
                    let (mut opening, outcome) = Opening::awaiting(principal, None);
                    opening.resume = Some(id.clone());
                    let revived = admit(&front, opening, outcome).await;
                    front.revivals().remove(&id);
                    revived
                }
                .boxed()
                .shared()
            })
            .clone()
    };
    revival.await
}

/// Hands a new client side to whoever accepts connections and waits for its admission.
async fn admit(
    front: &Arc<Front>,
    opening: Opening,
    outcome: tokio::sync::oneshot::Receiver<Admission>,
) -> Result<Arc<ClientSession>, Refusal> {
    let (connection, client) = client_connection(front, opening);
    let busy = |reason: &str| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InvalidRequest,
            reason,
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    };
    if front.accept.try_send(connection).is_err() {
        return Err(busy(
            "membrane is too busy to open a session; retry shortly",
        ));
    }
    // Until the session is registered, a client that goes away takes it with it.
    let unclaimed = SessionGuard::unregistered(&client);
    match outcome.await {
        Ok(Admission::Admitted(id)) => {
            if let Some(events) = &front.events {
                client.streams.persist(id.clone(), events.clone());
            }
            let _ = client.id.set(id.clone());
            front.clients().insert(id, client.clone());
            unclaimed.disarm();
            Ok(client)
        }
        Ok(Admission::Busy(reason)) => Err(busy(&reason)),
        Ok(Admission::Unreachable(reason)) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnavailable,
            &reason,
        )),
        Ok(Admission::Unknown) => Err(Refusal::session_not_found()),
        Err(_) => Err(busy("membrane is shutting down")),
    }
}

/// Ends a session when dropped, unless disarmed: a session opened for a request whose client
/// went away, or a stateless exchange whose response is over.
struct SessionGuard {
    front: Option<std::sync::Weak<Front>>,
    client: Arc<ClientSession>,
    armed: bool,
}

impl SessionGuard {
    fn new(front: &Arc<Front>, client: &Arc<ClientSession>) -> Self {
        Self {
            front: Some(Arc::downgrade(front)),
            client: client.clone(),
            armed: true,
        }
    }

    /// A guard for a session not registered yet: dropping it ends the client side alone.
    fn unregistered(client: &Arc<ClientSession>) -> Self {
        Self {
            front: None,
            client: client.clone(),
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match (
            self.front.as_ref().and_then(|f| f.upgrade()),
            self.client.id.get(),
        ) {
            (Some(front), Some(id)) => front.end(id),
            _ => self.client.end(),
        }
    }
}

/// The elements of a batch, which the revision must allow and which must each be a valid
/// message (a batch with any invalid element is refused whole, each element's error in the
/// body as JSON-RPC asks), and no more than the configured number.
fn batch_elements(front: &Front, batch: &Message, version: &str) -> Result<Vec<Message>, Refusal> {
    if !allows_batches(version) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            &format!("JSON-RPC batches are not part of protocol version {version}"),
        ));
    }
    let max = front.options.max_batch_size;
    if batch.batch_len() > max {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            &format!("a batch may hold at most {max} messages"),
        ));
    }
    let elements = batch
        .batch_elements()
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.code(), &e.to_string()))?;
    if elements.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "empty batch",
        ));
    }
    let errors: Vec<Message> = elements
        .iter()
        .filter_map(|element| match element.validate() {
            Ok(MessageKind::Batch) => Some(error_response(
                None,
                ErrorCode::InvalidRequest,
                "nested batch",
            )),
            Ok(_) => None,
            Err(e) => Some(error_response(None, e.code(), &e.to_string())),
        })
        .collect();
    if !errors.is_empty() {
        let mut body = b"[".to_vec();
        for (n, error) in errors.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(error.raw());
        }
        body.push(b']');
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            body: body.into(),
            headers: Vec::new(),
        });
    }
    Ok(elements)
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
        Err(Refusal::answering(
            StatusCode::BAD_REQUEST,
            message.id(),
            ErrorCode::HeaderMismatch,
            &format!("Header mismatch: {what}"),
        ))
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
/// `Mcp-Param-*`. Nothing else the client sent (its `Authorization` above all) goes upstream.
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("mcp-param-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
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
        Bytes::clone(message.raw()),
    )
        .into_response()
}
