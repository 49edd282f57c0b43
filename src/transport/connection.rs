//! [`Connection`]: one established conversation with a peer, as its [`Inbound`] frames, an
//! [`Outbox`] of messages for it, and a [`ConnectionCloser`] that ends it gracefully.
//! A client connection also carries its [`Opening`]: who opened it and the way to tell it
//! whether a session was opened for it ([`Admission`]). [`AnswerModes`] let an HTTP upstream
//! tell an HTTP client side how each answer is framed, so it can answer in kind.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::cancel::wait_until;
use super::{Queue, ResponseMode, TransportType};
use crate::auth::Principal;
use crate::protocol::{Message, id_key};
use crate::session::SessionId;

/// What a peer delivered: a message, or a message too large to accept.
#[derive(Debug, Clone)]
pub enum Frame {
    Message(Message),
    /// A message over the size limit, discarded. `id` is its JSON-RPC id when it could be read
    /// from the message's first bytes, so the requester can still be answered; `request` says
    /// whether those bytes showed a method (a request) rather than none (an answer).
    Oversized {
        len: usize,
        id: Option<String>,
        request: bool,
    },
}

/// Frames arriving from the peer, in order, until the peer closes its side: a stream that the
/// session reads (a byte stream's framing), or a [`Queue`] that the transport fills as requests
/// come in and whose consumer the session installs (HTTP), so nothing waits for it meanwhile.
pub enum Inbound {
    Stream(Pin<Box<dyn Stream<Item = Frame> + Send>>),
    Queue(Queue<Frame>),
}

impl Inbound {
    pub fn stream(frames: impl Stream<Item = Frame> + Send + 'static) -> Self {
        Inbound::Stream(Box::pin(frames))
    }

    /// The next frame, for a reader that pulls them one by one (replay, `--against`).
    pub async fn next(&mut self) -> Option<Frame> {
        if let Inbound::Queue(queue) = self {
            *self = Inbound::Stream(Box::pin(pulled(queue.clone())));
        }
        match self {
            Inbound::Stream(frames) => frames.next().await,
            Inbound::Queue(_) => unreachable!("turned into a stream above"),
        }
    }
}

/// A queue's frames as a stream, ending when the queue has.
fn pulled(queue: Queue<Frame>) -> impl Stream<Item = Frame> + Send + 'static {
    let (taken, frames) = flume::bounded(1);
    queue.consume(move |frame| {
        let taken = taken.clone();
        async move {
            let _ = taken.send_async(frame).await;
        }
    });
    futures::stream::unfold((frames, queue), |(frames, queue)| async move {
        let frame = tokio::select! {
            biased;
            frame = frames.recv_async() => frame.ok(),
            () = queue.ended() => frames.try_recv().ok(),
        };
        frame.map(|frame| (frame, (frames, queue)))
    })
}

/// Messages queued for delivery to the peer. Cloneable; delivery order is send order. Either
/// a channel that a writer task drains (a byte stream), or a [`Queue`] whose consumer delivers
/// each message (HTTP). Both take memory only for what they hold.
#[derive(Debug, Clone)]
pub struct Outbox(Via);

#[derive(Debug, Clone)]
enum Via {
    Channel(flume::Sender<Message>),
    Queue(Queue<Message>),
}

impl Outbox {
    /// Queues a message; waits while the peer is slow to read (back-pressure). Resolves to
    /// `false` when the connection is closed and the message was not queued.
    pub fn send(&self, message: Message) -> Sending<'_> {
        match &self.0 {
            Via::Queue(queue) => queue.push(message),
            Via::Channel(sender) => match sender.try_send(message) {
                Ok(()) => Sending::Done(true),
                Err(flume::TrySendError::Disconnected(_)) => Sending::Done(false),
                Err(flume::TrySendError::Full(message)) => {
                    Sending::Waiting(Box::pin(
                        async move { sender.send_async(message).await.is_ok() },
                    ))
                }
            },
        }
    }
}

