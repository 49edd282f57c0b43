//! Rolling a policy out, end to end: native and Wasm interceptors in one chain; a plugin in
//! audit mode lets a call through while its block is logged, counted and recorded; and a
//! canary version of a plugin takes its share of 100 sessions, counted apart, until a reload
//! that removes it rolls every new session back.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::http::{Http, membrane_reverse, url_after};
use common::{RawClient, plugin, rmcp_server, write_config};
use membrane::app::{App, NativeInterceptor};
use membrane::config::ConfigSource;
use membrane::interceptor::{
    InterceptAction, InterceptContext, InterceptError, Interceptor, Interest, LinkPolicy,
};
use membrane::protocol::{Direction, Message};
use membrane::session::SessionId;
use membrane::transport::TransportType;
use serde_json::{Value, json};

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

/// The admin API's base URL (without `/v1`) from membrane's log.
fn admin_base(log: &str) -> String {
    let url = url_after(log, "admin API on ").unwrap();
    url.trim_end_matches("/v1").to_owned()
}

async fn admin_get(base: &str, path: &str) -> reqwest::Response {
    let response = common::http_client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response
}

/// The plugins as `/v1/plugins` shows them, by name.
async fn plugins(base: &str) -> serde_json::Map<String, Value> {
    let listed: Vec<Value> = admin_get(base, "/v1/plugins").await.json().await.unwrap();
    listed
        .into_iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p))
        .collect()
}

/// Blocks calls of the tool `native_only`.
struct NativeGuard(Interest);

#[async_trait]
impl Interceptor for NativeGuard {
    fn name(&self) -> &str {
        "native-guard"
    }
    fn interest(&self) -> &Interest {
        &self.0
    }
    async fn intercept(&self, ctx: &InterceptContext) -> Result<InterceptAction, InterceptError> {
        let value = ctx.message.to_value().unwrap();
        Ok(if value["params"]["name"] == "native_only" {
            InterceptAction::Block {
                reason: "native".into(),
            }
        } else {
            InterceptAction::Continue
        })
    }
}

#[tokio::test]
async fn native_and_wasm_interceptors_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &common::guard_toml(&["delete_*"]));
    let native = NativeInterceptor {
        interceptor: Arc::new(NativeGuard(
            membrane::interceptor::Filter::new(["tools/call"], &[], &[]).into(),
        )),
        policy: LinkPolicy::default(),
    };
    let source = ConfigSource {
        file: Some(config),
        ..ConfigSource::default()
    };
    let app = App::start_with(source, vec![native]).await.unwrap();
    let chain = app.pipeline.chain.load_full();
    assert_eq!(chain.len(), 2);
    let verdict = async |tool: &str| {
        let mut ctx = InterceptContext::new(
            Message::from_value(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": tool, "arguments": {}}})),
            Direction::ClientToServer,
            SessionId::generate(),
            TransportType::Stdio,
            1,
        );
        let outcome = chain.run(&mut ctx, 0).await;
        (
            outcome.action,
            outcome.stopped_by.as_deref().map(str::to_owned),
        )
    };
    let (action, by) = verdict("native_only").await;
    assert!(matches!(action, InterceptAction::Block { .. }));
    assert_eq!(by.as_deref(), Some("native-guard"));
    let (action, by) = verdict("delete_x").await;
    assert!(matches!(action, InterceptAction::Block { .. }));
    assert_eq!(by.as_deref(), Some("tool_guard"));
    assert_eq!(verdict("echo").await.0, InterceptAction::Continue);

    // A reload keeps the native interceptor in front.
    app.reload().await.unwrap();
    assert_eq!(app.pipeline.chain.load().len(), 2);
    assert!(app.pipeline.chain.load().version() > chain.version());
}

