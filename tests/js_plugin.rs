//! A plugin written in JavaScript (componentize-js from npm, pinned), end to end: the shipped
//! `tool-pinning` plugin between the Python SDK's server and a client over Streamable HTTP.
//! The server changes what a tool claims to do after the session listed it; the next listing
//! shows the change, and from then on the session's calls to that tool are refused while its
//! other tools go on. A new session pins the new definition. A bad configuration is refused.

mod common;

use common::http::{Background, Http, membrane_reverse, python_http_server};
use common::{plugin, tool_text, write_config};
use serde_json::json;

fn pinning_toml(unlisted: &str) -> String {
    format!(
        "[[plugins]]\npath = {:?}\ngrants = [\"log\", \"session-kv\"]\ntimeout_ms = 2000\n\
         [plugins.config]\nunlisted = {unlisted:?}\n",
        plugin("tool-pinning").display().to_string()
    )
}

/// The Python SDK server, and membrane in front of it with tool-pinning (`unlisted`), its
/// config in the returned directory.
async fn pinning_membrane(unlisted: &str) -> (Background, tempfile::TempDir, Background, String) {
    let (server, upstream) = python_http_server(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pinning_toml(unlisted));
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--upstream",
        &upstream,
    ];
    let (membrane, url) = membrane_reverse(&args).await;
    (server, dir, membrane, url)
}

async fn listed(client: &Http, id: i64) -> Vec<String> {
    let list = client.request(id, "tools/list", json!({})).await;
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tool_pinning_refuses_a_tool_whose_definition_changed() {
    let (_server, _dir, membrane, url) = pinning_membrane("allow").await;

    let mut client = Http::new(&url);
    client.initialize().await;
    assert!(listed(&client, 1).await.contains(&"add".to_owned()));
    let sum = client.call_tool(2, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(tool_text(&sum), "5", "{sum}");

    let pulled = client.call_tool(3, "rug_pull", json!({})).await;
    assert_eq!(tool_text(&pulled), "changed");
    // Until the session lists the tools again, it has not seen the change.
    assert_eq!(
        tool_text(&client.call_tool(4, "add", json!({"a": 1, "b": 1})).await),
        "2"
    );
    listed(&client, 5).await;
    membrane
        .log
        .wait_for("tool 'add' changed its definition", 1)
        .await;
    let refused = client.call_tool(6, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(refused["error"]["code"], -32001, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed its definition")
    );
    let echoed = client
        .call_tool(7, "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(tool_text(&echoed), "still here", "other tools go on");

    // A new session accepts what it is shown first.
    let mut fresh = Http::new(&url);
    fresh.initialize().await;
    listed(&fresh, 1).await;
    assert_eq!(
        tool_text(&fresh.call_tool(2, "add", json!({"a": 4, "b": 4})).await),
        "8"
    );
    membrane.stop().await;
}

#[tokio::test]
async fn tool_pinning_can_refuse_tools_never_listed_and_checks_its_config() {
    let (_server, _dir, membrane, url) = pinning_membrane("block").await;
    let mut client = Http::new(&url);
    client.initialize().await;
    let blind = client.call_tool(1, "echo", json!({"message": "x"})).await;
    assert!(
        blind["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never listed"),
        "{blind}"
    );
    listed(&client, 2).await;
    assert_eq!(
        tool_text(&client.call_tool(3, "echo", json!({"message": "x"})).await),
        "x"
    );
    membrane.stop().await;

    let refused = common::startup_failure(&pinning_toml("maybe")).await;
    assert!(
        refused.contains("expected \"allow\" or \"block\""),
        "{refused}"
    );
}
