//! The forward proxy: an MCP client talks to membrane over its stdin and stdout, and membrane
//! talks to the server it spawns. Both sides are stdio; the pipeline in between is the same one
//! every mode uses. The proxy ends with its one session and reports an exit code: 0 when the
//! client left or membrane was asked to stop; when the server went away first, the server's own
//! failure code, or 1 if it exited cleanly or by a signal (either way it failed its client).

use std::sync::Arc;

use super::{Pipeline, shutdown_signal};
use crate::session::SessionError;
use crate::transport::{IncomingTransport, OutgoingTransport, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Serves the client connection `incoming` accepts, until it ends or SIGINT/SIGTERM arrives.
pub async fn run(
    pipeline: Arc<Pipeline>,
    incoming: &mut dyn IncomingTransport,
    upstream: &dyn OutgoingTransport,
) -> Result<i32, ForwardError> {
    let Some(client) = incoming.accept().await? else {
        return Ok(0);
    };
    let session = pipeline
        .sessions
        .create(client.transport_type, upstream.transport_type())
        .await?;
    let upstream = match upstream.connect().await {
        Ok(upstream) => upstream,
        Err(e) => {
            pipeline.sessions.remove(&session.id).await?;
            return Err(e.into());
        }
    };
    let sessions = pipeline.sessions.clone();
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        sessions.close_all().await;
    });
    let end = pipeline.serve_session(session, client, upstream).await;
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
