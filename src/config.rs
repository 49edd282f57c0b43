//! membrane's configuration file (TOML): limits, session settings, pause policy, the Wasm host
//! and the plugins of the interceptor chain, in order, each with its limits, its granted
//! capabilities and its own configuration table. [`ConfigSource`] is where a configuration
//! comes from (file, command line, plugin directory), read again on every reload.
//!
//! ```toml
//! max_message_size = 16777216
//! plugin_dir = "policies"       # every *.wasm in it joins the chain, after [[plugins]];
//!                               # settings for policies/x.wasm go in policies/x.toml
//! watch = true                  # reload when this file or a plugin changes (SIGHUP too)
//!
//! [wasm]
//! pool_size = 256               # plugin instance slots; 0 allocates on demand
//! cache = true                  # keep compiled plugins on disk
//! cache_dir = "/var/cache/membrane"   # default: ~/.cache/membrane/components
//!
//! [session]
//! store = "memory"              # or "sqlite:/var/lib/membrane/sessions.db" (survives a
//!                               # restart), "redis://127.0.0.1:6379/0" (shared by replicas)
//! store_timeout_ms = 2000       # the longest a call to the store may take
//! max_sessions = 1024
//! idle_timeout_secs = 1800      # default: none over stdio, 30 minutes for HTTP clients;
//!                               # durable stores keep idle sessions this long (24 h if none)
//! max_pending_requests = 256    # requests awaiting an answer, per session and direction
//!
//! [pause]                       # messages held for a human (see the `approval` plugin)
//! on_timeout = "block"          # or "continue": what a held message nobody settles becomes
//! max_held = 1024               # held at once; past it, a pause blocks at once
//!
//! [admin]                       # the operator's API, console and /metrics (see crate::admin)
//! listen = "127.0.0.1:9464"     # its own port, never the MCP one; beyond loopback needs [tls]
//! token_file = "admin-token"    # the bearer token, required for all but /healthz and /readyz
//!
//! [audit]                       # one JSON line per verdict other than continue, per settled
//! file = "audit.jsonl"          # held message and per reload; "-" for stderr
//!
//! [record]                      # tapes of sessions (see crate::record), one per session
//! dir = "tapes"                 # or --record DIR
//! sessions = 1.0                # the fraction of new sessions recorded
//! max_tape_bytes = 67108864     # a tape stops growing here (lines past it are dropped)
//! max_dir_bytes = 1073741824    # the oldest tapes are removed to stay under this
//! max_queue_bytes = 67108864    # messages waiting for the tape writer; past it, lines drop
//! after = "secret-redactor"     # tapes copy messages as this plugin left them, so what it
//!                               # removes stays off disk; default: as they arrived
//!
//! [telemetry]                   # OpenTelemetry traces of requests and plugin calls
//! otlp_endpoint = "http://127.0.0.1:4318"   # an OTLP/HTTP collector (JSON encoding)
//! service_name = "membrane"
//!
//! [http]                        # Streamable HTTP, either side
//! allowed_hosts = ["mcp.example.com"]   # Host names besides loopback ones (those only when
//!                               # bound to loopback); "*": any. Others get 403.
//! allowed_origins = ["https://app.example.com"]   # browser origins besides loopback; "*": any
//! keep_alive_secs = 15          # comment on idle SSE streams
//! event_retention_bytes = 262144    # events each session keeps for Last-Event-ID replay
//! max_streams = 32              # open SSE streams per session
//! max_batch_size = 64           # messages in one JSON-RPC batch
//! max_connections = 1024        # more wait in the listen backlog
//! header_timeout_secs = 10      # TLS handshake and each request's headers
//! body_timeout_secs = 30        # each request's body, whole
//! idle_timeout_secs = 60        # a kept-alive connection without a request
//! body_budget_bytes = 67108864  # request bodies being received at once (beyond 64 KiB each)
//! send_timeout_secs = 10        # a client that stops reading its stream loses it
//! drain_timeout_secs = 10       # SIGTERM: the longest wait for sessions and connections
//! connect_timeout_secs = 5      # upstream connection
//! upstream_timeout_secs = 300   # wait for an upstream response to begin, or for its next event
//! upstream_event_timeout_secs = 60  # an upstream SSE event, from its first byte to its end
//! ca_file = "upstream-ca.pem"   # roots trusted for https upstreams besides the system's
//! client_cert = "client.pem"    # a client certificate for upstreams that ask (with client_key)
//! client_key = "client.key"
//! [http.upstream_headers]       # sent upstream on every request; the client's never are
//! Authorization = "env:UPSTREAM_TOKEN"   # or "file:/run/secrets/token", or a literal value
//!
//! [tls]                         # serve https (reloaded on SIGHUP or when the files change)
//! cert = "server.pem"
//! key = "server.key"
//!
//! [auth]                        # clients need a bearer token (see crate::auth)
//! bearer_tokens_file = "tokens" # TOKEN [SUBJECT [SCOPE...]] per line
//! resource = "https://mcp.example.com/mcp"   # default: derived from each request's Host
//! authorization_servers = ["https://auth.example.com"]   # published; default: the JWT issuer
//! scopes_supported = ["mcp", "mcp:admin"]   # published in the resource metadata
//! required_scopes = ["mcp"]     # every request
//! claims = ["groups"]           # handed to plugins with the principal
//! [[auth.scopes]]               # more, for some methods (globs) and tools (globs)
//! methods = ["tools/call"]
//! tools = ["delete_*"]
//! scopes = ["mcp:admin"]
//! [auth.jwt]
//! issuer = "https://auth.example.com"
//! audience = "https://mcp.example.com/mcp"   # default: resource
//! jwks_url = "https://auth.example.com/.well-known/jwks.json"   # or jwks_file
//! algorithms = ["RS256", "ES256", "EdDSA"]   # the default
//! jwks_cache_secs = 300         # a fetched key set is used this long
//! jwks_min_refresh_secs = 10    # least time between reads for tokens naming an unknown key
//! leeway_secs = 30              # clock skew allowed on exp and nbf
//!
//! [[plugins]]
//! name = "tool-guard"
//! path = "tool_guard.wasm"      # relative to this file
//! on_error = "block"            # or "continue"
//! on_timeout = "deny"           # a message it holds that nobody settles: "deny" or "approve";
//!                               # default: [pause] on_timeout
//! timeout_ms = 100
//! max_memory_mb = 64
//! max_instances = 16
//! fresh_instances = false       # true: a new instance for every call (no state survives)
//! fuel = 10000000               # optional: a budget that does not depend on the machine
//! grants = ["log"]              # the default; also "session-kv" and "clock"
//! mode = "enforce"              # or "audit": verdicts logged, counted, recorded, not enforced
//! [plugins.config]
//! deny = ["delete_*"]
//!
//! [[plugins]]                   # a new version, tried on some sessions first
//! name = "tool-guard-2"
//! path = "tool_guard_2.wasm"
//! canary_of = "tool-guard"      # stands in for it...
//! canary = 0.1                  # ...in this fraction of sessions; remove it to roll back
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::interceptor::{FailurePolicy, LinkPolicy, Mode, PauseTimeoutPolicy};
use crate::record::RecordConfig;
use crate::session::{SessionConfig, StoreSpec};
use crate::transport::streamable_http::{FrontOptions, HostPolicy, UpstreamOptions};
use crate::transport::tls::ClientTlsOptions;
use crate::transport::{DEFAULT_MAX_MESSAGE_SIZE, ServerLimits};
use crate::wasm::{Capability, Grants, PluginLimits, PluginSpec};

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
    #[error("cannot read plugin {path}: {source}")]
    ReadPlugin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("two plugins are named '{0}': give one of them another `name`")]
    DuplicateName(String),
    #[error("[[plugins]] {0}")]
    Chain(String),
    #[error("[http.upstream_headers] {name}: {reason}")]
    UpstreamHeader { name: String, reason: String },
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
    pub wasm: WasmSection,
    #[serde(default)]
    pub http: HttpSection,
    /// Serve HTTPS with this certificate.
    pub tls: Option<TlsSection>,
    /// Require bearer tokens from HTTP clients.
    pub auth: Option<AuthConfig>,
    /// Serve the admin API.
    pub admin: Option<AdminSection>,
    /// Write the audit stream.
    pub audit: Option<AuditSection>,
    /// Export traces.
    pub telemetry: Option<TelemetrySection>,
    /// Record sessions to tapes.
    pub record: Option<RecordConfig>,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// A directory of plugins: each `*.wasm` in it (by file name) joins the chain after
    /// `plugins`, configured by the `.toml` of the same name beside it, if any.
    pub plugin_dir: Option<PathBuf>,
    /// Reload when the config file or a plugin changes.
    #[serde(default = "yes")]
    pub watch: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            session: SessionSection::default(),
            pause: PauseSection::default(),
            wasm: WasmSection::default(),
            http: HttpSection::default(),
            tls: None,
            auth: None,
            admin: None,
            audit: None,
            telemetry: None,
            record: None,
            plugins: Vec::new(),
            plugin_dir: None,
            watch: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmSection {
    /// Plugin instance slots in the pooling allocator; 0 allocates instances on demand.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    #[serde(default = "yes")]
    pub cache: bool,
    pub cache_dir: Option<PathBuf>,
}

