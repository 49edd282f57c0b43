//! Helpers for the Streamable HTTP tests: background processes with their logs (membrane
//! reverse, HTTP MCP servers), and [`Http`], a raw HTTP client that shows statuses, headers
//! and SSE events exactly as membrane sends them.

use std::process::Stdio;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{LogTail, WAIT, cache_home, membrane, rmcp_server};

/// A process running beside the test, killed when dropped.
pub struct Background {
    pub child: Child,
    pub log: LogTail,
}

impl Background {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = start(command, Stdio::piped());
        let log = LogTail::capture(child.stderr.take().unwrap());
        Self { child, log }
    }

    /// Spawns `command` with its stderr written to the file `log`, as an operator's redirect
    /// would (its `log` tail stays empty).
    pub fn spawn_to(command: &mut Command, log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        Self {
            child: start(command, file.into()),
            log: LogTail::default(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn stop(self) -> Option<i32> {
        self.signal("-TERM").await
    }

    /// Kills the process outright (SIGKILL: nothing of it runs any more) and waits for it.
    pub async fn kill(self) {
        self.signal("-KILL").await;
    }

    async fn signal(mut self, signal: &str) -> Option<i32> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status().await;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exited in time")
            .unwrap()
            .code()
    }

    /// The URL a process logged after `marker` (up to the next whitespace).
    pub async fn logged_url(&self, marker: &str) -> String {
        url_after(&self.log.wait_for(marker, 1).await, marker).unwrap()
    }
}

/// A background process: no stdin, no stdout, killed when dropped.
fn start(command: &mut Command, stderr: Stdio) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawning a background process")
}

/// The word after `marker` in the first line of `log` that has it.
pub fn url_after(log: &str, marker: &str) -> Option<String> {
    let line = log.lines().find(|line| line.contains(marker))?;
    let start = line.find(marker)? + marker.len();
    Some(line[start..].split_whitespace().next()?.to_owned())
}

/// `membrane reverse --listen 127.0.0.1:0 ARGS`, and the URL of its endpoint.
pub async fn membrane_reverse(args: &[&str]) -> (Background, String) {
    membrane_reverse_with(args, &[]).await
}

/// [`membrane_reverse`] with more environment (`MEMBRANE_LOG` is `membrane=debug` unless set).
pub async fn membrane_reverse_with(args: &[&str], env: &[(&str, &str)]) -> (Background, String) {
    membrane_reverse_on("127.0.0.1:0", args, env).await
}

/// [`membrane_reverse_with`] listening on `listen` (to start again where clients know it).
pub async fn membrane_reverse_on(
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Background, String) {
    membrane_build_reverse(&membrane(), listen, args, env).await
}

/// [`membrane_reverse_on`] with the binary `build` (another build, for a baseline).
pub async fn membrane_build_reverse(
    build: &str,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Background, String) {
    let membrane = Background::spawn(
        Command::new(build)
            .args(["reverse", "--listen", listen])
            .args(args)
            .env("MEMBRANE_LOG", "membrane=debug")
            .env("XDG_CACHE_HOME", cache_home())
            .envs(env.iter().copied()),
    );
    let url = membrane.logged_url("listening on ").await;
    (membrane, url)
}

/// The rmcp SDK server over Streamable HTTP on `addr` (`127.0.0.1:0` for any free port).
pub async fn rmcp_http_server(addr: &str) -> (Background, String) {
    let server = Background::spawn(Command::new(rmcp_server()).args(["--http", addr]));
    let url = server.logged_url("listening on ").await;
    (server, url)
}

/// The Python SDK server (`tests/peers/python_server.py`) on a free port, once it listens.
pub async fn python_http_server(flags: &[&str]) -> (Background, String) {
    let port = free_port();
    let server = Background::spawn(
        Command::new(super::peers().join("venv/bin/python"))
            .arg(super::repo().join("tests/peers/python_server.py"))
            .arg(port.to_string())
            .args(flags),
    );
    wait_until_listening(port).await;
    (server, format!("http://127.0.0.1:{port}/mcp"))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_until_listening(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One SSE event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    /// The `event:` field, when there is one.
    pub event: Option<String>,
    pub data: String,
}

/// `membrane reverse` with the configuration `toml`, then `upstream` (`--upstream URL` or
/// `-- CMD`); the directory holds the config file.
pub async fn configured_reverse(
    toml: &str,
    upstream: &[&str],
) -> (tempfile::TempDir, Background, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = super::write_config(dir.path(), toml);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(upstream);
    let (membrane, url) = membrane_reverse(&args).await;
    (dir, membrane, url)
}

/// The head of a raw MCP POST to `address` (`host:port`) announcing a body of `length` bytes,
/// with `extra` header lines (each ending in CRLF): for tests that misbehave on the wire.
pub fn raw_post_head(address: &str, extra: &str, length: usize) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}Content-Length: {length}\r\n\r\n"
    )
}

