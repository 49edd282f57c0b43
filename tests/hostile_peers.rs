//! Every bound of the front door holding against hostile clients and upstreams while a
//! well-behaved client alongside gets every answer: slow and half-sent requests, a client that
//! stops reading, an upstream that streams one event without end, trickles, redirects or asks
//! to be hammered, batches and bursts past the session's caps; SIGTERM bounded in time;
//! session ids out of the log; upstream servers gone with membrane.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::{Background, Http, membrane_reverse, membrane_reverse_with, raw_post_head};
use common::{WAIT, memory_kib, rmcp_server, tool_text, write_config};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// membrane reverse with `toml` in front of `upstream` (`--upstream URL` or `-- CMD`).
async fn membrane_with(toml: &str, upstream: &[&str]) -> (tempfile::TempDir, Background, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), toml);
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(upstream);
    let (membrane, url) = membrane_reverse(&args).await;
    (dir, membrane, url)
}

/// A well-behaved client that initializes and then calls echo `calls` times, each answered.
async fn well_behaved(url: String, calls: i64) {
    let mut client = Http::new(&url);
    client.initialize().await;
    for id in 1..=calls {
        let message = format!("call {id}");
        let answer = client
            .call_tool(id, "echo", json!({"message": message}))
            .await;
        assert_eq!(tool_text(&answer), message, "{answer}");
    }
}

fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned()
}

/// Whether the server closed `stream` (a read returns 0 or fails) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (408, 503); the close follows
        }
    }
}

#[tokio::test]
async fn slow_and_half_sent_requests_do_not_starve_others() {
    let toml = "max_message_size = 4194304\n[http]\nheader_timeout_secs = 2\nbody_timeout_secs = 3\nbody_budget_bytes = 4194304\n";
    let server = rmcp_server();
    let (_dir, membrane, url) = membrane_with(toml, &["--", server.to_str().unwrap()]).await;
    let pid = membrane.pid();
    let target = address(&url);
    // Headers that never end.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&target).await.unwrap();
        stream
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Bodies that stop half way: 1 MB announced, 256 KiB sent.
    let mut half = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(&target).await.unwrap();
        let head = raw_post_head(&target, "", 1_000_000);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b' '; 256 * 1024]).await.unwrap();
        half.push(stream);
    }
    // Meanwhile, a well-behaved client gets every answer.
    well_behaved(url.clone(), 20).await;
    // The slow ones are cut off by the deadlines.
    for stream in slow.iter_mut().chain(half.iter_mut()) {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a deadline ended it"
        );
    }
    let (_, peak) = memory_kib(pid);
    assert!(peak < 200 * 1024, "membrane peaked at {peak} KiB");
    well_behaved(url, 3).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_stream_not_the_session() {
    let upstream = hostile_upstream("http://127.0.0.1:9/mcp".into()).await;
    let toml = "[http]\nsend_timeout_secs = 1\nevent_retention_bytes = 262144\n";
    let (_dir, membrane, url) = membrane_with(toml, &["--upstream", &upstream.url]).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    // A call whose answer comes after many large notifications, from a client that reads
    // nothing (and keeps a small receive buffer, so the stall shows soon).
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "chatty", "arguments": {}}});
    let body = call.to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(address(&url).parse().unwrap())
        .await
        .unwrap();
    let session = format!(
        "Mcp-Session-Id: {}\r\nMcp-Protocol-Version: 2025-06-18\r\n",
        client.session.as_deref().unwrap()
    );
    let request = raw_post_head(&address(&url), &session, body.len()) + &body;
    stalled.write_all(request.as_bytes()).await.unwrap();
    membrane
        .log
        .wait_for("did not read its stream in time", 1)
        .await;
    assert!(
        closed_within(&mut stalled, Duration::from_secs(15)).await,
        "the stalled reader's connection is dropped"
    );
    // The session goes on for its other requests, and can be ended.
    for id in 2..=4 {
        let answer = client
            .call_tool(id, "echo", json!({"message": "still here"}))
            .await;
        assert_eq!(tool_text(&answer), "still here");
    }
    well_behaved(url.clone(), 5).await;
    assert_eq!(
        client.delete().await.status(),
        200,
        "the session can still be ended"
    );
    let (_, peak) = memory_kib(membrane.pid());
    assert!(peak < 200 * 1024, "membrane peaked at {peak} KiB");
    let started = Instant::now();
    assert_eq!(membrane.stop().await, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

/// An MCP server over HTTP that misbehaves by tool name: `flood` answers with one SSE event
/// that never ends, `trickle` with an event that arrives a byte at a time and never ends,
/// `redirect` with a 307 to another address, `chatty` with 200 notifications of 64 KiB before
/// its answer. Its GET stream says `retry: 0` and closes at once. Everything else is answered
/// properly, one request per connection.
struct HostileUpstream {
    url: String,
    gets: Arc<AtomicUsize>,
}

async fn hostile_upstream(redirect_to: String) -> HostileUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counted = gets.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (gets, redirect_to) = (counted.clone(), redirect_to.clone());
            tokio::spawn(async move {
                let _ = misbehave(stream, gets, redirect_to).await;
            });
        }
    });
    HostileUpstream { url, gets }
}

