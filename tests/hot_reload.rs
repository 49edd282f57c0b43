//! Hot reload under traffic: membrane in front of the rmcp SDK server while a client keeps
//! calling tools, and the operator changes the config file, drops a plugin into the plugin
//! directory, breaks a plugin, or sends SIGHUP. Every call must be answered exactly once, the
//! new policy must take over, and a plugin that cannot load must leave the old one serving.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{RawClient, plugin, rmcp_server, tool_text, write_config};
use serde_json::{Value, json};

/// Replaces a file the way deploy tools do: write beside it, then rename over it.
fn replace(path: &Path, contents: &[u8]) {
    let staging = path.with_extension("staging");
    std::fs::write(&staging, contents).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

/// A config with the tool guard (copied beside it as `guard.wasm`) denying `deny`.
fn guard_config(deny: &str, watch: bool) -> String {
    format!(
        "watch = {watch}\n[[plugins]]\nname = \"guard\"\npath = \"guard.wasm\"\n[plugins.config]\ndeny = [{deny:?}]\n"
    )
}

fn logged_membrane(args: &[&str]) -> RawClient {
    let server = rmcp_server();
    RawClient::spawn_logged(args, &[server.to_str().unwrap()])
}

/// Calls `echo` and `add` with pipelined requests (ids `id`, `id + 1`); checks that each is
/// answered exactly once and that echo works; returns whether `add` was allowed.
async fn round(client: &mut RawClient, id: i64) -> bool {
    let call = |id: i64, name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}})
    };
    client
        .send(&call(id, "echo", json!({"message": format!("m{id}")})))
        .await;
    client
        .send(&call(id + 1, "add", json!({"a": 1, "b": 2})))
        .await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let message = client.recv().await;
        if message.get("method").is_none() {
            answers.push(message);
        }
    }
    let ids: HashSet<i64> = answers.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(
        ids,
        HashSet::from([id, id + 1]),
        "each call answered once: {answers:?}"
    );
    let echo = answers.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(tool_text(echo), format!("m{id}"));
    let add = answers.iter().find(|a| a["id"] == id + 1).unwrap();
    match add.get("error") {
        None => {
            assert_eq!(tool_text(add), "3");
            true
        }
        Some(error) => {
            assert_eq!(error["code"], -32001, "blocked by the guard: {add}");
            false
        }
    }
}

#[tokio::test]
async fn a_changed_config_takes_over_under_traffic_without_losing_a_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("tool-guard"), dir.path().join("guard.wasm")).unwrap();
    let config = write_config(dir.path(), &guard_config("add", true));
    let mut client = logged_membrane(&["--config", config.to_str().unwrap()]);
    client.initialize().await;

    let mut id = 10;
    for _ in 0..20 {
        assert!(
            !round(&mut client, id).await,
            "add is denied before the change"
        );
        id += 2;
    }
    replace(&config, guard_config("delete_*", true).as_bytes());
    // Traffic goes on while membrane notices, compiles nothing (the plugin is unchanged, only
    // its configuration) and swaps; once add is allowed it must stay allowed.
    let mut swapped_at = None;
    for n in 0..2000 {
        let allowed = round(&mut client, id).await;
        id += 2;
        match swapped_at {
            None if allowed => swapped_at = Some(n),
            Some(_) => assert!(allowed, "the old policy came back after the swap"),
            None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
        if swapped_at.is_some_and(|at| n >= at + 20) {
            break;
        }
    }
    assert!(swapped_at.is_some(), "the new policy never took over");
    let log = client.wait_for_log("reloaded plugins", 1).await;
    assert!(log.contains("loaded=[\"guard\"]"), "{log}");
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_plugin_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let guard = dir.path().join("guard.wasm");
    std::fs::copy(plugin("tool-guard"), &guard).unwrap();
    let config = write_config(dir.path(), &guard_config("add", false));
    let mut client = logged_membrane(&["--config", config.to_str().unwrap()]);
    client.initialize().await;
    assert!(!round(&mut client, 10).await);

    // A broken plugin and a new config: with `watch = false` nothing happens until SIGHUP, and
    // then the reload is refused as a whole.
    replace(&guard, b"\0asm truncated");
    replace(&config, guard_config("delete_*", false).as_bytes());
    assert!(!round(&mut client, 12).await, "no reload without SIGHUP");
    client.signal("HUP").await;
    let log = client.wait_for_log("reload rejected", 1).await;
    assert!(
        log.contains("plugin 'guard' is not a membrane interceptor component"),
        "{log}"
    );
    for n in 0..10 {
        assert!(
            !round(&mut client, 20 + 2 * n).await,
            "the old guard keeps serving"
        );
    }

    // Fixed: the next SIGHUP loads it.
    replace(&guard, &std::fs::read(plugin("tool-guard")).unwrap());
    client.signal("HUP").await;
    client.wait_for_log("reloaded plugins", 1).await;
    assert!(round(&mut client, 40).await, "the new policy is in force");
}

