//! The `membrane` command: parses the command line, sets up logging on stderr (stdout carries
//! only MCP messages), loads the configuration and runs the chosen proxy.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use membrane::config::{Config, PluginConfig};
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
            server,
        } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            config
                .plugins
                .extend(plugins.into_iter().map(PluginConfig::from_path));
            let pipeline = membrane::app::build_pipeline(&config).await?;
            let (program, args) = server.split_first().context("no server command given")?;
            let upstream =
                SubprocessOutgoing::new(program.clone(), args.to_vec(), config.max_message_size);
            let mut incoming = StdioIncoming::new(config.max_message_size);
            Ok(forward::run(pipeline, &mut incoming, &upstream).await?)
        }
    }
}
