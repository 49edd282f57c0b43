//! Wiring: turns a [`ConfigSource`] into a running [`App`] (session manager, plugin registry,
//! pipeline) and keeps it in step with its configuration ([`reload`]). The one place that
//! knows all the rooms.

mod reload;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::interceptor::{FailurePolicy, InterceptorChain, PauseController};
use crate::proxy::Pipeline;
use crate::session::SessionManager;
use crate::wasm::{PluginEnv, PluginRegistry, PluginSpec, RegistryError, ReloadReport};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugins(#[from] RegistryError),
}

pub struct App {
    pub config: Config,
    pub pipeline: Arc<Pipeline>,
    pub plugins: Arc<PluginRegistry>,
    source: ConfigSource,
}

impl App {
    /// Reads the configuration, loads every plugin and assembles the pipeline.
    pub async fn start(source: ConfigSource) -> Result<Self, AppError> {
        let config = source.load()?;
        let sessions = Arc::new(SessionManager::with_config(config.session_config()));
        sessions.spawn_idle_reaper();
        let chain = Arc::new(ArcSwap::from_pointee(InterceptorChain::new()));
        let env = PluginEnv {
            cache: config.wasm.cache(),
            sessions: Some(sessions.clone()),
        };
        let plugins = Arc::new(PluginRegistry::new(
            chain.clone(),
            env,
            config.wasm.pool_size(),
        ));
        plugins.apply(plugin_specs(&config)?).await?;
        let pipeline = Arc::new(Pipeline {
            sessions,
            chain,
            pauses: Arc::new(PauseController::new(config.pause.on_timeout)),
            max_message_size: config.max_message_size,
        });
        Ok(Self {
            config,
            pipeline,
            plugins,
            source,
        })
    }

    /// Reads the configuration again and applies its plugin chain; on any error the running
    /// chain stays. Other settings take effect at the next start.
    pub async fn reload(&self) -> Result<ReloadReport, AppError> {
        Ok(self.reload_config().await?.1)
    }

    async fn reload_config(&self) -> Result<(Config, ReloadReport), AppError> {
        let config = self.source.load()?;
        let report = self.plugins.apply(plugin_specs(&config)?).await?;
        Ok((config, report))
    }

    /// Logs each plugin's metrics: a summary for operators until there is a metrics endpoint.
    pub async fn log_metrics(&self) {
        for (plugin, m) in self.plugins.metrics().await {
            let p = |q| {
                m.latency_quantile(q)
                    .map(|d| format!("{d:?}"))
                    .unwrap_or("-".into())
            };
            tracing::info!(
                plugin,
                calls = m.calls,
                continued = m.continued,
                modified = m.modified,
                blocked = m.blocked,
                mocked = m.mocked,
                paused = m.paused,
                delayed = m.delayed,
                traps = m.traps,
                timeouts = m.timeouts,
                bad_actions = m.bad_actions,
                unavailable = m.unavailable,
                p50 = p(0.5),
                p99 = p(0.99),
                "plugin metrics"
            );
        }
    }
}

fn plugin_specs(config: &Config) -> Result<Vec<(PluginSpec, FailurePolicy)>, ConfigError> {
    config
        .plugin_configs()?
        .iter()
        .map(|plugin| Ok((plugin.spec()?, plugin.on_error)))
        .collect()
}
