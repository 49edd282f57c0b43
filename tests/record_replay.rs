//! Recording and replaying, end to end with real peers: a session of server-everything driven
//! by the Python SDK is recorded (header, verdicts, what membrane answered in a request's
//! place); the tape is served back to the TypeScript SDK client and to the MCP Inspector over
//! stdio and HTTP, to the Python SDK client in its default mode, and behind `membrane forward`; a request the tape cannot answer gets an
//! error; `--against` drives real servers with the tape's client side; `test-policy` lists
//! exactly the messages whose verdict a new configuration changes; `[record] after` keeps what
//! a redactor removes off the tape; and caps on tapes and their directory drop tape lines,
//! never messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::http::Background;
use common::{
    RawClient, WAIT, guard_toml, json_output, membrane, peers, plugin, rmcp_server,
    server_everything, write_config,
};
use serde_json::{Value, json};
use tokio::process::Command;

/// The message the recorded client echoes: the TypeScript client's, so it replays to it.
const ECHOED: &str = "hello from typescript";

/// The tapes in `dir`, once every one has its header and `lines` lines at least.
async fn tapes_in(dir: &Path, lines: usize) -> Vec<PathBuf> {
    eventually_some(|| {
        let mut tapes: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "jsonl"))
            .collect();
        tapes.sort();
        let complete = tapes.iter().all(|tape| {
            let text = std::fs::read_to_string(tape).unwrap_or_default();
            text.starts_with("{\"tape\"") && text.lines().count() >= lines
        });
        (!tapes.is_empty() && complete).then_some(tapes)
    })
    .await
}

