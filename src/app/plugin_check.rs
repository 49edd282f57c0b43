//! `membrane plugin check`: whether this membrane will load a plugin, and why not. It reads the
//! component (the contract version it targets, each import and the capability it needs), loads
//! it as the configuration would (its `[[plugins]]` entry in `--config`: grants, limits, its
//! `[plugins.config]`; defaults otherwise), lists the filters its `init` declares, and calls it
//! on the sample messages it wants, with the verdict and the time each took.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, PluginConfig};
use crate::interceptor::{InterceptAction, InterceptContext, Interceptor};
use crate::protocol::{Direction, Message};
use crate::session::SessionManager;
use crate::transport::TransportType;
use crate::wasm::{
    CONTRACT_VERSION, EngineOptions, Import, LEGACY_CONTRACT_VERSION, PluginEngine, PluginEnv,
    WasmInterceptor, inspect,
};

/// Messages a plugin is tried on, when its filters want them: (what, direction, the method of
/// the request an answer answers, the message).
const SAMPLES: [(&str, Direction, Option<&str>, &str); 4] = [
    (
        "initialize request",
        Direction::ClientToServer,
        None,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"membrane-check","version":"0"}}}"#,
    ),
    (
        "tools/call of echo",
        Direction::ClientToServer,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}"#,
    ),
    (
        "tools/list answer",
        Direction::ServerToClient,
        Some("tools/list"),
        r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","description":"Echoes its message","inputSchema":{"type":"object","properties":{"message":{"type":"string"}}}}]}}"#,
    ),
    (
        "resources/read answer",
        Direction::ServerToClient,
        Some("resources/read"),
        r#"{"jsonrpc":"2.0","id":3,"result":{"contents":[{"uri":"file:///notes.txt","text":"ask alice@example.com"}]}}"#,
    ),
];

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub plugin: String,
    pub path: PathBuf,
    /// Where its settings came from: its `[[plugins]]` entry, or the defaults.
    pub settings: String,
    /// The contract it targets, when it is a component at all.
    pub contract: Option<String>,
    pub implemented: &'static str,
    pub imports: Vec<Import>,
    pub grants: Vec<&'static str>,
    /// Why this membrane will not load it; `None` when it will.
    pub refusal: Option<String>,
    pub filters: Vec<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct Sample {
    pub message: &'static str,
    /// Its verdict, `skipped` when its filters do not want the message, or `failed`.
    pub verdict: String,
    pub detail: Option<String>,
    pub micros: Option<f64>,
}

impl CheckReport {
    pub fn loads(&self) -> bool {
        self.refusal.is_none()
    }
}

/// Checks the plugin at `path` with its settings in `config`, if that lists it.
pub async fn check(path: &Path, config: Option<&Config>) -> CheckReport {
    let (plugin_config, settings) = settings_for(path, config);
    let mut report = CheckReport {
        plugin: plugin_config.name(),
        path: path.to_owned(),
        settings,
        contract: None,
        implemented: CONTRACT_VERSION,
        imports: Vec::new(),
        grants: plugin_config.grants().iter().map(|g| g.name()).collect(),
        refusal: None,
        filters: Vec::new(),
        samples: Vec::new(),
    };
    let refuse = |report: &mut CheckReport, why: String| report.refusal = Some(why);
    let spec = match plugin_config.spec() {
        Ok(spec) => spec,
        Err(e) => {
            refuse(&mut report, e.to_string());
            return report;
        }
    };
    let options = EngineOptions {
        pool_size: None,
        fuel: spec.limits.fuel.is_some(),
    };
    let engine = match PluginEngine::new(options) {
        Ok(engine) => engine,
        Err(e) => {
            refuse(
                &mut report,
                format!("cannot start the WebAssembly engine: {e:#}"),
            );
            return report;
        }
    };
    match inspect(&engine, &spec.bytes) {
        Ok((contract, imports)) => (report.contract, report.imports) = (Some(contract), imports),
        Err(why) => {
            refuse(&mut report, why);
            return report;
        }
    }
    let sessions = Arc::new(SessionManager::with_config(Default::default()));
    let env = PluginEnv {
        cache: None,
        sessions: Some(sessions.clone()),
    };
    let plugin = match WasmInterceptor::load(&engine, &spec, &env, Default::default()).await {
        Ok(plugin) => plugin,
        Err(e) => {
            refuse(&mut report, e.to_string());
            return report;
        }
    };
    report.filters = plugin
        .interest()
        .filters()
        .iter()
        .map(ToString::to_string)
        .collect();
    let stdio = TransportType::Stdio;
    let session = sessions.create(stdio, stdio, None).await.ok();
    for (what, direction, request_method, json) in SAMPLES {
        let message = Message::new(json);
        let kind = message.validate().expect("the samples are valid");
        let method = message.method().or(request_method);
        if !plugin.interest().matches(direction, kind, method) {
            report.samples.push(Sample {
                message: what,
                verdict: "skipped".into(),
                detail: Some("not in its filters".into()),
                micros: None,
            });
            continue;
        }
        let id = session
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_else(|| "check".into());
        let mut ctx = InterceptContext::new(message, direction, id, stdio, 1);
        ctx.request_method = request_method.map(str::to_owned);
        ctx.protocol_version = Some("2025-11-25".into());
        let started = Instant::now();
        let outcome = plugin.intercept(&ctx).await;
        let micros = Some(started.elapsed().as_secs_f64() * 1e6);
        let (verdict, detail) = match outcome {
            Ok(action) => (action.name().to_owned(), detail(&action)),
            Err(e) => ("failed".to_owned(), Some(e.0)),
        };
        report.samples.push(Sample {
            message: what,
            verdict,
            detail,
            micros,
        });
    }
    report
}

