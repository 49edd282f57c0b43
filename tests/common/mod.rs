//! Helpers for the end-to-end tests: paths of the built binaries, plugins and third-party
//! peers, and [`RawClient`], a line-level MCP client that drives `membrane forward` through its
//! stdin and stdout so tests can see the exact bytes.
#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub mod http;
pub mod jwt;
pub mod pki;
pub mod services;

/// Installs the TLS crypto provider membrane uses (ring) as the process default, which the
/// HTTP clients of the tests (reqwest, rmcp's) need; idempotent.
pub fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP client for tests.
pub fn http_client() -> reqwest::Client {
    tls_provider();
    reqwest::Client::new()
}

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The membrane binary under test: this build's, or `MEMBRANE_BIN` (to measure another build
/// beside it).
pub fn membrane() -> String {
    std::env::var("MEMBRANE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_membrane").to_owned())
}

/// The rmcp SDK server built from `tests/peers/rmcp_server.rs` (a cargo example).
pub fn rmcp_server() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let server = profile_dir.join("examples").join("rmcp-server");
    assert!(
        server.exists(),
        "{} is missing: `cargo test` builds it (it is the `rmcp-server` example)",
        server.display()
    );
    server
}

/// A shipped plugin, in any language, from `plugins/dist/` (`tool-guard`, `canned-answers`,
/// `tool-pinning`, ...): `scripts/build-plugins.sh` builds them all on first use, with its
/// caches (cargo's in `$MEMBRANE_PLUGINS_TARGET_DIR`, or `plugins/target`).
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = std::process::Command::new("bash")
            .arg(repo().join("scripts/build-plugins.sh"))
            .env("MEMBRANE_PEERS_DIR", peers())
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/build-plugins.sh");
        assert!(status.success(), "building the plugins failed");
    });
    repo()
        .join("plugins/dist")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Loads a built plugin with `config`, the given limits and the default grants (log).
pub async fn load_plugin(
    engine: &std::sync::Arc<membrane::wasm::PluginEngine>,
    name: &str,
    config: Value,
    limits: membrane::wasm::PluginLimits,
) -> Result<membrane::wasm::WasmInterceptor, membrane::wasm::PluginError> {
    use membrane::wasm::{Capability, Grants, PluginEnv, PluginSpec, WasmInterceptor};
    let grants = Grants::from([Capability::Log]);
    let spec = PluginSpec::read(name, &plugin(name), &config, limits, grants).unwrap();
    WasmInterceptor::load(engine, &spec, &PluginEnv::default(), Default::default()).await
}

/// Where `tests/peers/setup.sh` installs the pinned npm and PyPI peers (it runs on first use):
/// `$MEMBRANE_PEERS_DIR`, or `target/peers`.
pub fn peers() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = std::env::var_os("MEMBRANE_PEERS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo().join("target/peers"));
            let status = std::process::Command::new("bash")
                .arg(repo().join("tests/peers/setup.sh"))
                .arg(&dir)
                .stdout(Stdio::null())
                .status()
                .expect("running tests/peers/setup.sh");
            assert!(status.success(), "installing the test peers failed");
            dir
        })
        .clone()
}

/// The command line of the reference server `@modelcontextprotocol/server-everything` (stdio).
pub fn server_everything() -> Vec<String> {
    let entry =
        peers().join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    vec!["node".into(), entry.display().to_string(), "stdio".into()]
}

/// The params of an `initialize` request proposing `version`.
pub fn initialize_params(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "membrane-tests", "version": "0"}
    })
}

/// A config with the tool-guard plugin denying the tools that match `deny`.
pub fn guard_toml(deny: &[&str]) -> String {
    format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = {deny:?}\n",
        plugin("tool-guard").display().to_string()
    )
}