/// A raw MCP-over-HTTP client for one endpoint.
pub struct Http {
    pub url: String,
    pub client: reqwest::Client,
    pub session: Option<String>,
    pub version: &'static str,
    /// Sent as `Authorization: Bearer ...` on every request.
    pub bearer: Option<String>,
}

impl Http {
    pub fn new(url: &str) -> Self {
        Self::with_client(url, super::http_client())
    }

    pub fn with_client(url: &str, client: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            client,
            session: None,
            version: "2025-06-18",
            bearer: None,
        }
    }

    /// The same endpoint and session, with another token.
    pub fn as_bearer(&self, token: Option<&str>) -> Self {
        Self {
            url: self.url.clone(),
            client: self.client.clone(),
            session: self.session.clone(),
            version: self.version,
            bearer: token.map(str::to_owned),
        }
    }

    /// The headers a conforming client sends on a POST.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "accept",
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            "mcp-protocol-version",
            HeaderValue::from_static(self.version),
        );
        if let Some(session) = &self.session {
            headers.insert("mcp-session-id", HeaderValue::from_str(session).unwrap());
        }
        if let Some(token) = &self.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            headers.insert("authorization", value);
        }
        headers
    }

    pub async fn post_with(
        &self,
        headers: HeaderMap,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        tokio::time::timeout(
            WAIT,
            self.client
                .post(&self.url)
                .headers(headers)
                .body(body)
                .send(),
        )
        .await
        .expect("membrane answered in time")
        .expect("POST")
    }

    pub async fn post(&self, message: &Value) -> reqwest::Response {
        self.post_with(self.headers(), message.to_string()).await
    }

    /// POSTs a request and returns its answer, from JSON or from an SSE stream.
    pub async fn request(&self, id: i64, method: &str, params: Value) -> Value {
        let response = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(response.status(), 200, "{method}");
        answer_of(response, id).await
    }

    pub async fn call_tool(&self, id: i64, name: &str, arguments: Value) -> Value {
        self.request(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }

    /// The handshake: initialize (keeping the session id) and notifications/initialized.
    pub async fn initialize(&mut self) -> Value {
        let response = self
            .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": super::initialize_params(self.version)}))
            .await;
        assert_eq!(response.status(), 200, "initialize");
        self.session = response
            .headers()
            .get("mcp-session-id")
            .map(|id| id.to_str().unwrap().to_owned());
        let answer = answer_of(response, 0).await;
        let accepted = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(accepted.status(), 202, "a notification is accepted");
        answer
    }

    pub async fn delete(&self) -> reqwest::Response {
        let mut request = self.client.delete(&self.url);
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("DELETE")
    }

    /// A GET on the endpoint, resuming after `last_event_id` when given.
    pub async fn get(&self, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .get(&self.url)
            .header("accept", "text/event-stream");
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        tokio::time::timeout(WAIT, request.send())
            .await
            .expect("GET answered in time")
            .expect("GET")
    }
}

/// The answer with `id` in a response: its JSON body, or the SSE event carrying it.
pub async fn answer_of(response: reqwest::Response, id: i64) -> Value {
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if !is_sse {
        return response.json().await.expect("a JSON answer");
    }
    let mut events = SseReader::new(response);
    loop {
        let event = events
            .next()
            .await
            .expect("the answer before the stream ends");
        if event.data.is_empty() {
            continue;
        }
        let message: Value = serde_json::from_str(&event.data).unwrap();
        if message["id"] == json!(id) && message.get("method").is_none() {
            return message;
        }
    }
}

/// Reads SSE events from a response, one at a time.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut fields = 0;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        event.id = Some(id.trim().to_owned());
                        fields += 1;
                    } else if let Some(kind) = line.strip_prefix("event:") {
                        event.event = Some(kind.trim().to_owned());
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                        fields += 1;
                    }
                }
                if fields > 0 {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("the next event in time")
                .ok()??;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}
