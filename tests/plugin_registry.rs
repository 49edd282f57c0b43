//! The plugin host seen from code: the registry swaps chain snapshots and reuses unchanged
//! plugins, a failed reload changes nothing, hostile plugins are counted by kind of failure in
//! their metrics, fuel bounds a plugin independently of the clock, and `session-kv` state is
//! private to each session and ends with it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use membrane::interceptor::{
    FailurePolicy, InterceptAction, InterceptContext, InterceptorChain, LinkPolicy,
};
use membrane::protocol::{Direction, Message};
use membrane::session::{SessionConfig, SessionId, SessionManager};
use membrane::transport::TransportType;
use membrane::wasm::{
    Capability, Grants, PluginEnv, PluginLimits, PluginRegistry, PluginSpec, RegistryError,
    ReloadReport,
};
use serde_json::{Value, json};

fn spec(
    name: &str,
    plugin: &str,
    config: Value,
    limits: PluginLimits,
    grants: &[Capability],
) -> PluginSpec {
    let grants: Grants = grants.iter().copied().collect();
    PluginSpec::read(name, &common::plugin(plugin), &config, limits, grants).unwrap()
}

fn call(session: &SessionId, tool: &str) -> InterceptContext {
    let message = Message::from_value(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}
    }));
    InterceptContext::new(
        message,
        Direction::ClientToServer,
        session.clone(),
        TransportType::Stdio,
        1,
    )
}

/// A registry and the chain its plugins make, swapped in after each apply (as the app does).
struct Host {
    chain: Arc<ArcSwap<InterceptorChain>>,
    registry: PluginRegistry,
}

impl Host {
    async fn apply(
        &self,
        plugins: Vec<(PluginSpec, LinkPolicy)>,
    ) -> Result<ReloadReport, RegistryError> {
        let policies: Vec<LinkPolicy> = plugins.iter().map(|(_, policy)| *policy).collect();
        let (report, loaded) = self.registry.apply(plugins).await?;
        let chain = loaded
            .into_iter()
            .zip(policies)
            .fold(InterceptorChain::new(), |chain, (plugin, policy)| {
                chain.with_policy(plugin, policy)
            });
        self.chain.store(Arc::new(chain));
        Ok(report)
    }
}

impl std::ops::Deref for Host {
    type Target = PluginRegistry;
    fn deref(&self) -> &PluginRegistry {
        &self.registry
    }
}

fn registry(sessions: Option<Arc<SessionManager>>) -> (Arc<ArcSwap<InterceptorChain>>, Host) {
    let chain = Arc::new(ArcSwap::from_pointee(InterceptorChain::new()));
    let env = PluginEnv {
        cache: None,
        sessions,
    };
    let registry = PluginRegistry::new(env, Some(256));
    (chain.clone(), Host { chain, registry })
}

async fn run(chain: &ArcSwap<InterceptorChain>, ctx: &mut InterceptContext) -> InterceptAction {
    chain.load_full().run(ctx, 0).await.action
}

#[tokio::test]
async fn reloads_reuse_unchanged_plugins_and_a_failed_one_changes_nothing() {
    let (chain, registry) = registry(None);
    let guard = |deny: &str| {
        spec(
            "guard",
            "tool-guard",
            json!({"deny": [deny]}),
            PluginLimits::default(),
            &[Capability::Log],
        )
    };
    let session = SessionId::generate();

    let report = registry
        .apply(vec![(guard("add"), LinkPolicy::default())])
        .await
        .unwrap();
    assert_eq!(report.loaded, ["guard"]);
    let first = chain.load_full();
    assert!(matches!(
        run(&chain, &mut call(&session, "add")).await,
        InterceptAction::Block { .. }
    ));

    let report = registry
        .apply(vec![(guard("add"), LinkPolicy::default())])
        .await
        .unwrap();
    assert_eq!(
        (report.loaded.len(), report.kept.as_slice()),
        (0, ["guard".to_owned()].as_slice())
    );

    let broken = PluginSpec {
        bytes: b"\0asm nonsense".as_slice().into(),
        ..guard("x")
    };
    let refused = registry
        .apply(vec![
            (guard("echo"), LinkPolicy::default()),
            (
                PluginSpec {
                    name: "broken".into(),
                    ..broken
                },
                LinkPolicy::default(),
            ),
        ])
        .await;
    assert!(
        matches!(refused, Err(RegistryError::Plugin(_))),
        "a broken plugin is refused"
    );
    assert_eq!(chain.load().len(), 1, "the chain did not change");
    assert!(matches!(
        run(&chain, &mut call(&session, "add")).await,
        InterceptAction::Block { .. }
    ));
    assert_eq!(
        run(&chain, &mut call(&session, "echo")).await,
        InterceptAction::Continue
    );

    let report = registry
        .apply(vec![(guard("echo"), LinkPolicy::default())])
        .await
        .unwrap();
    assert_eq!(report.loaded, ["guard"]);
    assert_eq!(
        run(&chain, &mut call(&session, "add")).await,
        InterceptAction::Continue
    );
    // A message that started on the old snapshot finishes on it.
    assert!(matches!(
        first.run(&mut call(&session, "add"), 0).await.action,
        InterceptAction::Block { .. }
    ));

    let too_many = PluginLimits {
        max_instances: 140,
        ..PluginLimits::default()
    };
    let refused = registry
        .apply(vec![(
            spec("big", "tool-guard", json!({}), too_many, &[]),
            LinkPolicy::default(),
        )])
        .await;
    assert!(matches!(
        refused,
        Err(RegistryError::PoolTooSmall {
            wanted: 140,
            pool: 256
        })
    ));
}