#[tokio::test]
async fn a_plugin_dropped_into_the_plugin_dir_joins_the_chain_and_leaves_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let mut client = logged_membrane(&["--plugin-dir", policies.to_str().unwrap()]);
    client.initialize().await;
    assert!(round(&mut client, 10).await, "no plugin yet");

    std::fs::write(policies.join("no-add.toml"), "[config]\ndeny = [\"add\"]\n").unwrap();
    replace(
        &policies.join("no-add.wasm"),
        &std::fs::read(plugin("tool-guard")).unwrap(),
    );
    let log = client.wait_for_log("reloaded plugins", 1).await;
    assert!(log.contains("loaded=[\"no-add\"]"), "{log}");
    assert!(
        !round(&mut client, 12).await,
        "the dropped-in guard is in force"
    );

    std::fs::remove_file(policies.join("no-add.wasm")).unwrap();
    let log = client.wait_for_log("reloaded plugins", 2).await;
    assert!(log.contains("removed=[\"no-add\"]"), "{log}");
    assert!(round(&mut client, 14).await, "the guard left with its file");
}

#[tokio::test]
async fn a_restart_takes_compiled_plugins_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("tool-guard"), dir.path().join("guard.wasm")).unwrap();
    let toml = format!(
        "{}[wasm]\ncache_dir = \"cache\"\n",
        guard_config("add", true)
    );
    let config = write_config(dir.path(), &toml);
    for (run, compiled) in [(1, true), (2, false)] {
        let mut client = logged_membrane(&["--config", config.to_str().unwrap()]);
        client.initialize().await;
        assert!(!round(&mut client, 10).await, "run {run}: the guard works");
        let log = client.wait_for_log("loaded plugin", 1).await;
        assert!(
            log.contains(&format!("compiled={compiled}")),
            "run {run} should have compiled={compiled}:\n{log}"
        );
        client.close_stdin();
        assert_eq!(client.exit_code().await, Some(0));
    }
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "one compiled plugin: {entries:?}");
    assert!(entries[0].ends_with(".cwasm"), "{entries:?}");
}

/// What the reloader logged so far, in the log file beside the config.
fn reloads(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.matches("reload: no plugin changed").count() + text.matches("reloaded plugins").count()
}

#[tokio::test]
async fn its_own_log_and_store_beside_the_config_trigger_nothing_and_steady_writes_still_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("tool-guard"), dir.path().join("guard.wasm")).unwrap();
    let with_store = |deny: &str| {
        format!(
            "{}[session]\nstore = \"sqlite:sessions.db\"\n",
            guard_config(deny, true)
        )
    };
    let config = write_config(dir.path(), &with_store("add"));
    // As an operator runs it: the debug log written into the config's directory, the SQLite
    // store there too (every session writes it).
    let log = dir.path().join("membrane.log");
    let server = rmcp_server();
    let _membrane = common::http::Background::spawn_to(
        tokio::process::Command::new(common::membrane())
            .args(["reverse", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--")
            .arg(&server)
            .env("MEMBRANE_LOG", "membrane=debug")
            .env("XDG_CACHE_HOME", common::cache_home()),
        &log,
    );
    let url = common::services::logged_url(&log, "listening on ").await;
    let mut client = common::http::Http::new(&url);
    client.initialize().await;
    for id in 1..=5 {
        client.call_tool(id, "echo", json!({"message": "x"})).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(reloads(&log), 0, "membrane's own writes reloaded it");

    // Writes every 100 ms for 3 s, never quiet for the debounce: reloads still happen, about
    // once per second, and the last write wins.
    for n in 0..30 {
        let deny = if n == 29 { "delete_*" } else { "add" };
        replace(&config, with_store(deny).as_bytes());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    common::services::eventually("add allowed by the last write", async || {
        client
            .call_tool(100, "add", json!({"a": 1, "b": 2}))
            .await
            .get("error")
            .is_none()
    })
    .await;
    let during = reloads(&log);
    assert!(
        (2..=8).contains(&during),
        "{during} reloads for 3 s of writes"
    );
}
