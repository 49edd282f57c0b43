//! Wiring: turns a [`ConfigSource`] into a running [`App`] (session manager, plugin registry,
//! pipeline, the audit stream, and for the HTTP front its authenticator and certificate) and
//! keeps it in step with its configuration ([`reload`]). The one place that knows all the rooms.

mod chain;
pub mod plugin_check;
pub mod plugin_new;
mod reload;

pub use chain::NativeInterceptor;
pub use reload::{ReloadNotice, Reloader};

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, ConfigSource};
use crate::interceptor::{Interceptor, InterceptorChain, PauseController, PauseEvent};
use crate::proxy::Pipeline;
use crate::record::{TapePlugin, TapeRecorder};
use crate::session::{EventStore, SessionManager, StoreError, StoreSpec, Stores};
use crate::telemetry::{Audit, Scrape, Tracing};
use crate::transport::tls::{ServerTls, TlsError, http_client};
use crate::wasm::{PluginEnv, PluginRegistry, RegistryError, ReloadReport};

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
    #[error("[telemetry] otlp_endpoint: {0}")]
    Telemetry(String),
    #[error("[record] dir {path}: {source}")]
    Record {
        path: String,
        source: std::io::Error,
    },
    #[error("[audit] file {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
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
    /// Interceptors written in Rust, first in every chain.
    natives: Vec<NativeInterceptor>,
    /// Chains assembled so far: the version of the next one.
    versions: AtomicU64,
    reloads: broadcast::Sender<ReloadNotice>,
    /// Reloads done and refused.
    reload_counts: [AtomicU64; 2],
}