/// The plugin's `[[plugins]]` entry in `config` (the same file), else the defaults.
fn settings_for(path: &Path, config: Option<&Config>) -> (PluginConfig, String) {
    let same = |other: &Path| match (path.canonicalize(), other.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == other,
    };
    let listed = config
        .and_then(|config| config.plugin_configs().ok())
        .and_then(|plugins| plugins.into_iter().find(|p| same(&p.path)));
    match listed {
        Some(plugin) => {
            let name = plugin.name();
            (plugin, format!("its [[plugins]] entry '{name}'"))
        }
        None => (
            PluginConfig::from_path(path.to_owned()),
            "the defaults (no [[plugins]] entry for it in a --config)".into(),
        ),
    }
}

/// What an action does, in a few words.
fn detail(action: &InterceptAction) -> Option<String> {
    let short = |text: &str| {
        let mut text = text.to_owned();
        if text.len() > 120 {
            let cut = (0..=120)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        text
    };
    match action {
        InterceptAction::Continue => None,
        InterceptAction::Modify(message) => Some(format!("into {}", short(message.as_str()))),
        InterceptAction::Block { reason } => Some(reason.clone()),
        InterceptAction::Mock { response } => {
            let value = response.to_value().unwrap_or(Value::Null);
            Some(format!("with {}", short(&value["result"].to_string())))
        }
        InterceptAction::Pause { timeout } => Some(format!("for up to {timeout:?}")),
        InterceptAction::Delay { duration, then } => {
            Some(format!("{duration:?}, then {}", then.name()))
        }
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "plugin    {} ({})", self.plugin, self.path.display())?;
        writeln!(f, "settings  {}", self.settings)?;
        if let Some(contract) = &self.contract {
            writeln!(
                f,
                "contract  {contract} (this membrane implements membrane:interceptor@{}, and serves 0.1.x up to {LEGACY_CONTRACT_VERSION})",
                self.implemented
            )?;
        }
        if !self.imports.is_empty() {
            writeln!(f, "imports")?;
            let (wasi, contract): (Vec<&Import>, Vec<&Import>) = self
                .imports
                .iter()
                .partition(|i| i.name.starts_with("wasi:"));
            let width = contract.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for import in contract {
                let needs = match import.capability {
                    Some(capability) if self.grants.contains(&capability) => {
                        format!("needs '{capability}': granted")
                    }
                    Some(capability) => format!("needs '{capability}': NOT granted"),
                    None => "no grant needed".into(),
                };
                writeln!(f, "  {:<width$}  {needs}", import.name)?;
            }
            if !wasi.is_empty() {
                let mut packages: Vec<&str> = wasi
                    .iter()
                    .filter_map(|i| i.name.strip_prefix("wasi:")?.split('/').next())
                    .collect();
                packages.sort_unstable();
                packages.dedup();
                writeln!(
                    f,
                    "  WASI ({} interfaces of {}): present and empty; `clock` makes the clocks real",
                    wasi.len(),
                    packages.join(", ")
                )?;
            }
        }
        if !self.filters.is_empty() {
            writeln!(f, "filters   (what its init declares for these settings)")?;
            for filter in &self.filters {
                writeln!(f, "  {filter}")?;
            }
        }
        if !self.samples.is_empty() {
            writeln!(f, "samples")?;
            for sample in &self.samples {
                write!(f, "  {:<22} {}", sample.message, sample.verdict)?;
                if let Some(detail) = &sample.detail {
                    write!(f, ": {detail}")?;
                }
                if let Some(micros) = sample.micros {
                    write!(f, " ({micros:.0} µs)")?;
                }
                writeln!(f)?;
            }
        }
        match &self.refusal {
            None => writeln!(f, "verdict   this membrane will load it"),
            Some(why) => writeln!(f, "verdict   this membrane will NOT load it: {why}"),
        }
    }
}