/// What `probe` finds, once it finds something (within [`WAIT`]).
async fn eventually_some<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "never came to be");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(tape: &Path) -> Vec<Value> {
    std::fs::read_to_string(tape)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `membrane forward ARGS -- server-everything`, driven by the Python SDK client's
/// `list-and-call` (echoing [`ECHOED`]); returns what the client saw.
async fn python_through_membrane(args: &[&str]) -> Value {
    let mut command = Command::new(peers().join("venv/bin/python"));
    command
        .arg(common::repo().join("tests/peers/python_client.py"))
        .args([
            "list-and-call",
            "--mode",
            "legacy",
            "--message",
            ECHOED,
            "--",
        ])
        .arg(membrane())
        .arg("forward")
        .args(args)
        .arg("--")
        .args(server_everything())
        .env("XDG_CACHE_HOME", common::cache_home());
    json_output(&mut command, WAIT).await
}

/// Records one session behind tool-guard (denying `delete_*`) into `dir/tapes`; returns the
/// tape and what the client saw.
async fn record_session(dir: &Path) -> (PathBuf, Value) {
    let config = write_config(dir, &guard_toml(&["delete_*"]));
    let tapes = dir.join("tapes");
    let seen = python_through_membrane(&[
        "--config",
        config.to_str().unwrap(),
        "--record",
        tapes.to_str().unwrap(),
    ])
    .await;
    let tape = tapes_in(&tapes, 8).await.remove(0);
    (tape, seen)
}

/// The TypeScript SDK client (`tests/peers/ts_client.mjs`) against `target`.
async fn typescript_client(target: &[String]) -> Value {
    json_output(
        Command::new("node")
            .arg(common::repo().join("tests/peers/ts_client.mjs"))
            .arg(peers())
            .arg("--")
            .args(target),
        WAIT,
    )
    .await
}

/// The MCP Inspector's CLI against `target`, with `args` after it.
async fn inspector(target: &[String], args: &[&str]) -> Value {
    json_output(
        Command::new(peers().join("npm/node_modules/.bin/mcp-inspector"))
            .arg("--cli")
            .args(target)
            .args(args),
        WAIT,
    )
    .await
}

fn replay_command(tape: &Path) -> Vec<String> {
    vec![membrane(), "replay".into(), tape.display().to_string()]
}

async fn run(command: &mut Command) -> Output {
    tokio::time::timeout(WAIT * 2, command.output())
        .await
        .expect("finished in time")
        .unwrap()
}

#[tokio::test]
async fn a_session_is_recorded_with_its_handshake_verdicts_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, seen) = record_session(dir.path()).await;
    assert_eq!(seen["echo"], format!("Echo: {ECHOED}"));
    let lines = lines(&tape);
    let header = &lines[0];
    assert_eq!(header["tape"], "membrane-tape/1");
    assert_eq!(header["protocol_version"], seen["protocol_version"]);
    assert_eq!(header["server_info"]["name"], "mcp-servers/everything");
    assert_eq!(header["client_info"]["name"], "mcp");
    assert_eq!(header["client_transport"], "stdio");
    let plugins = header["plugins"].as_array().unwrap();
    assert_eq!(plugins[0]["name"], "tool_guard");
    assert!(plugins[0]["hash"].as_str().unwrap().starts_with("sha256:"));

    let entries = &lines[1..];
    let calls: Vec<&Value> = entries
        .iter()
        .filter(|e| e["msg"]["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 2, "{entries:#?}");
    assert_eq!(
        calls[0]["verdicts"],
        json!([{"by": "tool_guard", "verdict": "continue"}])
    );
    assert!(calls[0].get("answer").is_none());
    let blocked = calls[1];
    assert_eq!(blocked["msg"]["params"]["name"], "delete_file");
    assert_eq!(blocked["verdicts"][0]["verdict"], "block");
    assert!(
        blocked["verdicts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("delete_file")
    );
    assert_eq!(blocked["answer"]["error"]["code"], -32001);
    let from_server = |method: &str| {
        entries
            .iter()
            .any(|e| e["dir"] == "server_to_client" && e["msg"]["method"] == method)
    };
    assert!(
        from_server("notifications/tools/list_changed"),
        "the server's own notifications are on the tape"
    );
    let times: Vec<f64> = entries.iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "entries in order: {times:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["dir"] == "client_to_server" || e["dir"] == "server_to_client")
    );
}

#[tokio::test]
async fn a_tape_replays_to_other_clients_over_stdio_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, recorded) = record_session(dir.path()).await;
    let replay = replay_command(&tape);

    // The TypeScript SDK client over stdio, though the tape was recorded with Python's.
    let seen = typescript_client(&replay).await;
    assert_eq!(seen["server_name"], "mcp-servers/everything");
    assert_eq!(seen["tools"], recorded["tools"]);
    assert_eq!(seen["echo"]["text"], format!("Echo: {ECHOED}"));
    assert_eq!(
        seen["blocked"]["code"], -32001,
        "membrane's recorded answer"
    );

    // The Python SDK client in its default mode, which tries the 2026-07-28 discovery first.
    let mut python = Command::new(peers().join("venv/bin/python"));
    python
        .arg(common::repo().join("tests/peers/python_client.py"))
        .args(["list-and-call", "--message", ECHOED, "--"])
        .args(&replay);
    let seen = json_output(&mut python, WAIT).await;
    assert_eq!(seen["tools"], recorded["tools"]);
    assert_eq!(seen["echo"], format!("Echo: {ECHOED}"));

    // The Inspector over stdio.
    let listed = inspector(&replay, &["--method", "tools/list"]).await;
    let names: Vec<&Value> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["name"])
        .collect();
    assert_eq!(json!(names), recorded["tools"]);

    // Both over HTTP.
    let server = Background::spawn(
        Command::new(membrane())
            .args(["replay", tape.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .env("MEMBRANE_LOG", "membrane=debug"),
    );
    let url = server.logged_url("listening on ").await;
    let seen = typescript_client(std::slice::from_ref(&url)).await;
    assert_eq!(seen["tools"], recorded["tools"]);
    assert_eq!(seen["echo"]["text"], format!("Echo: {ECHOED}"));
    let called = inspector(
        std::slice::from_ref(&url),
        &[
            "--transport",
            "http",
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            &format!("message={ECHOED}"),
        ],
    )
    .await;
    assert_eq!(called["content"][0]["text"], format!("Echo: {ECHOED}"));
    server.stop().await;
}

#[tokio::test]
async fn a_tape_stands_in_for_its_server_behind_membrane() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = record_session(dir.path()).await;
    let replay = replay_command(&tape);
    let replay: Vec<&str> = replay.iter().map(String::as_str).collect();
    let mut client = RawClient::spawn(&[], &replay);
    let init = client.initialize().await;
    assert_eq!(init["serverInfo"]["name"], "mcp-servers/everything");
    let echoed = client
        .call_tool(2, "echo", json!({"message": ECHOED}))
        .await;
    assert_eq!(common::tool_text(&echoed), format!("Echo: {ECHOED}"));
    assert_eq!(echoed["id"], 2, "the answer carries the client's own id");

    let other = client
        .call_tool(3, "echo", json!({"message": "never recorded"}))
        .await;
    assert_eq!(other["error"]["code"], -32602, "{other}");
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer")
    );
    let unknown = client.request(4, "prompts/list", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let again = client
        .call_tool(5, "echo", json!({"message": ECHOED}))
        .await;
    assert_eq!(
        common::tool_text(&again),
        format!("Echo: {ECHOED}"),
        "asked again, answered again"
    );

    // Matching by method alone answers any echo with the recorded one.
    let mut lax = RawClient::spawn(&[], &[replay.as_slice(), &["--match", "method"]].concat());
    lax.initialize().await;
    let echoed = lax
        .call_tool(2, "echo", json!({"message": "something else"}))
        .await;
    assert_eq!(common::tool_text(&echoed), format!("Echo: {ECHOED}"));
}

