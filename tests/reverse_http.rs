//! `membrane reverse` and HTTP upstreams: MCP clients over Streamable HTTP in front of stdio
//! and HTTP servers, with real SDK peers (rmcp, the Python `mcp` SDK, server-everything) and a
//! raw HTTP client that checks statuses, headers, SSE events and resumption byte by byte.

mod common;

use std::time::Duration;

use common::http::{
    Background, Http, SseReader, configured_reverse, membrane_reverse, python_http_server,
    rmcp_http_server,
};
use common::{
    RawClient, WAIT, guard_toml, initialize_params, json_output, peers, rmcp_server, tool_text,
};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

fn text_of(answer: &Value) -> String {
    tool_text(answer).to_owned()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: the comm may hold spaces, so read after its ')'.
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            after.split_whitespace().nth(1) == Some(pid.to_string().as_str())
        })
        .count()
}

/// [`configured_reverse`] in front of the rmcp server over stdio.
async fn rmcp_behind_reverse(toml: &str) -> (tempfile::TempDir, Background, String) {
    let server = rmcp_server();
    configured_reverse(toml, &["--", server.to_str().unwrap()]).await
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn rmcp_clients_over_http_each_get_their_own_stdio_server() {
    let (_dir, membrane, url) = rmcp_behind_reverse(&guard_toml(&["delete_*"])).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        common::tls_provider();
        let transport = StreamableHttpClientTransport::from_uri(url.as_str());
        let client = tokio::time::timeout(WAIT, ().serve(transport))
            .await
            .expect("handshake in time")
            .expect("handshake through membrane");
        clients.push(client);
    }
    membrane.log.wait_for("started upstream server", 2).await;
    assert_eq!(children_of(membrane.pid()), 2, "one server per session");
    for (n, client) in clients.iter().enumerate() {
        let info = client.peer_info().expect("server info");
        assert_eq!(info.server_info.as_ref().unwrap().name, "rmcp-peer");
        let tools = client.list_all_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert!(names.contains(&"echo".into()) && !names.contains(&"delete_file".into()));
        let message = format!("hello from client {n}");
        let echo = CallToolRequestParams::new("echo")
            .with_arguments(json!({"message": message}).as_object().unwrap().clone());
        let result = serde_json::to_value(client.call_tool(echo).await.unwrap()).unwrap();
        assert_eq!(result["content"][0]["text"], message.as_str());
        let delete = CallToolRequestParams::new("delete_file")
            .with_arguments(json!({"path": "/etc/passwd"}).as_object().unwrap().clone());
        let refused = client.call_tool(delete).await.expect_err("blocked");
        assert!(
            refused.to_string().contains("-32001") || refused.to_string().contains("blocked"),
            "{refused}"
        );
    }
    for client in clients {
        client.cancel().await.unwrap();
    }
    membrane.log.wait_for("session ended", 2).await;
    eventually("the servers are gone", || children_of(membrane.pid()) == 0).await;
    assert_eq!(membrane.stop().await, Some(0));
}

