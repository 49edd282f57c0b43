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
use membrane::app::plugin_new::Lang;
use membrane::app::{App, Reloader, plugin_check, plugin_new};
use membrane::config::{Config, ConfigSource};
use membrane::proxy::{forward, reverse, shutdown_signal};
use membrane::record::{Matching, Tape, TapeServer, against, test_policy};
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
    /// Serve a tape as the MCP server it recorded (stdio, or HTTP with --listen), or with
    /// --against drive a real server with its client side and report answers that differ.
    Replay {
        /// A tape that `[record]` or `--record` wrote.
        tape: PathBuf,
        /// Serve MCP clients over Streamable HTTP at http://ADDR/mcp instead of stdio.
        #[arg(long, value_name = "ADDR", conflicts_with = "against")]
        listen: Option<SocketAddr>,
        /// How a request must match a recorded one to get its answer.
        #[arg(long = "match", value_enum, default_value_t)]
        matching: Matching,
        /// Drive a real server, the command after `--` or URL, with the tape's client side.
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        against: Option<String>,
        /// With --against: how long to wait for each answer.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// With --against: print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
        /// With --against: the server command and its arguments.
        #[arg(last = true, value_name = "CMD")]
        server: Vec<String>,
    },
    /// Run recorded sessions through the chain a configuration makes, in process, and report
    /// every verdict that would change (exit status 1 if any did, or a plugin failed).
    TestPolicy {
        /// A tape, or a directory of them (*.jsonl); repeatable.
        #[arg(long, value_name = "PATH", required = true)]
        tapes: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Talk to a running membrane's admin API: sessions, held messages, plugins, reload.
    Ctl(Ctl),
    /// Work with plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin from a template into DIR/NAME, build it and run its sample test.
    New {
        /// The plugin's language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Its name: lowercase letters, digits and dashes.
        name: String,
        /// Where its directory goes.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Whether this membrane will load a plugin, and why not: its contract, imports and the
    /// grants they need, the filters it declares, and its verdicts on sample messages (exit
    /// status 1 if it will not load).
    Check {
        /// The plugin, a WebAssembly component.
        plugin: PathBuf,
        /// A configuration whose [[plugins]] entry for this file gives its settings.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    /// Record every session to a tape in DIR (the config's `[record]` settings otherwise).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
}

impl Common {
    fn source(&self, http_clients: bool) -> ConfigSource {
        ConfigSource {
            file: self.config.clone(),
            plugins: self.plugins.clone(),
            plugin_dir: self.plugin_dir.clone(),
            record: self.record.clone(),
            http_clients,
        }
    }
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
    match cli.command {
        Command::Ctl(ctl) => ctl.run().await,
        Command::Forward { common, upstream } => {
            let app = start(common.source(false)).await?;
            let outgoing = upstream.transport(&app)?;
            let mut incoming = StdioIncoming::new(app.config.max_message_size);
            let code = forward::run(app.pipeline.clone(), &mut incoming, outgoing).await?;
            Ok(finish(app, code).await)
        }
        Command::Reverse {
            listen,
            allow_unauthenticated,
            common,
            upstream,
        } => {
            let app = start(common.source(true)).await?;
            check_exposure(&app, listen, allow_unauthenticated)?;
            let outgoing = upstream.transport(&app)?;
            serve_http(&app, listen, outgoing).await?;
            Ok(finish(app, 0).await)
        }
        Command::Replay {
            tape,
            listen,
            matching,
            against,
            wait,
            json,
            common,
            server,
        } => {
            let tape = Tape::read(&tape)?;
            if let Some(url) = against {
                let upstream = Upstream {
                    upstream: Some(url).filter(|url| !url.is_empty()),
                    server,
                };
                let config = common.source(false).load()?;
                let outgoing = upstream.transport_for(&config)?;
                let report = against::drive(&tape, outgoing.as_ref(), wait).await?;
                print_report(&report, json)?;
                return Ok(i32::from(!report.differences.is_empty()));
            }
            let outgoing: Arc<dyn OutgoingTransport> = Arc::new(TapeServer::new(&tape, matching));
            let app = start(common.source(listen.is_some())).await?;
            let code = match listen {
                Some(listen) => {
                    check_exposure(&app, listen, false)?;
                    serve_http(&app, listen, outgoing).await?;
                    0
                }
                None => {
                    let mut incoming = StdioIncoming::new(app.config.max_message_size);
                    forward::run(app.pipeline.clone(), &mut incoming, outgoing).await?
                }
            };
            Ok(finish(app, code).await)
        }
        Command::Plugin(PluginCommand::New { lang, name, dir }) => {
            let built = plugin_new::create(lang, &name, &dir)?;
            println!("{}", built.display());
            eprintln!(
                "built {} and its sample test passed; next: membrane plugin check {}",
                built.display(),
                built.display()
            );
            Ok(0)
        }
        Command::Plugin(PluginCommand::Check {
            plugin,
            config,
            json,
        }) => {
            let config = config.as_deref().map(Config::load).transpose()?;
            let report = plugin_check::check(&plugin, config.as_ref()).await;
            print_report(&report, json)?;
            Ok(i32::from(!report.loads()))
        }
        Command::TestPolicy {
            tapes,
            json,
            common,
        } => {
            let tapes = read_tapes(&tapes)?;
            let app = App::offline(common.source(false)).await?;
            let chain = app.pipeline.chain.load_full();
            let report = test_policy::run(&chain, &app.pipeline.sessions, &tapes).await;
            print_report(&report, json)?;
            Ok(i32::from(report.failed()))
        }
    }
}

/// Starts the app with its reloader, auditor and admin API.
async fn start(source: ConfigSource) -> anyhow::Result<Arc<App>> {
    let app = Arc::new(App::start(source).await?);
    let reloader = app.spawn_reloader();
    app.spawn_auditor();
    serve_admin(&app, reloader).await?;
    Ok(app)
}

/// Logs the plugins' metrics, sends the last traces and writes out the tapes.
async fn finish(app: Arc<App>, code: i32) -> i32 {
    app.log_metrics().await;
    let _ = tokio::task::spawn_blocking(move || app.flush()).await;
    code
}

impl Upstream {
    fn transport(&self, app: &App) -> anyhow::Result<Arc<dyn OutgoingTransport>> {
        self.transport_for(&app.config)
    }

    fn transport_for(&self, config: &Config) -> anyhow::Result<Arc<dyn OutgoingTransport>> {
        Ok(match (&self.upstream, &self.server[..]) {
            (Some(url), _) => Arc::new(StreamableHttpOutgoing::new(
                url,
                config.upstream_options()?,
            )?),
            (None, [program, args @ ..]) => Arc::new(SubprocessOutgoing::new(
                program.clone(),
                args.to_vec(),
                config.max_message_size,
            )),
            (None, []) => anyhow::bail!("give a server command after `--`, or a URL"),
        })
    }
}

/// Serves HTTP clients at `listen` until SIGINT or SIGTERM, then drains.
async fn serve_http(
    app: &Arc<App>,
    listen: SocketAddr,
    outgoing: Arc<dyn OutgoingTransport>,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// The tapes at `paths`: files, and the `*.jsonl` in directories, in name order.
fn read_tapes(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Tape)>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.extension().is_some_and(|ext| ext == "jsonl"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    files
        .into_iter()
        .map(|file| Ok((file.clone(), Tape::read(&file)?)))
        .collect()
}

/// Prints a report as a table (its `Display`) or as JSON.
fn print_report<R: serde::Serialize + std::fmt::Display>(
    report: &R,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
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
