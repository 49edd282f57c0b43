//! Wasm plugins acting on real traffic between a client and the rmcp SDK server: the `rules`
//! plugin drives every action type (block, mock, modify, pause, delay), the `tool-guard` plugin
//! blocks calls and hides tools, and broken plugins or configurations fail clearly.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, plugin, startup_failure, tool_text, write_config};
use serde_json::json;

/// membrane with the `rules` plugin configured by `rules` (TOML array-of-tables body) and
/// `extra` top-level settings, past the MCP handshake. The directory holds its config.
async fn with_rules(extra: &str, rules: &str) -> (tempfile::TempDir, RawClient) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{extra}\n[[plugins]]\npath = {:?}\n{rules}",
        plugin("rules").display().to_string()
    );
    let config = write_config(dir.path(), &toml);
    let mut client = RawClient::rmcp(&["--config", config.to_str().unwrap()]);
    client.initialize().await;
    (dir, client)
}

async fn tool_names(client: &mut RawClient, id: i64) -> Vec<String> {
    let list = client.request(id, "tools/list", json!({})).await;
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn block_answers_the_caller_and_the_server_never_sees_the_call() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
tool = "add"
action = "block"
reason = "no arithmetic today"
"#,
    )
    .await;
    let answer = client.call_tool(1, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(answer["error"]["code"], -32001);
    assert_eq!(answer["error"]["message"], "no arithmetic today");
    let answer = client
        .call_tool(2, "echo", json!({"message": "fine"}))
        .await;
    assert_eq!(tool_text(&answer), "fine", "other calls pass");
}

#[tokio::test]
async fn mock_answers_without_the_server() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
tool = "echo"
action = "mock"
result = { content = [{ type = "text", text = "mocked!" }] }
"#,
    )
    .await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "real"}))
        .await;
    assert_eq!(tool_text(&answer), "mocked!");
    assert_eq!(answer["id"], 1);
}

#[tokio::test]
async fn modify_rewrites_a_request_on_its_way() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
tool = "echo"
action = "modify"
set = { "/params/arguments/message" = "rewritten by membrane" }
"#,
    )
    .await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "original"}))
        .await;
    assert_eq!(tool_text(&answer), "rewritten by membrane");
}

#[tokio::test]
async fn modify_rewrites_a_response_on_its_way_back() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
direction = "server-to-client"
kind = "response"
action = "modify"
set = { "/result/content/0/text" = "[redacted]" }
"#,
    )
    .await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "secret"}))
        .await;
    assert_eq!(tool_text(&answer), "[redacted]");
}

#[tokio::test]
async fn pause_holds_a_call_until_its_timeout_and_the_policy_decides() {
    let rule = r#"[[plugins.config.rules]]
method = "tools/call"
tool = "echo"
action = "pause"
timeout_ms = 300
"#;
    let (_released_config, mut released) =
        with_rules("[pause]\non_timeout = \"continue\"", rule).await;
    let started = Instant::now();
    let answer = released
        .call_tool(1, "echo", json!({"message": "approved"}))
        .await;
    assert_eq!(tool_text(&answer), "approved");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it was held"
    );

    let (_refused_config, mut refused) = with_rules("[pause]\non_timeout = \"block\"", rule).await;
    // While one call is held, other traffic goes on.
    refused
        .send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"held"}}}))
        .await;
    let other = refused.call_tool(2, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(tool_text(&other), "5");
    let held = refused.answer_to(1).await;
    assert_eq!(held["error"]["code"], -32001, "{held}");
}

#[tokio::test]
async fn delay_holds_a_call_then_applies_its_verdict() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
tool = "echo"
action = "delay"
delay_ms = 250
then = "continue"

[[plugins.config.rules]]
method = "tools/call"
tool = "add"
action = "delay"
delay_ms = 50
then = "block"
reason = "slow no"
"#,
    )
    .await;
    let started = Instant::now();
    let answer = client
        .call_tool(1, "echo", json!({"message": "later"}))
        .await;
    assert_eq!(tool_text(&answer), "later");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let answer = client.call_tool(2, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(answer["error"]["message"], "slow no");
}