#[tokio::test]
async fn python_client_over_http_to_a_python_http_server() {
    let (_server, upstream) = python_http_server(&[]).await;
    let (membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    for mode in ["legacy", "auto"] {
        let steps = ["call", "--tool", "steps", "--args", r#"{"count": 3}"#];
        let seen = python_client(mode, &steps, &url).await;
        assert_eq!(seen["server_name"], "python-peer", "{seen}");
        assert_eq!(seen["call"]["text"], "done after 3 steps", "{seen}");
    }
    assert_eq!(membrane.stop().await, Some(0));
}

#[tokio::test]
async fn sse_events_pass_through_and_a_cut_stream_resumes() {
    let (_server, upstream) = python_http_server(&[]).await;
    let (_membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    let mut client = Http::new(&url);
    client.version = "2025-11-25";
    client.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "steps", "arguments": {"count": 4, "delay_ms": 300},
        "_meta": {"progressToken": "p7"}
    }});
    let response = client.post(&call).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream",
        "messages before the answer make a stream"
    );
    let mut events = SseReader::new(response);
    let priming = events.next().await.unwrap();
    assert_eq!(priming.data, "", "a priming event first (2025-11-25)");
    let first = events.next().await.unwrap();
    let seen_id = first.id.clone().expect("every event has an id");
    let stream = seen_id.split('.').next().unwrap().to_owned();
    assert_eq!(priming.id.as_deref(), Some(format!("{stream}.0").as_str()));
    drop(events); // the connection breaks here

    tokio::time::sleep(Duration::from_millis(700)).await;
    let resumed = client.get(Some(&seen_id)).await;
    assert_eq!(resumed.status(), 200);
    let mut events = SseReader::new(resumed);
    let mut ids = vec![seen_id.clone()];
    let mut progress = Vec::new();
    let answer = loop {
        let event = events
            .next()
            .await
            .expect("the rest of the stream, up to its answer");
        let id = event.id.clone().unwrap();
        assert!(
            id.starts_with(&format!("{stream}.")),
            "only that stream: {id}"
        );
        ids.push(id);
        let message: Value = serde_json::from_str(&event.data).unwrap();
        if message["method"] == "notifications/progress" {
            progress.push(message["params"]["progress"].as_f64().unwrap());
        }
        if message["id"] == 7 {
            break message;
        }
    };
    assert_eq!(text_of(&answer), "done after 4 steps");
    let seqs: Vec<u64> = ids
        .iter()
        .map(|id| id.split('.').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "nothing lost or repeated: {ids:?}"
    );
    assert!(
        !progress.is_empty() && progress.windows(2).all(|w| w[0] < w[1]),
        "{progress:?}"
    );
    assert!(
        events.next().await.is_none(),
        "the stream ends with its answer"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_the_session_goes_on() {
    let (_dir, _membrane, url) = rmcp_behind_reverse("max_message_size = 4096\n").await;
    let mut client = Http::new(&url);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let no_session = client.post(&list).await;
    assert_eq!(
        no_session.status(),
        400,
        "no session id on a non-initialize request"
    );
    client.initialize().await;
    let status = |r: &reqwest::Response| r.status().as_u16();

    let mut headers = client.headers();
    headers.insert("content-type", "text/plain".parse().unwrap());
    assert_eq!(
        status(&client.post_with(headers, list.to_string()).await),
        415
    );
    let mut headers = client.headers();
    headers.insert("accept", "application/json".parse().unwrap());
    assert_eq!(
        status(&client.post_with(headers, list.to_string()).await),
        406
    );
    let mut headers = client.headers();
    headers.insert("mcp-protocol-version", "1999-01-01".parse().unwrap());
    assert_eq!(
        status(&client.post_with(headers, list.to_string()).await),
        400
    );
    let malformed = client
        .post_with(client.headers(), r#"{"jsonrpc": "2.0", "id": 1,"#)
        .await;
    assert_eq!(status(&malformed), 400);
    let error: Value = malformed.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32700, "{error}");
    let huge = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x".repeat(10_000)}}});
    assert_eq!(status(&client.post(&huge).await), 413);
    let batch = json!([list]);
    assert_eq!(
        status(&client.post(&batch).await),
        400,
        "no batches after 2025-03-26"
    );
    let mut headers = client.headers();
    headers.insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(
        status(&client.post_with(headers, list.to_string()).await),
        403
    );
    let mut headers = client.headers();
    headers.insert("mcp-session-id", "not-a-session".parse().unwrap());
    assert_eq!(
        status(&client.post_with(headers, list.to_string()).await),
        404
    );
    let put = client.client.put(&url).body("{}").send().await.unwrap();
    assert_eq!(status(&put), 405);
    let get = client
        .client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&get), 406);

    let mut headers = client.headers();
    headers.insert("origin", "http://localhost:5173".parse().unwrap());
    let local = client.post_with(headers, list.to_string()).await;
    assert_eq!(status(&local), 200, "loopback origins are allowed");
    let answer = client
        .call_tool(3, "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(text_of(&answer), "still here");
}

