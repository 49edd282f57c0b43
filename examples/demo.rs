//! The main job, end to end: an MCP client (the rmcp SDK) talks to a real MCP server through
//! `membrane forward` with the tool-guard plugin, and prints what it sees: the tools on offer
//! (guarded ones hidden), an allowed call, and a blocked one.
//!
//! Usage: `demo MEMBRANE CONFIG SERVER_CMD [ARGS...]` (see `scripts/demo.sh`).

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::ServiceError;
use rmcp::transport::TokioChildProcess;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [membrane, config, server @ ..] = &args[..] else {
        anyhow::bail!("usage: demo MEMBRANE CONFIG SERVER_CMD [ARGS...]");
    };
    let mut command = tokio::process::Command::new(membrane);
    command
        .args(["forward", "--config", config, "--"])
        .args(server);
    let client = ().serve(TokioChildProcess::new(command)?).await?;
    let server_name = client
        .peer_info()
        .and_then(|i| i.server_info.as_ref().map(|s| s.name.clone()))
        .unwrap_or_default();
    println!("connected to '{server_name}' through membrane\n");

    let tools = client.list_all_tools().await?;
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    println!("tools/list  -> {} tools: {}", names.len(), names.join(", "));
    println!("             (tool-guard hides get-env and trigger-*)\n");

    for (tool, arguments) in [
        ("echo", json!({"message": "hello through membrane"})),
        ("get-env", json!({})),
        ("echo", json!({"message": "my password is hunter2"})),
    ] {
        let params = CallToolRequestParams::new(tool)
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        print!("tools/call {tool} {arguments}\n  -> ");
        match client.call_tool(params).await {
            Ok(result) => println!("{}\n", serde_json::to_value(&result.content)?),
            Err(ServiceError::McpError(e)) => {
                println!("BLOCKED: JSON-RPC error {}: {}\n", e.code.0, e.message)
            }
            Err(e) => println!("failed: {e}\n"),
        }
    }
    client.cancel().await?;
    Ok(())
}
