//! What a plugin instance sees of the host: [`PluginState`] (its WASI context, resource table
//! and memory limits) and the `host` interface (logging into tracing). The WASI context has no
//! preopened directories, no environment and no sockets, and its clocks read zero; a plugin
//! that waits on a WASI timer still runs out of its time budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::membrane::interceptor::host::{Host, Level};
use super::bindings::membrane::interceptor::types;

/// Core instances, memories and tables a plugin component may create: enough for any
/// toolchain's output, far from what a hostile one would need to escape the memory cap.
const MAX_INSTANCES: usize = 16;
const MAX_MEMORIES: usize = 2;
const MAX_TABLES: usize = 16;
const MAX_TABLE_ELEMENTS: usize = 1 << 16;

/// The data of one plugin instance's store.
pub struct PluginState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    /// When the current call runs out of time.
    pub(super) deadline: Instant,
}

impl PluginState {
    pub fn new(plugin: Arc<str>, max_memory: usize) -> Self {
        let wasi = WasiCtx::builder()
            .wall_clock(StoppedClock)
            .monotonic_clock(StoppedClock)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            plugin,
            wasi,
            table: ResourceTable::new(),
            // The memory cap holds per memory; few memories and bounded tables keep the
            // instance's total near it.
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory)
                .memories(MAX_MEMORIES)
                .tables(MAX_TABLES)
                .table_elements(MAX_TABLE_ELEMENTS)
                .instances(MAX_INSTANCES)
                .trap_on_grow_failure(true)
                .build(),
            deadline: Instant::now(),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

/// The shared types interface has no functions to provide.
impl types::Host for PluginState {}

/// Time is a capability plugins are not granted: every clock reads zero.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
