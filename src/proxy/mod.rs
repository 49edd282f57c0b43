//! The proxy: the [`Pipeline`] every message passes through, how a client connection becomes a
//! served session, and the assembly of transports into running proxies ([`forward`]: a stdio
//! client; [`reverse`]: HTTP clients), each with a stdio or HTTP upstream. Forward and reverse
//! proxies are only different pairs of transports around the same pipeline.

pub mod forward;
mod pipeline;
pub mod reverse;
mod session;

pub use pipeline::{DEFAULT_MAX_BATCH_SIZE, Lane, Pipeline, SessionContext};
pub use session::{ProxyError, SessionEnd};

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
