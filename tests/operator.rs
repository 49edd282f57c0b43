//! The operator's surface, end to end: `membrane reverse` in front of the rmcp SDK server with
//! the `approval` plugin holding `echo` calls of the rmcp SDK client, and a human settling them
//! through the admin API and `membrane ctl`: approve, deny, modify, a stale digest, racing
//! approvals, timeouts by the plugin's policy, live events, sessions listed and ended, reloads,
//! `/metrics` after known traffic, the audit stream, and the token.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::http::{Background, SseReader, membrane_reverse, rmcp_http_server};
use common::{WAIT, membrane, plugin, write_config};
use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use tokio::process::Command;

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

/// A membrane with the admin API, the approval plugin and the audit stream, its files in `dir`.
struct Operated {
    dir: tempfile::TempDir,
    _upstream: Background,
    membrane: Background,
    url: String,
    admin: String,
}

fn config(approval: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "token"

[audit]
file = "audit.jsonl"

[[plugins]]
path = {path:?}
{approval}
"#,
        path = plugin("approval").display().to_string(),
    )
}

impl Operated {
    async fn start(approval: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        let config = write_config(dir.path(), &config(approval));
        let (upstream, upstream_url) = rmcp_http_server("127.0.0.1:0").await;
        let (membrane, url) = membrane_reverse(&[
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &upstream_url,
        ])
        .await;
        let admin = membrane.logged_url("admin API on ").await;
        let admin = admin.trim_end_matches("/v1").to_owned();
        Self {
            dir,
            _upstream: upstream,
            membrane,
            url,
            admin,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = common::http_client()
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The held messages, once there are `count`.
    async fn held(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let held = self.get("/v1/held").await;
            let held = held.as_array().unwrap().clone();
            if held.len() == count {
                return held;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} held: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ctl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = Command::new(membrane())
            .arg("ctl")
            .args(["--admin", &self.admin, "--token-file"])
            .arg(self.path("token"))
            .args(args)
            .output()
            .await
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

type Client = RunningService<rmcp::RoleClient, ()>;

async fn client(url: &str) -> Client {
    common::tls_provider();
    let transport = StreamableHttpClientTransport::from_uri(url);
    tokio::time::timeout(WAIT, ().serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Calls `echo` with `message` on a task of its own (it may be held); the text it got back, or
/// the error.
fn echo(
    client: &std::sync::Arc<Client>,
    message: &str,
) -> tokio::task::JoinHandle<Result<String, String>> {
    let (client, message) = (client.clone(), message.to_owned());
    tokio::spawn(async move {
        let call = CallToolRequestParams::new("echo".to_owned())
            .with_arguments(json!({ "message": message }).as_object().unwrap().clone());
        match tokio::time::timeout(WAIT, client.call_tool(call)).await {
            Ok(Ok(result)) => Ok(format!("{:?}", result.content)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    })
}

#[tokio::test]
async fn a_human_approves_denies_and_modifies_held_calls() {
    let operated = Operated::start("[plugins.config]\ntools = [\"echo\"]").await;
    let mut events = SseReader::new(
        common::http_client()
            .get(format!("{}/v1/events", operated.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    );
    let client = std::sync::Arc::new(client(&operated.url).await);

    // Approve: only with the digest of what was held.
    let call = echo(&client, "one");
    let held = operated.held(1).await;
    let one = &held[0];
    assert_eq!(one["tool"], "echo");
    assert_eq!(one["arguments"], json!({ "message": "one" }));
    assert_eq!(one["method"], "tools/call");
    assert_eq!(one["plugin"], "approval");
    assert_eq!(one["direction"], "client_to_server");
    assert!(one["chain_version"].as_u64().unwrap() >= 1);
    let digest = one["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    assert!(one["deadline"].as_str().unwrap() > one["held_since"].as_str().unwrap());
    let id = one["id"].as_u64().unwrap();
    let (status, body) = operated
        .post(
            &format!("/v1/held/{id}/approve"),
            json!({ "digest": "sha256:stale" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(!call.is_finished(), "a stale digest settles nothing");
    let (status, body) = operated
        .post(
            &format!("/v1/held/{id}/approve"),
            json!({ "digest": digest }),
        )
        .await;
    assert_eq!(
        (status, &body["settled"]),
        (StatusCode::OK, &json!("approved")),
        "{body}"
    );
    let answer = call.await.unwrap().expect("the approved call is answered");
    assert!(answer.contains("one"), "{answer}");
    let (status, _) = operated
        .post(
            &format!("/v1/held/{id}/approve"),
            json!({ "digest": digest }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "settled once");
    let (status, _) = operated
        .post("/v1/held/999999/approve", json!({ "digest": digest }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deny, with a reason the client hears.
    let call = echo(&client, "two");
    let two = operated.held(1).await.remove(0);
    let (status, _) = operated
        .post(
            &format!("/v1/held/{}/deny", two["id"]),
            json!({ "digest": two["digest"], "reason": "not on a Friday" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let denied = call.await.unwrap().expect_err("a denied call is an error");
    assert!(denied.contains("not on a Friday"), "{denied}");

    // Modify: the replacement must be valid and keep the id; then it is what the server gets.
    let call = echo(&client, "three");
    let three = operated.held(1).await.remove(0);
    let mut replacement = three["message"].clone();
    replacement["params"]["arguments"]["message"] = json!("changed by a human");
    let mut renumbered = replacement.clone();
    renumbered["id"] = json!(424242);
    let modify = format!("/v1/held/{}/modify", three["id"]);
    let (status, body) = operated
        .post(
            &modify,
            json!({ "digest": three["digest"], "message": renumbered }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = operated
        .post(
            &modify,
            json!({ "digest": three["digest"], "message": {"nonsense": true} }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = operated
        .post(
            &modify,
            json!({ "digest": three["digest"], "message": replacement }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer = call.await.unwrap().expect("the modified call is answered");
    assert!(answer.contains("changed by a human"), "{answer}");

    // Racing approvals: exactly one settles the message.
    let call = echo(&client, "four");
    let four = operated.held(1).await.remove(0);
    let approve = format!("/v1/held/{}/approve", four["id"]);
    let racers = (0..8).map(|_| operated.post(&approve, json!({ "digest": four["digest"] })));
    let statuses: Vec<StatusCode> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7,
        "{statuses:?}"
    );
    assert!(call.await.unwrap().unwrap().contains("four"));

    // The live events told a console the same story.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|kind: &&String| *kind == "settled")
        .count()
        < 4
    {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("events in time")
            .expect("the event stream stays open");
        seen.push(event.event.clone().unwrap_or_default());
    }
    assert!(seen.contains(&"session_opened".to_owned()), "{seen:?}");
    assert_eq!(seen.iter().filter(|k| *k == "held").count(), 4, "{seen:?}");

    // Sessions: the client's, with what it did.
    let sessions = operated.get("/v1/sessions").await;
    let listed = sessions["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{sessions}");
    let session = &listed[0];
    assert_eq!(session["live"], true);
    assert_eq!(session["status"], "active");
    assert_eq!(session["verdicts"]["held"], 4);
    assert!(
        session["messages"]["client_to_server"].as_u64().unwrap() >= 6,
        "{session}"
    );
    assert!(
        session["server_info"]["name"]
            .as_str()
            .unwrap()
            .contains("rmcp"),
        "{session}"
    );
    assert!(session["client_info"].is_object(), "{session}");
    let id = session["id"].as_str().unwrap();
    let one = operated.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(one["id"], id);
    assert!(one["plugin_state_bytes"].is_object());

    // Plugins and metrics after this known traffic.
    let plugins = operated.get("/v1/plugins").await;
    let approval = &plugins[0];
    assert_eq!(approval["name"], "approval");
    assert_eq!(approval["metrics"]["paused"], 4);
    assert!(
        approval["contract"]
            .as_str()
            .unwrap()
            .starts_with("membrane:interceptor@"),
        "{approval}"
    );
    assert!(approval["hash"].as_str().unwrap().starts_with("sha256:"));
    let (status, metrics) = operated.call(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    for series in [
        r#"membrane_messages_total{direction="client_to_server",kind="request",method="tools/call"} 4"#,
        r#"membrane_held_settled_total{outcome="approved"} 2"#,
        r#"membrane_held_settled_total{outcome="denied"} 1"#,
        r#"membrane_held_settled_total{outcome="modified"} 1"#,
        r#"membrane_plugin_verdicts_total{plugin="approval",verdict="pause"} 4"#,
        r#"membrane_sessions_opened_total{client="streamable_http",upstream="streamable_http"} 1"#,
        "membrane_sessions_active 1",
        "membrane_held_messages 0",
        r#"membrane_plugin_call_seconds_count{plugin="approval"}"#,
        "membrane_upstream_latency_seconds_count",
        "membrane_store_latency_seconds_count",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }

    // The audit stream: each hold and each settlement, with who settled it.
    let audit = std::fs::read_to_string(operated.path("audit.jsonl")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let settled: Vec<&Value> = lines.iter().filter(|l| l["event"] == "settled").collect();
    assert_eq!(settled.len(), 4, "{audit}");
    assert!(
        settled
            .iter()
            .all(|l| l["by"] == "admin API" && l["plugin"] == "approval")
    );
    assert!(
        settled
            .iter()
            .any(|l| l["verdict"] == "denied" && l["reason"] == "not on a Friday")
    );
    let paused = lines
        .iter()
        .filter(|l| l["event"] == "verdict" && l["verdict"] == "pause");
    assert!(paused.clone().all(|l| l["tool"] == "echo"), "{audit}");
    assert_eq!(paused.count(), 4, "{audit}");

    // Ending the session from the API ends it for the client too.
    let status = common::http_client()
        .delete(format!("{}/v1/sessions/{id}", operated.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    common::services::eventually("the session ends", async || {
        operated.get("/v1/sessions").await["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let after = common::http_client()
        .post(&operated.url)
        .header("mcp-session-id", id)
        .header(
            "mcp-protocol-version",
            session["protocol_version"].as_str().unwrap(),
        )
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND, "the session is gone");
    drop(operated.membrane);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_only_probes_go_without() {
    let operated = Operated::start("[plugins.config]\ntools = [\"echo\"]").await;
    let http = common::http_client();
    for path in [
        "/v1/sessions",
        "/v1/held",
        "/v1/plugins",
        "/metrics",
        "/v1/events",
    ] {
        let url = format!("{}{path}", operated.admin);
        let none = http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let wrong = http
            .get(&url)
            .bearer_auth("admin-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let reload = http
        .post(format!("{}/v1/reload", operated.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), StatusCode::UNAUTHORIZED);
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let answer = http
            .get(format!("{}{path}", operated.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.text().await.unwrap(), body);
    }
    let console = http
        .get(format!("{}/", operated.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), StatusCode::OK);
    assert!(console.text().await.unwrap().contains("console.js"));
    // The MCP port does not serve the admin API.
    let mcp = operated.url.trim_end_matches("/mcp");
    let on_mcp = http
        .get(format!("{mcp}/v1/held"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(on_mcp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ctl_lists_approves_denies_and_reloads() {
    let operated = Operated::start("[plugins.config]\ntools = [\"echo\"]").await;
    let client = std::sync::Arc::new(client(&operated.url).await);

    let mut watch = Command::new(membrane())
        .arg("ctl")
        .args(["--admin", &operated.admin, "--token-file"])
        .arg(operated.path("token"))
        .arg("watch")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let call = echo(&client, "by ctl");
    let held = operated.held(1).await.remove(0);
    let (code, table, _) = operated.ctl(&["held"]).await;
    assert_eq!(code, Some(0));
    assert!(
        table.contains("echo") && table.contains("by ctl"),
        "{table}"
    );
    let (code, listed, _) = operated.ctl(&["held", "--json"]).await;
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["digest"], held["digest"]);
    let id = held["id"].to_string();
    let (code, out, err) = operated.ctl(&["approve", &id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approved"), "{out}");
    assert!(call.await.unwrap().unwrap().contains("by ctl"));
    let (code, _, err) = operated.ctl(&["approve", &id]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("no message"), "{err}");

    let call = echo(&client, "denied by ctl");
    let held = operated.held(1).await.remove(0);
    let (code, _, err) = operated
        .ctl(&["deny", &held["id"].to_string(), "--reason", "ctl says no"])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(call.await.unwrap().unwrap_err().contains("ctl says no"));

    let call = echo(&client, "modified by ctl");
    let held = operated.held(1).await.remove(0);
    let mut replacement = held["message"].clone();
    replacement["params"]["arguments"]["message"] = json!("rewritten by ctl");
    let (code, _, err) = operated
        .ctl(&[
            "modify",
            &held["id"].to_string(),
            "--message",
            &replacement.to_string(),
        ])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(call.await.unwrap().unwrap().contains("rewritten by ctl"));

    let (code, sessions, _) = operated.ctl(&["sessions"]).await;
    assert_eq!(code, Some(0));
    assert!(
        sessions.lines().count() == 2 && sessions.contains("streamable_http"),
        "{sessions}"
    );
    let (code, plugins, _) = operated.ctl(&["plugins"]).await;
    assert_eq!(code, Some(0));
    assert!(plugins.contains("approval"), "{plugins}");

    // A reload through ctl says what changed; one that cannot load is refused and changes nothing.
    std::fs::write(
        operated.path("membrane.toml"),
        config("[plugins.config]\ntools = [\"add\"]"),
    )
    .unwrap();
    let (code, out, err) = operated.ctl(&["reload"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("loaded approval"), "{out}");
    let answer = echo(&client, "no longer held").await.unwrap();
    assert!(answer.unwrap().contains("no longer held"));
    std::fs::write(
        operated.path("membrane.toml"),
        config("[plugins.config]\ntools = []"),
    )
    .unwrap();
    let (code, _, err) = operated.ctl(&["reload"]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("refused"), "{err}");

    // `watch` followed it all as it happened.
    watch.start_kill().unwrap();
    let watched = watch.wait_with_output().await.unwrap();
    let watched = String::from_utf8_lossy(&watched.stdout);
    for kind in ["held ", "settled ", "reload "] {
        assert!(
            watched.lines().any(|l| l.starts_with(kind)),
            "{kind}in {watched}"
        );
    }

    // Without the token, ctl says what to do.
    let output = Command::new(membrane())
        .args(["ctl", "--admin", &operated.admin, "held"])
        .env_remove("MEMBRANE_ADMIN_TOKEN_FILE")
        .output()
        .await
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--token-file"));
}

#[tokio::test]
async fn a_call_nobody_settles_follows_the_plugins_timeout_policy() {
    for (policy, approved) in [("approve", true), ("deny", false)] {
        let operated = Operated::start(&format!(
            "on_timeout = {policy:?}\n[plugins.config]\ntools = [\"echo\"]\ntimeout_ms = 300"
        ))
        .await;
        let client = std::sync::Arc::new(client(&operated.url).await);
        let answer = echo(&client, "waiting").await.unwrap();
        assert_eq!(answer.is_ok(), approved, "{policy}: {answer:?}");
        let metrics = operated
            .call(reqwest::Method::GET, "/metrics", None)
            .await
            .1;
        assert!(
            metrics
                .as_str()
                .unwrap()
                .contains(r#"membrane_held_settled_total{outcome="timed_out"} 1"#),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn the_admin_api_stays_on_loopback_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let log = common::startup_failure(&format!(
        "[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = {:?}\n",
        dir.path().join("token")
    ))
    .await;
    assert!(
        log.contains("beyond loopback") && log.contains("[tls]"),
        "{log}"
    );
    let log = common::startup_failure(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/nonexistent/token\"\n",
    )
    .await;
    assert!(log.contains("token_file"), "{log}");
}

/// Debian's `chromedriver` on a free loopback port, and a headless Chromium session through it.
async fn browser() -> (Background, fantoccini::Client) {
    let driver = std::path::Path::new("/usr/bin/chromedriver");
    assert!(
        driver.exists(),
        "the console test needs Debian's chromium and chromium-driver (scripts/test.sh installs them)"
    );
    let port = common::http::free_port();
    let chromedriver = Background::spawn(
        Command::new(driver).args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()]),
    );
    common::http::wait_until_listening(port).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (chromedriver, client)
}

/// Waits for the element `css` to exist (the page updates live).
async fn element(page: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    tokio::time::timeout(WAIT, page.wait().for_element(fantoccini::Locator::Css(css)))
        .await
        .unwrap_or_else(|_| panic!("{css} in time"))
        .unwrap()
}

/// Clicks the element `css` once it exists, again if the live page redrew it meanwhile.
async fn click(page: &fantoccini::Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(found) = page.find(fantoccini::Locator::Css(css)).await
            && found.click().await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css} never clickable");
}

#[tokio::test]
async fn a_click_in_the_console_approves_denies_or_edits_a_held_call() {
    let operated = Operated::start("[plugins.config]\ntools = [\"echo\"]").await;
    let client = std::sync::Arc::new(client(&operated.url).await);
    let (_chromedriver, page) = browser().await;
    page.goto(&format!("{}/#token={TOKEN}", operated.admin))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while page
            .find(fantoccini::Locator::Id("status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            != "connected"
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the console follows the live events");
    let address = page.current_url().await.unwrap();
    assert!(
        !address.as_str().contains(TOKEN),
        "the token leaves the address bar"
    );

    // A held call appears by itself; a click approves it and the client gets the server's answer.
    let call = echo(&client, "approved in a browser");
    let card = format!(
        ".held[data-held-id=\"{}\"]",
        operated.held(1).await[0]["id"]
    );
    let text = element(&page, &card).await.text().await.unwrap();
    assert!(
        text.contains("echo") && text.contains("approved in a browser"),
        "{text}"
    );
    element(&page, "tr[data-session-id]").await;
    if let Ok(path) = std::env::var("MEMBRANE_CONSOLE_SCREENSHOT") {
        std::fs::write(path, page.screenshot().await.unwrap()).unwrap();
    }
    click(&page, &format!("{card} button.approve")).await;
    let answer = call.await.unwrap().expect("approved in the console");
    assert!(answer.contains("approved in a browser"), "{answer}");

    // Deny asks for a reason, which the client hears.
    let call = echo(&client, "denied in a browser");
    let card = format!(
        ".held[data-held-id=\"{}\"]",
        operated.held(1).await[0]["id"]
    );
    click(&page, &format!("{card} button.deny")).await;
    page.send_alert_text("the browser says no").await.unwrap();
    page.accept_alert().await.unwrap();
    let denied = call.await.unwrap().expect_err("denied in the console");
    assert!(denied.contains("the browser says no"), "{denied}");

    // Edit: the replacement typed into the page is what the server gets.
    let call = echo(&client, "edited in a browser");
    let card = format!(
        ".held[data-held-id=\"{}\"]",
        operated.held(1).await[0]["id"]
    );
    click(&page, &format!("{card} button.edit")).await;
    let editor = element(&page, &format!("{card} textarea.modify-json")).await;
    let original = editor.prop("value").await.unwrap().unwrap();
    let mut replacement: Value = serde_json::from_str(&original).unwrap();
    replacement["params"]["arguments"]["message"] = json!("rewritten in a browser");
    editor.clear().await.unwrap();
    editor.send_keys(&replacement.to_string()).await.unwrap();
    click(&page, &format!("{card} button.send-modified")).await;
    let answer = call.await.unwrap().expect("modified in the console");
    assert!(answer.contains("rewritten in a browser"), "{answer}");
    assert!(operated.held(0).await.is_empty());
    page.close().await.unwrap();
}

/// An OTLP/HTTP receiver on a loopback port: what it received, as the JSON bodies posted to
/// `/v1/traces`.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// Every span received so far, with its attributes as a map.
fn spans(received: &std::sync::Mutex<Vec<Value>>) -> Vec<Value> {
    let bodies = received.lock().unwrap().clone();
    let mut spans = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    let attributes: serde_json::Map<String, Value> = span["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            let value = &a["value"];
                            let text = value["stringValue"].clone();
                            let text = if text.is_null() { value.clone() } else { text };
                            (a["key"].as_str().unwrap().to_owned(), text)
                        })
                        .collect();
                    span["attrs"] = Value::Object(attributes);
                    spans.push(span);
                }
            }
        }
    }
    spans
}

#[tokio::test]
async fn requests_and_plugin_calls_are_traced_over_otlp_in_the_clients_trace() {
    let (collector, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[telemetry]\notlp_endpoint = {collector:?}\n{}",
        common::guard_toml(&["delete_*"])
    );
    let config = write_config(dir.path(), &toml);
    let (_upstream, upstream_url) = common::http::python_http_server(&[]).await;
    let (_membrane, url) = common::http::membrane_reverse_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &upstream_url,
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let mut client = common::http::Http::new(&url);
    client.initialize().await;
    let session = client.session.clone().unwrap();

    // The client's trace goes on through membrane to the server.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let call = json!({
        "name": "meta",
        "arguments": {},
        "_meta": { "traceparent": format!("00-{trace_id}-{parent}-01"), "tracestate": "vendor=1" },
    });
    let answer = client.request(7, "tools/call", call).await;
    let seen: Value = serde_json::from_str(common::tool_text(&answer)).unwrap();
    let forwarded = seen["traceparent"]
        .as_str()
        .expect("the server got a traceparent");
    let fields: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(fields[1], trace_id, "same trace: {forwarded}");
    assert_ne!(
        fields[2], parent,
        "membrane's span is the server's parent: {forwarded}"
    );
    assert_eq!(seen["tracestate"], "vendor=1");

    // A blocked call is traced too, and marked as an error.
    let blocked = client.call_tool(8, "delete_everything", json!({})).await;
    assert!(blocked["error"].is_object(), "{blocked}");

    let mut found = Vec::new();
    common::services::eventually("spans reach the collector", async || {
        found = spans(&received);
        found
            .iter()
            .any(|s| s["name"] == "tools/call delete_everything")
            && found
                .iter()
                .filter(|s| s["name"] == "plugin tool_guard")
                .count()
                >= 2
    })
    .await;
    let request = found
        .iter()
        .find(|s| s["name"] == "tools/call meta")
        .unwrap();
    assert_eq!(request["traceId"], trace_id);
    assert_eq!(request["parentSpanId"], parent);
    assert_eq!(request["spanId"], fields[2]);
    let attrs = &request["attrs"];
    assert_eq!(attrs["mcp.method.name"], "tools/call");
    assert_eq!(attrs["gen_ai.tool.name"], "meta");
    assert_eq!(attrs["mcp.session.id"], session.as_str());
    assert_eq!(attrs["jsonrpc.request.id"], "7");
    assert!(attrs["mcp.protocol.version"].is_string(), "{request}");
    assert!(attrs.get("error.type").is_none(), "{request}");
    let plugin = found
        .iter()
        .find(|s| s["name"] == "plugin tool_guard" && s["parentSpanId"] == request["spanId"])
        .expect("the plugin call is a child of the request's span");
    assert_eq!(plugin["traceId"], trace_id);
    assert_eq!(plugin["attrs"]["membrane.verdict"], "continue");
    let failed = found
        .iter()
        .find(|s| s["name"] == "tools/call delete_everything")
        .unwrap();
    assert!(failed["attrs"]["error.type"].is_string(), "{failed}");
    let blocking = found
        .iter()
        .find(|s| s["name"] == "plugin tool_guard" && s["parentSpanId"] == failed["spanId"])
        .unwrap();
    assert_eq!(blocking["attrs"]["membrane.verdict"], "block");
}