#[tokio::test]
async fn tool_guard_blocks_calls_and_hides_denied_tools() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[[plugins]]
path = {:?}
[plugins.config]
deny = ["delete_*"]
deny_arguments = [{{ tool = "echo", pattern = "rm\\s+-rf" }}]
"#,
        plugin("tool-guard").display().to_string()
    );
    let config = write_config(dir.path(), &toml);
    let mut client = RawClient::rmcp(&["--config", config.to_str().unwrap()]);
    client.initialize().await;

    let names = tool_names(&mut client, 1).await;
    assert!(names.contains(&"echo".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"delete_file".to_owned()),
        "hidden: {names:?}"
    );

    let answer = client
        .call_tool(2, "delete_file", json!({"path": "/etc/passwd"}))
        .await;
    assert_eq!(answer["error"]["code"], -32001);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("delete_file")
    );

    let answer = client
        .call_tool(3, "echo", json!({"message": "please rm  -rf /"}))
        .await;
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    let answer = client
        .call_tool(4, "echo", json!({"message": "harmless"}))
        .await;
    assert_eq!(tool_text(&answer), "harmless");
}

#[tokio::test]
async fn plugins_run_in_chain_order() {
    // The guard blocks `add`; the rules plugin after it would mock `add`. The first decides.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[[plugins]]
path = {guard:?}
[plugins.config]
deny = ["add"]

[[plugins]]
path = {rules:?}
[[plugins.config.rules]]
method = "tools/call"
action = "mock"
result = {{ content = [{{ type = "text", text = "mocked" }}] }}
"#,
        guard = plugin("tool-guard").display().to_string(),
        rules = plugin("rules").display().to_string(),
    );
    let config = write_config(dir.path(), &toml);
    let mut client = RawClient::rmcp(&["--config", config.to_str().unwrap()]);
    client.initialize().await;
    let blocked = client.call_tool(1, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(blocked["error"]["code"], -32001);
    let mocked = client.call_tool(2, "echo", json!({"message": "x"})).await;
    assert_eq!(tool_text(&mocked), "mocked");
}

#[tokio::test]
async fn a_plugin_given_on_the_command_line_is_loaded() {
    let rules = plugin("rules");
    let mut client = RawClient::rmcp(&["--plugin", rules.to_str().unwrap()]);
    client.initialize().await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "no rules, no change"}))
        .await;
    assert_eq!(tool_text(&answer), "no rules, no change");
}

#[tokio::test]
async fn bad_plugins_and_configs_are_refused_at_startup() {
    let log = startup_failure(&format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\ndeny = [\"(\"]\nnot_a_field = 1\n",
        plugin("tool-guard").display().to_string()
    ))
    .await;
    assert!(log.contains("rejected its configuration"), "{log}");

    let log = startup_failure("[[plugins]]\npath = \"missing.wasm\"\n").await;
    assert!(
        log.contains("cannot read plugin") && log.contains("missing.wasm"),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let log = startup_failure(&format!(
        "[[plugins]]\npath = {:?}\n",
        junk.display().to_string()
    ))
    .await;
    assert!(
        log.contains("not a membrane interceptor component"),
        "{log}"
    );
}

#[tokio::test]
async fn held_calls_are_answered_once_when_the_session_ends() {
    let (_config, mut client) = with_rules(
        "",
        r#"[[plugins.config.rules]]
method = "tools/call"
tool = "echo"
action = "delay"
delay_ms = 60000
then = "continue"

[[plugins.config.rules]]
method = "tools/call"
tool = "add"
action = "pause"
timeout_ms = 60000
"#,
    )
    .await;
    for (id, tool, arguments) in [
        (1, "echo", json!({"message": "delayed"})),
        (2, "add", json!({"a": 1, "b": 2})),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        client.send(&call).await;
    }
    // Once a later request is answered, both calls are surely held.
    client.request(3, "tools/list", json!({})).await;
    client.terminate().await;

    let mut answered = Vec::new();
    while let Some(line) = client.recv_line().await {
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        let reason = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(reason.contains("session ended"), "{answer}");
        answered.push(answer["id"].as_i64().unwrap());
    }
    answered.sort();
    assert_eq!(answered, [1, 2], "each held call is answered, once");
    assert_eq!(client.exit_code().await, Some(0));
}
