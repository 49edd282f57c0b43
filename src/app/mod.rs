//! Wiring: turns a [`ConfigSource`] into a running [`App`] (session manager, plugin registry,
//! pipeline, and for the HTTP front its authenticator and certificate) and keeps it in step
//! with its configuration ([`reload`]). The one place that knows all the rooms.

mod reload;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, ConfigSource};
use crate::interceptor::{FailurePolicy, InterceptorChain, PauseController};
use crate::proxy::Pipeline;
use crate::session::{EventStore, SessionManager, StoreError, Stores};
use crate::transport::tls::{ServerTls, TlsError, http_client};
use crate::wasm::{PluginEnv, PluginRegistry, PluginSpec, RegistryError, ReloadReport};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugins(#[from] RegistryError),
    #[error("[tls]: {0}")]
    Tls(#[from] TlsError),
    #[error("[auth]: {0}")]
    Auth(String),
    #[error("[session] store: {0}")]
    Store(#[from] StoreError),
}

pub struct App {
    pub config: Config,
    pub pipeline: Arc<Pipeline>,
    pub plugins: Arc<PluginRegistry>,
    /// Checks HTTP clients' tokens, when `[auth]` is configured.
    pub auth: Option<Arc<Authenticator>>,
    /// The HTTP listener's certificate, when `[tls]` is configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Where SSE events are kept beyond this process, with a durable session store.
    pub events: Option<Arc<dyn EventStore>>,
    source: ConfigSource,
}

/// How long fetching an authorization server's keys may take in all.
const AUTH_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl App {
    /// Reads the configuration, loads every plugin and assembles the pipeline.
    pub async fn start(source: ConfigSource) -> Result<Self, AppError> {
        let config = source.load()?;
        let session_config = config.session_config();
        let stores = Stores::open(
            &config.session.store,
            session_config.expiry(),
            session_config.store_timeout,
        )?;
        let sessions = Arc::new(SessionManager::new(stores.sessions, session_config));
        sessions.spawn_maintenance();
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
        let mut pipeline = Pipeline::new(
            sessions,
            chain,
            Arc::new(PauseController::new(config.pause.on_timeout)),
            config.max_message_size,
        );
        pipeline.max_batch_size = config.http.max_batch_size;
        let tls = match &config.tls {
            Some(tls) => Some(ServerTls::load(&tls.cert, &tls.key)?),
            None => None,
        };
        let auth = match &config.auth {
            Some(auth) => {
                let http = http_client(&config.client_tls())?
                    .timeout(AUTH_FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| AppError::Auth(e.to_string()))?;
                Some(Arc::new(
                    Authenticator::new(auth, http).map_err(AppError::Auth)?,
                ))
            }
            None => None,
        };
        Ok(Self {
            config,
            pipeline: Arc::new(pipeline),
            plugins,
            auth,
            tls,
            events: stores.events,
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

    /// Reads the listener's certificate and the token files again, each on its own: what fails
    /// to load is logged and the one in use stays. The rest of `[tls]` and `[auth]` takes
    /// effect at the next start.
    async fn reload_credentials(&self) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::debug!("reloaded the TLS certificate"),
                Err(e) => {
                    tracing::error!("TLS certificate not reloaded, the current one stays: {e}")
                }
            }
        }
        if let Some(auth) = &self.auth
            && let Err(e) = auth.reload().await
        {
            tracing::error!("[auth] files not reloaded, the current ones stay: {e}");
        }
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