impl Default for WasmSection {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            cache: true,
            cache_dir: None,
        }
    }
}

impl WasmSection {
    pub fn pool_size(&self) -> Option<u32> {
        (self.pool_size > 0).then_some(self.pool_size)
    }

    #[cfg(feature = "wasm")]
    pub fn cache(&self) -> Option<crate::wasm::ComponentCache> {
        use crate::wasm::ComponentCache;
        let dir = self.cache_dir.clone().or_else(ComponentCache::default_dir);
        dir.filter(|_| self.cache).map(ComponentCache::new)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub keep_alive_secs: u64,
    pub event_retention_bytes: usize,
    pub max_streams: usize,
    pub max_batch_size: usize,
    pub max_connections: usize,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub body_budget_bytes: usize,
    pub send_timeout_secs: u64,
    pub drain_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub upstream_timeout_secs: u64,
    pub upstream_event_timeout_secs: u64,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Header name to value; `env:NAME` and `file:PATH` values are read from there.
    pub upstream_headers: BTreeMap<String, String>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            keep_alive_secs: 15,
            event_retention_bytes: 256 * 1024,
            max_streams: 32,
            max_batch_size: crate::proxy::DEFAULT_MAX_BATCH_SIZE,
            max_connections: 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            idle_timeout_secs: 60,
            body_budget_bytes: 64 * 1024 * 1024,
            send_timeout_secs: 10,
            drain_timeout_secs: 10,
            connect_timeout_secs: 5,
            upstream_timeout_secs: 300,
            upstream_event_timeout_secs: 60,
            ca_file: None,
            client_cert: None,
            client_key: None,
            upstream_headers: BTreeMap::new(),
        }
    }
}

