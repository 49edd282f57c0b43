//! The `membrane` command: parses the command line, sets up logging on stderr (stdout carries
//! only MCP messages), loads the configuration and runs the chosen proxy.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use membrane::admin::Admin;
use membrane::admin::ctl::Ctl;
use membrane::app::{App, Reloader};
use membrane::config::ConfigSource;
use membrane::proxy::{forward, reverse, shutdown_signal};
use membrane::session::EventWriter;
use membrane::transport::{
    HttpServer, OutgoingTransport, StdioIncoming, StreamableHttpIncoming, StreamableHttpOutgoing,
    SubprocessOutgoing,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "A proxy for the Model Context Protocol with WebAssembly interceptors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one MCP client on stdin/stdout.
    Forward {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        upstream: Upstream,
    },
    /// Serve MCP clients over Streamable HTTP at http(s)://ADDR/mcp.
    Reverse {
        /// Address to listen on; loopback unless you mean otherwise.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Listen beyond loopback without [auth]: only when something in front of membrane
        /// authenticates clients.
        #[arg(long)]
        allow_unauthenticated: bool,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        upstream: Upstream,
    },
    /// Talk to a running membrane's admin API: sessions, held messages, plugins, reload.
    Ctl(Ctl),
}

#[derive(Args)]
struct Common {
    /// TOML configuration: limits, sessions, HTTP settings and the plugin chain.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A plugin (.wasm component) appended to the chain with default settings; repeatable.
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    plugins: Vec<PathBuf>,
    /// A directory whose *.wasm plugins join the chain (each configured by the .toml beside
    /// it); watched for changes like the config file.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

/// The MCP server: a command membrane spawns (one process per session), or a URL.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Upstream {
    /// A Streamable HTTP MCP server, e.g. http://127.0.0.1:3000/mcp.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// A stdio server command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    server: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("MEMBRANE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    membrane::transport::tls::provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let outcome = runtime.block_on(run(cli));
    // Whatever is still running (a session past the drain time) does not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let (common, upstream) = match cli.command {
        Command::Ctl(ctl) => return ctl.run().await,
        Command::Forward {
            ref common,
            ref upstream,
        }
        | Command::Reverse {
            ref common,
            ref upstream,
            ..
        } => (common, upstream),
    };
    let source = ConfigSource {
        file: common.config.clone(),
        plugins: common.plugins.clone(),
        plugin_dir: common.plugin_dir.clone(),
        http_clients: matches!(cli.command, Command::Reverse { .. }),
    };
    let app = Arc::new(App::start(source).await?);
    let reloader = app.spawn_reloader();
    app.spawn_auditor();
    serve_admin(&app, reloader).await?;
    let outgoing: Arc<dyn OutgoingTransport> = match (&upstream.upstream, &upstream.server[..]) {
        (Some(url), _) => Arc::new(StreamableHttpOutgoing::new(
            url,
            app.config.upstream_options()?,
        )?),
        (None, [program, args @ ..]) => Arc::new(SubprocessOutgoing::new(
            program.clone(),
            args.to_vec(),
            app.config.max_message_size,
        )),
        (None, []) => anyhow::bail!("give a server command after `--`, or --upstream URL"),
    };
    let code = match cli.command {
        Command::Forward { .. } => {
            let mut incoming = StdioIncoming::new(app.config.max_message_size);
            forward::run(app.pipeline.clone(), &mut incoming, outgoing.as_ref()).await?
        }
        Command::Ctl(_) => unreachable!("handled above"),
        Command::Reverse {
            listen,
            allow_unauthenticated,
            ..
        } => {
            check_exposure(&app, listen, allow_unauthenticated)?;
            let front = app.config.front_options(listen);
            let events = app
                .events
                .clone()
                .map(|store| EventWriter::spawn(store, front.event_retention_bytes));
            let incoming = StreamableHttpIncoming::new(front, app.auth.clone(), events);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let server = HttpServer::new(listener, app.tls.clone(), app.config.server_limits());
            let scheme = if app.tls.is_some() { "https" } else { "http" };
            tracing::info!("listening on {scheme}://{}/mcp", server.local_addr()?);
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            let drain = app.config.drain_timeout();
            reverse::run(
                app.pipeline.clone(),
                outgoing,
                incoming,
                server,
                shutdown,
                drain,
            )
            .await;
            0
        }
    };
    app.log_metrics().await;
    let flushing = app.clone();
    let _ = tokio::task::spawn_blocking(move || flushing.flush_traces()).await;
    Ok(code)
}

/// Starts the admin API when `[admin]` is configured: on its own listener, with the token, and
/// beyond loopback only with TLS. It serves until membrane exits.
async fn serve_admin(app: &Arc<App>, reloader: Reloader) -> anyhow::Result<()> {
    let Some(section) = &app.config.admin else {
        return Ok(());
    };
    if !section.listen.ip().is_loopback() && app.tls.is_none() {
        anyhow::bail!(
            "[admin] listen = {} is beyond loopback: configure [tls] (the admin token must not travel in clear text) or listen on loopback",
            section.listen
        );
    }
    let admin = Arc::new(Admin::new(app.clone(), reloader, &section.token_file)?);
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|e| anyhow::anyhow!("[admin] cannot listen on {}: {e}", section.listen))?;
    let server = HttpServer::new(listener, app.tls.clone(), app.config.server_limits());
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "admin API on {scheme}://{}/v1 (console at /)",
        server.local_addr()?
    );
    let never = CancellationToken::new();
    tokio::spawn(server.serve(admin.router(), never, std::future::pending()));
    Ok(())
}

/// Refuses to serve beyond loopback without authentication (unless told that something in
/// front authenticates) or without the Host names clients use; warns about what stays risky.
fn check_exposure(
    app: &App,
    listen: SocketAddr,
    allow_unauthenticated: bool,
) -> anyhow::Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    let config = &app.config;
    if config.auth.is_none() {
        if !allow_unauthenticated {
            anyhow::bail!(
                "refusing to listen on {listen} without [auth]: anyone who reaches it could use the upstream server. \
                 Configure [auth], listen on loopback, or pass --allow-unauthenticated if something in front of membrane authenticates clients"
            );
        }
        tracing::warn!(%listen, "listening beyond loopback WITHOUT authentication (--allow-unauthenticated)");
    }
    if config.http.allowed_hosts.is_empty() {
        anyhow::bail!(
            "listening on {listen} needs [http] allowed_hosts: the Host names clients use to reach membrane (\"*\" for any)"
        );
    }
    if config.auth.is_some() && config.tls.is_none() {
        tracing::warn!(%listen, "bearer tokens will travel in clear text: configure [tls] or terminate TLS in front of membrane");
    }
    Ok(())
}
