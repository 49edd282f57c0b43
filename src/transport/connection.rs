//! [`Connection`]: one established conversation with a peer, as a stream of inbound [`Frame`]s,
//! an [`Outbox`] drained by a writer task, and a [`ConnectionCloser`] that ends it gracefully.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TransportType;
use crate::protocol::Message;

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

/// Frames arriving from the peer, in order; ends when the peer closes its side.
pub type Inbound = Pin<Box<dyn Stream<Item = Frame> + Send>>;

/// Messages queued for delivery to the peer. Cloneable; delivery order is send order.
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::Sender<Message>);

impl Outbox {
    /// Queues a message; waits while the peer is slow to read (back-pressure). Returns `false`
    /// when the connection is closed and the message was not queued.
    pub async fn send(&self, message: Message) -> bool {
        self.0.send(message).await.is_ok()
    }
}

impl Outbox {
    /// An outbox whose messages land in the returned receiver.
    pub(crate) fn channel() -> (Outbox, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
        (Outbox(tx), rx)
    }
}

/// Hands each queued message to `each` until `finish` fires, then refuses new messages and
/// hands over those still queued: how a connection's sender ends without losing a message.
pub(crate) async fn drain_until<F: Future<Output = ()>>(
    mut queue: mpsc::Receiver<Message>,
    finish: CancellationToken,
    mut each: impl FnMut(Message) -> F,
) {
    loop {
        let message = tokio::select! {
            biased;
            message = queue.recv() => message,
            _ = finish.cancelled() => None,
        };
        let Some(message) = message else { break };
        each(message).await;
    }
    queue.close();
    while let Some(message) = queue.recv().await {
        each(message).await;
    }
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
}

/// Depth of each outbox queue: deep enough to absorb bursts, bounded so a stalled peer pushes
/// back on its sender instead of growing memory.
const OUTBOX_DEPTH: usize = 256;

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
        let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX_DEPTH);
        let (finish, mut finishing) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    message = rx.recv() => message,
                    _ = &mut finishing => None,
                };
                let Some(message) = message else { break };
                write_line(&mut sink, &message).await?;
                if rx.is_empty() {
                    sink.flush().await?;
                }
            }
            // Refuse new messages but deliver what is queued.
            rx.close();
            while let Some(message) = rx.recv().await {
                write_line(&mut sink, &message).await?;
            }
            sink.flush().await?;
            sink.shutdown().await
        });
        (Outbox(tx), Writer { finish, task })
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
