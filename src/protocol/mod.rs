//! JSON-RPC messages as they cross the proxy: the raw bytes plus an envelope (kind, id, method)
//! parsed once on demand, the JSON-RPC error codes membrane answers with, and the MCP protocol
//! versions it knows. Nothing here does I/O.

mod error;
mod message;

pub use error::{ErrorCode, error_response, result_response};
pub use message::{Message, MessageError, MessageKind};

/// The `initialize` method, whose request and result carry the protocol version.
pub const INITIALIZE: &str = "initialize";

/// Which way a message travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// The way answers to a message travelling this way go.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}