#[tokio::test]
async fn audit_mode_lets_a_call_through_and_counts_its_block() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[admin]
listen = "127.0.0.1:0"
token_file = "token"
[audit]
file = "audit.jsonl"
[record]
dir = "tapes"
[[plugins]]
path = {:?}
mode = "audit"
[plugins.config]
deny = ["echo"]
"#,
            plugin("tool-guard").display().to_string()
        ),
    );
    let server = rmcp_server().display().to_string();
    let mut client = RawClient::spawn_logged(&["--config", config.to_str().unwrap()], &[&server]);
    client.initialize().await;
    let echoed = client
        .call_tool(2, "echo", json!({"message": "through"}))
        .await;
    assert_eq!(
        common::tool_text(&echoed),
        "through",
        "not enforced: {echoed}"
    );
    let log = client
        .wait_for_log("audit mode, not enforced: block", 1)
        .await;

    let base = admin_base(&log);
    let metrics = admin_get(&base, "/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"membrane_plugin_unenforced_verdicts_total{plugin="tool_guard",verdict="block"} 1"#
        ),
        "{metrics}"
    );
    let guard = &plugins(&base).await["tool_guard"];
    assert_eq!(guard["mode"], "audit");
    assert_eq!(guard["metrics"]["blocked"], 1, "the plugin's own count");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let line: Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            &line["verdict"],
            &line["enforced"],
            &line["tool"],
            &line["plugin"]
        ),
        (
            &json!("block"),
            &json!(false),
            &json!("echo"),
            &json!("tool_guard")
        )
    );

    client.close_stdin();
    assert_eq!(client.exit_code().await, Some(0));
    let tapes: Vec<_> = std::fs::read_dir(dir.path().join("tapes"))
        .unwrap()
        .collect();
    let tape = std::fs::read_to_string(tapes[0].as_ref().unwrap().path()).unwrap();
    let call: Value = tape
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["msg"]["method"] == "tools/call")
        .unwrap();
    assert_eq!(
        call["verdicts"][0],
        json!({"by": "tool_guard", "verdict": "block", "reason": "tool 'echo' is blocked by policy", "enforced": false})
    );
    assert!(
        call.get("answer").is_none(),
        "delivered, not answered by membrane"
    );
}

/// Opens a session through `url`, calls `echo` and says whether it was blocked.
async fn blocked(url: &str) -> bool {
    let mut http = Http::new(url);
    http.initialize().await;
    let answer = http
        .call_tool(1, "echo", json!({"message": "canary"}))
        .await;
    http.delete().await;
    match answer["error"]["code"].as_i64() {
        Some(code) => {
            assert_eq!(code, -32001, "{answer}");
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn a_canary_takes_its_share_of_sessions_until_a_reload_removes_it() {
    const SESSIONS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let guard = plugin("tool-guard").display().to_string();
    let stable = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
         [[plugins]]\nname = \"guard\"\npath = {guard:?}\n[plugins.config]\ndeny = []\n"
    );
    let canary = format!(
        "{stable}[[plugins]]\nname = \"guard-2\"\npath = {guard:?}\ncanary_of = \"guard\"\ncanary = 0.5\n\
         [plugins.config]\ndeny = [\"echo\"]\n"
    );
    let config = write_config(dir.path(), &canary);
    let server = rmcp_server().display().to_string();
    let (membrane, url) =
        membrane_reverse(&["--config", config.to_str().unwrap(), "--", &server]).await;
    let base = admin_base(&membrane.log.text());

    let mut on_canary = 0;
    for _ in 0..SESSIONS {
        on_canary += usize::from(blocked(&url).await);
    }
    // Binomial(100, 0.5): outside 25..=75 once in ~10^6 runs.
    assert!(
        (25..=75).contains(&on_canary),
        "{on_canary} of {SESSIONS} on the canary"
    );
    let counted = plugins(&base).await;
    assert_eq!(
        counted["guard-2"]["metrics"]["calls"], on_canary,
        "counted apart"
    );
    assert_eq!(counted["guard-2"]["metrics"]["blocked"], on_canary);
    assert_eq!(counted["guard"]["metrics"]["calls"], SESSIONS - on_canary);

    // Rolling back: the canary leaves the config.
    std::fs::write(&config, &stable).unwrap();
    membrane.log.wait_for("reloaded plugins", 1).await;
    for _ in 0..20 {
        assert!(
            !blocked(&url).await,
            "no session goes to the canary any more"
        );
    }
    assert!(!plugins(&base).await.contains_key("guard-2"));
    membrane.stop().await;
}
