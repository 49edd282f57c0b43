//! Interceptor chain costs, each beside a baseline measured in the same run:
//! - `fast_path`: deciding that no plugin wants a 1 KiB message (envelope parse plus the chain's
//!   native interest check, three Wasm plugins loaded), against parsing the same message into a
//!   `serde_json::Value`, which is what a proxy without a lazy envelope would do.
//! - `wasm_call`: one call into the tool-guard plugin for a `tools/call` of 1 KiB and 64 KiB,
//!   against the same decision made natively in Rust.
//!
//! - `chain_of_three_1KiB`: a 1 KiB `tools/call` that three plugins all want (tool-guard,
//!   rate-limit counting in the session store, rules), against one full `Value` parse of it
//!   and against the tool-guard call alone.
//! - `contract_floor`: a call into a plugin that reads nothing of the message, on 1 KiB and
//!   64 KiB: `counter` on contract 0.2 (the message lent as a handle, called directly) against
//!   `legacy-0-1-1` on 0.1 (the message's text and envelope lowered into the plugin whole, on a
//!   fiber).
//!
//! Plugin calls are made as the chain makes them: at once when the plugin is called directly
//! (`intercept_now`), else through the async `intercept`.
//! - `instantiation`: a tool-guard call on a warm instance against the same call on a fresh
//!   instance (`fresh_instances`: instantiate, `init`, call), with wasmtime's pooling allocator
//!   and with on-demand allocation.
//!
//! Run: `cargo bench --bench chain` (builds the plugins on first use).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use membrane::interceptor::{
    FailurePolicy, InterceptAction, InterceptContext, Interceptor, InterceptorChain,
};
use membrane::protocol::{Direction, Message};
use membrane::session::{SessionConfig, SessionId, SessionManager};
use membrane::transport::TransportType;
use membrane::wasm::{
    Capability, EngineOptions, PluginEngine, PluginEnv, PluginLimits, PluginSpec, WasmInterceptor,
};
use serde_json::json;

/// One interceptor's decision, made as the chain makes it: at once when it can be.
async fn decide(
    interceptor: &dyn Interceptor,
    ctx: &InterceptContext,
) -> Result<InterceptAction, membrane::interceptor::InterceptError> {
    match interceptor.intercept_now(ctx) {
        Some(decided) => decided,
        None => interceptor.intercept(ctx).await,
    }
}

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
                    let action = decide(&guard, ctx).await.unwrap();
                    assert_eq!(action, membrane::interceptor::InterceptAction::Continue);
                })
            },
        );
    }
    group.finish();
}

async fn load_with(
    engine: &Arc<PluginEngine>,
    name: &str,
    config: serde_json::Value,
    limits: PluginLimits,
    grants: &[Capability],
    sessions: Option<Arc<SessionManager>>,
) -> Arc<WasmInterceptor> {
    let grants = grants.iter().copied().collect();
    let spec = PluginSpec::read(name, &common::plugin(name), &config, limits, grants).unwrap();
    let env = PluginEnv {
        cache: None,
        sessions,
    };
    let plugin = WasmInterceptor::load(engine, &spec, &env, Default::default());
    Arc::new(plugin.await.unwrap())
}

