//! Interceptor chain costs, each beside a baseline measured in the same run:
//! - `fast_path`: deciding that no plugin wants a 1 KiB message (envelope parse plus the chain's
//!   native interest check, three Wasm plugins loaded), against parsing the same message into a
//!   `serde_json::Value`, which is what a proxy without a lazy envelope would do.
//! - `wasm_call`: one call into the tool-guard plugin for a `tools/call` of 1 KiB and 64 KiB,
//!   against the same decision made natively in Rust.
//!
//! Run: `cargo bench --bench chain` (builds the plugins on first use).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use membrane::interceptor::{FailurePolicy, InterceptContext, Interceptor, InterceptorChain};
use membrane::protocol::{Direction, Message};
use membrane::session::SessionId;
use membrane::transport::TransportType;
use membrane::wasm::{EngineOptions, PluginEngine, PluginLimits, WasmInterceptor};
use serde_json::json;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn load(
    engine: &Arc<PluginEngine>,
    name: &str,
    config: serde_json::Value,
) -> WasmInterceptor {
    common::load_plugin(engine, name, config, PluginLimits::default())
        .await
        .unwrap()
}

fn fast_path(c: &mut Criterion) {
    let rt = runtime();
    let chain = rt.block_on(async {
        let engine = PluginEngine::new(EngineOptions::default()).unwrap();
        let rules = json!({"rules": [{"method": "resources/*", "action": "block", "reason": "x"}]});
        InterceptorChain::new()
            .with(
                Arc::new(load(&engine, "tool-guard", json!({"deny": ["delete_*"]})).await),
                FailurePolicy::Block,
            )
            .with(
                Arc::new(load(&engine, "rules", rules).await),
                FailurePolicy::Block,
            )
            .with(
                Arc::new(load(&engine, "tool-guard", json!({})).await),
                FailurePolicy::Block,
            )
    });
    let raw = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"t","progress":1,"message":"{}"}}}}"#,
        "p".repeat(940)
    ));
    assert!((1000..1100).contains(&raw.len()));

    let mut group = c.benchmark_group("fast_path_1KiB");
    group.bench_function("baseline: serde_json::Value parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&raw).unwrap())
    });
    group.bench_function("envelope parse + chain decision", |b| {
        b.iter(|| {
            let message = Message::new(raw.clone());
            let kind = message.validate().unwrap();
            let wanted = chain.wants(Direction::ServerToClient, kind, message.method());
            assert!(!wanted);
            message
        })
    });
    let parsed = Message::new(raw.clone());
    let kind = parsed.validate().unwrap();
    group.bench_function("chain decision only", |b| {
        b.iter(|| chain.wants(Direction::ServerToClient, kind, parsed.method()))
    });
    group.finish();
}

fn call_context(size: usize) -> InterceptContext {
    let text = "a".repeat(size.saturating_sub(120));
    let message = Message::from_value(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": text}}
    }));
    let mut ctx = InterceptContext::new(
        message,
        Direction::ClientToServer,
        SessionId::generate(),
        TransportType::Stdio,
        1,
    );
    ctx.protocol_version = Some("2025-06-18".into());
    ctx
}

/// The tool guard's decision, made natively: parse the call, match the name against the deny list.
fn native_guard(ctx: &InterceptContext, deny: &[wildmatch::WildMatch]) -> bool {
    let value: serde_json::Value = serde_json::from_slice(ctx.message.raw()).unwrap();
    let name = value["params"]["name"].as_str().unwrap_or_default();
    deny.iter().any(|p| p.matches(name))
}

fn wasm_call(c: &mut Criterion) {
    let rt = runtime();
    let guard = rt.block_on(async {
        let engine = PluginEngine::new(EngineOptions::default()).unwrap();
        load(&engine, "tool-guard", json!({"deny": ["delete_*"]})).await
    });
    let deny = vec![wildmatch::WildMatch::new("delete_*")];
    let mut group = c.benchmark_group("wasm_call");
    for size in [1024, 64 * 1024] {
        let ctx = call_context(size);
        group.throughput(Throughput::Bytes(ctx.message.raw().len() as u64));
        group.bench_with_input(
            BenchmarkId::new("baseline: native guard", size),
            &ctx,
            |b, ctx| b.iter(|| assert!(!native_guard(ctx, &deny))),
        );
        group.bench_with_input(
            BenchmarkId::new("tool-guard plugin", size),
            &ctx,
            |b, ctx| {
                b.to_async(&rt).iter(|| async {
                    let action = guard.intercept(ctx).await.unwrap();
                    assert_eq!(action, membrane::interceptor::InterceptAction::Continue);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fast_path, wasm_call);
criterion_main!(benches);