impl From<Queue<Message>> for Outbox {
    fn from(queue: Queue<Message>) -> Self {
        Outbox(Via::Queue(queue))
    }
}

/// A message on its way into an [`Outbox`]. One that fits is queued at once, so this is a flag
/// that adds nothing to the state of whoever awaits it (an idle session's tasks stay small);
/// only a full queue's wait is kept, on the heap.
pub enum Sending<'a> {
    Done(bool),
    Waiting(Pin<Box<dyn Future<Output = bool> + Send + 'a>>),
}

impl Future for Sending<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        match self.get_mut() {
            Sending::Done(sent) => std::task::Poll::Ready(*sent),
            Sending::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

impl Outbox {
    /// An outbox whose messages land in the returned receiver (for a transport to drain).
    pub fn channel() -> (Outbox, flume::Receiver<Message>) {
        let (tx, rx) = flume::bounded(OUTBOX_DEPTH);
        (Outbox(Via::Channel(tx)), rx)
    }
}

/// Closes a queue: later sends fail; returns what it still held.
pub(crate) fn close<T>(queue: flume::Receiver<T>) -> Vec<T> {
    let left = queue.drain().collect();
    drop(queue);
    left
}

/// The messages of a channel as a stream, for connections fed by tasks.
pub(crate) fn receiver_stream<T: Send + 'static>(
    mut receiver: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Exit code of an upstream process, when there was one and it exited normally.
    pub exit_code: Option<i32>,
    /// Human-readable account, e.g. "exited with exit status: 3".
    pub description: String,
}

/// Ends a connection: stops accepting messages, delivers the queued ones, then releases the peer
/// (for a child process: closes its stdin and waits `grace` before killing it).
#[async_trait]
pub trait ConnectionCloser: Send {
    async fn close(self: Box<Self>, grace: Duration) -> Closed;

    /// The conversation is ending: what the peer starts from now on is refused (an HTTP
    /// client's requests on the session get 404 at once), while what is queued for it still
    /// goes out until [`ConnectionCloser::close`].
    fn closing(&self) {}

    /// Ends the connection but leaves the peer's session open, for a later connection to
    /// resume (an HTTP upstream's session outlives a restart of membrane); for peers without
    /// such sessions, the same as [`ConnectionCloser::close`].
    async fn detach(self: Box<Self>, grace: Duration) -> Closed {
        self.close(grace).await
    }
}

/// One conversation with a peer.
pub struct Connection {
    pub transport_type: TransportType,
    pub inbound: Inbound,
    pub outbox: Outbox,
    pub closer: Box<dyn ConnectionCloser>,
    /// The id the peer gave this conversation, once it has (a Streamable HTTP server's
    /// `Mcp-Session-Id`); set before the message that completes the handshake is delivered.
    pub peer_session_id: Arc<OnceLock<String>>,
    /// How answers are framed: announced by an HTTP upstream, heard by an HTTP client side.
    pub answer_modes: AnswerModes,
    /// For a client connection: who opened it, and what it waits to hear.
    pub opening: Opening,
    /// For a client connection: whether it takes what the server starts right now.
    pub listening: Listening,
}

impl Connection {
    pub fn new(
        transport_type: TransportType,
        inbound: Inbound,
        outbox: Outbox,
        closer: Box<dyn ConnectionCloser>,
    ) -> Self {
        Self {
            transport_type,
            inbound,
            outbox,
            closer,
            peer_session_id: Arc::default(),
            answer_modes: AnswerModes::default(),
            opening: Opening::default(),
            listening: Listening::always(),
        }
    }
}

