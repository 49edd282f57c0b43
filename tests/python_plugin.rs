//! A plugin written in Python: `plugins/python/canned_answers`, built with componentize-py
//! (from PyPI) against the same contract as the Rust plugins, answers chosen tool calls in the
//! rmcp SDK server's place and lets the others through, and its `init` refuses a bad
//! configuration. One test, in order: the first start compiles the 18 MB component (a minute
//! or two on 2 cores) and the second takes it from the compile cache.

mod common;

use std::time::Duration;

use common::{RawClient, plugin, rmcp_server, tool_text, write_config};
use serde_json::json;

#[tokio::test]
async fn a_python_plugin_refuses_a_bad_config_and_answers_in_the_servers_place() {
    let log = common::startup_failure(&format!(
        "[[plugins]]\npath = {:?}\ntimeout_ms = 1000\n[plugins.config]\ntoolz = 1\n",
        plugin("canned-answers").display().to_string()
    ))
    .await;
    assert!(
        log.contains("invalid canned-answers config: unknown keys: toolz"),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[plugins]]\nname = \"canned-answers\"\npath = {:?}\ntimeout_ms = 1000\n[plugins.config.tools.echo]\ntext = \"canned!\"\n",
        plugin("canned-answers").display().to_string()
    );
    let config = write_config(dir.path(), &toml);
    let server = rmcp_server();
    let mut client = RawClient::spawn_logged(
        &["--config", config.to_str().unwrap()],
        &[server.to_str().unwrap()],
    );
    client
        .wait_for_log_within("loaded plugin", 1, Duration::from_secs(600))
        .await;
    client.initialize().await;

    let canned = client.call_tool(1, "echo", json!({"message": "hi"})).await;
    assert_eq!(tool_text(&canned), "canned!");
    let served = client.call_tool(2, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(tool_text(&served), "3", "other tools reach the server");

    client.close_stdin();
    assert_eq!(client.exit_code().await, Some(0));
    let log = client.wait_for_log("plugin metrics", 1).await;
    let line = log.lines().find(|l| l.contains("plugin metrics")).unwrap();
    assert!(
        line.contains("calls=2") && line.contains("mocked=1"),
        "{line}"
    );
}
