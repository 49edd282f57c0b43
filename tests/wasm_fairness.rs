//! A plugin call never holds up other traffic: on a runtime with a single thread, a call stuck
//! in an endless loop yields at every epoch tick, so another call (as from another session)
//! completes while the loop is still running; the loop then runs out of its time budget.

mod common;

use std::sync::Arc;
use std::time::Duration;

use membrane::interceptor::{InterceptAction, InterceptContext, Interceptor};
use membrane::protocol::{Direction, Message};
use membrane::session::SessionId;
use membrane::transport::TransportType;
use membrane::wasm::{EngineOptions, PluginEngine, PluginLimits};
use serde_json::json;

fn call(tool: &str) -> InterceptContext {
    let message = Message::from_value(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool}
    }));
    InterceptContext::new(
        message,
        Direction::ClientToServer,
        SessionId::generate(),
        TransportType::Stdio,
        1,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_looping_call_does_not_stall_other_calls() {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let limits = PluginLimits {
        call_timeout: Duration::from_secs(2),
        ..PluginLimits::default()
    };
    let config = json!({"mode": "loop", "tool": "spin"});
    let plugin = common::load_plugin(&engine, "hostile", config, limits).await;
    let plugin = Arc::new(plugin.unwrap());

    let spinning = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.intercept(&call("spin")).await }
    });
    tokio::task::yield_now().await; // the loop starts, and yields at the next tick

    let other = plugin.intercept(&call("echo")).await.unwrap();
    assert_eq!(other, InterceptAction::Continue);
    assert!(
        !spinning.is_finished(),
        "the loop must still be running when the other call completes"
    );
    let looped = spinning.await.unwrap();
    assert!(looped.unwrap_err().0.contains("time budget exceeded"));
}