/// `[tls]`: the listener's certificate chain and key, PEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// Where sessions are kept: memory, a SQLite file, or Redis.
    #[serde(default)]
    pub store: StoreSpec,
    /// Milliseconds a call to the store may take.
    pub store_timeout_ms: Option<u64>,
    pub max_sessions: Option<usize>,
    /// Seconds without traffic after which a session is closed; unset keeps sessions forever.
    pub idle_timeout_secs: Option<u64>,
    /// Requests awaiting an answer, per session and direction.
    pub max_pending_requests: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PauseSection {
    pub on_timeout: PauseTimeoutPolicy,
    /// Messages held at once.
    pub max_held: usize,
}

impl Default for PauseSection {
    fn default() -> Self {
        Self {
            on_timeout: PauseTimeoutPolicy::default(),
            max_held: crate::interceptor::DEFAULT_MAX_HELD,
        }
    }
}

/// `[admin]`: the operator's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: SocketAddr,
    /// A file holding the bearer token (surrounding whitespace ignored).
    pub token_file: PathBuf,
}

/// `[telemetry]`: where traces go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// An OTLP/HTTP collector: `http://host:4318` or its full `/v1/traces` URL.
    pub otlp_endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "membrane".into()
}

/// `[audit]`: where the audit stream goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// A file appended to, or `-` for stderr.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Defaults to the file name without extension.
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub on_error: FailurePolicy,
    /// What a message this plugin holds becomes when nobody settles it in time.
    pub on_timeout: Option<PauseTimeoutPolicy>,
    pub timeout_ms: Option<u64>,
    pub max_memory_mb: Option<usize>,
    pub max_instances: Option<usize>,
    #[serde(default)]
    pub fresh_instances: bool,
    pub fuel: Option<u64>,
    /// Host capabilities the plugin may use; `["log"]` when unset.
    pub grants: Option<Vec<Capability>>,
    #[serde(default)]
    pub mode: Mode,
    /// The plugin this one is a new version of: it stands in for it in `canary` of sessions.
    pub canary_of: Option<String>,
    pub canary: Option<f64>,
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
        let relative = |path: &mut PathBuf| *path = base.join(&*path);
        config.plugin_dir.as_mut().map(relative);
        if let StoreSpec::Sqlite(path) = &mut config.session.store {
            relative(path);
        }
        config.wasm.cache_dir.as_mut().map(relative);
        let http = &mut config.http;
        for path in [
            &mut http.ca_file,
            &mut http.client_cert,
            &mut http.client_key,
        ] {
            path.as_mut().map(relative);
        }
        if let Some(admin) = &mut config.admin {
            relative(&mut admin.token_file);
        }
        if let Some(record) = &mut config.record {
            relative(&mut record.dir);
        }
        if let Some(audit) = &mut config.audit
            && audit.file != Path::new("-")
        {
            relative(&mut audit.file);
        }
        if let Some(tls) = &mut config.tls {
            relative(&mut tls.cert);
            relative(&mut tls.key);
        }
        if let Some(auth) = &mut config.auth {
            auth.bearer_tokens_file.as_mut().map(relative);
            if let Some(jwt) = &mut auth.jwt {
                jwt.jwks_file.as_mut().map(relative);
            }
        }
        Ok(config)
    }

    /// Every plugin of the chain, in order: `plugins`, then those in `plugin_dir`. Reads the
    /// plugin files (and the directory) as they are now.
    pub fn plugin_configs(&self) -> Result<Vec<PluginConfig>, ConfigError> {
        let mut plugins = self.plugins.clone();
        if let Some(dir) = &self.plugin_dir {
            plugins.extend(plugins_in(dir)?);
        }
        let mut names = std::collections::HashSet::new();
        if let Some(twice) = plugins
            .iter()
            .map(PluginConfig::name)
            .find(|name| !names.insert(name.clone()))
        {
            return Err(ConfigError::DuplicateName(twice));
        }
        self.check_chain(&plugins)?;
        Ok(plugins)
    }

    /// Every canary names a plugin of the chain that has no other, with a fraction in [0, 1];
    /// `[record] after` names a plugin of the chain.
    fn check_chain(&self, plugins: &[PluginConfig]) -> Result<(), ConfigError> {
        let stable = |name: &str| {
            plugins
                .iter()
                .any(|p| p.canary_of.is_none() && p.name() == name)
        };
        let mut tried = std::collections::HashSet::new();
        for plugin in plugins {
            let name = plugin.name();
            let error = |what: String| Err(ConfigError::Chain(format!("'{name}': {what}")));
            match (&plugin.canary_of, plugin.canary) {
                (None, None) => {}
                (Some(of), Some(fraction)) => {
                    if !(0.0..=1.0).contains(&fraction) {
                        return error(format!("canary = {fraction} is not a fraction in [0, 1]"));
                    }
                    if !stable(of) {
                        return error(format!("canary_of = '{of}' names no plugin of the chain"));
                    }
                    if !tried.insert(of.clone()) {
                        return error(format!("'{of}' already has a canary"));
                    }
                }
                _ => return error("`canary` and `canary_of` go together".into()),
            }
        }
        if let Some(after) = self.record.as_ref().and_then(|r| r.after.as_deref())
            && !stable(after)
        {
            return Err(ConfigError::Chain(format!(
                "[record] after = '{after}' names no plugin of the chain"
            )));
        }
        Ok(())
    }

    /// How membrane's HTTP endpoint behaves when it listens on `listen`.
    pub fn front_options(&self, listen: SocketAddr) -> FrontOptions {
        let http = &self.http;
        FrontOptions {
            hosts: HostPolicy::new(listen, &http.allowed_hosts),
            allowed_origins: http.allowed_origins.clone(),
            tls: self.tls.is_some(),
            keep_alive: Duration::from_secs(http.keep_alive_secs.max(1)),
            retry: Duration::from_secs(1),
            max_message_size: self.max_message_size,
            max_batch_size: http.max_batch_size,
            max_streams: http.max_streams.max(1),
            event_retention_bytes: http.event_retention_bytes,
            body_timeout: Duration::from_secs(http.body_timeout_secs.max(1)),
            body_budget: http.body_budget_bytes,
            send_timeout: Duration::from_secs(http.send_timeout_secs.max(1)),
            revive: self.session.store != StoreSpec::Memory,
        }
    }

    /// The bounds of membrane's HTTP server.
    pub fn server_limits(&self) -> ServerLimits {
        let http = &self.http;
        ServerLimits {
            max_connections: http.max_connections.max(1),
            header_timeout: Duration::from_secs(http.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(http.send_timeout_secs.max(1)),
        }
    }

    /// How long SIGTERM waits for sessions and connections to end.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.http.drain_timeout_secs)
    }

    /// How membrane checks the servers it connects to over https.
    pub fn client_tls(&self) -> ClientTlsOptions {
        ClientTlsOptions {
            ca_file: self.http.ca_file.clone(),
            client_cert: self
                .http
                .client_cert
                .clone()
                .zip(self.http.client_key.clone()),
        }
    }

    /// How membrane talks to HTTP upstreams; reads the upstream headers' values now.
    pub fn upstream_options(&self) -> Result<UpstreamOptions, ConfigError> {
        Ok(UpstreamOptions {
            connect_timeout: Duration::from_secs(self.http.connect_timeout_secs),
            response_timeout: Duration::from_secs(self.http.upstream_timeout_secs),
            event_timeout: Duration::from_secs(self.http.upstream_event_timeout_secs.max(1)),
            max_message_size: self.max_message_size,
            tls: self.client_tls(),
            headers: upstream_headers(&self.http.upstream_headers)?,
        })
    }

    pub fn session_config(&self) -> SessionConfig {
        let defaults = SessionConfig::default();
        SessionConfig {
            max_sessions: self.session.max_sessions.unwrap_or(defaults.max_sessions),
            idle_timeout: self.session.idle_timeout_secs.map(Duration::from_secs),
            max_pending_requests: self
                .session
                .max_pending_requests
                .unwrap_or(defaults.max_pending_requests)
                .max(1),
            store_timeout: self
                .session
                .store_timeout_ms
                .map_or(defaults.store_timeout, |ms| {
                    Duration::from_millis(ms.max(1))
                }),
        }
    }
}