#[tokio::test]
async fn against_drives_real_servers_with_the_recorded_client() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = record_session(dir.path()).await;
    let against = |server: Vec<String>| {
        let mut command = Command::new(membrane());
        command
            .args([
                "replay",
                tape.to_str().unwrap(),
                "--against",
                "--json",
                "--",
            ])
            .args(server)
            .env("MEMBRANE_LOG", "warn");
        command
    };
    let same = run(&mut against(server_everything())).await;
    let report: Value = serde_json::from_slice(&same.stdout).unwrap();
    assert!(same.status.success(), "{report}");
    assert_eq!(
        report["requests"], 3,
        "initialize, tools/list, echo: {report}"
    );
    assert_eq!(report["same"], 3);

    // Another server answers otherwise: its initialize and its tool list differ.
    let other = run(&mut against(vec![rmcp_server().display().to_string()])).await;
    assert_eq!(other.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&other.stdout).unwrap();
    let methods: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["method"].as_str().unwrap())
        .collect();
    assert!(
        methods.contains(&"initialize") && methods.contains(&"tools/list"),
        "{report}"
    );
}

#[tokio::test]
async fn test_policy_lists_exactly_the_verdicts_a_new_config_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, _) = record_session(dir.path()).await;
    let test_policy = |toml: &str, name: &str| {
        let config = dir.path().join(name);
        std::fs::write(&config, toml).unwrap();
        let mut command = Command::new(membrane());
        command
            .args(["test-policy", "--json", "--tapes"])
            .arg(tape.parent().unwrap())
            .arg("--config")
            .arg(config)
            .env("XDG_CACHE_HOME", common::cache_home())
            .env("MEMBRANE_LOG", "warn");
        command
    };

    let unchanged = run(&mut test_policy(&guard_toml(&["delete_*"]), "same.toml")).await;
    let report: Value = serde_json::from_slice(&unchanged.stdout).unwrap();
    assert!(unchanged.status.success(), "{report}");
    assert_eq!(report["totals"]["changed"], 0);
    assert_eq!(report["totals"]["sessions"], 1);

    let changed = run(&mut test_policy(&guard_toml(&["echo"]), "echo.toml")).await;
    assert_eq!(changed.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&changed.stdout).unwrap();
    let mut changes: Vec<(String, String, String, String)> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (
                text(&c["method"]),
                text(&c["tool"]),
                text(&c["recorded"]),
                text(&c["now"]),
            )
        })
        .collect();
    changes.sort();
    let expected = [
        ("tools/call", "delete_file", "block", "continue"),
        ("tools/call", "echo", "continue", "block"),
        // tool-guard hides the tools it denies from the list.
        ("tools/list", "-", "continue", "modify"),
    ]
    .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()));
    assert_eq!(changes, expected, "{report:#}");
    let totals = &report["totals"];
    assert_eq!(
        (
            &totals["changed"],
            &totals["now_blocked"],
            &totals["now_allowed"],
            &totals["now_modified"]
        ),
        (&json!(3), &json!(1), &json!(1), &json!(1))
    );
    assert_eq!(totals["errors"], 0);

    // A plugin that traps is reported with the message it trapped on.
    let trapping = format!(
        "[[plugins]]\npath = {:?}\non_error = \"continue\"\n[plugins.config]\nmode = \"trap\"\n",
        plugin("hostile").display().to_string()
    );
    let trapped = run(&mut test_policy(&trapping, "trap.toml")).await;
    assert_eq!(trapped.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&trapped.stdout).unwrap();
    assert!(
        report["totals"]["errors"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let change = &report["changes"][0];
    assert!(
        change["verdicts"][0]["error"].as_str().is_some(),
        "{change:#}"
    );

    // The table for people.
    let people = test_policy(&guard_toml(&["echo"]), "echo.toml");
    let args: Vec<_> = people
        .as_std()
        .get_args()
        .filter(|a| *a != "--json")
        .map(|a| a.to_owned())
        .collect();
    let table = run(Command::new(membrane())
        .args(args)
        .env("MEMBRANE_LOG", "warn")
        .env("XDG_CACHE_HOME", common::cache_home()))
    .await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("tools/call echo: continue → block (by tool_guard"),
        "{text}"
    );
    assert!(
        text.contains("3 changed (1 now blocked, 1 now allowed, 1 now modified)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_redactor_before_the_recorder_keeps_secrets_off_the_tape() {
    const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";
    let dir = tempfile::tempdir().unwrap();
    let redactor = |after: &str| {
        format!(
            "{after}[[plugins]]\npath = {:?}\n",
            plugin("secret-redactor").display().to_string()
        )
    };
    let record = |name: &str, toml: String| {
        let tapes = dir.path().join(name);
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        async move {
            let mut command = Command::new(peers().join("venv/bin/python"));
            command
                .arg(common::repo().join("tests/peers/python_client.py"))
                .args(["call", "--mode", "legacy", "--tool", "get-env", "--"])
                .arg(membrane())
                .args(["forward", "--config", config.to_str().unwrap(), "--record"])
                .arg(&tapes)
                .arg("--")
                .args(server_everything())
                .env("LEAKED_KEY", SECRET)
                .env("XDG_CACHE_HOME", common::cache_home());
            let seen = json_output(&mut command, WAIT).await;
            let text = seen["call"]["text"].as_str().unwrap().to_owned();
            assert!(!text.contains(SECRET), "the client never sees it");
            let tape = tapes_in(&tapes, 6).await.remove(0);
            std::fs::read_to_string(tape).unwrap()
        }
    };
    let before = record("before", redactor("")).await;
    assert!(before.contains(SECRET), "recorded as the server sent it");
    let after = record(
        "after",
        redactor("[record]\ndir = \"unused\"\nafter = \"secret_redactor\"\n"),
    )
    .await;
    assert!(!after.contains(SECRET), "recorded as the redactor left it");
    assert!(after.contains("[REDACTED:aws-access-key]"), "{after}");
}

#[tokio::test]
async fn caps_drop_tape_lines_never_messages() {
    let dir = tempfile::tempdir().unwrap();
    let tapes = dir.path().join("tapes");
    std::fs::create_dir(&tapes).unwrap();
    // Old tapes that push the directory over its cap as soon as anything is written.
    for n in 0..3 {
        let old = format!("{{\"tape\":\"old\"}}\n{}\n", "x".repeat(2984));
        std::fs::write(tapes.join(format!("old-{n}.jsonl")), old).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = write_config(
        dir.path(),
        &format!(
            "[record]\ndir = {:?}\nmax_tape_bytes = 8192\nmax_dir_bytes = 12000\n",
            tapes.display().to_string()
        ),
    );
    let server = rmcp_server().display().to_string();
    let mut client = RawClient::spawn_logged(&["--config", config.to_str().unwrap()], &[&server]);
    client.initialize().await;
    let payload = "x".repeat(1024);
    for id in 2..202 {
        let answer = client
            .call_tool(id, "echo", json!({"message": payload}))
            .await;
        assert_eq!(common::tool_text(&answer), payload, "call {id} answered");
    }
    client
        .wait_for_log("tape lines dropped from now on", 1)
        .await;
    client.close_stdin();
    assert_eq!(client.exit_code().await, Some(0));
    let tape = tapes_in(&tapes, 2)
        .await
        .into_iter()
        .find(|t| !t.file_name().unwrap().to_str().unwrap().starts_with("old-"))
        .unwrap();
    let size = std::fs::metadata(&tape).unwrap().len();
    assert!(
        size <= 8192 && size > 4096,
        "the tape stopped at its cap: {size} bytes"
    );
    assert!(
        !tapes.join("old-0.jsonl").exists(),
        "the oldest tape made room"
    );
    assert!(!tapes.join("old-1.jsonl").exists());
    let total: u64 = std::fs::read_dir(&tapes)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 12000, "the directory stays under its cap: {total}");
}
