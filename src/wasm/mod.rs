//! Wasm interceptors: plugins are WebAssembly components that export the
//! `membrane:interceptor` world (`wit/interceptor.wit`). [`PluginEngine`] owns the one wasmtime
//! engine, its epoch ticker and the linker that grants plugins their imports;
//! [`WasmInterceptor`] loads a plugin, keeps warm instances of it and adapts it to the
//! [`Interceptor`](crate::interceptor::Interceptor) trait. Plugins get no filesystem, network,
//! environment or clock: only the `host` interface (logging into tracing) and the WASI calls
//! Rust's standard library needs, all denied or empty.

mod engine;
mod host;
mod plugin;

pub use engine::{PluginEngine, PluginLimits};
pub use plugin::{PluginError, WasmInterceptor};

/// Host bindings generated from the WIT contract.
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "interceptor",
        imports: { default: trappable },
        exports: { default: async },
        // Lend the message's text to the guest instead of copying it into a `String` first.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}