async fn misbehave(
    mut stream: TcpStream,
    gets: Arc<AtomicUsize>,
    redirect_to: String,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let json = |status: &str, body: &str, extra: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let sse_head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    if head.starts_with("get") {
        gets.fetch_add(1, Ordering::Relaxed);
        stream.write_all(sse_head.as_bytes()).await?;
        return stream.write_all(b"retry: 0\nid: 1\ndata:\n\n").await;
    }
    if head.starts_with("delete") {
        return stream.write_all(json("200 OK", "", "").as_bytes()).await;
    }
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(id) = message.get("id").cloned() else {
        return stream
            .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    };
    match (
        message["method"].as_str(),
        message["params"]["name"].as_str(),
    ) {
        (Some("initialize"), _) => {
            let result = json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "0"}}});
            stream
                .write_all(
                    json(
                        "200 OK",
                        &result.to_string(),
                        "Mcp-Session-Id: hostile-1\r\n",
                    )
                    .as_bytes(),
                )
                .await
        }
        (_, Some("flood")) => {
            stream.write_all(sse_head.as_bytes()).await?;
            let start = format!(
                r#"data: {{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#
            );
            stream.write_all(start.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                stream.write_all(&chunk).await?; // until membrane hangs up
            }
        }
        (_, Some("trickle")) => {
            stream.write_all(sse_head.as_bytes()).await?;
            let start = format!(r#"data: {{"jsonrpc":"2.0","id":{id},"result":"#);
            stream.write_all(start.as_bytes()).await?;
            loop {
                stream.write_all(b" ").await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        (_, Some("chatty")) => {
            stream.write_all(sse_head.as_bytes()).await?;
            let text = "x".repeat(64 * 1024);
            for n in 0..200 {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": format!("{n} {text}")}});
                stream
                    .write_all(format!("data: {note}\n\n").as_bytes())
                    .await?;
            }
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}});
            stream
                .write_all(format!("data: {answer}\n\n").as_bytes())
                .await
        }
        (_, Some("redirect")) => {
            let location = format!("Location: {redirect_to}\r\n");
            stream
                .write_all(json("307 Temporary Redirect", "", &location).as_bytes())
                .await
        }
        (_, Some(name)) => {
            let result = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": message["params"]["arguments"]["message"].as_str().unwrap_or(name)}]}});
            stream
                .write_all(json("200 OK", &result.to_string(), "").as_bytes())
                .await
        }
        _ => {
            let result = json!({"jsonrpc": "2.0", "id": id, "result": {}});
            stream
                .write_all(json("200 OK", &result.to_string(), "").as_bytes())
                .await
        }
    }
}

#[tokio::test]
async fn hostile_upstreams_are_bounded() {
    // Where a redirect would lead: nothing may ever connect.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirected = Arc::new(AtomicUsize::new(0));
    let seen = redirected.clone();
    let target = format!("http://{}/mcp", elsewhere.local_addr().unwrap());
    tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    });
    let upstream = hostile_upstream(target).await;
    let toml = "max_message_size = 1048576\n[http]\nupstream_event_timeout_secs = 2\n";
    let (_dir, membrane, url) = membrane_with(toml, &["--upstream", &upstream.url]).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    let baseline = memory_kib(membrane.pid()).0;

    // A well-behaved client alongside, all the while.
    let alongside = tokio::spawn(well_behaved(url.clone(), 30));

    let flood = client.call_tool(1, "flood", json!({})).await;
    assert_eq!(flood["error"]["code"], -32600, "{flood}");
    assert!(
        flood["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the maximum message size")
    );
    let (_, peak) = memory_kib(membrane.pid());
    assert!(
        peak < baseline + 100 * 1024,
        "an endless event cost {} KiB",
        peak - baseline
    );

    let trickle = client.call_tool(2, "trickle", json!({})).await;
    assert_eq!(trickle["error"]["code"], -32002, "{trickle}");
    assert!(
        trickle["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not complete"),
        "{trickle}"
    );

    let redirect = client.call_tool(3, "redirect", json!({})).await;
    assert_eq!(redirect["error"]["data"]["httpStatus"], 307, "{redirect}");
    assert_eq!(
        redirected.load(Ordering::Relaxed),
        0,
        "the redirect was not followed"
    );

    // membrane opens the upstream's GET stream only while the client holds its own.
    assert_eq!(
        upstream.gets.load(Ordering::Relaxed),
        0,
        "no GET while no client listens"
    );
    let get = client.get(None).await;
    assert_eq!(get.status(), 200);
    // The GET stream's `retry: 0` and instant close do not make membrane hammer the server.
    let before = upstream.gets.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconnects = upstream.gets.load(Ordering::Relaxed) - before;
    assert!(reconnects <= 8, "{reconnects} reconnects in 3 s");
    assert!(upstream.gets.load(Ordering::Relaxed) >= 1);
    drop(get);

    alongside.await.unwrap();
    assert_eq!(
        tool_text(&client.call_tool(4, "echo", json!({"message": "ok"})).await),
        "ok"
    );
}

