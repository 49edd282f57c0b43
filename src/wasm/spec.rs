//! What identifies a plugin and what it may do, as plain data with no Wasm engine behind it:
//! [`PluginSpec`] (the component's bytes, its configuration, limits and grants), [`PluginLimits`]
//! and the [`Capability`] an operator grants. The configuration builds these; the host loads
//! them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What one plugin call and instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PluginLimits {
    /// Wall-clock budget of one call.
    pub call_timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub max_memory: usize,
    /// Fuel (roughly, Wasm instructions) one call may burn: a budget that does not depend on
    /// the machine's load. Needs an engine with fuel metering.
    pub fuel: Option<u64>,
    /// Instances of the plugin that may exist at once; calls beyond wait for one.
    pub max_instances: usize,
    /// Start a fresh instance for every call, so nothing a plugin keeps in memory survives
    /// from one message to the next; costs an instantiation and an `init` per call.
    pub fresh_instances: bool,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(100),
            max_memory: 64 * 1024 * 1024,
            fuel: None,
            max_instances: 16,
            fresh_instances: false,
        }
    }
}

/// A host capability a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `membrane:interceptor/host`: write to membrane's log.
    Log,
    /// `membrane:interceptor/session-kv`: keep state with the session.
    SessionKv,
    /// `wasi:clocks`: read the real time instead of zero.
    Clock,
}

impl Capability {
    /// The contract interface this capability grants, when it is one.
    pub fn interface(self) -> Option<&'static str> {
        match self {
            Capability::Log => Some("host"),
            Capability::SessionKv => Some("session-kv"),
            Capability::Clock => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::SessionKv => "session-kv",
            Capability::Clock => "clock",
        }
    }
}

/// The capabilities granted to one plugin.
pub type Grants = BTreeSet<Capability>;

/// Everything that identifies one version of a plugin: loading the same spec twice gives the
/// same interceptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PluginSpec {
    pub name: String,
    /// Where the component was read from, for messages.
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
    /// The plugin's configuration as JSON text, handed to `init`.
    pub config: String,
    pub limits: PluginLimits,
    pub grants: Grants,
}

impl PluginSpec {
    /// The spec of the component at `path`, read now.
    pub fn read(
        name: &str,
        path: &Path,
        config: &serde_json::Value,
        limits: PluginLimits,
        grants: Grants,
    ) -> std::io::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            bytes: std::fs::read(path)?.into(),
            config: config.to_string(),
            limits,
            grants,
        })
    }
}
