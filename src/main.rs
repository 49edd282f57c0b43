//! The `membrane` command: parses the command line, sets up logging on stderr (stdout carries
//! only MCP messages), loads the configuration and runs the chosen proxy.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use membrane::app::App;
use membrane::config::ConfigSource;
use membrane::proxy::forward;
use membrane::transport::{StdioIncoming, SubprocessOutgoing};
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
    /// Sit between an MCP client on stdin/stdout and a stdio MCP server that membrane spawns.
    Forward {
        /// TOML configuration: limits, session settings and the plugin chain.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A plugin (.wasm component) appended to the chain with default settings; repeatable.
        #[arg(long = "plugin", value_name = "PATH.wasm")]
        plugins: Vec<PathBuf>,
        /// A directory whose *.wasm plugins join the chain (each configured by the .toml
        /// beside it); watched for changes like the config file.
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// The server command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        server: Vec<String>,
    },
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
    match cli.command {
        Command::Forward {
            config,
            plugins,
            plugin_dir,
            server,
        } => {
            let source = ConfigSource {
                file: config,
                plugins,
                plugin_dir,
            };
            let app = Arc::new(App::start(source).await?);
            app.spawn_reloader();
            let (program, args) = server.split_first().context("no server command given")?;
            let max_message_size = app.config.max_message_size;
            let upstream =
                SubprocessOutgoing::new(program.clone(), args.to_vec(), max_message_size);
            let mut incoming = StdioIncoming::new(max_message_size);
            let code = forward::run(app.pipeline.clone(), &mut incoming, &upstream).await?;
            app.log_metrics().await;
            Ok(code)
        }
    }
}
