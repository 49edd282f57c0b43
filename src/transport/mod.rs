//! How messages get in and out of membrane. [`TransportType`] names a side's transport and
//! [`ResponseMode`] how HTTP answers are framed; [`IncomingTransport`] accepts client
//! connections (stdio, Streamable HTTP) and [`OutgoingTransport`] opens upstream ones (a child
//! process, Streamable HTTP). Either yields a [`Connection`]: the [`Frame`]s arriving from the
//! peer and an [`Outbox`] of messages to deliver to it (for HTTP, [`Queue`]s whose consumers run
//! only while messages pass, so an idle session has no task). [`HttpServer`] serves the HTTP
//! side on a socket, with its bounds, and [`tls`] sets up TLS both ways. Transports know
//! framing, not sessions' storage or policy.

mod cancel;
mod connection;
mod framing;
mod http_server;
mod queue;
mod stdio;
pub mod streamable_http;
mod subprocess;
pub mod tls;

use async_trait::async_trait;

pub use cancel::Cancel;
pub use connection::{
    Admission, AnswerModes, Closed, Connection, ConnectionCloser, Frame, Inbound, Listening,
    ListeningHeld, Opening, Outbox, Sending,
};
pub(crate) use connection::{OUTBOX_DEPTH, receiver_stream};
pub use framing::{DEFAULT_MAX_MESSAGE_SIZE, NewlineCodec};
pub use http_server::{HttpServer, ServerLimits};
pub use queue::Queue;
pub use stdio::StdioIncoming;
pub use streamable_http::{StreamableHttpIncoming, StreamableHttpOutgoing};
pub use subprocess::SubprocessOutgoing;

/// The transport of one side of a session (MCP defines exactly these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    #[error("invalid upstream URL `{url}`: {reason}")]
    Url { url: String, reason: String },
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

    /// Opens a connection (a new upstream session) for a client side that takes what the
    /// server starts on its own while `listening` says so.
    async fn connect(&self, listening: &Listening) -> Result<Connection, TransportError>;

    /// Opens a connection for one stateless exchange (protocol 2026-07-28 and later: no
    /// handshake, no session). `forwarded` holds the client's request headers that an HTTP
    /// upstream must see too (`Mcp-Param-*`). A stdio upstream gets a process of its own.
    async fn connect_stateless(
        &self,
        version: &str,
        forwarded: &axum::http::HeaderMap,
    ) -> Result<Connection, TransportError> {
        let _ = (version, forwarded);
        self.connect(&Listening::always()).await
    }

    /// Connects to an upstream session opened before (by this process before a restart, or
    /// by another replica): `session_id` is the upstream's own id for it, if it gave one, and
    /// `version` the protocol version it agreed to. Only a Streamable HTTP upstream can.
    async fn resume(
        &self,
        session_id: Option<&str>,
        version: &str,
        listening: &Listening,
    ) -> Result<Connection, TransportError> {
        let _ = (session_id, version, listening);
        Err(TransportError::Io(std::io::Error::other(
            "this upstream's sessions cannot be resumed",
        )))
    }
}
