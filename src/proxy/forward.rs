//! The forward proxy: an MCP client talks to membrane over its stdin and stdout, and membrane
//! talks to the server it spawns. Both sides are stdio; the pipeline in between is the same one
//! every mode uses. The proxy ends with its one session and reports an exit code: 0 when the
//! client left or membrane was asked to stop; when the server went away first, the server's own
//! failure code, or 1 if it exited cleanly or by a signal (either way it failed its client).

use std::sync::Arc;

use super::{Pipeline, ProxyError, shutdown_signal};
use crate::transport::{IncomingTransport, OutgoingTransport};

/// Serves the client connection `incoming` accepts, until it ends or SIGINT/SIGTERM arrives.
pub async fn run(
    pipeline: Arc<Pipeline>,
    incoming: &mut dyn IncomingTransport,
    upstream: Arc<dyn OutgoingTransport>,
) -> Result<i32, ProxyError> {
    let Some(client) = incoming.accept().await? else {
        return Ok(0);
    };
    let sessions = pipeline.sessions.clone();
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        sessions.close_all();
    });
    let end = pipeline.open_session(client, upstream).await;
    signals.abort();
    let end = end?;
    Ok(if end.upstream_first {
        end.upstream
            .exit_code
            .filter(|&code| code != 0)
            .unwrap_or(1)
    } else {
        0
    })
}
