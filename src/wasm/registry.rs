//! [`PluginRegistry`]: the Wasm plugins of the chain, as the operator last configured them.
//! Applying a configuration loads what is new or changed (compiled off the hot path, from the
//! cache when it can), reuses every plugin whose spec did not change (warm instances and all),
//! and hands the loaded plugins back, for the app to assemble the chain from (with native
//! interceptors, canaries and the recorder's place). If any plugin fails to load, nothing
//! changes. Reloads are serialised; a plugin's metrics live on across its versions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::engine::{EngineOptions, PluginEngine};
use super::metrics::{MetricsSnapshot, PluginMetrics};
use super::plugin::{PluginEnv, PluginError, WasmInterceptor};
use super::spec::{Grants, PluginLimits, PluginSpec};
use crate::interceptor::LinkPolicy;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error(
        "the plugins may hold {wanted} instances at once, more than half the instance pool ({pool} slots; the other half stays free for reloads): raise `pool_size` in [wasm] or lower the plugins' `max_instances`"
    )]
    PoolTooSmall { wanted: usize, pool: u32 },
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// What a reload changed, by plugin name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

pub struct PluginRegistry {
    env: PluginEnv,
    pool_size: Option<u32>,
    current: tokio::sync::Mutex<Loaded>,
    metrics: Mutex<HashMap<String, Arc<PluginMetrics>>>,
}

/// One plugin of the chain, as an operator sees it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub path: PathBuf,
    /// `sha256:` and the hex digest of the component.
    pub hash: String,
    /// The contract it was built against, e.g. `membrane:interceptor@0.1.0`.
    pub contract: String,
    pub grants: Grants,
    pub limits: PluginLimits,
    pub policy: LinkPolicy,
    pub metrics: MetricsSnapshot,
    /// Instances that exist now (warm or in a call).
    pub instances_in_use: usize,
}

#[derive(Default)]
struct Loaded {
    engine: Option<Arc<PluginEngine>>,
    plugins: Vec<(PluginSpec, LinkPolicy, Arc<WasmInterceptor>)>,
}

impl PluginRegistry {
    pub fn new(env: PluginEnv, pool_size: Option<u32>) -> Self {
        Self {
            env,
            pool_size,
            current: tokio::sync::Mutex::default(),
            metrics: Mutex::default(),
        }
    }

    /// Loads `plugins` and makes them the current ones, or changes nothing on error. Returns
    /// what changed and the loaded plugins, in the order given.
    pub async fn apply(
        &self,
        plugins: Vec<(PluginSpec, LinkPolicy)>,
    ) -> Result<(ReloadReport, Vec<Arc<WasmInterceptor>>), RegistryError> {
        let mut current = self.current.lock().await;
        if let Some(pool) = self.pool_size {
            let wanted: usize = plugins
                .iter()
                .map(|(spec, _)| spec.limits.max_instances)
                .sum();
            if wanted > pool as usize / 2 {
                return Err(RegistryError::PoolTooSmall { wanted, pool });
            }
        }
        let options = EngineOptions {
            pool_size: self.pool_size,
            fuel: plugins.iter().any(|(spec, _)| spec.limits.fuel.is_some()),
        };
        let engine = match &current.engine {
            Some(engine) if engine.options == options => engine.clone(),
            _ if plugins.is_empty() => {
                return Ok(self.publish(&mut current, None, Vec::new(), Vec::new()));
            }
            // Settings that shape compiled code need an engine of their own; every plugin is
            // then loaded afresh on it (from the cache when it was compiled alike before).
            _ => PluginEngine::new(options).map_err(|e| RegistryError::Engine(format!("{e:#}")))?,
        };
        let reusable = current
            .engine
            .as_ref()
            .is_some_and(|old| Arc::ptr_eq(old, &engine));
        let mut next = Vec::with_capacity(plugins.len());
        let mut loaded = Vec::new();
        for (spec, on_error) in plugins {
            let kept = current
                .plugins
                .iter()
                .find(|(old, _, _)| reusable && *old == spec)
                .map(|(_, _, interceptor)| interceptor.clone());
            let interceptor = match kept {
                Some(interceptor) => interceptor,
                None => {
                    let metrics = self.metrics_of(&spec.name);
                    let interceptor =
                        WasmInterceptor::load(&engine, &spec, &self.env, metrics).await?;
                    loaded.push(spec.name.clone());
                    Arc::new(interceptor)
                }
            };
            next.push((spec, on_error, interceptor));
        }
        Ok(self.publish(&mut current, Some(engine), next, loaded))
    }

    /// Makes `plugins` the current ones, and says what changed.
    fn publish(
        &self,
        current: &mut Loaded,
        engine: Option<Arc<PluginEngine>>,
        plugins: Vec<(PluginSpec, LinkPolicy, Arc<WasmInterceptor>)>,
        loaded: Vec<String>,
    ) -> (ReloadReport, Vec<Arc<WasmInterceptor>>) {
        let interceptors = plugins.iter().map(|(.., plugin)| plugin.clone()).collect();
        let names = |plugins: &[(PluginSpec, _, _)]| -> Vec<String> {
            plugins
                .iter()
                .map(|(spec, _, _)| spec.name.clone())
                .collect()
        };
        let (old, new) = (names(&current.plugins), names(&plugins));
        let report = ReloadReport {
            kept: new
                .iter()
                .filter(|name| !loaded.contains(name))
                .cloned()
                .collect(),
            removed: old.into_iter().filter(|name| !new.contains(name)).collect(),
            loaded,
        };
        *current = Loaded { engine, plugins };
        (report, interceptors)
    }

    /// The metrics of each plugin in the chain, in chain order.
    pub async fn metrics(&self) -> Vec<(String, MetricsSnapshot)> {
        let current = self.current.lock().await;
        current
            .plugins
            .iter()
            .map(|(spec, _, plugin)| (spec.name.clone(), plugin.metrics().snapshot()))
            .collect()
    }

    /// Each plugin of the chain, in chain order.
    pub async fn plugins(&self) -> Vec<PluginInfo> {
        let current = self.current.lock().await;
        current
            .plugins
            .iter()
            .map(|(spec, policy, plugin)| PluginInfo {
                name: spec.name.clone(),
                path: spec.path.clone(),
                hash: format!("sha256:{:x}", Sha256::digest(&spec.bytes)),
                contract: plugin.contract().to_owned(),
                grants: spec.grants.clone(),
                limits: spec.limits,
                policy: *policy,
                metrics: plugin.metrics().snapshot(),
                instances_in_use: plugin.instances_in_use(),
            })
            .collect()
    }

    fn metrics_of(&self, name: &str) -> Arc<PluginMetrics> {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.entry(name.to_owned()).or_default().clone()
    }
}
