//! [`WasmInterceptor`]: one loaded plugin. Loading compiles the component off the async
//! threads, links it, and starts a first instance whose `init` declares the plugin's interest.
//! Calls take a warm instance from a small pool (or start a fresh one) and put it back after a
//! clean call; an instance that trapped or ran out of time is dropped, never reused.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::value::RawValue;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::membrane::interceptor::types as wit;
use super::bindings::{Interceptor as Plugin, InterceptorPre as PluginPre};
use super::engine::{EPOCH_TICK, PluginEngine, PluginLimits};
use super::host::PluginState;
use crate::interceptor::{
    Filter, InterceptAction, InterceptContext, InterceptError, Interceptor, Interest,
};
use crate::protocol::{Direction, Message, MessageKind, result_response};
use crate::transport::TransportType;

/// Warm instances kept per plugin; more concurrent calls start extra instances that are
/// dropped afterwards.
const WARM_INSTANCES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin '{name}' from {path}: {source}")]
    Read {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("plugin '{name}' is not a membrane interceptor component: {reason}")]
    Invalid { name: String, reason: String },
    #[error("plugin '{name}' failed to start: {reason}")]
    Start { name: String, reason: String },
    #[error("plugin '{name}' rejected its configuration: {reason}")]
    Config { name: String, reason: String },
}

pub struct WasmInterceptor {
    name: Arc<str>,
    interest: Interest,
    engine: Arc<PluginEngine>,
    pre: PluginPre<PluginState>,
    /// The plugin's configuration as JSON text, handed to `init` on every new instance.
    config: String,
    limits: PluginLimits,
    warm: Mutex<Vec<Instance>>,
}

struct Instance {
    store: Store<PluginState>,
    plugin: Plugin,
}

impl WasmInterceptor {
    /// Loads, links and initialises a plugin from a `.wasm` component file.
    pub async fn load(
        engine: &Arc<PluginEngine>,
        name: &str,
        path: &Path,
        config: &serde_json::Value,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        let invalid = |reason: String| PluginError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            name: name.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
        // Compiling takes milliseconds to seconds: keep it off the async worker threads.
        let compiling = {
            let engine = engine.engine.clone();
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
        };
        let component = compiling
            .await
            .map_err(|e| invalid(e.to_string()))?
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;

        let mut interceptor = Self {
            name: name.into(),
            interest: Interest::none(),
            engine: engine.clone(),
            pre,
            config: config.to_string(),
            limits,
            warm: Mutex::default(),
        };
        let (instance, interest) = interceptor.start().await?;
        interceptor.interest = interest;
        interceptor.put_back(instance);
        tracing::info!(plugin = name, path = %path.display(), "loaded plugin");
        Ok(interceptor)
    }

