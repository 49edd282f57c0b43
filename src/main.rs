//! The `membrane` command: parses the command line, sets up logging on stderr (stdout carries
//! only MCP messages), loads the configuration and runs the chosen proxy.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use membrane::app::App;
use membrane::config::ConfigSource;
use membrane::proxy::reverse::ReverseProxy;
use membrane::proxy::{forward, shutdown_signal};
use membrane::transport::{
    OutgoingTransport, StdioIncoming, StreamableHttpOutgoing, SubprocessOutgoing,
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
    /// Serve MCP clients over Streamable HTTP at http://ADDR/mcp.
    Reverse {
        /// Address to listen on; loopback unless you mean otherwise.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        upstream: Upstream,
    },
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let (common, upstream) = match &cli.command {
        Command::Forward { common, upstream }
        | Command::Reverse {
            common, upstream, ..
        } => (common, upstream),
    };
    let source = ConfigSource {
        file: common.config.clone(),
        plugins: common.plugins.clone(),
        plugin_dir: common.plugin_dir.clone(),
        http_clients: matches!(cli.command, Command::Reverse { .. }),
    };
    let app = Arc::new(App::start(source).await?);
    app.spawn_reloader();
    let outgoing: Arc<dyn OutgoingTransport> = match (&upstream.upstream, &upstream.server[..]) {
        (Some(url), _) => Arc::new(StreamableHttpOutgoing::new(
            url,
            app.config.upstream_options(),
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
        Command::Reverse { listen, .. } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            tracing::info!("listening on http://{}/mcp", listener.local_addr()?);
            let proxy =
                ReverseProxy::new(app.pipeline.clone(), outgoing, app.config.http_options());
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                stop.cancel();
            });
            proxy.serve(listener, shutdown).await?;
            0
        }
    };
    app.log_metrics().await;
    Ok(code)
}
