//! A real third-party MCP server for membrane's end-to-end tests, built with the
//! official Rust SDK (rmcp 3.9) and served over stdio.
//!
//! Registered as `[[example]] name = "rmcp-server"`. Server info name: `rmcp-peer`.
//!
//! Tools:
//! - `echo {message}`      -> text equal to `message`
//! - `add {a, b}`          -> text of `a + b` (i64)
//! - `sleep {ms}`          -> waits `ms` milliseconds, then "slept"
//! - `crash {}`            -> the process exits with status 3 at once, without answering
//! - `big {bytes}`         -> a text of `bytes` times 'x'
//! - `delete_file {path}`  -> "deleted <path>" (a stand-in dangerous tool; touches nothing)
//!
//! stdout carries JSON-RPC only; diagnostics go to stderr (filter with `RUST_LOG`).
//! `--http ADDR` serves Streamable HTTP at `http://ADDR/mcp` instead (rmcp's
//! `StreamableHttpService` in axum, sessions on), and logs `rmcp-peer: listening on URL`.
//! `RMCP_PEER_PIPES=1` serves through `rmcp::transport::stdio_pipes()` (non-blocking
//! pipes, no blocking-pool hop) instead of `rmcp::transport::stdio()`.

use std::time::Duration;

use rmcp::{
    ServerHandler, ServiceExt,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    service::ServerInitializeError,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    message: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct SleepArgs {
    /// How long to wait, in milliseconds.
    ms: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct BigArgs {
    /// Length of the returned text, in bytes.
    bytes: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct DeleteFileArgs {
    /// The file that would be deleted.
    path: String,
}

#[derive(Debug, Clone)]
struct PeerServer {
    tool_router: ToolRouter<Self>,
}

impl PeerServer {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }
}

#[tool_router]
impl PeerServer {
    #[tool(description = "Echo the message back as text")]
    async fn echo(&self, Parameters(EchoArgs { message }): Parameters<EchoArgs>) -> String {
        message
    }

    #[tool(description = "Add two integers")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.wrapping_add(b).to_string()
    }

    #[tool(description = "Wait for the given number of milliseconds, then answer \"slept\"")]
    async fn sleep(&self, Parameters(SleepArgs { ms }): Parameters<SleepArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "slept".to_string()
    }

    #[tool(description = "Exit the server process with status 3 without answering")]
    async fn crash(&self) -> String {
        eprintln!("rmcp-peer: crash requested, exiting with status 3");
        std::process::exit(3)
    }

    #[tool(description = "Return a text of the given number of 'x' characters")]
    async fn big(&self, Parameters(BigArgs { bytes }): Parameters<BigArgs>) -> String {
        "x".repeat(bytes)
    }

    #[tool(
        description = "Delete a file (stand-in: touches nothing, only answers)",
        annotations(destructive_hint = true, read_only_hint = false)
    )]
    async fn delete_file(
        &self,
        Parameters(DeleteFileArgs { path }): Parameters<DeleteFileArgs>,
    ) -> String {
        format!("deleted {path}")
    }
}

#[tool_handler(router = self.tool_router, name = "rmcp-peer", version = "0.1.0")]
impl ServerHandler for PeerServer {}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, addr] = &args[..]
        && flag == "--http"
    {
        return serve_http(addr).await;
    }
    eprintln!("rmcp-peer: serving MCP on stdio");

    let served = if std::env::var_os("RMCP_PEER_PIPES").is_some_and(|v| v == "1") {
        PeerServer::new()
            .serve(rmcp::transport::stdio_pipes())
            .await
    } else {
        PeerServer::new().serve(rmcp::transport::stdio()).await
    };
    let service = match served {
        Ok(service) => service,
        // The client left before the lifecycle began (EOF before `initialize`, or, at
        // 2026-07-28, before the first request after `server/discover`/`ping`): a clean end.
        Err(ServerInitializeError::ConnectionClosed(context)) => {
            eprintln!("rmcp-peer: stdin closed before the handshake completed ({context})");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let reason = service.waiting().await?;
    eprintln!("rmcp-peer: stopped ({reason:?})");
    Ok(())
}

async fn serve_http(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpService, session::local::LocalSessionManager,
    };
    let service = StreamableHttpService::new(
        || Ok(PeerServer::new()),
        LocalSessionManager::default().into(),
        Default::default(),
    );
    use axum::serve::ListenerExt;
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "rmcp-peer: listening on http://{}/mcp",
        listener.local_addr()?
    );
    // Without TCP_NODELAY, an SSE answer written in two parts waits ~40 ms on Nagle.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}
