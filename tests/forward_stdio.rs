//! `membrane forward` in front of the rmcp SDK server, driven line by line: traffic passes byte
//! for byte, bad input gets clear JSON-RPC errors while later traffic goes on, and the proxy
//! ends cleanly with either side.

mod common;

use common::{RawClient, tool_text, write_config};
use serde_json::json;

/// Requests written in unusual but valid JSON (spacing, key order, escapes).
const ODD_REQUESTS: &[&str] = &[
    r#"{ "method" : "initialize", "id": 1, "jsonrpc":"2.0", "params": {"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t\u00e9st","version":"0"}}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    r#"{"params":{"arguments":{"message":"caf\u00e9 \"quoted\" \ud83d\ude00"},"name":"echo"},"jsonrpc":"2.0","id":"str-id","method":"tools/call"}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
];

async fn output_of(mut client: RawClient, expected_answers: usize) -> Vec<String> {
    for line in ODD_REQUESTS {
        client.send_line(line).await;
    }
    let mut lines = Vec::new();
    while lines.len() < expected_answers {
        lines.push(client.recv_line().await.expect("an answer"));
    }
    // The server handles requests concurrently, so answers may come in either order.
    lines.sort();
    lines
}

#[tokio::test]
async fn traffic_passes_byte_for_byte_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let seen_by_server = dir.path().join("server-input");
    let server = common::rmcp_server();
    // The server's input is teed to a file, so the bytes membrane forwards can be compared.
    let script = format!("tee {} | {}", seen_by_server.display(), server.display());

    let direct = output_of(RawClient::spawn_direct(&["sh", "-c", &script]), 3).await;
    let direct_input = std::fs::read_to_string(&seen_by_server).unwrap();
    let proxied = output_of(RawClient::spawn(&[], &["sh", "-c", &script]), 3).await;
    let proxied_input = std::fs::read_to_string(&seen_by_server).unwrap();

    assert_eq!(
        proxied, direct,
        "server output reaches the client unchanged"
    );
    assert_eq!(
        proxied_input, direct_input,
        "client output reaches the server unchanged"
    );
    assert_eq!(proxied_input, ODD_REQUESTS.join("\n") + "\n");
    assert!(
        proxied.iter().any(|line| line.contains(r#""id":"str-id""#)),
        "the echo answer is among them: {proxied:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_answered_and_traffic_goes_on() {
    let mut client = RawClient::rmcp(&[]);
    client.initialize().await;
    client
        .send_line(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list""#)
        .await;
    let error = client.recv().await;
    assert_eq!(error["error"]["code"], -32700);
    assert_eq!(error["id"], json!(null));

    client.send_line(r#"[1, 2]"#).await;
    for _ in 0..2 {
        assert_eq!(
            client.recv().await["error"]["code"],
            -32600,
            "each bad batch element"
        );
    }
    client.send_line(r#"{"jsonrpc":"2.0","id":6}"#).await;
    assert_eq!(client.recv().await["error"]["code"], -32600);

    let answer = client
        .call_tool(7, "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(tool_text(&answer), "still here");
}

#[tokio::test]
async fn oversized_messages_get_an_error_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "max_message_size = 4096\n");
    let mut client = RawClient::rmcp(&["--config", config.to_str().unwrap()]);
    client.initialize().await;

    // Client to server: the request is refused, with its id.
    let huge = "x".repeat(10_000);
    let answer = client.call_tool(1, "echo", json!({"message": huge})).await;
    assert_eq!(answer["error"]["code"], -32600);
    let reason = answer["error"]["message"].as_str().unwrap();
    assert!(
        reason.contains("exceeds the maximum message size of 4096"),
        "{reason}"
    );

    // Server to client: the oversized answer is replaced by an error for the same id.
    let answer = client.call_tool(2, "big", json!({"bytes": 10_000})).await;
    assert_eq!(answer["error"]["code"], -32600, "{answer}");

    let answer = client
        .call_tool(3, "echo", json!({"message": "small"}))
        .await;
    assert_eq!(tool_text(&answer), "small");
}

#[tokio::test]
async fn a_server_dying_mid_call_answers_the_call_and_ends_the_proxy() {
    let mut client = RawClient::rmcp(&[]);
    client.initialize().await;
    client
        .send(&json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000}}}))
        .await;
    client
        .send(&json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"crash","arguments":{}}}))
        .await;
    let mut answered = Vec::new();
    for _ in 0..2 {
        let answer = client.recv().await;
        assert_eq!(answer["error"]["code"], -32002, "{answer}");
        let reason = answer["error"]["message"].as_str().unwrap();
        assert!(reason.contains("exit status: 3"), "{reason}");
        answered.push(answer["id"].as_i64().unwrap());
    }
    answered.sort();
    assert_eq!(answered, [8, 9], "every unanswered call is answered");
    assert_eq!(
        client.recv_line().await,
        None,
        "then membrane closes its output"
    );
    assert_eq!(
        client.exit_code().await,
        Some(3),
        "and exits with the server's status"
    );
}

#[tokio::test]
async fn closing_stdin_ends_the_server_and_the_proxy() {
    let mut client = RawClient::rmcp(&[]);
    client.initialize().await;
    // A request in flight when the client leaves is still answered: the server sees its stdin
    // close, finishes the call and exits, and membrane relays the answer before it exits too.
    client
        .send(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":200}}}))
        .await;
    client.close_stdin();
    let answer = client.answer_to(4).await;
    assert_eq!(tool_text(&answer), "slept");
    assert_eq!(client.recv_line().await, None);
    assert_eq!(client.exit_code().await, Some(0));
}

#[tokio::test]
async fn sigterm_ends_the_session_in_order() {
    let mut client = RawClient::rmcp(&[]);
    client.initialize().await;
    client
        .send(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":60000}}}))
        .await;
    // Once a later call is answered, the sleeping one is surely in flight.
    let answer = client
        .call_tool(5, "echo", json!({"message": "before"}))
        .await;
    assert_eq!(tool_text(&answer), "before");
    client.terminate().await;
    let answer = client.answer_to(4).await;
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    let reason = answer["error"]["message"].as_str().unwrap();
    assert!(reason.contains("session was closed"), "{reason}");
    assert_eq!(client.recv_line().await, None);
    assert_eq!(client.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_server_that_cannot_start_is_a_clear_failure() {
    let mut client = RawClient::spawn(&[], &["/nonexistent/mcp-server"]);
    assert_eq!(client.recv_line().await, None);
    assert_eq!(client.exit_code().await, Some(1));
}