impl PluginConfig {
    /// A plugin given on the command line: default settings, empty configuration.
    /// How the chain treats this plugin.
    pub fn policy(&self) -> LinkPolicy {
        LinkPolicy {
            on_error: self.on_error,
            on_pause_timeout: self.on_timeout,
            mode: self.mode,
        }
    }

    pub fn from_path(path: PathBuf) -> Self {
        Self {
            name: None,
            path,
            on_error: FailurePolicy::default(),
            on_timeout: None,
            timeout_ms: None,
            max_memory_mb: None,
            max_instances: None,
            fresh_instances: false,
            fuel: None,
            grants: None,
            mode: Mode::default(),
            canary_of: None,
            canary: None,
            config: empty_table(),
        }
    }

    /// The plugin as the Wasm host loads it, with the component read from disk.
    pub fn spec(&self) -> Result<PluginSpec, ConfigError> {
        let (name, config) = (self.name(), self.config_json());
        PluginSpec::read(&name, &self.path, &config, self.limits(), self.grants()).map_err(
            |source| ConfigError::ReadPlugin {
                path: self.path.clone(),
                source,
            },
        )
    }

    pub fn grants(&self) -> Grants {
        match &self.grants {
            Some(grants) => grants.iter().copied().collect(),
            None => Grants::from([Capability::Log]),
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
            fuel: self.fuel,
            max_instances: self.max_instances.unwrap_or(defaults.max_instances),
            fresh_instances: self.fresh_instances,
        }
    }