/// What a client asked for by opening a connection, and the way to answer it.
#[derive(Debug, Default)]
pub struct Opening {
    /// Who the client authenticated as, when the transport authenticates.
    pub principal: Option<Arc<Principal>>,
    /// For one stateless exchange (protocol 2026-07-28): the revision, and the client's headers
    /// an HTTP upstream must see too (`Mcp-Param-*`).
    pub stateless: Option<(String, axum::http::HeaderMap)>,
    /// For a session the client already has (its id) but this process does not serve: to be
    /// revived from the session store.
    pub resume: Option<SessionId>,
    /// Where the outcome goes, for a transport that must hear it (HTTP answers the request
    /// that opened the session with it).
    pub(crate) answer: Option<oneshot::Sender<Admission>>,
}

impl Opening {
    /// An opening whose outcome the returned receiver hears.
    pub(crate) fn awaiting(
        principal: Option<Arc<Principal>>,
        stateless: Option<(String, axum::http::HeaderMap)>,
    ) -> (Self, oneshot::Receiver<Admission>) {
        let (answer, outcome) = oneshot::channel();
        let opening = Self {
            principal,
            stateless,
            resume: None,
            answer: Some(answer),
        };
        (opening, outcome)
    }

    /// Tells the client side how its opening went (once; later calls do nothing).
    pub fn answer(&mut self, admission: Admission) {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(admission);
        }
    }
}

/// Whether the client side holds a stream for what the server starts on its own: an HTTP
/// client while its GET stream is open, any other client always. An HTTP upstream keeps its own
/// GET stream open only meanwhile (and starts the task that reads it only then), so an idle
/// session holds no upstream connection and no task for it.
#[derive(Clone)]
pub struct Listening(Arc<ListeningShared>);

struct ListeningShared {
    holders: AtomicUsize,
    /// Woken at every change of `holders`.
    changed: Notify,
    /// The upstream side's start, called when the client side takes hold of a stream.
    on_hold: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Listening").field(&self.holders()).finish()
    }
}

impl Listening {
    /// A client side that always takes what the server starts (stdio).
    pub fn always() -> Self {
        Self::with_holders(1)
    }

    /// A client side that takes it only while it holds a stream for it.
    pub fn while_held() -> Self {
        Self::with_holders(0)
    }

    fn with_holders(holders: usize) -> Self {
        Self(Arc::new(ListeningShared {
            holders: AtomicUsize::new(holders),
            changed: Notify::new(),
            on_hold: OnceLock::new(),
        }))
    }

    /// The client side holds a stream for it until the returned guard is dropped.
    pub fn hold(&self) -> ListeningHeld {
        self.0.holders.fetch_add(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
        if let Some(start) = self.0.on_hold.get() {
            start();
        }
        ListeningHeld(self.0.clone())
    }

    /// How many streams the client side holds for it.
    pub fn holders(&self) -> usize {
        self.0.holders.load(Ordering::Acquire)
    }

    /// For the upstream side: resolves once the client side holds no stream.
    pub async fn released(&self) {
        wait_until(&self.0.changed, || self.holders() == 0).await
    }

    /// For the upstream side: calls `start` now if the client side holds a stream, and each
    /// time it takes hold of one from now on (`start` must tell a first call from the others).
    pub fn on_hold(&self, start: impl Fn() + Send + Sync + 'static) {
        let start = self.0.on_hold.get_or_init(|| Box::new(start));
        if self.holders() > 0 {
            start();
        }
    }
}

/// A stream the client side holds for what the server starts; see [`Listening::hold`].
pub struct ListeningHeld(Arc<ListeningShared>);

impl Drop for ListeningHeld {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Whether a session was opened for a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(SessionId),
    /// No room for another session (the limit, or the store refused): try again later.
    Busy(String),
    /// The upstream server could not be reached or started.
    Unreachable(String),
    /// The session to resume is not known (any more), or cannot be revived here.
    Unknown,
}

/// How an upstream frames its answer to each request (JSON, or an SSE stream), announced as
/// soon as it knows (an HTTP upstream's response headers), so that an HTTP client side answers
/// its client the same way. Each connection has one; the pipeline links an announcing upstream
/// to its session's client side.
#[derive(Debug, Clone, Default)]
pub struct AnswerModes(Arc<AnswerModesShared>);

#[derive(Debug, Default)]
struct AnswerModesShared {
    /// Upstream side: the client side that hears announcements, once linked.
    listener: OnceLock<AnswerModes>,
    /// Client side: whether an announcing upstream is linked.
    announced: AtomicBool,
    /// Client side: requests waiting for their announcement, by id key.
    waiting: Mutex<HashMap<String, oneshot::Sender<ResponseMode>>>,
}

impl AnswerModes {
    /// Links this (upstream) side's announcements to a client side.
    pub fn link(&self, client: &AnswerModes) {
        client.0.announced.store(true, Ordering::Release);
        let _ = self.0.listener.set(client.clone());
    }

