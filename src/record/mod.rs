//! Recording and replaying sessions. A [`TapeRecorder`] beside the interceptor chain writes
//! one tape per recorded session ([`tape`]: JSON Lines, every message both ways with each
//! interceptor's verdict); [`TapeServer`] serves a tape back as the recorded MCP server;
//! [`against`] drives a real server with a tape's client side and reports what answers
//! differently; [`test_policy`] runs tapes through a new chain and reports every verdict
//! that would change. This room knows tapes and the chain, not Wasm or the CLI.

pub mod against;
mod recorder;
mod replay;
pub mod tape;
pub mod test_policy;

use serde_json::Value;

use crate::protocol::Message;

/// A recorded answer (or request) given the id `id` (JSON text) in place of its own.
fn with_id(recorded: &Value, id: &str) -> Message {
    let mut message = recorded.clone();
    message["id"] = serde_json::from_str(id).unwrap_or(Value::Null);
    Message::from_value(&message)
}

pub use recorder::{RecordConfig, RecorderStats, SessionTape, TapeRecorder};
pub use replay::{Matching, TapeServer};
pub use tape::{Tape, TapeEntry, TapeError, TapeHeader, TapePlugin};