    /// The plugin's configuration as JSON, for its `init`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("a TOML table is representable as JSON")
    }
}

/// Headers membrane sets itself on upstream requests; configuring them is an error.
const MANAGED_HEADERS: [&str; 8] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// The configured upstream headers, their `env:` and `file:` values read, marked sensitive
/// (they are credentials, as a rule, and stay out of debug output).
fn upstream_headers(configured: &BTreeMap<String, String>) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in configured {
        let error = |reason: String| ConfigError::UpstreamHeader {
            name: name.clone(),
            reason,
        };
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| error("not a valid header name".into()))?;
        if MANAGED_HEADERS.contains(&header.as_str()) {
            return Err(error("membrane sets this header itself".into()));
        }
        let text = if let Some(var) = value.strip_prefix("env:") {
            std::env::var(var)
                .map_err(|_| error(format!("the environment variable {var} is not set")))?
        } else if let Some(path) = value.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| error(format!("cannot read {path}: {e}")))?;
            text.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            value.clone()
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| error("the value is not valid header text".into()))?;
        value.set_sensitive(true);
        headers.append(header, value);
    }
    Ok(headers)
}

/// The `*.wasm` files in `dir` by file name, each with the settings in the `.toml` beside it.
fn plugins_in(dir: &Path) -> Result<Vec<PluginConfig>, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut wasm_files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    wasm_files.sort();
    wasm_files
        .into_iter()
        .map(|path| {
            let settings = path.with_extension("toml");
            if !settings.exists() {
                return Ok(PluginConfig::from_path(path));
            }
            let parse_error = |source| ConfigError::Parse {
                path: settings.clone(),
                source,
            };
            let text = std::fs::read_to_string(&settings).map_err(|source| ConfigError::Read {
                path: settings.clone(),
                source,
            })?;
            let mut table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
            table.insert("path".into(), path.to_string_lossy().into_owned().into());
            table.try_into().map_err(parse_error)
        })
        .collect()
}

