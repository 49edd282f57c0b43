//! Wiring: turns a [`Config`] into a ready [`Pipeline`] (session manager, loaded plugins in
//! chain order, pause controller), the one place that knows all the rooms.

use std::sync::Arc;

use crate::config::Config;
use crate::interceptor::{InterceptorChain, PauseController};
use crate::proxy::Pipeline;
use crate::session::SessionManager;
use crate::wasm::{PluginEngine, PluginError, WasmInterceptor};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Loads every configured plugin and assembles the pipeline.
pub async fn build_pipeline(config: &Config) -> Result<Arc<Pipeline>, AppError> {
    let mut chain = InterceptorChain::new();
    if !config.plugins.is_empty() {
        let engine = PluginEngine::new().map_err(|e| AppError::Engine(format!("{e:#}")))?;
        for plugin in &config.plugins {
            let interceptor = WasmInterceptor::load(
                &engine,
                &plugin.name(),
                &plugin.path,
                &plugin.config_json(),
                plugin.limits(),
            )
            .await?;
            chain = chain.with(Arc::new(interceptor), plugin.on_error);
        }
    }
    let sessions = Arc::new(SessionManager::with_config(config.session_config()));
    sessions.spawn_idle_reaper();
    Ok(Arc::new(Pipeline {
        sessions,
        chain: Arc::new(chain),
        pauses: Arc::new(PauseController::new(config.pause.on_timeout)),
        max_message_size: config.max_message_size,
    }))
}
