//! membrane's configuration file (TOML): limits, session settings, pause policy and the plugins
//! of the interceptor chain, in order, each with its own configuration table.
//!
//! ```toml
//! max_message_size = 16777216
//!
//! [session]
//! max_sessions = 1024
//! idle_timeout_secs = 1800
//!
//! [pause]
//! on_timeout = "block"          # or "continue"
//!
//! [[plugins]]
//! name = "tool-guard"
//! path = "tool_guard.wasm"      # relative to this file
//! on_error = "block"            # or "continue"
//! timeout_ms = 100
//! max_memory_mb = 64
//! [plugins.config]
//! deny = ["delete_*"]
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::interceptor::{FailurePolicy, PauseTimeoutPolicy};
use crate::session::SessionConfig;
use crate::transport::DEFAULT_MAX_MESSAGE_SIZE;
use crate::wasm::PluginLimits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    #[serde(default)]
    pub session: SessionSection,
    #[serde(default)]
    pub pause: PauseSection,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            session: SessionSection::default(),
            pause: PauseSection::default(),
            plugins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    pub max_sessions: Option<usize>,
    /// Seconds without traffic after which a session is closed; unset keeps sessions forever.
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseSection {
    #[serde(default)]
    pub on_timeout: PauseTimeoutPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Defaults to the file name without extension.
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub on_error: FailurePolicy,
    pub timeout_ms: Option<u64>,
    pub max_memory_mb: Option<usize>,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Table,
}

impl Config {
    /// Reads a config file; relative plugin paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for plugin in &mut config.plugins {
            plugin.path = base.join(&plugin.path);
        }
        Ok(config)
    }

    pub fn session_config(&self) -> SessionConfig {
        let defaults = SessionConfig::default();
        SessionConfig {
            max_sessions: self.session.max_sessions.unwrap_or(defaults.max_sessions),
            idle_timeout: self.session.idle_timeout_secs.map(Duration::from_secs),
        }
    }
}

impl PluginConfig {
    /// A plugin given on the command line: default settings, empty configuration.
    pub fn from_path(path: PathBuf) -> Self {
        Self {
            name: None,
            path,
            on_error: FailurePolicy::default(),
            timeout_ms: None,
            max_memory_mb: None,
            config: empty_table(),
        }
    }

    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into())
        })
    }

    pub fn limits(&self) -> PluginLimits {
        let defaults = PluginLimits::default();
        PluginLimits {
            call_timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.call_timeout),
            max_memory: self
                .max_memory_mb
                .map(|mb| mb * 1024 * 1024)
                .unwrap_or(defaults.max_memory),
        }
    }

    /// The plugin's configuration as JSON, for its `init`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("a TOML table is representable as JSON")
    }
}

fn default_max_message_size() -> usize {
    DEFAULT_MAX_MESSAGE_SIZE
}

fn empty_table() -> toml::Table {
    toml::Table::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plugins_in_order_with_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("membrane.toml");
        std::fs::write(
            &path,
            r#"
            max_message_size = 1024
            [session]
            idle_timeout_secs = 60
            [pause]
            on_timeout = "continue"
            [[plugins]]
            path = "guard.wasm"
            timeout_ms = 5
            [plugins.config]
            deny = ["delete_*"]
            [[plugins]]
            name = "second"
            path = "/abs/rules.wasm"
            on_error = "continue"
            "#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.max_message_size, 1024);
        assert_eq!(
            config.session_config().idle_timeout,
            Some(Duration::from_secs(60))
        );
        assert_eq!(config.pause.on_timeout, PauseTimeoutPolicy::Continue);
        let [guard, second] = &config.plugins[..] else {
            panic!("two plugins")
        };
        assert_eq!(guard.name(), "guard");
        assert_eq!(guard.path, dir.path().join("guard.wasm"));
        assert_eq!(guard.limits().call_timeout, Duration::from_millis(5));
        assert_eq!(guard.on_error, FailurePolicy::Block);
        assert_eq!(
            guard.config_json(),
            serde_json::json!({"deny": ["delete_*"]})
        );
        assert_eq!(second.name(), "second");
        assert_eq!(second.on_error, FailurePolicy::Continue);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "max_mesage_size = 3\n").unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(error.contains("max_mesage_size"), "{error}");
    }
}
