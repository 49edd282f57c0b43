//! How messages get in and out of membrane. [`TransportType`] names a side's transport and
//! [`ResponseMode`] how HTTP answers were framed; [`IncomingTransport`] accepts client
//! connections and [`OutgoingTransport`] opens upstream ones. Either yields a [`Connection`]: a
//! stream of [`Frame`]s arriving from the peer and an [`Outbox`] of messages to deliver to it.
//! Transports know framing, not sessions or policy.

mod connection;
mod framing;
mod stdio;
mod subprocess;

use async_trait::async_trait;

pub use connection::{Closed, Connection, ConnectionCloser, Frame, Inbound, Outbox};
pub use framing::{DEFAULT_MAX_MESSAGE_SIZE, NewlineCodec};
pub use stdio::StdioIncoming;
pub use subprocess::SubprocessOutgoing;

/// The transport of one side of a session (MCP defines exactly these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportType {
    Stdio,
    StreamableHttp,
}

/// How a Streamable HTTP response carries its messages; decided per response by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseMode {
    #[default]
    Unknown,
    Json,
    SseStream,
}

/// Why a transport could not connect or carry on.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("could not start upstream server `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("transport I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The client side: accepts connections from MCP clients, one per session.
#[async_trait]
pub trait IncomingTransport: Send {
    fn transport_type(&self) -> TransportType;

    /// Waits for the next client connection; `None` once no more will come.
    async fn accept(&mut self) -> Result<Option<Connection>, TransportError>;
}

/// The upstream side: opens a connection to the MCP server for a new session.
#[async_trait]
pub trait OutgoingTransport: Send + Sync {
    fn transport_type(&self) -> TransportType;

    async fn connect(&self) -> Result<Connection, TransportError>;
}