    /// Upstream side: the answer to `request_id` comes framed as `mode`.
    pub fn announce(&self, request_id: &str, mode: ResponseMode) {
        if let Some(client) = self.0.listener.get()
            && let Some(waiter) = client.waiting().remove(id_key(request_id).as_ref())
        {
            let _ = waiter.send(mode);
        }
    }

    /// Client side: whether an announcing upstream is linked (else the client side chooses how
    /// to frame answers itself).
    pub fn announced(&self) -> bool {
        self.0.announced.load(Ordering::Acquire)
    }

    /// Client side: the announcement for `request_id`, when an announcing upstream is linked.
    pub fn expect(&self, request_id: &str) -> Option<oneshot::Receiver<ResponseMode>> {
        if !self.0.announced.load(Ordering::Acquire) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id_key(request_id).into_owned(), tx);
        Some(rx)
    }

    /// Client side: stops waiting for `request_id`'s announcement.
    pub fn forget(&self, request_id: &str) {
        self.waiting().remove(id_key(request_id).as_ref());
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<ResponseMode>>> {
        self.0.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Depth of each outbox queue: deep enough to absorb bursts, bounded so a stalled peer pushes
/// back on its sender instead of growing memory.
pub(crate) const OUTBOX_DEPTH: usize = 256;

/// Bytes gathered before a write; larger messages go out directly.
const WRITE_BUFFER: usize = 64 * 1024;

/// The writer half of a connection: a task that writes queued messages, newline-delimited, and
/// flushes whenever the queue runs empty.
pub(crate) struct Writer {
    finish: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn write_line<W: AsyncWrite + Unpin>(
    sink: &mut BufWriter<W>,
    message: &Message,
) -> std::io::Result<()> {
    sink.write_all(message.raw()).await?;
    sink.write_all(b"\n").await
}

impl Writer {
    pub(crate) fn spawn<W>(sink: W) -> (Outbox, Writer)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // Buffered, so a message and its newline leave in one write and a burst in a few.
        let mut sink = BufWriter::with_capacity(WRITE_BUFFER, sink);
        let (tx, rx) = flume::bounded::<Message>(OUTBOX_DEPTH);
        let (finish, mut finishing) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    message = rx.recv_async() => message.ok(),
                    _ = &mut finishing => None,
                };
                let Some(message) = message else { break };
                write_line(&mut sink, &message).await?;
                if rx.is_empty() {
                    sink.flush().await?;
                }
            }
            // Refuse new messages but deliver what is queued.
            for message in close(rx) {
                write_line(&mut sink, &message).await?;
            }
            sink.flush().await?;
            sink.shutdown().await
        });
        (Outbox(Via::Channel(tx)), Writer { finish, task })
    }

    /// Delivers what is queued, then closes the sink; gives up after `grace` (a peer that no
    /// longer reads).
    pub(crate) async fn finish(mut self, grace: Duration) {
        let _ = self.finish.send(());
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::debug!(error = %e, "peer stopped reading before the end"),
            Ok(Err(e)) => tracing::warn!(error = %e, "writer task failed"),
            Err(_) => {
                tracing::warn!("peer stopped reading; undelivered messages dropped");
                self.task.abort();
            }
        }
    }
}
