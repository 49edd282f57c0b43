//! Real SDK clients through `membrane forward`: the Rust SDK (rmcp), the Python SDK (`mcp` from
//! PyPI) and the TypeScript SDK (`@modelcontextprotocol/sdk` from npm), against the rmcp SDK
//! server and the reference server `@modelcontextprotocol/server-everything` (npm), with and
//! without the tool-guard plugin.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{peers, rmcp_server, server_everything, write_config};
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// An rmcp client whose server is `membrane forward ARGS -- SERVER...`.
async fn rmcp_client(membrane_args: &[&str], server: &[String]) -> RunningService<RoleClient, ()> {
    let mut command = tokio::process::Command::new(common::membrane());
    command
        .arg("forward")
        .args(membrane_args)
        .arg("--")
        .args(server);
    let transport = TokioChildProcess::new(command).expect("spawning membrane");
    tokio::time::timeout(common::WAIT, ().serve(transport))
        .await
        .expect("handshake in time")
        .expect("handshake through membrane")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: Value,
) -> Result<Value, ServiceError> {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(arguments.as_object().unwrap().clone());
    let result = tokio::time::timeout(common::WAIT, client.call_tool(params))
        .await
        .expect("answer in time")?;
    Ok(serde_json::to_value(result).unwrap())
}

async fn tool_names(client: &RunningService<RoleClient, ()>) -> Vec<String> {
    let tools = client.list_all_tools().await.expect("tools/list");
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

fn guard_config(dir: &tempfile::TempDir, deny: &[&str]) -> String {
    let toml = common::guard_toml(deny);
    write_config(dir.path(), &toml).display().to_string()
}

#[tokio::test]
async fn rmcp_client_and_rmcp_server_through_membrane() {
    let server = vec![rmcp_server().display().to_string()];
    let client = rmcp_client(&[], &server).await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "rmcp-peer");
    let names = tool_names(&client).await;
    assert!(names.contains(&"delete_file".to_owned()), "{names:?}");
    let echoed = call(&client, "echo", json!({"message": "through membrane"}))
        .await
        .unwrap();
    assert_eq!(echoed["content"][0]["text"], "through membrane");
    let sum = call(&client, "add", json!({"a": 40, "b": 2}))
        .await
        .unwrap();
    assert_eq!(sum["content"][0]["text"], "42");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rmcp_client_sees_a_blocked_call_as_a_json_rpc_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = guard_config(&dir, &["delete_*"]);
    let server = vec![rmcp_server().display().to_string()];
    let client = rmcp_client(&["--config", &config], &server).await;
    assert!(
        !tool_names(&client)
            .await
            .contains(&"delete_file".to_owned())
    );
    match call(&client, "delete_file", json!({"path": "/etc/hosts"})).await {
        Err(ServiceError::McpError(error)) => {
            assert_eq!(error.code.0, -32001);
            assert!(error.message.contains("delete_file"), "{}", error.message);
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
    let echoed = call(&client, "echo", json!({"message": "allowed"}))
        .await
        .unwrap();
    assert_eq!(echoed["content"][0]["text"], "allowed");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rmcp_client_and_the_reference_server_with_a_guard() {
    let dir = tempfile::tempdir().unwrap();
    let config = guard_config(&dir, &["get-env", "trigger-*"]);
    let client = rmcp_client(&["--config", &config], &server_everything()).await;
    let names = tool_names(&client).await;
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n == "get-env" || n.starts_with("trigger-")),
        "{names:?}"
    );
    let echoed = call(&client, "echo", json!({"message": "hi everything"}))
        .await
        .unwrap();
    assert!(
        echoed["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hi everything")
    );
    assert!(matches!(
        call(&client, "get-env", json!({})).await,
        Err(ServiceError::McpError(e)) if e.code.0 == -32001
    ));
    client.cancel().await.unwrap();
}

/// Runs a client script whose last arguments are the server command (membrane with the guard,
/// in front of the rmcp server), and returns the JSON object it prints.
async fn scripted_client(program: &Path, script_args: &[&OsStr]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let config = guard_config(&dir, &["delete_*"]);
    let seen = common::json_output(
        tokio::process::Command::new(program)
            .args(script_args)
            .arg("--")
            .args([
                common::membrane().as_str(),
                "forward",
                "--config",
                &config,
                "--",
            ])
            .arg(rmcp_server()),
        common::WAIT,
    )
    .await;
    assert_eq!(seen["server_name"], "rmcp-peer");
    let tools = seen["tools"].as_array().unwrap();
    assert!(
        tools.contains(&json!("echo")) && !tools.contains(&json!("delete_file")),
        "the guard hides delete_file: {seen}"
    );
    assert_eq!(seen["blocked"]["code"], -32001, "{seen}");
    seen
}

#[tokio::test]
async fn python_sdk_client_through_membrane() {
    let script = common::repo().join("tests/peers/python_client.py");
    let seen = scripted_client(
        &peers().join("venv/bin/python"),
        &[script.as_os_str(), OsStr::new("list-and-call")],
    )
    .await;
    assert_eq!(seen["echo"], "hello from python");
}

#[tokio::test]
async fn typescript_sdk_client_through_membrane() {
    let script = common::repo().join("tests/peers/ts_client.mjs");
    let peers = peers();
    let seen = scripted_client(Path::new("node"), &[script.as_os_str(), peers.as_os_str()]).await;
    assert_eq!(seen["echo"]["text"], "hello from typescript");
}
