//! A plugin call never holds up other traffic: on a runtime with a single thread, a call stuck
//! in an endless loop yields at every epoch tick, so another call (as from another session)
//! completes while the loop is still running; the loop then runs out of its time budget. A
//! plugin called directly (without a fiber) that runs long or waits is stopped after a tick
//! and its call made again on a fiber, with the same guarantees (and after a wait, or a third
//! overrun, it is called on fibers for good); one that imports what waits is never called
//! directly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use membrane::interceptor::{InterceptAction, InterceptContext, Interceptor};
use membrane::protocol::{Direction, Message};
use membrane::session::SessionId;
use membrane::transport::TransportType;
use membrane::wasm::{
    Capability, EngineOptions, Grants, PluginEngine, PluginEnv, PluginLimits, PluginSpec,
    WasmInterceptor,
};
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

/// The `counter` plugin with `config`, and a budget of `millis` a call.
async fn counter(
    engine: &Arc<PluginEngine>,
    config: serde_json::Value,
    millis: u64,
) -> Arc<WasmInterceptor> {
    let limits = PluginLimits {
        call_timeout: Duration::from_millis(millis),
        ..PluginLimits::default()
    };
    Arc::new(
        common::load_plugin(engine, "counter", config, limits)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_direct_call_that_runs_long_moves_to_a_fiber_and_stalls_nothing() {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let endless = counter(&engine, json!({"work": u64::MAX}), 300).await;
    let quick = counter(&engine, json!({}), 300).await;
    assert!(endless.calls_directly() && quick.calls_directly());

    let spinning = tokio::spawn({
        let endless = endless.clone();
        async move { endless.intercept(&call("spin")).await }
    });
    tokio::task::yield_now().await; // a tick or two directly, then on a fiber
    let other = quick.intercept(&call("echo")).await.unwrap();
    assert_eq!(other, InterceptAction::Continue);
    assert!(
        !spinning.is_finished(),
        "the long call must still be running when the other call completes"
    );
    let looped = spinning.await.unwrap();
    assert!(looped.unwrap_err().0.contains("time budget exceeded"));
    // Once could be the machine's doing; the third overrun sends it to fibers for good.
    assert!(endless.calls_directly());
    for _ in 0..2 {
        assert!(endless.intercept(&call("spin")).await.is_err());
    }
    assert!(
        !endless.calls_directly(),
        "it is called on fibers from then on"
    );
    assert!(quick.calls_directly());
}

#[tokio::test]
async fn a_direct_call_that_would_wait_is_made_again_on_a_fiber() {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let napping = counter(&engine, json!({"sleep_ms": 20}), 2000).await;
    assert!(napping.calls_directly());
    let action = napping.intercept(&call("echo")).await.unwrap();
    assert_eq!(
        action,
        InterceptAction::Continue,
        "it slept on a fiber, then decided"
    );
    assert!(!napping.calls_directly());
    let again = napping.intercept(&call("echo")).await.unwrap();
    assert_eq!(again, InterceptAction::Continue);
}

#[tokio::test]
async fn plugins_that_import_what_waits_are_never_called_directly() {
    let engine = PluginEngine::new(EngineOptions::default()).unwrap();
    let kv = Grants::from([Capability::Log, Capability::SessionKv]);
    let config = json!({"max_calls": 5});
    let spec = PluginSpec::read(
        "rate-limit",
        &common::plugin("rate-limit"),
        &config,
        PluginLimits::default(),
        kv,
    )
    .unwrap();
    let limit = WasmInterceptor::load(&engine, &spec, &PluginEnv::default(), Default::default())
        .await
        .unwrap();
    assert!(
        !limit.calls_directly(),
        "session-kv waits on the session store"
    );
    let legacy = common::load_plugin(
        &engine,
        "hostile",
        json!({"mode": "trap", "tool": "x"}),
        PluginLimits::default(),
    )
    .await
    .unwrap();
    assert!(!legacy.calls_directly(), "0.1 plugins are called on fibers");
    let guard = common::load_plugin(&engine, "tool-guard", json!({}), PluginLimits::default())
        .await
        .unwrap();
    assert!(guard.calls_directly());
}
