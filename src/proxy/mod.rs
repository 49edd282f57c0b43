//! The proxy: the [`Pipeline`] every message passes through, and the assembly of transports
//! into running proxies ([`forward`]: stdio client, stdio server). Forward and reverse proxies are
//! only different pairs of transports around the same pipeline.

pub mod forward;
mod pipeline;
mod session;

pub use pipeline::{Lane, Pipeline, SessionContext};
pub use session::SessionEnd;