#[tokio::test]
async fn session_limit_delete_and_no_leaks() {
    let (_dir, membrane, url) = rmcp_behind_reverse("[session]\nmax_sessions = 2\n").await;
    let mut first = Http::new(&url);
    first.initialize().await;
    let mut second = Http::new(&url);
    second.initialize().await;
    let mut third = Http::new(&url);
    let refused = third
        .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": initialize_params("2025-06-18")}))
        .await;
    assert_eq!(refused.status(), 503, "more sessions than configured");
    assert_eq!(children_of(membrane.pid()), 2);

    assert_eq!(first.delete().await.status(), 200);
    eventually("the first session's server is gone", || {
        children_of(membrane.pid()) == 1
    })
    .await;
    let gone = first
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!(gone.status(), 404, "a deleted session is unknown");
    assert_eq!(first.delete().await.status(), 404);

    third.initialize().await;
    let answer = third.call_tool(1, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(text_of(&answer), "5");
    let answer = second
        .call_tool(1, "echo", json!({"message": "second"}))
        .await;
    assert_eq!(text_of(&answer), "second");
    assert_eq!(membrane.stop().await, Some(0));
}

#[tokio::test]
async fn a_session_the_upstream_dropped_is_404_and_a_new_one_works() {
    let (server, upstream) = rmcp_http_server("127.0.0.1:0").await;
    let addr = upstream
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let (membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "before"}))
        .await;
    assert_eq!(text_of(&answer), "before");
    // Each side has its own id for the session, and neither reaches the other.
    let ours = client.session.clone().expect("membrane's session id");
    let log = membrane.log.wait_for("session initialized", 1).await;
    let line = log
        .lines()
        .find(|l| l.contains("session initialized"))
        .unwrap();
    let theirs = line.split("upstream_session=").nth(1).unwrap();
    let theirs = theirs.split_whitespace().next().unwrap();
    assert!(theirs != "-" && theirs != ours, "{line}");
    assert!(line.contains(&ours), "{line}");

    // The upstream restarts and forgets its sessions.
    server.stop().await;
    let (_server, _) = rmcp_http_server(&addr).await;
    let failed = client
        .call_tool(2, "echo", json!({"message": "lost"}))
        .await;
    assert_eq!(failed["error"]["code"], -32002, "{failed}");
    membrane.log.wait_for("session ended", 1).await;
    let gone = client
        .post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        .await;
    assert_eq!(gone.status(), 404, "the client is told to start again");

    client.session = None;
    client.initialize().await;
    let answer = client
        .call_tool(4, "echo", json!({"message": "after"}))
        .await;
    assert_eq!(text_of(&answer), "after");
}

#[tokio::test]
async fn forward_mode_with_an_http_upstream() {
    let (_server, upstream) = rmcp_http_server("127.0.0.1:0").await;
    let mut client = RawClient::spawn(&["--upstream", &upstream], &[]);
    let init = client.initialize().await;
    assert_eq!(init["serverInfo"]["name"], "rmcp-peer");
    let answer = client
        .call_tool(1, "echo", json!({"message": "over http"}))
        .await;
    assert_eq!(text_of(&answer), "over http");
    let answer = client.call_tool(2, "no_such_tool", json!({})).await;
    assert!(
        answer.get("error").is_some() || answer["result"]["isError"] == true,
        "{answer}"
    );
    client.close_stdin();
    assert_eq!(client.exit_code().await, Some(0));
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_a_clear_answer() {
    let port = common::http::free_port();
    let (_membrane, url) =
        membrane_reverse(&["--upstream", &format!("http://127.0.0.1:{port}/mcp")]).await;
    let client = Http::new(&url);
    let response = client
        .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": initialize_params("2025-06-18")}))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{answer}"
    );
}

/// server-everything binds every interface, so it runs with membrane and the client in a
/// network namespace of their own.
#[tokio::test]
async fn server_everything_over_http_in_a_private_network() {
    let everything =
        peers().join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let script = format!(
        r#"set -e
ip link set lo up
wait_port() {{ for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }}
PORT=3001 node {everything} streamableHttp >&2 &
upstream=$!
wait_port 3001
{membrane} reverse --listen 127.0.0.1:3002 --upstream http://127.0.0.1:3001/mcp &
proxy=$!
wait_port 3002
{python} {client} --mode legacy call --tool echo --args '{{"message": "through the namespace"}}' -- http://127.0.0.1:3002/mcp
kill $proxy $upstream
"#,
        everything = everything.display(),
        membrane = common::membrane(),
        python = peers().join("venv/bin/python").display(),
        client = common::repo()
            .join("tests/peers/python_client.py")
            .display(),
    );
    // `unshare -n` needs root.
    let seen = json_output(
        tokio::process::Command::new("unshare")
            .args(["-n", "bash", "-c", &script])
            .env("XDG_CACHE_HOME", common::cache_home()),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        seen["call"]["text"]
            .as_str()
            .unwrap()
            .contains("through the namespace"),
        "{seen}"
    );
}

