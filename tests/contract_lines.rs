//! Both contract lines in one chain, on real traffic between a client and the rmcp SDK
//! server: plugins built for 0.1.0 (`hostile`) and 0.1.1 (`legacy-0-1-1`, with `session-kv`)
//! keep their behaviour beside plugins on 0.2 (`tool-guard`, and `rules` changing an answer
//! chosen by the tool of its call, which only 0.2 can see), and 0.2's changes by pointer edit
//! reach the client.

mod common;

use common::{RawClient, plugin, tool_text, write_config};
use serde_json::json;

#[tokio::test]
async fn older_plugins_keep_working_beside_contract_0_2_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[[plugins]]
path = {legacy:?}
grants = ["log", "session-kv"]
config = {{ block = "add" }}

[[plugins]]
path = {hostile:?}
config = {{ mode = "garbage", tool = "sleep" }}
on_error = "block"

[[plugins]]
path = {guard:?}
config = {{ deny = ["delete_*"] }}

[[plugins]]
path = {rules:?}

[[plugins.config.rules]]
method = "tools/call"
kind = "response"
tool = "echo"
action = "modify"
set = {{ "/result/content/0/text" = "seen by a 0.2 plugin" }}
"#,
        legacy = plugin("legacy-0-1-1").display().to_string(),
        hostile = plugin("hostile").display().to_string(),
        guard = plugin("tool-guard").display().to_string(),
        rules = plugin("rules").display().to_string(),
    );
    let config = write_config(dir.path(), &toml);
    let mut client = RawClient::rmcp(&["--config", config.to_str().unwrap()]);
    client.initialize().await;

    // 0.1.1, with its session state: the second call of the session.
    client.call_tool(1, "echo", json!({"message": "one"})).await;
    let add = client.call_tool(2, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(
        add["error"]["message"], "blocked by a 0.1.1 plugin (call 2 of the session)",
        "{add}"
    );

    // 0.1.0: its garbage replacement is refused as a broken action, and `on_error` blocks.
    let sleep = client.call_tool(3, "sleep", json!({"ms": 1})).await;
    assert!(sleep["error"].is_object(), "{sleep}");

    // 0.2: tool-guard reads the tool's name only.
    let delete = client
        .call_tool(4, "delete_file", json!({"path": "/tmp/x"}))
        .await;
    assert_eq!(
        delete["error"]["message"], "tool 'delete_file' is blocked by policy",
        "{delete}"
    );

    // 0.2: an answer changed by a pointer edit, chosen by the tool its call named.
    let echo = client.call_tool(5, "echo", json!({"message": "hi"})).await;
    assert_eq!(tool_text(&echo), "seen by a 0.2 plugin", "{echo}");
    let other = client.call_tool(6, "big", json!({"bytes": 3})).await;
    assert_eq!(
        tool_text(&other),
        "xxx",
        "answers to other tools pass: {other}"
    );
}
