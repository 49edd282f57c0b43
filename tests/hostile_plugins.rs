//! Deliberately broken plugins (`plugins/hostile`) never take membrane down: an endless loop
//! and an hour-long wait on a WASI timer both run out of their time budget, unbounded
//! allocation hits the memory cap, a panic traps, and a malformed answer is refused. Each
//! failure is settled by the plugin's failure policy, the broken instance is replaced, and
//! other traffic goes on.

mod common;

use common::{RawClient, plugin, startup_failure, tool_text, write_config};
use serde_json::json;

fn hostile(dir: &tempfile::TempDir, mode: &str, on_error: &str) -> RawClient {
    let toml = format!(
        "[[plugins]]\npath = {:?}\non_error = {on_error:?}\ntimeout_ms = 50\nmax_memory_mb = 16\n[plugins.config]\nmode = {mode:?}\ntool = \"echo\"\n",
        plugin("hostile").display().to_string()
    );
    let config = write_config(dir.path(), &toml);
    RawClient::rmcp(&["--config", config.to_str().unwrap()])
}

#[tokio::test]
async fn each_failure_is_blocked_and_traffic_goes_on() {
    for mode in ["loop", "sleep", "alloc", "trap", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        let mut client = hostile(&dir, mode, "block");
        client.initialize().await;
        for id in [1, 3] {
            // The hostile call fails closed, every time: a fresh instance replaces the broken one.
            let answer = client.call_tool(id, "echo", json!({"message": "x"})).await;
            assert_eq!(answer["error"]["code"], -32001, "{mode}: {answer}");
            let reason = answer["error"]["message"].as_str().unwrap();
            assert!(
                reason.contains("interceptor 'hostile' failed"),
                "{mode}: {reason}"
            );
            let other = client
                .call_tool(id + 1, "add", json!({"a": id, "b": 1}))
                .await;
            assert_eq!(
                tool_text(&other),
                (id + 1).to_string(),
                "{mode}: other calls pass"
            );
        }
    }
}

#[tokio::test]
async fn fail_open_lets_the_message_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = hostile(&dir, "trap", "continue");
    client.initialize().await;
    let answer = client
        .call_tool(1, "echo", json!({"message": "through anyway"}))
        .await;
    assert_eq!(tool_text(&answer), "through anyway");
}

#[tokio::test]
async fn a_plugin_that_fails_to_start_is_refused_with_its_reason() {
    for (mode, expected) in [
        ("fail-init", "hostile: refusing to start"),
        ("slow-init", "time budget exceeded"),
    ] {
        let toml = format!(
            "[[plugins]]\npath = {:?}\ntimeout_ms = 50\n[plugins.config]\nmode = {mode:?}\n",
            plugin("hostile").display().to_string()
        );
        let log = startup_failure(&toml).await;
        assert!(log.contains(expected), "{mode}: {log}");
    }
}