/// Where the configuration comes from; read again on every reload.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    /// Plugins given on the command line, after those of the file.
    pub plugins: Vec<PathBuf>,
    /// A plugin directory given on the command line, in place of the file's.
    pub plugin_dir: Option<PathBuf>,
    /// A tape directory given on the command line, in place of the file's `[record] dir`.
    pub record: Option<PathBuf>,
    /// Clients come and go over HTTP, where a session has no connection whose end would end
    /// it: sessions without traffic then end after [`HTTP_IDLE_TIMEOUT`] unless configured.
    pub http_clients: bool,
}

/// How long an HTTP client's session may go without traffic, unless configured otherwise.
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.file {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config
            .plugins
            .extend(self.plugins.iter().cloned().map(PluginConfig::from_path));
        if let Some(dir) = &self.plugin_dir {
            config.plugin_dir = Some(dir.clone());
        }
        if let Some(dir) = &self.record {
            match &mut config.record {
                Some(record) => record.dir = dir.clone(),
                None => config.record = Some(RecordConfig::into_dir(dir.clone())),
            }
        }
        if self.http_clients {
            let idle = &mut config.session.idle_timeout_secs;
            idle.get_or_insert(HTTP_IDLE_TIMEOUT.as_secs());
        }
        Ok(config)
    }

    /// The files whose change calls for a reload: the config file, the listed plugins, the
    /// listener's certificate and key, the token and key set files; and the plugin directory,
    /// where any `*.wasm` or `*.toml` counts.
    pub fn watched(&self, config: &Config) -> (Vec<PathBuf>, Option<PathBuf>) {
        let mut files: Vec<PathBuf> = self.file.iter().cloned().collect();
        files.extend(config.plugins.iter().map(|plugin| plugin.path.clone()));
        if let Some(tls) = &config.tls {
            files.extend([tls.cert.clone(), tls.key.clone()]);
        }
        if let Some(auth) = &config.auth {
            files.extend(auth.bearer_tokens_file.clone());
            files.extend(auth.jwt.as_ref().and_then(|jwt| jwt.jwks_file.clone()));
        }
        (files, config.plugin_dir.clone())
    }
}