#[tokio::test]
async fn hostile_plugins_are_counted_by_kind_of_failure_and_replaced() {
    let (chain, registry) = registry(None);
    let limits = PluginLimits {
        call_timeout: Duration::from_millis(50),
        max_memory: 16 << 20,
        ..PluginLimits::default()
    };
    let hostile = |mode: &str| {
        let config = json!({"mode": mode, "tool": "bad"});
        (
            spec(mode, "hostile", config, limits, &[Capability::Log]),
            LinkPolicy {
                on_error: FailurePolicy::Continue,
                ..LinkPolicy::default()
            },
        )
    };
    let modes = ["trap", "loop", "alloc", "garbage"];
    registry
        .apply(modes.iter().map(|mode| hostile(mode)).collect())
        .await
        .unwrap();
    let session = SessionId::generate();
    for _ in 0..2 {
        // Fail open: each failure lets the message through.
        assert_eq!(
            run(&chain, &mut call(&session, "bad")).await,
            InterceptAction::Continue
        );
        assert_eq!(
            run(&chain, &mut call(&session, "good")).await,
            InterceptAction::Continue
        );
    }
    let metrics: std::collections::HashMap<String, _> =
        registry.metrics().await.into_iter().collect();
    for mode in modes {
        let m = &metrics[mode];
        assert_eq!((m.calls, m.continued), (4, 2), "{mode}: {m:?}");
    }
    assert_eq!(metrics["trap"].traps, 2);
    assert_eq!(metrics["loop"].timeouts, 2);
    assert_eq!(metrics["alloc"].traps, 2, "a memory cap breach traps");
    assert_eq!(metrics["garbage"].bad_actions, 2);
    assert!(metrics["loop"].latency_quantile(1.0).unwrap() >= Duration::from_millis(50));
}

#[tokio::test]
async fn fuel_ends_a_loop_whatever_the_clock_says() {
    let (chain, registry) = registry(None);
    let limits = PluginLimits {
        call_timeout: Duration::from_secs(30),
        fuel: Some(5_000_000),
        ..PluginLimits::default()
    };
    let config = json!({"mode": "loop", "tool": "bad"});
    let hostile = spec("loop", "hostile", config, limits, &[Capability::Log]);
    registry
        .apply(vec![(hostile, LinkPolicy::default())])
        .await
        .unwrap();
    let session = SessionId::generate();
    let started = std::time::Instant::now();
    let blocked = run(&chain, &mut call(&session, "bad")).await;
    assert!(
        matches!(blocked, InterceptAction::Block { .. }),
        "{blocked:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fuel ran out long before the time budget"
    );
    assert_eq!(
        run(&chain, &mut call(&session, "good")).await,
        InterceptAction::Continue
    );
    let metrics = registry.metrics().await;
    assert_eq!(
        metrics[0].1.timeouts, 1,
        "running out of fuel counts as a timeout"
    );
}

#[tokio::test]
async fn session_state_is_private_to_each_session_and_ends_with_it() {
    let sessions = Arc::new(SessionManager::with_config(SessionConfig::default()));
    let (chain, registry) = registry(Some(sessions.clone()));
    let limit = spec(
        "limit",
        "rate-limit",
        json!({"max_calls": 1}),
        PluginLimits::default(),
        &[Capability::Log, Capability::SessionKv],
    );
    registry
        .apply(vec![(limit, LinkPolicy::default())])
        .await
        .unwrap();
    let a = sessions
        .create(TransportType::Stdio, TransportType::Stdio, None)
        .await
        .unwrap()
        .id;
    let b = sessions
        .create(TransportType::Stdio, TransportType::Stdio, None)
        .await
        .unwrap()
        .id;

    assert_eq!(
        run(&chain, &mut call(&a, "echo")).await,
        InterceptAction::Continue
    );
    assert!(matches!(
        run(&chain, &mut call(&a, "echo")).await,
        InterceptAction::Block { .. }
    ));
    assert_eq!(
        run(&chain, &mut call(&b, "echo")).await,
        InterceptAction::Continue,
        "b has its own budget"
    );

    assert_eq!(
        sessions
            .kv_get(&a, "limit", "calls")
            .await
            .unwrap()
            .as_deref(),
        Some("2"),
        "kept with the session, refused calls count"
    );

    sessions.remove(&a, false).await.unwrap();
    let InterceptAction::Block { reason } = run(&chain, &mut call(&a, "echo")).await else {
        panic!("a plugin that cannot count fails closed");
    };
    assert!(reason.contains("no such session"), "{reason}");
}
