//! What a plugin instance sees of the host: [`PluginState`] (its WASI context, resource table,
//! memory limits, and the session and principal of the call in progress) and the capabilities
//! an operator grants ([`Capability`]): logging into tracing, state kept with the session, and
//! real clocks. Who opened the session (`identity`) needs no grant.
//! The WASI context has no preopened directories, no environment and no sockets; without the
//! clock grant its clocks read zero, and a plugin that waits on a WASI timer still runs out of
//! its time budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::membrane::interceptor::host::{Host, Level};
use super::bindings::membrane::interceptor::{identity, session_kv, types};
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
    sessions: Option<Arc<SessionManager>>,
}

impl PluginState {
    pub fn new(
        plugin: Arc<str>,
        max_memory: usize,
        grants: &Grants,
        sessions: Option<Arc<SessionManager>>,
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
            sessions,
        }
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

impl session_kv::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let Ok((sessions, session, plugin)) = self.kv() else {
            return Ok(None);
        };
        match sessions.kv_get(&session, &plugin, &key).await {
            Ok(value) => Ok(value),
            Err(e) => {
                tracing::warn!(plugin = &*plugin, error = %e, "session-kv get failed");
                Ok(None)
            }
        }
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let (sessions, session, plugin) = match self.kv() {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let stored = sessions.kv_set(&session, &plugin, &key, &value).await;
        Ok(stored.map_err(|e| e.to_string()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        // Deleting from a session that is gone leaves nothing behind either way.
        if let Ok((sessions, session, plugin)) = self.kv() {
            let _ = sessions.kv_delete(&session, &plugin, &key).await;
        }
        Ok(())
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, String>> {
        let (sessions, session, plugin) = match self.kv() {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let counted = sessions.kv_increment(&session, &plugin, &key, delta).await;
        Ok(counted.map_err(|e| e.to_string()))
    }
}

impl identity::Host for PluginState {
    fn session_principal(&mut self) -> wasmtime::Result<Option<identity::Principal>> {
        Ok(self
            .principal
            .as_deref()
            .map(|principal| identity::Principal {
                subject: principal.subject.clone(),
                issuer: principal.issuer.clone(),
                scopes: principal.scopes.iter().cloned().collect(),
                claims: serde_json::Value::Object(principal.claims.clone()).to_string(),
            }))
    }
}

/// The shared types interface has no functions to provide.
impl types::Host for PluginState {}

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