/// Runs the Python SDK client (`tests/peers/python_client.py`) against `url`.
async fn python_client(mode: &str, args: &[&str], url: &str) -> Value {
    common::python_client(&[&["--mode", mode], args].concat(), url, &[]).await
}

#[tokio::test]
async fn the_stateless_revision_passes_through_and_older_servers_fall_back() {
    let echo = ["call", "--tool", "echo", "--args", r#"{"message": "hi"}"#];
    let (_python, upstream) = python_http_server(&[]).await;
    let (_membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    let seen = python_client("auto", &echo, &url).await;
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
    assert_eq!(seen["call"]["text"], "hi", "{seen}");

    let rmcp = rmcp_server();
    let (membrane, url) = membrane_reverse(&["--", rmcp.to_str().unwrap()]).await;
    let seen = python_client("auto", &echo, &url).await;
    assert_eq!(seen["protocol_version"], "2026-07-28", "{seen}");
    assert_eq!(seen["call"]["text"], "hi", "{seen}");
    eventually("each exchange's server is gone", || {
        children_of(membrane.pid()) == 0
    })
    .await;

    let everything = common::server_everything();
    let everything: Vec<&str> = everything.iter().map(String::as_str).collect();
    let mut args = vec!["--"];
    args.extend(everything);
    let (_membrane, url) = membrane_reverse(&args).await;
    let seen = python_client("auto", &echo, &url).await;
    assert_ne!(
        seen["protocol_version"], "2026-07-28",
        "fell back to the handshake: {seen}"
    );
    assert!(
        seen["call"]["text"].as_str().unwrap().contains("hi"),
        "{seen}"
    );
}

#[tokio::test]
async fn stateless_headers_must_match_the_body() {
    let (_python, upstream) = python_http_server(&[]).await;
    let (_membrane, url) = membrane_reverse(&["--upstream", &upstream]).await;
    let mut client = Http::new(&url);
    client.version = "2026-07-28";
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "stateless"}, "_meta": meta}});
    let mut headers = client.headers();
    headers.insert("mcp-method", "tools/call".parse().unwrap());
    headers.insert("mcp-name", "add".parse().unwrap());
    let refused = client.post_with(headers, call.to_string()).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], -32020, "{error}");

    let mut headers = client.headers();
    headers.insert("mcp-method", "tools/call".parse().unwrap());
    headers.insert("mcp-name", "echo".parse().unwrap());
    let answered = client.post_with(headers, call.to_string()).await;
    assert_eq!(answered.status(), 200);
    assert!(
        answered.headers().get("mcp-session-id").is_none(),
        "no sessions in this revision"
    );
    let answer = common::http::answer_of(answered, 1).await;
    assert_eq!(text_of(&answer), "stateless");

    let unknown =
        json!({"jsonrpc": "2.0", "id": 2, "method": "no/such/method", "params": {"_meta": meta}});
    let mut headers = client.headers();
    headers.insert("mcp-method", "no/such/method".parse().unwrap());
    let missing = client.post_with(headers, unknown.to_string()).await;
    assert_eq!(missing.status(), 404, "method not found keeps its status");
}

#[tokio::test]
async fn typescript_client_over_http_with_the_guard() {
    let (_dir, membrane, url) = rmcp_behind_reverse(&guard_toml(&["delete_*"])).await;
    let seen = common::typescript_client(&url, &[]).await;
    assert_eq!(seen["server_name"], "rmcp-peer", "{seen}");
    let tools = seen["tools"].as_array().unwrap();
    assert!(
        tools.contains(&json!("echo")) && !tools.contains(&json!("delete_file")),
        "{seen}"
    );
    assert_eq!(seen["echo"]["text"], "hello from typescript", "{seen}");
    assert_eq!(seen["blocked"]["code"], -32001, "{seen}");
    membrane.log.wait_for("client ended the session", 1).await;
    eventually("its server is gone", || children_of(membrane.pid()) == 0).await;
}

