//! The reverse proxy, assembled: MCP clients reach membrane over Streamable HTTP
//! ([`StreamableHttpIncoming`], served by an [`HttpServer`]), and each session they open gets an
//! upstream session of its own (a child process for a stdio server, or a session with an HTTP
//! server), with the same pipeline between the two as in every mode. On shutdown no session
//! opens any more, every live one is ended (its client streams close, its upstream is released),
//! and whatever has not ended when the drain time is up is dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Pipeline;
use crate::transport::{HttpServer, IncomingTransport, OutgoingTransport, StreamableHttpIncoming};

/// Serves HTTP clients until `shutdown` fires, then drains within `drain`.
pub async fn run(
    pipeline: Arc<Pipeline>,
    upstream: Arc<dyn OutgoingTransport>,
    mut incoming: StreamableHttpIncoming,
    server: HttpServer,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let stop = shutdown.clone();
    let drained = async move {
        stop.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    let serving = tokio::spawn(server.serve(incoming.router(), shutdown.clone(), drained));
    let sessions = TaskTracker::new();
    loop {
        let connection = tokio::select! {
            connection = incoming.accept() => connection,
            _ = shutdown.cancelled() => break,
        };
        let Ok(Some(connection)) = connection else {
            break;
        };
        // The task opens the session and ends: an idle session has none, and `sessions`
        // counts it until it has wound down.
        let opening = pipeline.start_session(connection, upstream.clone(), &sessions);
        sessions.spawn(opening.map(|opened| {
            if let Err(e) = opened {
                tracing::warn!("session failed: {e}");
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + drain;
    // Connections still waiting to be accepted are refused as they are dropped.
    drop(incoming);
    pipeline.sessions.close_all();
    sessions.close();
    if tokio::time::timeout_at(deadline, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = sessions.len(),
            "drain time is up; sessions left are dropped"
        );
    }
    let _ = serving.await;
}