    /// Starts a fresh instance and initialises it with the plugin's configuration.
    async fn start(&self) -> Result<(Instance, Interest), PluginError> {
        let start_error = |e: wasmtime::Error| PluginError::Start {
            name: self.name.to_string(),
            reason: format!("{e:#}"),
        };
        let mut store = Store::new(
            &self.engine.engine,
            PluginState::new(self.name.clone(), self.limits.max_memory),
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut store| {
            if Instant::now() >= store.data_mut().deadline {
                Err(wasmtime::Error::msg("time budget exceeded"))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        self.arm(&mut store);
        let plugin = self
            .within_budget(self.pre.instantiate_async(&mut store))
            .await
            .map_err(start_error)?;
        self.arm(&mut store);
        let declared = self
            .within_budget(plugin.call_init(&mut store, &self.config))
            .await
            .map_err(start_error)?
            .map_err(|reason| PluginError::Config {
                name: self.name.to_string(),
                reason,
            })?;
        Ok((Instance { store, plugin }, interest_from(&declared)))
    }

    /// Bounds a call in wall-clock time too: epochs only interrupt Wasm code, and a plugin could
    /// otherwise wait in a host call (a WASI poll, say) for as long as it likes. Most calls
    /// finish on their first poll; only one that waits (or yields at an epoch tick) pays for a
    /// timer.
    async fn within_budget<T>(
        &self,
        call: impl Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        let mut call = std::pin::pin!(call);
        if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
            return result;
        }
        tokio::time::timeout(self.limits.call_timeout + EPOCH_TICK, call)
            .await
            .unwrap_or_else(|_| Err(wasmtime::Error::msg("time budget exceeded")))
    }

    /// Gives the next call on this store its full time budget.
    fn arm(&self, store: &mut Store<PluginState>) {
        store.data_mut().deadline = Instant::now() + self.limits.call_timeout;
        store.set_epoch_deadline(1);
    }

    fn take_warm(&self) -> Option<Instance> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_back(&self, instance: Instance) {
        let mut warm = self.warm.lock().unwrap_or_else(|e| e.into_inner());
        if warm.len() < WARM_INSTANCES {
            warm.push(instance);
        }
    }
}

#[async_trait]
impl Interceptor for WasmInterceptor {
    fn name(&self) -> &str {
        &self.name
    }

    fn interest(&self) -> &Interest {
        &self.interest
    }

    async fn intercept(&self, ctx: &InterceptContext) -> Result<InterceptAction, InterceptError> {
        let mut instance = match self.take_warm() {
            Some(instance) => instance,
            None => {
                self.start()
                    .await
                    .map_err(|e| InterceptError(e.to_string()))?
                    .0
            }
        };
        let kind = ctx
            .message
            .kind()
            .ok_or_else(|| InterceptError("message has no envelope".into()))?;
        let message = wit::Message {
            json: ctx.message.as_str(),
            kind: wit_kind(kind)?,
            method: ctx.method(),
            id: ctx.message.id(),
            direction: wit_direction(ctx.direction),
            session_id: ctx.session_id.as_str(),
            transport: wit_transport(ctx.transport_type),
            protocol_version: ctx.protocol_version.as_deref(),
            frame_id: ctx.frame_id,
        };
        self.arm(&mut instance.store);
        let action = self
            .within_budget(instance.plugin.call_intercept(&mut instance.store, message))
            .await
            .map_err(|trap| InterceptError(format!("plugin trapped: {trap:#}")))?;
        self.put_back(instance);
        action_from(action, &ctx.message)
    }
}

fn interest_from(declared: &[wit::Filter]) -> Interest {
    Interest::any_of(declared.iter().map(filter_from).collect())
}

fn filter_from(declared: &wit::Filter) -> Filter {
    let directions: Vec<Direction> = declared
        .directions
        .iter()
        .map(|d| match d {
            wit::Direction::ClientToServer => Direction::ClientToServer,
            wit::Direction::ServerToClient => Direction::ServerToClient,
        })
        .collect();
    let kinds: Vec<MessageKind> = declared
        .kinds
        .iter()
        .map(|k| match k {
            wit::MessageKind::Request => MessageKind::Request,
            wit::MessageKind::Notification => MessageKind::Notification,
            wit::MessageKind::Response => MessageKind::Response,
            wit::MessageKind::Error => MessageKind::Error,
        })
        .collect();
    Filter::new(&declared.methods, &directions, &kinds)
}

fn wit_kind(kind: MessageKind) -> Result<wit::MessageKind, InterceptError> {
    Ok(match kind {
        MessageKind::Request => wit::MessageKind::Request,
        MessageKind::Notification => wit::MessageKind::Notification,
        MessageKind::Response => wit::MessageKind::Response,
        MessageKind::Error => wit::MessageKind::Error,
        MessageKind::Batch => {
            return Err(InterceptError("batches are split before plugins".into()));
        }
    })
}

fn wit_direction(direction: Direction) -> wit::Direction {
    match direction {
        Direction::ClientToServer => wit::Direction::ClientToServer,
        Direction::ServerToClient => wit::Direction::ServerToClient,
    }
}

fn wit_transport(transport: TransportType) -> wit::TransportType {
    match transport {
        TransportType::Stdio => wit::TransportType::Stdio,
        TransportType::StreamableHttp => wit::TransportType::StreamableHttp,
    }
}

fn action_from(action: wit::Action, message: &Message) -> Result<InterceptAction, InterceptError> {
    let verdict = match action {
        wit::Action::Pause(millis) => {
            let timeout = Duration::from_millis(millis);
            return Ok(InterceptAction::Pause { timeout });
        }
        wit::Action::Delay(delay) => {
            return Ok(InterceptAction::Delay {
                duration: Duration::from_millis(delay.millis),
                then: Box::new(verdict_from(delay.then, message)?),
            });
        }
        wit::Action::Continue => wit::Verdict::Continue,
        wit::Action::Modify(json) => wit::Verdict::Modify(json),
        wit::Action::Block(reason) => wit::Verdict::Block(reason),
        wit::Action::Mock(result) => wit::Verdict::Mock(result),
    };
    verdict_from(verdict, message)
}

fn verdict_from(
    verdict: wit::Verdict,
    message: &Message,
) -> Result<InterceptAction, InterceptError> {
    Ok(match verdict {
        wit::Verdict::Continue => InterceptAction::Continue,
        wit::Verdict::Modify(json) => InterceptAction::Modify(Message::new(json)),
        wit::Verdict::Block(reason) => InterceptAction::Block { reason },
        wit::Verdict::Mock(result) => {
            let id = message
                .id()
                .ok_or_else(|| InterceptError("mocked a message that has no id".into()))?;
            let result = RawValue::from_string(result)
                .map_err(|e| InterceptError(format!("mock result is not JSON: {e}")))?;
            InterceptAction::Mock {
                response: result_response(id, &result),
            }
        }
    })
}
