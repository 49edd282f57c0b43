//! [`StdioIncoming`]: the client side in forward mode, membrane's own stdin and stdout.
//!
//! When they are pipes or sockets (as when an MCP client spawns membrane) they are driven
//! non-blocking and epoll-registered; tokio's `stdin()`/`stdout()` would cost a blocking-pool
//! thread hop per read and write. Other kinds (a terminal, a file) fall back to those.
//! Nothing but MCP messages is ever written to stdout.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio_util::codec::FramedRead;

use super::connection::Writer;
use super::{
    Closed, Connection, ConnectionCloser, Inbound, IncomingTransport, NewlineCodec, TransportError,
    TransportType,
};

/// Accepts exactly one connection: the process's stdin and stdout.
pub struct StdioIncoming {
    max_message_size: usize,
    accepted: bool,
}

impl StdioIncoming {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size,
            accepted: false,
        }
    }
}

#[async_trait]
impl IncomingTransport for StdioIncoming {
    fn transport_type(&self) -> TransportType {
        TransportType::Stdio
    }

    async fn accept(&mut self) -> Result<Option<Connection>, TransportError> {
        if std::mem::replace(&mut self.accepted, true) {
            return Ok(None);
        }
        let reader: Box<dyn AsyncRead + Send + Unpin> = match event_driven(std::io::stdin()) {
            Some(Endpoint::Pipe(fd)) => Box::new(pipe::Receiver::from_owned_fd(fd)?),
            Some(Endpoint::Socket(socket)) => Box::new(socket),
            None => Box::new(tokio::io::stdin()),
        };
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match event_driven(std::io::stdout()) {
            Some(Endpoint::Pipe(fd)) => Box::new(pipe::Sender::from_owned_fd(fd)?),
            Some(Endpoint::Socket(socket)) => Box::new(socket),
            None => Box::new(tokio::io::stdout()),
        };
        let (outbox, writer) = Writer::spawn(writer);
        let inbound =
            FramedRead::with_capacity(reader, NewlineCodec::new(self.max_message_size), 64 * 1024)
                .filter_map(|frame| async move {
                    frame
                        .map_err(|e| tracing::warn!(error = %e, "reading stdin failed"))
                        .ok()
                });
        Ok(Some(Connection::new(
            TransportType::Stdio,
            Inbound::stream(inbound),
            outbox,
            Box::new(StdioCloser { writer }),
        )))
    }
}

enum Endpoint {
    Pipe(OwnedFd),
    Socket(UnixStream),
}

/// A duplicate of a standard stream's descriptor, when it can be driven by epoll.
fn event_driven(stream: impl AsFd) -> Option<Endpoint> {
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    let file_type = std::fs::File::from(fd.try_clone().ok()?)
        .metadata()
        .ok()?
        .file_type();
    if file_type.is_fifo() {
        Some(Endpoint::Pipe(fd))
    } else if file_type.is_socket() {
        let socket = std::os::unix::net::UnixStream::from(fd);
        socket.set_nonblocking(true).ok()?;
        UnixStream::from_std(socket).ok().map(Endpoint::Socket)
    } else {
        None
    }
}

struct StdioCloser {
    writer: Writer,
}

#[async_trait]
impl ConnectionCloser for StdioCloser {
    async fn close(self: Box<Self>, grace: std::time::Duration) -> Closed {
        self.writer.finish(grace).await;
        Closed {
            exit_code: None,
            description: "client connection closed".into(),
        }
    }
}
