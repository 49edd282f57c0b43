//! [`PluginEngine`]: a wasmtime engine and the linkers shared by the plugins loaded on it.
//! Calls that may wait or run long are made on fibers (`call_async`) with epoch interruption:
//! every tick a running plugin yields to the tokio scheduler, so a slow plugin never starves
//! other sessions, and once its time budget is spent the call traps. Calls that cannot wait are
//! made directly, stopped at the first tick they run past ([`super::direct`]). Instances come from wasmtime's pooling allocator, with
//! a semaphore in front of it so that a full pool makes callers wait instead of fail.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{current, v0_1};
use super::direct;
use super::host::PluginState;
pub use super::spec::PluginLimits;

/// How often the epoch advances: the granularity of yielding and of time budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Core instances, memories and tables one plugin instance may create: enough for any
/// toolchain's output, far from what a hostile one would need to escape its memory cap.
pub(super) const MAX_CORE_INSTANCES: usize = 16;
pub(super) const MAX_MEMORIES: usize = 2;
pub(super) const MAX_TABLES: usize = 16;
pub(super) const MAX_TABLE_ELEMENTS: usize = 1 << 16;

/// Settings fixed for the life of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Plugin instances the pooling allocator holds slots for; `None` allocates on demand.
    pub pool_size: Option<u32>,
    /// Compile fuel metering into plugins (about 2x slower guest code).
    pub fuel: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            pool_size: Some(256),
            fuel: false,
        }
    }
}

pub struct PluginEngine {
    pub(super) engine: Engine,
    /// Links plugins for calls on fibers.
    pub(super) linker: Linker<PluginState>,
    /// Links plugins for direct calls ([`super::direct`]): its `wasi:io` never waits.
    pub(super) direct_linker: Linker<PluginState>,
    pub(super) options: EngineOptions,
    /// One permit per instance slot: held by every live instance.
    pub(super) slots: Arc<Semaphore>,
}

impl PluginEngine {
    pub fn new(options: EngineOptions) -> wasmtime::Result<Arc<Self>> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(options.fuel)
            // No `async func` in the contract: concurrency support only makes calls dearer.
            .concurrency_support(false);
        if let Some(size) = options.pool_size {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(size)));
        }
        let engine = Engine::new(&config)?;
        let linker = plugin_linker(&engine)?;
        let mut direct_linker = plugin_linker(&engine)?;
        direct::link_io_that_never_waits(&mut direct_linker)?;
        spawn_epoch_ticker(&engine);
        let slots = options
            .pool_size
            .map_or(Semaphore::MAX_PERMITS, |size| size as usize);
        Ok(Arc::new(Self {
            engine,
            linker,
            direct_linker,
            options,
            slots: Arc::new(Semaphore::new(slots)),
        }))
    }
}

/// WASI and both contract lines: their interfaces are versioned apart, 0.2 beside 0.1.x.
fn plugin_linker(engine: &Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    current::StatefulInterceptor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    v0_1::StatefulInterceptor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

/// A pool with `size` plugin instance slots, each sized for the per-instance caps above.
fn pool(size: u32) -> PoolingAllocationConfig {
    let per_instance = |count: usize| size.saturating_mul(count as u32);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(size)
        .total_core_instances(per_instance(4))
        .total_memories(per_instance(MAX_MEMORIES))
        .total_tables(per_instance(4))
        // One fiber stack per call in flight, and a call needs an instance.
        .total_stacks(size)
        .max_core_instances_per_component(MAX_CORE_INSTANCES as u32)
        .max_memories_per_component(MAX_MEMORIES as u32)
        .max_tables_per_component(MAX_TABLES as u32)
        .table_elements(MAX_TABLE_ELEMENTS);
    pool
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