/// How long fetching an authorization server's keys may take in all.
const AUTH_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl App {
    /// Reads the configuration, loads every plugin and assembles the pipeline.
    pub async fn start(source: ConfigSource) -> Result<Self, AppError> {
        Self::start_with(source, Vec::new()).await
    }

    /// The chain a configuration makes, for running recorded messages through it: plugins
    /// loaded, sessions in memory, and nothing else of the configuration started (no
    /// recording, audit stream, traces, admin API or durable store).
    pub async fn offline(source: ConfigSource) -> Result<Self, AppError> {
        let mut config = source.load()?;
        config.session.store = StoreSpec::Memory;
        (config.record, config.audit, config.telemetry, config.admin) = (None, None, None, None);
        Self::assemble(source, config, Vec::new()).await
    }

    /// As [`App::start`], with native interceptors ahead of the plugins in every chain.
    pub async fn start_with(
        source: ConfigSource,
        natives: Vec<NativeInterceptor>,
    ) -> Result<Self, AppError> {
        let config = source.load()?;
        Self::assemble(source, config, natives).await
    }

    async fn assemble(
        source: ConfigSource,
        config: Config,
        natives: Vec<NativeInterceptor>,
    ) -> Result<Self, AppError> {
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
        let plugins = Arc::new(PluginRegistry::new(env, config.wasm.pool_size()));
        let mut pipeline = Pipeline::new(
            sessions,
            chain,
            Arc::new(PauseController::bounded(
                config.pause.on_timeout,
                config.pause.max_held.max(1),
            )),
            config.max_message_size,
        );
        pipeline.max_batch_size = config.http.max_batch_size;
        if let Some(audit) = &config.audit {
            let opened = Audit::open(&audit.file).map_err(|source| AppError::Audit {
                path: audit.file.display().to_string(),
                source,
            })?;
            pipeline.audit = Some(Arc::new(opened));
        }
        if let Some(record) = &config.record {
            let recorder = TapeRecorder::start(record).map_err(|source| AppError::Record {
                path: record.dir.display().to_string(),
                source,
            })?;
            pipeline.recorder = Some(Arc::new(recorder));
        }
        if let Some(telemetry) = &config.telemetry {
            let tracing = Tracing::start(&telemetry.otlp_endpoint, &telemetry.service_name)
                .map_err(AppError::Telemetry)?;
            pipeline.tracing = Some(Arc::new(tracing));
        }
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
        let app = Self {
            config,
            pipeline: Arc::new(pipeline),
            plugins,
            auth,
            tls,
            events: stores.events,
            source,
            natives,
            versions: AtomicU64::new(1),
            reloads: broadcast::channel(16).0,
            reload_counts: Default::default(),
        };
        app.apply_chain(&app.config).await?;
        Ok(app)
    }

    /// Loads the plugins `config` lists and swaps in the chain they make with the native
    /// interceptors; on error the running chain stays.
    async fn apply_chain(&self, config: &Config) -> Result<ReloadReport, AppError> {
        let configs = config.plugin_configs()?;
        let specs = configs
            .iter()
            .map(|plugin| Ok((plugin.spec()?, plugin.policy())))
            .collect::<Result<_, ConfigError>>()?;
        let (report, loaded) = self.plugins.apply(specs).await?;
        let loaded: Vec<Arc<dyn Interceptor>> = loaded
            .into_iter()
            .map(|plugin| plugin as Arc<dyn Interceptor>)
            .collect();
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let chain = chain::assemble(config, &self.natives, &configs, &loaded, version);
        self.pipeline.chain.store(Arc::new(chain));
        if let Some(recorder) = &self.pipeline.recorder {
            let plugins = self.plugins.plugins().await.into_iter();
            recorder.set_plugins(
                plugins
                    .map(|p| TapePlugin {
                        name: p.name,
                        hash: p.hash,
                    })
                    .collect(),
            );
        }
        Ok(report)
    }

    /// Writes settled held messages and reloads to the audit stream, if there is one, for as
    /// long as the runtime runs (verdicts the pipeline writes itself).
    pub fn spawn_auditor(&self) {
        let Some(audit) = self.pipeline.audit.clone() else {
            return;
        };
        let mut pauses = self.pipeline.pauses.subscribe();
        let mut reloads = self.subscribe_reloads();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = pauses.recv() => match event {
                        Ok(PauseEvent::Settled { id, session_id, method, plugin, outcome, by, reason }) => {
                            audit.record("settled", json!({
                                "held": id, "session": session_id, "method": method,
                                "plugin": plugin.as_deref(), "verdict": outcome.name(),
                                "by": by, "reason": reason,
                            }));
                        }
                        Ok(PauseEvent::Held(_)) => {}
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "the audit stream fell behind held messages");
                        }
                        Err(RecvError::Closed) => return,
                    },
                    notice = reloads.recv() => match notice {
                        Ok(ReloadNotice::Done(report)) => audit.record("reload", json!({
                            "ok": true, "loaded": report.loaded, "kept": report.kept,
                            "removed": report.removed,
                        })),
                        Ok(ReloadNotice::Refused(error)) => {
                            audit.record("reload", json!({ "ok": false, "reason": error }));
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
    }

    /// What a metrics scrape shows beyond the pipeline's own counts.
    pub async fn scrape(&self) -> Scrape {
        let sessions = self.pipeline.sessions.stats();
        let (store_latency, store_errors) = self.pipeline.sessions.store_metrics();
        Scrape {
            sessions_active: sessions.active as u64,
            sessions_rejected: sessions.rejected,
            unmatched_answers: self.pipeline.unmatched_answers.load(Ordering::Relaxed),
            held_now: self.pipeline.pauses.paused().len() as u64,
            held_outcomes: self.pipeline.pauses.outcomes(),
            reloads_done: self.reload_counts[0].load(Ordering::Relaxed),
            reloads_refused: self.reload_counts[1].load(Ordering::Relaxed),
            plugins: self.plugins.plugins().await,
            store_latency: Some(store_latency),
            store_errors,
            tapes: self.pipeline.recorder.as_ref().map(|recorder| {
                let stats = recorder.stats();
                [&stats.tapes, &stats.lines, &stats.dropped].map(|n| n.load(Ordering::Relaxed))
            }),
        }
    }

    /// Reads the configuration again and applies its plugin chain; on any error the running
    /// chain stays. Other settings take effect at the next start.
    pub async fn reload(&self) -> Result<ReloadReport, AppError> {
        Ok(self.reload_config().await?.1)
    }

    async fn reload_config(&self) -> Result<(Config, ReloadReport), AppError> {
        let config = self.source.load()?;
        let report = self.apply_chain(&config).await?;
        Ok((config, report))
    }

    /// Every reload's outcome from now on.
    pub fn subscribe_reloads(&self) -> broadcast::Receiver<ReloadNotice> {
        self.reloads.subscribe()
    }

    fn announce(&self, notice: ReloadNotice) {
        let counter = match notice {
            ReloadNotice::Done(_) => &self.reload_counts[0],
            ReloadNotice::Refused(_) => &self.reload_counts[1],
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = self.reloads.send(notice);
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

    /// Sends the traces still batched and writes out the tapes (when membrane stops), each
    /// within a second.
    pub fn flush(&self) {
        if let Some(tracing) = &self.pipeline.tracing {
            tracing.shutdown(Duration::from_secs(1));
        }
        if let Some(recorder) = &self.pipeline.recorder {
            recorder.flush(Duration::from_secs(1));
        }
    }

    /// Logs each plugin's metrics when membrane stops: a summary for operators without a
    /// metrics scraper.
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
