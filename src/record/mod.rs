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

pub use recorder::{RecordConfig, RecorderStats, SessionTape, TapeRecorder};
pub use replay::{Matching, TapeServer};
pub use tape::{Tape, TapeEntry, TapeError, TapeHeader, TapePlugin};