#[tokio::test]
async fn batches_and_bursts_past_the_caps_get_clear_answers() {
    let server = rmcp_server();
    let toml =
        "[session]\nmax_pending_requests = 2\n[http]\nmax_streams = 3\nmax_batch_size = 16\n";
    let (_dir, membrane, url) = membrane_with(toml, &["--", server.to_str().unwrap()]).await;
    let mut client = Http::new(&url);
    client.version = "2025-03-26";
    client.initialize().await;

    // Too many requests awaiting answers: the one past the cap gets an error, at once.
    let sleep = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 1500}}});
    let (one, two) = (sleep(1), sleep(2));
    let (first, second) = (client.post(&one), client.post(&two));
    let third = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        common::http::answer_of(client.post(&sleep(3)).await, 3).await
    };
    let (first, second, third) = tokio::join!(first, second, third);
    assert_eq!(third["error"]["code"], -32004, "{third}");
    assert_eq!(
        common::http::answer_of(first, 1).await["result"]["content"][0]["text"],
        "slept"
    );
    assert_eq!(
        common::http::answer_of(second, 2).await["result"]["content"][0]["text"],
        "slept"
    );

    // A batch past its cap, or with invalid elements, is refused whole and says why.
    let big: Vec<Value> = (0..100)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "ping"}))
        .collect();
    let refused = client.post(&Value::Array(big)).await;
    assert_eq!(refused.status(), 400);
    let invalid = client
        .post(&json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 7, {"jsonrpc": "2.0"}]))
        .await;
    assert_eq!(invalid.status(), 400);
    let errors: Value = invalid.json().await.unwrap();
    assert_eq!(
        errors.as_array().unwrap().len(),
        2,
        "one error per invalid element: {errors}"
    );
    // Four megabytes of a batch of nothing cost next to nothing.
    let before = memory_kib(membrane.pid()).1;
    let nothing = format!("[{}1]", "1,".repeat(2 * 1024 * 1024));
    let refused = client.post_with(client.headers(), nothing).await;
    assert_eq!(refused.status(), 400);
    let after = memory_kib(membrane.pid()).1;
    assert!(
        after < before + 40 * 1024,
        "a 4 MiB batch cost {} KiB",
        after - before
    );

    // The session goes on.
    assert_eq!(
        tool_text(&client.call_tool(9, "echo", json!({"message": "on"})).await),
        "on"
    );
}

#[tokio::test]
async fn sigterm_ends_within_the_drain_time_whatever_clients_do() {
    let server = rmcp_server();
    let toml = "[http]\ndrain_timeout_secs = 2\nbody_timeout_secs = 60\n";
    let (_dir, membrane, url) = membrane_with(toml, &["--", server.to_str().unwrap()]).await;
    let target = address(&url);
    // A body that never ends, a slow call in progress, and a stream nobody reads.
    let mut half = TcpStream::connect(&target).await.unwrap();
    let head = raw_post_head(&target, "", 100_000) + "{";
    half.write_all(head.as_bytes()).await.unwrap();
    let mut client = Http::new(&url);
    client.initialize().await;
    let slow = {
        let client = client.as_bearer(None);
        tokio::spawn(async move {
            let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 60000}}});
            let _ = client.post(&call).await;
        })
    };
    let _standalone = client.get(None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    membrane.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?} with a 2 s drain time"
    );
    slow.abort();
}

#[tokio::test]
async fn session_ids_stay_out_of_the_log_and_servers_go_with_membrane() {
    let server = rmcp_server();
    let upstream = ["--", server.to_str().unwrap()];
    let (membrane, url) = membrane_reverse_with(&upstream, &[("MEMBRANE_LOG", "info")]).await;
    let mut client = Http::new(&url);
    client.initialize().await;
    assert_eq!(
        tool_text(&client.call_tool(1, "echo", json!({"message": "x"})).await),
        "x"
    );
    let session = client.session.clone().unwrap();
    let log = membrane.log.wait_for("session started", 1).await;
    assert!(
        !log.contains(&session),
        "the session id is a credential:\n{log}"
    );
    assert!(log.contains(&session[..8]), "its first characters name it");

    // kill -9: the server process membrane started goes too (parent-death signal).
    let children = child_pids(membrane.pid());
    assert_eq!(children.len(), 1, "{children:?}");
    let pid = membrane.pid().to_string();
    tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::path::Path::new(&format!("/proc/{}", children[0])).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", children[0]))
            .is_ok_and(|stat| stat.contains(") Z"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server outlived membrane"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pids of the processes whose parent is `pid`.
fn child_pids(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            (after.split_whitespace().nth(1)? == pid.to_string()).then_some(child)
        })
        .collect()
}