fn chain_of_three(c: &mut Criterion) {
    let rt = runtime();
    let sessions = Arc::new(SessionManager::with_config(SessionConfig::default()));
    let (chain, plugins, ctx) = rt.block_on(async {
        let engine = PluginEngine::new(EngineOptions::default()).unwrap();
        let limits = PluginLimits::default();
        let log = [Capability::Log];
        let guard = load_with(
            &engine,
            "tool-guard",
            json!({"deny": ["delete_*"]}),
            limits,
            &log,
            None,
        )
        .await;
        let budget = json!({"max_calls": i64::MAX});
        let kv = [Capability::Log, Capability::SessionKv];
        let limit = load_with(
            &engine,
            "rate-limit",
            budget,
            limits,
            &kv,
            Some(sessions.clone()),
        )
        .await;
        let rules = json!({"rules": [{"method": "tools/call", "action": "continue"}]});
        let rules = load_with(&engine, "rules", rules, limits, &log, None).await;
        let chain = InterceptorChain::new()
            .with(guard.clone(), FailurePolicy::Block)
            .with(limit.clone(), FailurePolicy::Block)
            .with(rules.clone(), FailurePolicy::Block);
        let session = sessions
            .create(TransportType::Stdio, TransportType::Stdio, None)
            .await
            .unwrap();
        let mut ctx = call_context(1024);
        ctx.session_id = session.id;
        (chain, [guard, limit, rules], ctx)
    });
    let kind = ctx.message.validate().unwrap();
    assert!(chain.wants(Direction::ClientToServer, kind, Some("tools/call")));
    let raw = ctx.message.raw().clone();
    let mut group = c.benchmark_group("chain_of_three_1KiB");
    group.bench_function("baseline: serde_json::Value parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&raw).unwrap())
    });
    for plugin in &plugins {
        group.bench_function(format!("{} alone", plugin.name()), |b| {
            b.to_async(&rt)
                .iter(|| async { decide(plugin.as_ref(), &ctx).await.unwrap() })
        });
    }
    group.bench_function("three plugins", |b| {
        b.to_async(&rt).iter_batched(
            || ctx.clone(),
            |mut ctx| {
                let chain = &chain;
                async move {
                    let outcome = chain.run(&mut ctx, 0).await;
                    assert_eq!(outcome.action, InterceptAction::Continue);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn contract_floor(c: &mut Criterion) {
    let rt = runtime();
    let (counter, legacy) = rt.block_on(async {
        let engine = PluginEngine::new(EngineOptions::default()).unwrap();
        let limits = PluginLimits::default();
        let counter = load_with(
            &engine,
            "counter",
            json!({}),
            limits,
            &[Capability::Log],
            None,
        );
        let grants = [Capability::Log, Capability::SessionKv];
        let legacy = load_with(&engine, "legacy-0-1-1", json!({}), limits, &grants, None);
        (counter.await, legacy.await)
    });
    let mut group = c.benchmark_group("contract_floor");
    for size in [1024, 64 * 1024] {
        let ctx = call_context(size);
        let name = "baseline: 0.1 plugin reading nothing";
        group.bench_with_input(BenchmarkId::new(name, size), &ctx, |b, ctx| {
            b.to_async(&rt).iter(|| async {
                let action = decide(legacy.as_ref(), ctx).await.unwrap();
                assert_eq!(action, InterceptAction::Continue);
            })
        });
        // Called directly, the chain's way: at once, with no future to drive.
        assert!(counter.calls_directly());
        let name = "counter (0.2), called directly";
        group.bench_with_input(BenchmarkId::new(name, size), &ctx, |b, ctx| {
            b.iter(|| {
                // As the chain: at once, or (every instance busy, a tick overrun) the async way.
                let decided = match counter.intercept_now(ctx) {
                    Some(decided) => decided,
                    None => rt.block_on(counter.intercept(ctx)),
                };
                let action = decided.unwrap();
                assert_eq!(action, InterceptAction::Continue);
            })
        });
    }
    group.finish();
}

fn instantiation(c: &mut Criterion) {
    let rt = runtime();
    let ctx = call_context(1024);
    let mut group = c.benchmark_group("instantiation");
    for (allocator, pool_size) in [("pooling", Some(256)), ("on-demand", None)] {
        let (warm, fresh) = rt.block_on(async {
            let engine = PluginEngine::new(EngineOptions {
                pool_size,
                fuel: false,
            })
            .unwrap();
            let config = json!({"deny": ["delete_*"]});
            let fresh = PluginLimits {
                fresh_instances: true,
                ..PluginLimits::default()
            };
            let log = [Capability::Log];
            (
                load_with(
                    &engine,
                    "tool-guard",
                    config.clone(),
                    PluginLimits::default(),
                    &log,
                    None,
                )
                .await,
                load_with(&engine, "tool-guard", config, fresh, &log, None).await,
            )
        });
        for (instance, plugin) in [("warm instance", warm), ("fresh instance", fresh)] {
            group.bench_function(format!("{allocator}: {instance}"), |b| {
                b.to_async(&rt).iter(|| async {
                    let action = decide(plugin.as_ref(), &ctx).await.unwrap();
                    assert_eq!(action, InterceptAction::Continue);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    fast_path,
    wasm_call,
    chain_of_three,
    contract_floor,
    instantiation
);
criterion_main!(benches);
