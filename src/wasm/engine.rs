//! [`PluginEngine`]: the process's one wasmtime engine and the linker shared by all plugins.
//! Calls run on fibers (`call_async`) with epoch interruption: every tick a running plugin
//! yields to the tokio scheduler, so a slow plugin never starves other sessions, and once its
//! time budget is spent the call traps.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::Interceptor;
use super::host::PluginState;

/// How often the epoch advances: the granularity of yielding and of time budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// What one plugin call and instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wall-clock budget of one call.
    pub call_timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub max_memory: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(100),
            max_memory: 64 * 1024 * 1024,
        }
    }
}

pub struct PluginEngine {
    pub(super) engine: Engine,
    pub(super) linker: Linker<PluginState>,
}

impl PluginEngine {
    pub fn new() -> wasmtime::Result<Arc<Self>> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // No `async func` in the contract: concurrency support only makes calls dearer.
            .concurrency_support(false);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        Interceptor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        spawn_epoch_ticker(&engine);
        Ok(Arc::new(Self { engine, linker }))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("membrane-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