#[tokio::test]
async fn quick_answers_are_json_and_slow_ones_a_primed_stream() {
    let server = rmcp_server();
    let (_membrane, url) = membrane_reverse(&["--", server.to_str().unwrap()]).await;
    let mut client = Http::new(&url);
    client.version = "2025-11-25";
    client.initialize().await;
    let content_type =
        |r: &reqwest::Response| r.headers()["content-type"].to_str().unwrap().to_owned();

    let quick = client
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "quick"}}}))
        .await;
    assert_eq!(content_type(&quick), "application/json");
    assert_eq!(text_of(&quick.json().await.unwrap()), "quick");

    let slow = client
        .post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"ms": 1500}}}))
        .await;
    assert_eq!(content_type(&slow), "text/event-stream");
    let mut events = SseReader::new(slow);
    let priming = events.next().await.unwrap();
    assert!(
        priming.data.is_empty() && priming.id.unwrap().ends_with(".0"),
        "primed"
    );
    let answer: Value = serde_json::from_str(&events.next().await.unwrap().data).unwrap();
    assert_eq!(text_of(&answer), "slept");
    assert!(
        events.next().await.is_none(),
        "the stream ends with its answer"
    );
}

#[tokio::test]
async fn answers_keep_the_framing_an_http_upstream_chose() {
    let content_type =
        |r: &reqwest::Response| r.headers()["content-type"].to_str().unwrap().to_owned();
    let steps = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "steps", "arguments": {"count": 2, "delay_ms": 700}}});
    let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "quick"}}});

    // A JSON upstream: even a slow answer stays JSON (no stream of membrane's making).
    let (_json_server, json_url) = python_http_server(&["--json"]).await;
    let (_m1, url) = membrane_reverse(&["--upstream", &json_url]).await;
    let mut client = Http::new(&url);
    client.version = "2025-11-25";
    client.initialize().await;
    let slow = client.post(&steps).await;
    assert_eq!(content_type(&slow), "application/json");
    assert_eq!(text_of(&slow.json().await.unwrap()), "done after 2 steps");

    // An SSE upstream: even a quick answer comes as a stream, with membrane's event ids and a
    // priming event.
    let (_sse_server, sse_url) = python_http_server(&[]).await;
    let (_m2, url) = membrane_reverse(&["--upstream", &sse_url]).await;
    let mut client = Http::new(&url);
    client.version = "2025-11-25";
    client.initialize().await;
    let quick = client.post(&echo).await;
    assert_eq!(content_type(&quick), "text/event-stream");
    let mut events = SseReader::new(quick);
    let priming = events.next().await.unwrap();
    assert!(priming.data.is_empty() && priming.id.as_deref().unwrap().ends_with(".0"));
    let answer = events.next().await.unwrap();
    assert!(answer.id.unwrap().ends_with(".1"), "membrane's own ids");
    assert_eq!(
        text_of(&serde_json::from_str(&answer.data).unwrap()),
        "quick"
    );
}

#[tokio::test]
async fn an_upstream_that_hangs_gets_a_clear_answer_in_bounded_time() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/mcp", listener.local_addr().unwrap());
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let toml = "[http]\nupstream_timeout_secs = 1\n";
    let (_dir, _membrane, url) = configured_reverse(toml, &["--upstream", &upstream]).await;
    let client = Http::new(&url);
    let started = std::time::Instant::now();
    let answer = client
        .request(0, "initialize", initialize_params("2025-06-18"))
        .await;
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{answer}"
    );
    assert!(
        started.elapsed() < WAIT,
        "bounded by the configured timeout"
    );
}

/// A batch (2025-03-26) that a plugin wants is taken apart, each message through the chain on
/// its own; each request's answer comes back on the batch's stream.
#[tokio::test]
async fn batches_at_2025_03_26_go_through_the_chain_one_by_one() {
    let (_dir, _membrane, url) = rmcp_behind_reverse(&guard_toml(&["delete_*"])).await;
    let mut client = Http::new(&url);
    client.version = "2025-03-26";
    client.initialize().await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "in a batch"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "delete_file", "arguments": {"path": "/etc/passwd"}}},
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    ]);
    let response = client.post(&batch).await;
    assert_eq!(response.status(), 200);
    let mut events = SseReader::new(response);
    let mut answers = std::collections::BTreeMap::new();
    while let Some(event) = events.next().await {
        if let Ok(message) = serde_json::from_str::<Value>(&event.data)
            && let Some(id) = message["id"].as_i64()
        {
            answers.insert(id, message);
        }
    }
    assert_eq!(
        answers.len(),
        2,
        "each request answered, then the stream ends: {answers:?}"
    );
    assert_eq!(text_of(&answers[&1]), "in a batch");
    assert_eq!(answers[&2]["error"]["code"], -32001, "{:?}", answers[&2]);
}
