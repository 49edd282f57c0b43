//! What a plugin instance sees of the host: [`PluginState`] (its WASI context, resource table,
//! memory limits, and the message, session and principal of the call in progress) and the
//! capabilities an operator grants ([`Capability`]): logging into tracing, state kept with the
//! session, and real clocks, served to both contract lines. Who opened the session needs no
//! grant: 0.2 reads it off the message ([`super::view`]), 0.1.2 through `identity`.
//! The WASI context has no preopened directories, no environment and no sockets; without the
//! clock grant its clocks read zero, and a plugin that waits on a WASI timer still runs out of
//! its time budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::current::membrane::interceptor::{host, session_kv};
use super::bindings::v0_1::membrane::interceptor as v0_1;
use super::engine::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use super::spec::{Capability, Grants};
use crate::auth::Principal;
use crate::session::{SessionId, SessionManager};

/// The data of one plugin instance's store.
pub struct PluginState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    /// When the current call runs out of time.
    pub(super) deadline: Instant,
    /// The session of the message being intercepted: the scope of `session-kv`.
    pub(super) session: Option<SessionId>,
    /// Who opened that session, when known.
    pub(super) principal: Option<Arc<Principal>>,
    /// The message of the call in progress, for a 0.2 plugin.
    pub(super) view: Option<super::view::MessageView>,
    /// Whether the store's calls are direct ([`super::direct`]): made without a fiber.
    pub(super) direct: bool,
    sessions: Option<Arc<SessionManager>>,
}

impl PluginState {
    pub fn new(
        plugin: Arc<str>,
        max_memory: usize,
        grants: &Grants,
        sessions: Option<Arc<SessionManager>>,
        direct: bool,
    ) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        if !grants.contains(&Capability::Clock) {
            wasi.wall_clock(StoppedClock).monotonic_clock(StoppedClock);
        }
        Self {
            plugin,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            // The memory cap holds per memory; few memories and bounded tables keep the
            // instance's total near it.
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory)
                .memories(MAX_MEMORIES)
                .tables(MAX_TABLES)
                .table_elements(MAX_TABLE_ELEMENTS)
                .instances(MAX_CORE_INSTANCES)
                .trap_on_grow_failure(true)
                .build(),
            deadline: Instant::now(),
            session: None,
            principal: None,
            view: None,
            direct,
            sessions,
        }
    }

    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The session store and this call's session, for a `session-kv` call. The future owns
    /// what it needs: the state itself is not `Sync`.
    fn kv(&self) -> Result<(Arc<SessionManager>, SessionId, Arc<str>), String> {
        let (sessions, session) = self
            .sessions
            .clone()
            .zip(self.session.clone())
            .ok_or("no session")?;
        Ok((sessions, session, self.plugin.clone()))
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

impl PluginState {
    fn log(&self, level: host::Level, message: &str) {
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    async fn kv_get(&mut self, key: &str) -> Option<String> {
        let (sessions, session, plugin) = self.kv().ok()?;
        match sessions.kv_get(&session, &plugin, key).await {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(plugin = &*plugin, error = %e, "session-kv get failed");
                None
            }
        }
    }

    async fn kv_set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let (sessions, session, plugin) = self.kv()?;
        let stored = sessions.kv_set(&session, &plugin, key, value).await;
        stored.map_err(|e| e.to_string())
    }

    async fn kv_delete(&mut self, key: &str) {
        // Deleting from a session that is gone leaves nothing behind either way.
        if let Ok((sessions, session, plugin)) = self.kv() {
            let _ = sessions.kv_delete(&session, &plugin, key).await;
        }
    }

    async fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, String> {
        let (sessions, session, plugin) = self.kv()?;
        let counted = sessions.kv_increment(&session, &plugin, key, delta).await;
        counted.map_err(|e| e.to_string())
    }
}

/// A principal's fields as both contract lines spell them: subject, issuer, scopes, and the
/// claims as a JSON object's text.
pub(super) fn principal_fields(
    principal: &Principal,
) -> (String, Option<String>, Vec<String>, String) {
    (
        principal.subject.clone(),
        principal.issuer.clone(),
        principal.scopes.iter().cloned().collect(),
        serde_json::Value::Object(principal.claims.clone()).to_string(),
    )
}

impl host::Host for PluginState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        PluginState::log(self, level, &message);
        Ok(())
    }
}

/// `session-kv` is the same on both contract lines.
macro_rules! session_kv_host {
    ($interface:path) => {
        impl $interface for PluginState {
            async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                Ok(self.kv_get(&key).await)
            }
            async fn set(
                &mut self,
                key: String,
                value: String,
            ) -> wasmtime::Result<Result<(), String>> {
                Ok(self.kv_set(&key, &value).await)
            }
            async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
                self.kv_delete(&key).await;
                Ok(())
            }
            async fn increment(
                &mut self,
                key: String,
                delta: i64,
            ) -> wasmtime::Result<Result<i64, String>> {
                Ok(self.kv_increment(&key, delta).await)
            }
        }
    };
}

session_kv_host!(session_kv::Host);
session_kv_host!(v0_1::session_kv::Host);

impl v0_1::host::Host for PluginState {
    fn log(&mut self, level: v0_1::host::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            v0_1::host::Level::Trace => host::Level::Trace,
            v0_1::host::Level::Debug => host::Level::Debug,
            v0_1::host::Level::Info => host::Level::Info,
            v0_1::host::Level::Warn => host::Level::Warn,
            v0_1::host::Level::Error => host::Level::Error,
        };
        PluginState::log(self, level, &message);
        Ok(())
    }
}

impl v0_1::identity::Host for PluginState {
    fn session_principal(&mut self) -> wasmtime::Result<Option<v0_1::identity::Principal>> {
        Ok(self.principal.as_deref().map(|principal| {
            let (subject, issuer, scopes, claims) = principal_fields(principal);
            v0_1::identity::Principal {
                subject,
                issuer,
                scopes,
                claims,
            }
        }))
    }
}

/// 0.1's types interface has no functions to provide.
impl v0_1::types::Host for PluginState {}

/// Time is a capability plugins are not granted by default: every clock reads zero.
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
