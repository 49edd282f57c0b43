//! `membrane plugin check`, as a plugin author or an operator runs it: a good plugin with its
//! settings from a config (its filters, a block and a modify on the samples), a plugin that
//! needs a grant it lacks and then has, one built for a contract this membrane does not
//! implement, ones built for the older 0.1 line (0.1.0, 0.1.1), one that refuses its
//! configuration, and files that are not components.

mod common;

use std::path::Path;

use common::{membrane, plugin};
use serde_json::Value;
use tokio::process::Command;

/// Runs `membrane plugin check PLUGIN [--config CONFIG] --json`: its exit status and report.
async fn check(plugin: &Path, config: Option<&str>) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(membrane());
    command
        .args(["plugin", "check", "--json"])
        .arg(plugin)
        .env("MEMBRANE_LOG", "warn");
    if let Some(toml) = config {
        let toml = format!(
            "[[plugins]]\npath = {:?}\n{toml}",
            plugin.display().to_string()
        );
        command
            .arg("--config")
            .arg(common::write_config(dir.path(), &toml));
    }
    let output = tokio::time::timeout(common::WAIT, command.output())
        .await
        .unwrap()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&output.stdout));
    });
    (output.status.code().unwrap(), report)
}

fn sample<'a>(report: &'a Value, message: &str) -> &'a Value {
    report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["message"] == message)
        .unwrap()
}

#[tokio::test]
async fn a_good_plugin_shows_its_contract_filters_and_verdicts() {
    let guard = plugin("tool-guard");
    let (status, report) = check(&guard, Some("[plugins.config]\ndeny = [\"echo\"]\n")).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["refusal"], Value::Null);
    assert!(
        report["settings"]
            .as_str()
            .unwrap()
            .contains("[[plugins]] entry")
    );
    assert_eq!(report["contract"], "membrane:interceptor@0.2.0");
    assert_eq!(
        report["filters"],
        serde_json::json!([
            "tools/call · client_to_server · request",
            "tools/list · server_to_client · response"
        ])
    );
    let call = sample(&report, "tools/call of echo");
    assert_eq!(call["verdict"], "block");
    assert_eq!(call["detail"], "tool 'echo' is blocked by policy");
    let list = sample(&report, "tools/list answer");
    assert_eq!(list["verdict"], "modify", "echo hidden from the list");
    assert_eq!(sample(&report, "initialize request")["verdict"], "skipped");

    // Without the config, its defaults: a guard that denies nothing.
    let (status, report) = check(&guard, None).await;
    assert_eq!(status, 0);
    assert_eq!(sample(&report, "tools/call of echo")["verdict"], "continue");
}

#[tokio::test]
async fn a_missing_grant_is_named_and_granting_it_loads_the_plugin() {
    let limit = plugin("rate-limit");
    let (status, report) = check(&limit, None).await;
    assert_eq!(status, 1);
    let refusal = report["refusal"].as_str().unwrap();
    assert!(
        refusal.contains("session-kv") && refusal.contains("grants"),
        "{refusal}"
    );
    let kv = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().contains("/session-kv@"))
        .unwrap();
    assert_eq!(kv["capability"], "session-kv");

    let granted = "grants = [\"log\", \"session-kv\"]\n[plugins.config]\nmax_calls = 5\n";
    let (status, report) = check(&limit, Some(granted)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(sample(&report, "tools/call of echo")["verdict"], "continue");
}

#[tokio::test]
async fn what_this_membrane_cannot_load_is_refused_with_the_reason() {
    let (status, report) = check(&plugin("future-contract"), None).await;
    assert_eq!(status, 1);
    assert_eq!(report["contract"], "membrane:interceptor@0.3.0");
    assert!(
        report["refusal"]
            .as_str()
            .unwrap()
            .contains("does not support")
    );

    let bad_config = "[plugins.config]\ndenied = [\"x\"]\n";
    let (status, report) = check(&plugin("tool-guard"), Some(bad_config)).await;
    assert_eq!(status, 1);
    let refusal = report["refusal"].as_str().unwrap();
    assert!(
        refusal.contains("rejected its configuration") && refusal.contains("denied"),
        "{refusal}"
    );

    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, expected) in [
        (
            "text.wasm",
            b"not wasm at all".as_slice(),
            "not WebAssembly",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".as_slice(),
            "core WebAssembly module",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (status, report) = check(&path, None).await;
        assert_eq!(status, 1);
        assert!(
            report["refusal"].as_str().unwrap().contains(expected),
            "{report:#}"
        );
    }
    let (status, report) = check(&dir.path().join("missing.wasm"), None).await;
    assert_eq!(status, 1);
    assert!(
        report["refusal"]
            .as_str()
            .unwrap()
            .contains("cannot read plugin")
    );
}

#[tokio::test]
async fn plugins_built_for_the_older_contract_line_still_load() {
    let config = "grants = [\"log\", \"session-kv\"]\n[plugins.config]\nblock = \"echo\"\n";
    let (status, report) = check(&plugin("legacy-0-1-1"), Some(config)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["contract"], "membrane:interceptor@0.1.1");
    let call = sample(&report, "tools/call of echo");
    assert_eq!(call["verdict"], "block", "{report:#}");
    assert_eq!(
        call["detail"],
        "blocked by a 0.1.1 plugin (call 1 of the session)"
    );

    let config = "[plugins.config]\nmode = \"garbage\"\n";
    let (status, report) = check(&plugin("hostile"), Some(config)).await;
    assert_eq!(status, 0, "{report:#}");
    assert_eq!(report["contract"], "membrane:interceptor@0.1.0");
}