fn yes() -> bool {
    true
}

fn default_pool_size() -> u32 {
    256
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
    fn a_plugin_dir_adds_its_plugins_by_name_with_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        for name in ["b.wasm", "a.wasm", "notes.txt"] {
            std::fs::write(policies.join(name), b"").unwrap();
        }
        std::fs::write(
            policies.join("b.toml"),
            "grants = [\"log\", \"session-kv\", \"clock\"]\nfuel = 5\n[config]\nmax_calls = 3\n",
        )
        .unwrap();
        let path = dir.path().join("membrane.toml");
        std::fs::write(&path, "plugin_dir = \"policies\"\n[wasm]\npool_size = 0\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.wasm.pool_size(), None);
        let plugins = config.plugin_configs().unwrap();
        let names: Vec<String> = plugins.iter().map(PluginConfig::name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(plugins[0].grants(), Grants::from([Capability::Log]));
        assert_eq!(plugins[1].grants().len(), 3);
        assert_eq!(plugins[1].limits().fuel, Some(5));
        assert_eq!(
            plugins[1].config_json(),
            serde_json::json!({"max_calls": 3})
        );

        std::fs::write(policies.join("a.toml"), "name = \"b\"\n").unwrap();
        let error = config.plugin_configs().unwrap_err().to_string();
        assert!(error.contains("two plugins are named 'b'"), "{error}");
    }

    #[test]
    fn canaries_and_the_recorders_place_name_plugins_of_the_chain() {
        let chain = |extra: &str| {
            let text = format!(
                "[[plugins]]\nname = \"guard\"\npath = \"g.wasm\"\n[[plugins]]\nname = \"next\"\npath = \"n.wasm\"\n{extra}"
            );
            let config: Config = toml::from_str(&text).unwrap();
            config
                .plugin_configs()
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(chain("canary_of = \"guard\"\ncanary = 0.1\n"), Ok(()));
        for (extra, error) in [
            ("canary_of = \"nobody\"\ncanary = 0.1\n", "names no plugin"),
            ("canary_of = \"guard\"\ncanary = 1.5\n", "not a fraction"),
            ("canary = 0.1\n", "go together"),
            ("canary_of = \"next\"\ncanary = 0.1\n", "names no plugin"),
        ] {
            let refused = chain(extra).unwrap_err();
            assert!(refused.contains(error), "{extra}: {refused}");
        }
        let recorded = |after: &str| {
            let text = format!(
                "[record]\ndir = \"t\"\nafter = \"{after}\"\n[[plugins]]\nname = \"guard\"\npath = \"g.wasm\"\n"
            );
            let config: Config = toml::from_str(&text).unwrap();
            config.plugin_configs().map(|_| ())
        };
        assert!(recorded("guard").is_ok());
        assert!(recorded("nobody").is_err());
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
