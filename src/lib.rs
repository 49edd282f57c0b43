//! membrane: a proxy runtime for the Model Context Protocol. It sits between MCP clients and
//! servers, keeps native sessions, and runs interceptors (sandboxed WebAssembly components or
//! native Rust) that can block, modify, mock, pause or delay traffic. Messages no interceptor
//! wants take a native fast path and are forwarded byte for byte.
//!
//! Rooms: [`protocol`] (messages), [`transport`] (framing and peers), [`session`] (session
//! state), [`interceptor`] (the chain), [`wasm`] (plugins), [`proxy`] (the pipeline and proxy
//! assembly), [`record`] (tapes: recording, replay, testing a policy on them), [`auth`] (who is calling), [`config`] (the TOML file), [`telemetry`] (metrics
//! and the audit stream), `admin` (the operator's API and console), `app` (wiring a
//! configuration into a running proxy). Without the default `wasm` feature the crate builds
//! without the Wasm host, the admin API and the app: the protocol, transport and proxy layers alone, which is
//! what the fuzz targets link.

#[cfg(feature = "wasm")]
pub mod admin;
#[cfg(feature = "wasm")]
pub mod app;
pub mod auth;
pub mod config;
pub mod interceptor;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod session;
pub mod telemetry;
pub mod transport;
pub mod wasm;
