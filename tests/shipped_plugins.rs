//! The plugins membrane ships, through the proxy, against real servers: the secret redactor in
//! front of the reference server (`server-everything`), the rate limit in front of the rmcp SDK
//! server, with its counts in the session store; the capability and contract checks that refuse
//! plugins at startup; and the per-plugin metrics membrane reports when it stops.

mod common;

use common::{RawClient, plugin, rmcp_server, server_everything, startup_failure, tool_text};
use serde_json::json;

fn plugin_path(name: &str) -> String {
    plugin(name).display().to_string()
}

fn logged_membrane(dir: &tempfile::TempDir, toml: &str, server: &[&str]) -> RawClient {
    let config = common::write_config(dir.path(), toml);
    RawClient::spawn_logged(&["--config", config.to_str().unwrap()], server)
}

#[tokio::test]
async fn the_secret_redactor_scrubs_tool_results_of_the_reference_server() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\npatterns = [{{ name = \"ticket\", regex = \"TCK-[0-9]{{6}}\" }}]\n",
        plugin_path("secret-redactor")
    );
    let server = server_everything();
    let server: Vec<&str> = server.iter().map(String::as_str).collect();
    let mut client = logged_membrane(&dir, &toml, &server);
    client.initialize().await;

    let leaky =
        "key AKIAIOSFODNN7EXAMPLE, mail ada@example.org, card 4111-1111-1111-1111, TCK-123456";
    let answer = client.call_tool(1, "echo", json!({"message": leaky})).await;
    let text = tool_text(&answer);
    for secret in [
        "AKIAIOSFODNN7EXAMPLE",
        "ada@example.org",
        "4111-1111-1111-1111",
        "TCK-123456",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    for label in ["aws-access-key", "email", "credit-card", "ticket"] {
        assert!(
            text.contains(&format!("[REDACTED:{label}]")),
            "{label}: {text}"
        );
    }
    let clean = client
        .call_tool(2, "echo", json!({"message": "nothing to see"}))
        .await;
    assert_eq!(
        tool_text(&clean),
        "Echo: nothing to see",
        "clean answers pass untouched"
    );
    client.wait_for_log("redacted 4 findings", 1).await;
}

#[tokio::test]
async fn the_rate_limit_keeps_a_budget_per_session_in_the_session_store() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[plugins]]\npath = {:?}\ngrants = [\"log\", \"session-kv\"]\n[plugins.config]\nmax_calls = 4\nper_tool = {{ add = 1 }}\n",
        plugin_path("rate-limit")
    );
    let server = rmcp_server();
    let mut client = logged_membrane(&dir, &toml, &[server.to_str().unwrap()]);
    client.initialize().await;

    let first_add = client.call_tool(1, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(tool_text(&first_add), "2");
    let second_add = client.call_tool(2, "add", json!({"a": 1, "b": 1})).await;
    assert_eq!(second_add["error"]["code"], -32001, "{second_add}");
    assert!(
        second_add["error"]["message"]
            .as_str()
            .unwrap()
            .contains("for tool 'add': 1 calls"),
        "{second_add}"
    );
    let echo = client.call_tool(3, "echo", json!({"message": "x"})).await;
    assert_eq!(tool_text(&echo), "x");
    let echo = client.call_tool(4, "echo", json!({"message": "y"})).await;
    assert_eq!(tool_text(&echo), "y");
    let over = client.call_tool(5, "echo", json!({"message": "z"})).await;
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap()
            .contains("call budget exhausted: 4 calls"),
        "{over}"
    );
    // Only tools/call counts.
    let list = client.request(6, "tools/list", json!({})).await;
    assert!(list["result"]["tools"].is_array(), "{list}");

    // A new session (another membrane process here) starts with a fresh budget.
    let mut other = logged_membrane(&dir, &toml, &[server.to_str().unwrap()]);
    other.initialize().await;
    let add = other.call_tool(1, "add", json!({"a": 2, "b": 2})).await;
    assert_eq!(tool_text(&add), "4");

    // Metrics are logged at exit: 5 calls into the plugin, 2 of them blocked.
    client.close_stdin();
    assert_eq!(client.exit_code().await, Some(0));
    let log = client.wait_for_log("plugin metrics", 1).await;
    let line = log.lines().find(|l| l.contains("plugin metrics")).unwrap();
    for field in [
        "calls=5",
        "continued=3",
        "blocked=2",
        "traps=0",
        "timeouts=0",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[tokio::test]
async fn a_rate_window_needs_the_clock_and_counts_with_it() {
    let toml = |grants: &str| {
        format!(
            "[[plugins]]\npath = {:?}\ngrants = [{grants}]\n[plugins.config]\nwindow_secs = 3600\nmax_per_window = 1\n",
            plugin_path("rate-limit")
        )
    };
    let log = startup_failure(&toml("\"log\", \"session-kv\"")).await;
    assert!(
        log.contains("grant the plugin the 'clock' capability"),
        "{log}"
    );

    let dir = tempfile::tempdir().unwrap();
    let server = rmcp_server();
    let mut client = logged_membrane(
        &dir,
        &toml("\"log\", \"session-kv\", \"clock\""),
        &[server.to_str().unwrap()],
    );
    client.initialize().await;
    let first = client.call_tool(1, "echo", json!({"message": "x"})).await;
    assert_eq!(tool_text(&first), "x");
    let second = client.call_tool(2, "echo", json!({"message": "x"})).await;
    assert!(
        second["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 calls per 3600 s"),
        "{second}"
    );
}

#[tokio::test]
async fn plugins_without_their_grants_or_for_another_contract_are_refused() {
    let log = startup_failure(&format!(
        "[[plugins]]\npath = {:?}\n[plugins.config]\nmax_calls = 1\n",
        plugin_path("rate-limit")
    ))
    .await;
    assert!(
        log.contains(
            "imports membrane:interceptor/session-kv@0.2.0, which needs the capability 'session-kv'"
        ),
        "{log}"
    );

    let log = startup_failure(&format!(
        "[[plugins]]\npath = {:?}\n",
        plugin_path("future-contract")
    ))
    .await;
    assert!(
        log.contains("targets membrane:interceptor@0.3.0, which this membrane does not support (it implements membrane:interceptor@0.2.0, and serves plugins built for 0.1.x up to 0.1.2); it is newer than this membrane"),
        "{log}"
    );

    let guard = plugin_path("tool-guard");
    let log = startup_failure(&format!(
        "[[plugins]]\npath = {guard:?}\n[[plugins]]\npath = {guard:?}\n"
    ))
    .await;
    assert!(log.contains("two plugins are named 'tool_guard'"), "{log}");

    let log = startup_failure(&format!(
        "[wasm]\npool_size = 8\n[[plugins]]\npath = {guard:?}\nmax_instances = 5\n"
    ))
    .await;
    assert!(log.contains("raise `pool_size`"), "{log}");
}
