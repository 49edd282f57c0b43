//! Wasm interceptors: plugins are WebAssembly components that export the
//! `membrane:interceptor` world (`wit/interceptor.wit`, 0.2; 0.1.x still served, `contract`).
//! [`PluginEngine`] owns a wasmtime engine, its epoch ticker, its instance pool and the linkers
//! (for calls on fibers, and for direct calls that cannot wait, `direct`); [`WasmInterceptor`]
//! loads one plugin, keeps warm instances of it and adapts it to the
//! [`Interceptor`](crate::interceptor::Interceptor) trait; [`PluginRegistry`] turns the
//! configured plugins into chain snapshots and swaps them in on reload, reusing what did not
//! change; [`ComponentCache`] keeps compiled plugins on disk. Plugins get no filesystem, network
//! or environment, and only the capabilities the operator grants: logging, session state,
//! clocks. The host needs the `wasm` feature (on by default); [`PluginSpec`] and what it holds
//! do not.

#[cfg(feature = "wasm")]
mod cache;
#[cfg(feature = "wasm")]
mod contract;
#[cfg(feature = "wasm")]
mod direct;
#[cfg(feature = "wasm")]
mod engine;
#[cfg(feature = "wasm")]
mod host;
#[cfg(feature = "wasm")]
mod metrics;
#[cfg(feature = "wasm")]
mod plugin;
#[cfg(feature = "wasm")]
mod registry;
mod spec;
#[cfg(feature = "wasm")]
mod view;

#[cfg(feature = "wasm")]
pub use cache::{ComponentCache, Origin};
#[cfg(feature = "wasm")]
pub use engine::{EngineOptions, PluginEngine};
#[cfg(feature = "wasm")]
pub use metrics::{Failure, LATENCY_BUCKETS_US, MetricsSnapshot, PluginMetrics};
#[cfg(feature = "wasm")]
pub use plugin::{
    CONTRACT_VERSION, Import, LEGACY_CONTRACT_VERSION, PluginEnv, PluginError, WasmInterceptor,
    inspect,
};
#[cfg(feature = "wasm")]
pub use registry::{PluginInfo, PluginRegistry, RegistryError, ReloadReport};
pub use spec::{Capability, Grants, PluginLimits, PluginSpec};

/// Host bindings generated from the contract, for the widest world of each contract line this
/// host serves: its imports cover every plugin's of that line, and every world exports the same
/// functions.
#[cfg(feature = "wasm")]
mod bindings {
    /// `membrane:interceptor@0.2`, the contract of `wit/`.
    pub mod current {
        wasmtime::component::bindgen!({
            path: "wit",
            world: "stateful-interceptor",
            imports: {
                default: trappable,
                // Session state lives in the session store, which is async.
                "membrane:interceptor/session-kv": async | trappable,
            },
            exports: { default: async },
            with: { "membrane:interceptor/types.message": crate::wasm::view::ViewedMessage },
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }

    /// `membrane:interceptor@0.1`, as its last release (0.1.2) has it: plugins built against
    /// any 0.1.x keep loading.
    pub mod v0_1 {
        wasmtime::component::bindgen!({
            path: "wit/released/0.1.2",
            world: "stateful-interceptor",
            imports: {
                default: trappable,
                "membrane:interceptor/session-kv": async | trappable,
            },
            exports: { default: async },
            // Lend the message's text to the guest instead of copying it into a `String` first.
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }
}