/// Runs a scripted client (the peers' `*_client.*`) to its end, expects success and returns
/// the one JSON object it prints.
pub async fn json_output(command: &mut Command, within: Duration) -> Value {
    let output = tokio::time::timeout(within, command.output())
        .await
        .expect("the client finished in time")
        .expect("running the client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// Runs the Python SDK client peer (`tests/peers/python_client.py ARGS -- TARGET`) with `env`
/// and returns the JSON object it prints.
pub async fn python_client(args: &[&str], target: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    json_output(
        Command::new(peers().join("venv/bin/python"))
            .arg(repo().join("tests/peers/python_client.py"))
            .args(args)
            .args(["--", target])
            .envs(env.iter().copied()),
        WAIT,
    )
    .await
}

/// Runs the TypeScript SDK client peer (`tests/peers/ts_client.mjs`) against `target` with
/// `env` and returns the JSON object it prints.
pub async fn typescript_client(target: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    json_output(
        Command::new("node")
            .arg(repo().join("tests/peers/ts_client.mjs"))
            .arg(peers())
            .args(["--", target])
            .envs(env.iter().copied()),
        WAIT,
    )
    .await
}

/// A process's resident memory now and at its peak, in KiB (from `/proc`).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A number from the environment, for benchmark settings.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes a membrane config file into `dir` and returns its path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("membrane.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Starts membrane with `toml` as its config, expects it to refuse to start (exit 1, nothing on
/// stdout) and returns its log.
pub async fn startup_failure(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), toml);
    let output = Command::new(membrane())
        .env("XDG_CACHE_HOME", cache_home())
        .args([
            "forward",
            "--config",
            config.to_str().unwrap(),
            "--",
            "true",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "membrane refused to start");
    assert!(output.stdout.is_empty(), "nothing but MCP on stdout");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Where the membranes under test keep compiled plugins: the tests' own cache, not the user's.
pub fn cache_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache")
}

/// A process's stderr as it is written: kept for assertions, echoed to the test's stderr.
#[derive(Clone, Default)]
pub struct LogTail(Arc<Mutex<String>>);

impl LogTail {
    pub fn capture(stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Self {
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let mut lines = BufReader::new(stderr).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self(log)
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the log has `count` lines containing `needle`; returns the log.
    pub async fn wait_for(&self, needle: &str, count: usize) -> String {
        self.wait_for_within(needle, count, WAIT).await
    }

    pub async fn wait_for_within(&self, needle: &str, count: usize, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let log = self.text();
            if log.lines().filter(|line| line.contains(needle)).count() >= count {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never logged {needle:?} {count} time(s):\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `membrane forward ARGS -- SERVER...` with piped stdio, speaking raw JSON lines.
pub struct RawClient {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// membrane's log so far, when it is captured.
    log: Option<LogTail>,
}

impl RawClient {
    pub fn spawn(membrane_args: &[&str], server: &[&str]) -> Self {
        Self::from_command(
            &mut Self::membrane_command(membrane_args, server),
            Stdio::inherit(),
        )
    }

    fn membrane_command(membrane_args: &[&str], server: &[&str]) -> Command {
        let mut command = Command::new(membrane());
        command.arg("forward").args(membrane_args);
        if !server.is_empty() {
            command.arg("--").args(server);
        }
        command
            .env("MEMBRANE_LOG", "membrane=debug")
            .env("XDG_CACHE_HOME", cache_home());
        command
    }

    /// Like [`RawClient::spawn`], keeping membrane's log for [`RawClient::wait_for_log`] (and
    /// still echoing it to the test's stderr).
    pub fn spawn_logged(membrane_args: &[&str], server: &[&str]) -> Self {
        let mut command = Self::membrane_command(membrane_args, server);
        let mut client = Self::from_command(&mut command, Stdio::piped());
        client.log = Some(LogTail::capture(client.child.stderr.take().unwrap()));
        client
    }

    /// membrane's log so far (from [`RawClient::spawn_logged`]).
    pub fn log(&self) -> String {
        self.log.as_ref().expect("the log is captured").text()
    }

    /// Waits until membrane's log has `count` lines containing `needle`; returns the log.
    pub async fn wait_for_log(&self, needle: &str, count: usize) -> String {
        self.wait_for_log_within(needle, count, WAIT).await
    }

    pub async fn wait_for_log_within(&self, needle: &str, count: usize, wait: Duration) -> String {
        let log = self.log.as_ref().expect("the log is captured");
        log.wait_for_within(needle, count, wait).await
    }

    /// The server itself, without membrane: the baseline to compare with.
    pub fn spawn_direct(server: &[&str]) -> Self {
        Self::from_command(Command::new(server[0]).args(&server[1..]), Stdio::inherit())
    }

    fn from_command(command: &mut Command, stderr: Stdio) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the process under test");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            log: None,
        }
    }

    /// membrane in front of the rmcp SDK server.
    pub fn rmcp(membrane_args: &[&str]) -> Self {
        let server = rmcp_server();
        Self::spawn(membrane_args, &[server.to_str().unwrap()])
    }

    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    pub async fn send(&mut self, message: &Value) {
        self.send_line(&message.to_string()).await;
    }

    /// The next line membrane writes, or `None` at end of output.
    pub async fn recv_line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("membrane answered in time")
            .unwrap()
    }

    pub async fn recv(&mut self) -> Value {
        let line = self
            .recv_line()
            .await
            .expect("a message, not end of output");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carried non-JSON {line:?}: {e}"))
    }

    /// Sends a request and returns the message that answers it, skipping notifications.
    pub async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.answer_to(id).await
    }

    pub async fn answer_to(&mut self, id: i64) -> Value {
        loop {
            let message = self.recv().await;
            if message["id"] == json!(id) && message.get("method").is_none() {
                return message;
            }
        }
    }

    pub async fn call_tool(&mut self, id: i64, name: &str, arguments: Value) -> Value {
        self.request(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }

    /// The MCP handshake; returns the initialize result.
    pub async fn initialize(&mut self) -> Value {
        let answer = self
            .request(0, "initialize", initialize_params("2025-06-18"))
            .await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        answer["result"].clone()
    }

    /// Sends SIGTERM to membrane, as a service manager stopping it would.
    pub async fn terminate(&self) {
        self.signal("TERM").await;
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to membrane.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("membrane is running").to_string();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status()
            .await;
        assert!(status.unwrap().success(), "kill -{name} {pid}");
    }

    /// Closes membrane's stdin, as a client does when it is done.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for membrane to exit and returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("membrane exited in time")
            .unwrap()
            .code()
    }
}

/// The text of the first content item of a tools/call result.
pub fn tool_text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {answer}"))
}
