//! [`WasmInterceptor`]: one loaded plugin. Loading checks the component against the contract
//! version and the capabilities the operator granted, compiles it (or takes it from the
//! [`ComponentCache`]) off the async threads, links it, and starts a first instance whose
//! `init` declares the plugin's interest. Calls take a warm instance (or start one, within the
//! plugin's instance cap) and put it back after a clean call; an instance that failed in any way
//! is dropped, never reused, and instances are recycled after many calls. A 0.2 plugin is
//! called directly while it can be ([`super::direct`]), else on fibers. Every call is counted
//! in the plugin's [`PluginMetrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Instant;

use async_trait::async_trait;
use crossbeam_utils::atomic::AtomicCell;
use parking_lot::Mutex;
use semver::Version;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap, UpdateDeadline};

use super::cache::{ComponentCache, Origin};
use super::contract::{Decision, Plugin, PluginPre, action_from, start_direct};
use super::direct;
use super::engine::{EPOCH_TICK, PluginEngine, PluginLimits};
use super::host::PluginState;
use super::metrics::{Failure, PluginMetrics};
use super::spec::{Capability, Grants, PluginSpec};
use crate::interceptor::{
    InterceptAction, InterceptContext, InterceptError, Interceptor, Interest,
};
use crate::protocol::MessageKind;
use crate::session::SessionManager;

/// The version of the `membrane:interceptor` package this host implements (`wit/`).
pub const CONTRACT_VERSION: &str = "0.2.0";
/// The last release of the older line this host still serves (`wit/released/`).
pub const LEGACY_CONTRACT_VERSION: &str = "0.1.2";
const CONTRACT_PACKAGE: &str = "membrane:interceptor";

/// An instance is replaced after this many calls, so a plugin that leaks memory (or just
/// fragments it) starts afresh now and then.
const RECYCLE_AFTER_CALLS: u32 = 10_000;

/// How many direct calls of a plugin may run past a tick before it is called on fibers only.
const DIRECT_CHANCES: u32 = 3;

const POOL_FULL: &str = "the plugin instance pool is full; raise `pool_size` in the [wasm] section";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '{name}' is not a membrane interceptor component: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "plugin '{name}' targets {CONTRACT_PACKAGE}@{targets}, which this membrane does not support (it implements {CONTRACT_PACKAGE}@{CONTRACT_VERSION}, and serves plugins built for 0.1.x up to {LEGACY_CONTRACT_VERSION}); {advice}"
    )]
    Version {
        name: String,
        targets: String,
        advice: &'static str,
    },
    #[error(
        "plugin '{name}' imports {import}, which needs the capability '{capability}': add it to the plugin's `grants` to allow it"
    )]
    NotGranted {
        name: String,
        import: String,
        capability: &'static str,
    },
    #[error("plugin '{name}' failed to start: {reason}")]
    Start { name: String, reason: String },
    #[error("plugin '{name}' rejected its configuration: {reason}")]
    Config { name: String, reason: String },
}

/// What the host lends every plugin it loads.
#[derive(Clone, Default)]
pub struct PluginEnv {
    pub cache: Option<ComponentCache>,
    /// Where `session-kv` keeps its state; without it, that capability has no sessions.
    pub sessions: Option<Arc<SessionManager>>,
}

pub struct WasmInterceptor {
    name: Arc<str>,
    interest: Interest,
    engine: Arc<PluginEngine>,
    pre: PluginPre,
    /// The plugin linked for direct calls, when it is on the contract line that has them.
    direct_pre: Option<InstancePre<PluginState>>,
    /// Set once direct calls or starts failed: every call is made on a fiber from then on.
    fibers_only: AtomicBool,
    /// Direct calls that ran past an epoch tick.
    preemptions: AtomicU32,
    config: String,
    limits: PluginLimits,
    grants: Grants,
    /// The contract the component was built against, e.g. `membrane:interceptor@0.1.0`.
    contract: String,
    sessions: Option<Arc<SessionManager>>,
    /// One permit per live instance: at most `max_instances` exist.
    instances: Arc<Semaphore>,
    /// Signalled whenever an instance is put back or dropped, for calls waiting for one.
    freed: Arc<Freed>,
    /// The instance put back last: most calls take it and put it back without a lock (a box
    /// is one word, which `AtomicCell` swaps with one atomic instruction).
    hot: AtomicCell<Option<Box<Instance>>>,
    #[expect(
        clippy::vec_box,
        reason = "an instance moves boxed between `hot` and here"
    )]
    warm: Mutex<Vec<Box<Instance>>>,
    metrics: Arc<PluginMetrics>,
}

struct Instance {
    store: Store<PluginState>,
    plugin: Plugin,
    calls: u32,
    _slot: Slot,
}

/// An instance's place under the plugin's instance cap and in the engine's pool. Giving it up
/// wakes a call that waits for an instance.
struct Slot {
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    freed: Arc<Freed>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Release first, so that the woken call finds the permits free.
        self.permits.take();
        self.freed.wake();
    }
}

/// Calls waiting for an instance, and how they are woken. Most calls find one warm: counting the
/// waiters spares them a wake-up nobody waits for.
#[derive(Default)]
struct Freed {
    notify: Notify,
    waiting: AtomicUsize,
}

impl Freed {
    /// Wakes a waiting call, if any. A call counts itself waiting before it last looks for an
    /// instance, so one freed after that look is signalled, and one freed before it is found.
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }
}

/// A call counted as waiting for an instance until it is dropped.
struct Waiting<'a>(&'a Freed);

impl<'a> Waiting<'a> {
    fn on(freed: &'a Freed) -> Self {
        freed.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(freed)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call that produced no action.
struct CallError {
    failure: Failure,
    reason: String,
}

/// The error a call ends with when its time budget runs out.
#[derive(Debug, thiserror::Error)]
#[error("time budget exceeded")]
struct OutOfTime;

impl WasmInterceptor {
    /// Checks, compiles, links and initialises a plugin.
    pub async fn load(
        engine: &Arc<PluginEngine>,
        spec: &PluginSpec,
        env: &PluginEnv,
        metrics: Arc<PluginMetrics>,
    ) -> Result<Self, PluginError> {
        let name = spec.name.as_str();
        let invalid = |reason: String| PluginError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let compiling = {
            let (engine, bytes, cache) =
                (engine.engine.clone(), spec.bytes.clone(), env.cache.clone());
            tokio::task::spawn_blocking(move || match cache {
                Some(cache) => cache.load(&engine, &bytes),
                None => Component::from_binary(&engine, &bytes).map(|c| (c, Origin::Compiled)),
            })
        };
        let (component, origin) = compiling
            .await
            .map_err(|e| invalid(e.to_string()))?
            .map_err(|e| invalid(format!("{e:#}")))?;
        check_imports(name, &component, &engine.engine, &spec.grants)?;
        let contract = contract_of(&component, &engine.engine);
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let direct_pre = match pre {
            PluginPre::Current(_) => engine.direct_linker.instantiate_pre(&component).ok(),
            PluginPre::V0_1(_) => None,
        };

        let mut interceptor = Self {
            name: name.into(),
            interest: Interest::none(),
            engine: engine.clone(),
            pre,
            direct_pre,
            fibers_only: AtomicBool::new(false),
            preemptions: AtomicU32::new(0),
            config: spec.config.clone(),
            limits: spec.limits,
            grants: spec.grants.clone(),
            contract,
            sessions: env.sessions.clone(),
            instances: Arc::new(Semaphore::new(spec.limits.max_instances.max(1))),
            freed: Arc::default(),
            hot: AtomicCell::new(None),
            warm: Mutex::default(),
            metrics,
        };
        let slot = interceptor
            .slot()
            .ok()
            .flatten()
            .ok_or_else(|| PluginError::Start {
                name: name.to_owned(),
                reason: POOL_FULL.into(),
            })?;
        let (instance, interest) = interceptor.start(slot, true).await?;
        interceptor.interest = interest;
        if !spec.limits.fresh_instances {
            interceptor.put_back(instance);
        }
        tracing::info!(plugin = name, path = %spec.path.display(), compiled = matches!(origin, Origin::Compiled), direct = interceptor.calls_directly(), "loaded plugin");
        Ok(interceptor)
    }

    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.metrics
    }

    /// Instances that exist now (warm or in a call).
    pub fn instances_in_use(&self) -> usize {
        self.limits.max_instances.max(1) - self.instances.available_permits()
    }

    /// The contract the component was built against, e.g. `membrane:interceptor@0.1.0`.
    pub fn contract(&self) -> &str {
        &self.contract
    }

    /// Whether calls are made directly, without a fiber ([`super::direct`]).
    pub fn calls_directly(&self) -> bool {
        self.direct_pre.is_some() && !self.fibers_only.load(Ordering::Relaxed)
    }

    /// A direct call stopped (`why`) and is made again on a fiber. A plugin that would wait, or
    /// that has run past a tick [`DIRECT_CHANCES`] times (once could be the machine's doing:
    /// a thread descheduled mid-call), is called on fibers from then on.
    fn missed_direct_call(&self, why: &wasmtime::Error) {
        let preempted = self.preemptions.fetch_add(1, Ordering::Relaxed) + 1;
        if why.is::<direct::WouldWait>() || preempted >= DIRECT_CHANCES {
            self.call_on_fibers(why);
        }
    }

    /// Makes every call from now on on a fiber, because a direct one could not be made.
    fn call_on_fibers(&self, why: &wasmtime::Error) {
        if !self.fibers_only.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                plugin = &*self.name,
                "calls are made on fibers from now on: {why:#}"
            );
        }
    }

    /// A slot for one more instance: `None` at the plugin's instance cap, an error when the
    /// engine's pool is full.
    fn slot(&self) -> Result<Option<Slot>, String> {
        let Ok(instance) = self.instances.clone().try_acquire_owned() else {
            return Ok(None);
        };
        let pooled = self
            .engine
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| POOL_FULL)?;
        Ok(Some(Slot {
            permits: Some((instance, pooled)),
            freed: self.freed.clone(),
        }))
    }

    /// Starts a fresh instance and initialises it with the plugin's configuration: for direct
    /// calls when asked and the plugin has them, else (or if that fails) for calls on fibers.
    async fn start(
        &self,
        slot: Slot,
        direct: bool,
    ) -> Result<(Box<Instance>, Interest), PluginError> {
        let slot = if direct {
            match self.start_directly(slot) {
                Ok(started) => return started,
                Err(slot) => slot,
            }
        } else {
            slot
        };
        let start_error = |e: wasmtime::Error| PluginError::Start {
            name: self.name.to_string(),
            reason: format!("{e:#}"),
        };
        let mut store = self.store(false);
        self.arm(&mut store, Some(Instant::now()))
            .map_err(start_error)?;
        let plugin = self
            .within_budget(self.pre.instantiate_async(&mut store))
            .await
            .map_err(start_error)?;
        self.arm(&mut store, Some(Instant::now()))
            .map_err(start_error)?;
        let declared = self
            .within_budget(plugin.init(&mut store, &self.config))
            .await
            .map_err(start_error)?
            .map_err(|reason| self.config_error(reason))?;
        let instance = Box::new(Instance {
            store,
            plugin,
            calls: 0,
            _slot: slot,
        });
        Ok((instance, Interest::any_of(declared)))
    }

    /// Starts an instance for direct calls, at once, while the plugin is called directly. The
    /// slot comes back when it cannot be: the plugin is then called on fibers.
    fn start_directly(
        &self,
        slot: Slot,
    ) -> Result<Result<(Box<Instance>, Interest), PluginError>, Slot> {
        let Some(pre) = self.direct_pre.as_ref().filter(|_| self.calls_directly()) else {
            return Err(slot);
        };
        let mut store = self.store(true);
        let started = self
            .arm(&mut store, None)
            .and_then(|()| start_direct(pre, &mut store, &self.config));
        match started {
            Ok((plugin, declared)) => {
                Ok(declared
                    .map_err(|reason| self.config_error(reason))
                    .map(|declared| {
                        let instance = Box::new(Instance {
                            store,
                            plugin,
                            calls: 0,
                            _slot: slot,
                        });
                        (instance, Interest::any_of(declared))
                    }))
            }
            // Say, an import that waits (`session-kv`): a fiber can serve it.
            Err(e) => {
                self.call_on_fibers(&e);
                Err(slot)
            }
        }
    }

    fn config_error(&self, reason: String) -> PluginError {
        PluginError::Config {
            name: self.name.to_string(),
            reason,
        }
    }

    /// A store for one instance, its calls `direct` or on fibers. Past its epoch deadline a
    /// direct call is preempted; a call on a fiber yields, until its time is up.
    fn store(&self, direct: bool) -> Store<PluginState> {
        let state = PluginState::new(
            self.name.clone(),
            self.limits.max_memory,
            &self.grants,
            self.sessions.clone(),
            direct,
        );
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut store| {
            if store.data().direct {
                Err(direct::Preempted.into())
            } else if Instant::now() >= store.data_mut().deadline {
                Err(OutOfTime.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
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
            .unwrap_or_else(|_| Err(OutOfTime.into()))
    }

    /// Gives the next call on this store its full time (and fuel) budget, counted from `now`.
    /// A direct call has no wall-clock deadline: it gets at least one whole epoch tick before
    /// it is preempted.
    fn arm(&self, store: &mut Store<PluginState>, now: Option<Instant>) -> wasmtime::Result<()> {
        if let Some(now) = now {
            store.data_mut().deadline = now + self.limits.call_timeout;
        }
        store.set_epoch_deadline(if store.data().direct { 2 } else { 1 });
        if self.engine.options.fuel {
            store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX))?;
        }
        Ok(())
    }

    /// A warm instance for `direct` calls or calls on fibers; else a new one while the plugin
    /// is below its instance cap; else the first one to come back before `deadline`.
    async fn instance(&self, deadline: Instant, direct: bool) -> Result<Box<Instance>, CallError> {
        if let Some(instance) = self.take_warm(direct) {
            return Ok(instance);
        }
        let unavailable = |reason: String| CallError {
            failure: Failure::Unavailable,
            reason,
        };
        let _waiting = Waiting::on(&self.freed);
        loop {
            let freed = self.freed.notify.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(instance) = self.take_warm(direct) {
                return Ok(instance);
            }
            if let Some(slot) = self.slot().map_err(unavailable)? {
                let (instance, _) = self.start(slot, direct).await.map_err(|e| CallError {
                    failure: Failure::Trap,
                    reason: e.to_string(),
                })?;
                return Ok(instance);
            }
            tokio::time::timeout_at(deadline.into(), freed)
                .await
                .map_err(|_| {
                    unavailable("every instance stayed busy for the whole time budget".into())
                })?;
        }
    }

    /// A call as the chain makes it when the plugin cannot decide at once.
    async fn call(
        &self,
        ctx: &InterceptContext,
        started: Instant,
    ) -> Result<InterceptAction, CallError> {
        let kind = kind_of(ctx)?;
        let deadline = started + self.limits.call_timeout;
        let mut instance = self.instance(deadline, self.calls_directly()).await?;
        let mut outcome = self.intercept_on(&mut instance, ctx, kind, started).await;
        if let Err(e) = &outcome
            && direct::needs_fiber(e)
        {
            // The instance is dropped: it stopped mid-call. The call is made again, whole.
            self.missed_direct_call(e);
            instance = self.instance(deadline, false).await?;
            outcome = self.intercept_on(&mut instance, ctx, kind, started).await;
        }
        self.finish(instance, outcome, ctx)
    }

    /// A direct call, made at once; `None` when it cannot be (the plugin is called on fibers,
    /// every instance is busy, or the call needs a fiber), for the async path to make.
    fn call_now(&self, ctx: &InterceptContext) -> Option<Result<InterceptAction, CallError>> {
        let kind = match kind_of(ctx) {
            Ok(kind) => kind,
            Err(e) => return Some(Err(e)),
        };
        let mut instance = match self.take_warm(true) {
            Some(instance) => instance,
            // Below the instance cap, a new one is started at once; else the call waits for
            // one on the async path.
            None => match self.start_directly(self.slot().ok().flatten()?) {
                Ok(Ok((instance, _))) => instance,
                Ok(Err(_)) | Err(_) => return None,
            },
        };
        let outcome = self.arm(&mut instance.store, None).and_then(|()| {
            instance
                .plugin
                .intercept_directly(&mut instance.store, ctx, kind)
        });
        if let Err(e) = &outcome
            && direct::needs_fiber(e)
        {
            self.missed_direct_call(e);
            return None;
        }
        Some(self.finish(instance, outcome, ctx))
    }

    /// The end of a call: the instance goes back to the warm ones after a clean call, and the
    /// plugin's decision becomes the chain's action.
    fn finish(
        &self,
        mut instance: Box<Instance>,
        outcome: wasmtime::Result<Decision>,
        ctx: &InterceptContext,
    ) -> Result<InterceptAction, CallError> {
        let action = outcome.map_err(|e| CallError {
            failure: if e.is::<OutOfTime>() || e.downcast_ref() == Some(&Trap::OutOfFuel) {
                Failure::Timeout
            } else {
                Failure::Trap
            },
            reason: format!("plugin trapped: {e:#}"),
        })?;
        instance.calls += 1;
        if !self.limits.fresh_instances && instance.calls < RECYCLE_AFTER_CALLS {
            self.put_back(instance);
        }
        action_from(action, &ctx.message).map_err(|e| CallError {
            failure: Failure::BadAction,
            reason: e.0,
        })
    }

    /// One call of `intercept` on `instance`, within what is left of the budget of the call
    /// that `started`.
    async fn intercept_on(
        &self,
        instance: &mut Instance,
        ctx: &InterceptContext,
        kind: MessageKind,
        started: Instant,
    ) -> wasmtime::Result<Decision> {
        self.arm(&mut instance.store, Some(started))?;
        let state = instance.store.data_mut();
        state.session = Some(ctx.session_id.clone());
        state.principal = ctx.principal.clone();
        let action = self
            .within_budget(instance.plugin.intercept(&mut instance.store, ctx, kind))
            .await;
        let state = instance.store.data_mut();
        state.session = None;
        state.principal = None;
        action
    }

    /// A warm instance for `direct` calls or calls on fibers. One of the other kind is dropped:
    /// instances made for direct calls once the plugin is called on fibers, and the rare one
    /// made on a fiber for a call that could not be direct.
    fn take_warm(&self, direct: bool) -> Option<Box<Instance>> {
        if let Some(instance) = self.hot.take()
            && instance.store.data().direct == direct
        {
            return Some(instance);
        }
        let mut warm = self.warm.lock();
        while let Some(instance) = warm.pop() {
            if instance.store.data().direct == direct {
                return Some(instance);
            }
        }
        None
    }

    fn put_back(&self, instance: Box<Instance>) {
        if let Some(previous) = self.hot.swap(Some(instance)) {
            self.warm.lock().push(previous);
        }
        // The swap (an acquire-release exchange) orders this after a waiter's count and
        // before its look at `hot`, as the lock does for `warm`.
        self.freed.wake();
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

    fn intercept_now(
        &self,
        ctx: &InterceptContext,
    ) -> Option<Result<InterceptAction, InterceptError>> {
        if !self.calls_directly() {
            return None;
        }
        let started = quanta::Instant::now();
        let outcome = self.call_now(ctx)?;
        Some(self.counted(started, outcome))
    }

    async fn intercept(&self, ctx: &InterceptContext) -> Result<InterceptAction, InterceptError> {
        let started = quanta::Instant::now();
        let outcome = self.call(ctx, Instant::now()).await;
        self.counted(started, outcome)
    }
}

impl WasmInterceptor {
    /// A call's outcome, counted in the plugin's metrics. Calls are timed with the CPU's
    /// time-stamp counter (`quanta`): a direct call costs a few hundred nanoseconds, and two
    /// reads of the system clock would be a tenth of that.
    fn counted(
        &self,
        started: quanta::Instant,
        outcome: Result<InterceptAction, CallError>,
    ) -> Result<InterceptAction, InterceptError> {
        let recorded = outcome.as_ref().map_err(|e| e.failure);
        self.metrics.record(started.elapsed(), recorded);
        outcome.map_err(|e| InterceptError(e.reason))
    }
}

/// The kind of the message a plugin is asked about: never a batch (they are split before).
fn kind_of(ctx: &InterceptContext) -> Result<MessageKind, CallError> {
    let bad_action = |reason: &str| CallError {
        failure: Failure::BadAction,
        reason: reason.to_owned(),
    };
    match ctx.message.kind() {
        None => Err(bad_action("message has no envelope")),
        Some(MessageKind::Batch) => Err(bad_action("batches are split before plugins")),
        Some(kind) => Ok(kind),
    }
}

/// An import of a component, and the capability the operator must grant for it, if any.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Import {
    pub name: String,
    pub capability: Option<&'static str>,
}

/// What a component is built against and imports, read without instantiating it.
pub fn inspect(engine: &PluginEngine, bytes: &[u8]) -> Result<(String, Vec<Import>), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {} // a component (layer 1)
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => {
            return Err("a core WebAssembly module, not a component: build it for wasm32-wasip2, or wrap it with `wasm-tools component new`".into());
        }
        _ => return Err("not WebAssembly (no `\\0asm` header)".into()),
    }
    let component = Component::from_binary(&engine.engine, bytes)
        .map_err(|e| format!("not a valid WebAssembly component: {e}"))?;
    let contract = contract_of(&component, &engine.engine);
    let prefix = format!("{CONTRACT_PACKAGE}/");
    let imports = component
        .component_type()
        .imports(&engine.engine)
        // A type the world names (0.2's `message`) is part of an interface already listed.
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Type(_) | ComponentItem::Resource(_)))
        .map(|(name, _)| {
            let interface = name
                .strip_prefix(&prefix)
                .map(|rest| rest.split_once('@').map_or(rest, |(i, _)| i));
            let capability = [Capability::Log, Capability::SessionKv]
                .into_iter()
                .find(|capability| interface.is_some() && capability.interface() == interface)
                .map(Capability::name);
            Import {
                name: name.to_owned(),
                capability,
            }
        })
        .collect();
    Ok((contract, imports))
}

/// The contract package and version a component was built against, as its imports of the
/// contract's interfaces (its types, at least) name it.
fn contract_of(component: &Component, engine: &wasmtime::Engine) -> String {
    let prefix = format!("{CONTRACT_PACKAGE}/");
    let kind = component.component_type();
    kind.imports(engine)
        .map(|(name, _)| name)
        .chain(kind.exports(engine).map(|(name, _)| name))
        .find_map(|export| {
            let (_, version) = export.strip_prefix(&prefix)?.split_once('@')?;
            Some(format!("{CONTRACT_PACKAGE}@{version}"))
        })
        .unwrap_or_else(|| CONTRACT_PACKAGE.to_owned())
}

/// Refuses a plugin that targets a contract version this host cannot serve, or that imports an
/// interface whose capability the operator did not grant.
fn check_imports(
    name: &str,
    component: &Component,
    engine: &wasmtime::Engine,
    grants: &Grants,
) -> Result<(), PluginError> {
    let served = [CONTRACT_VERSION, LEGACY_CONTRACT_VERSION]
        .map(|version| Version::parse(version).expect("contract versions are semver"));
    let prefix = format!("{CONTRACT_PACKAGE}/");
    for (import, _) in component.component_type().imports(engine) {
        let Some(rest) = import.strip_prefix(&prefix) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let unsupported = |advice| PluginError::Version {
            name: name.to_owned(),
            targets: version.to_owned(),
            advice,
        };
        let version = Version::parse(version)
            .map_err(|_| unsupported("its contract version is not semver"))?;
        let newer = "it is newer than this membrane: upgrade membrane, or rebuild the plugin against a contract version it serves";
        match served.iter().find(|line| same_line(line, &version)) {
            Some(latest) if version > *latest => return Err(unsupported(newer)),
            Some(_) => {}
            None if version > served[0] => return Err(unsupported(newer)),
            None => {
                return Err(unsupported(
                    "rebuild it against a contract version this membrane serves",
                ));
            }
        }
        let capability = [Capability::Log, Capability::SessionKv]
            .into_iter()
            .find(|capability| capability.interface() == Some(interface));
        if let Some(capability) = capability
            && !grants.contains(&capability)
        {
            return Err(PluginError::NotGranted {
                name: name.to_owned(),
                import: import.to_owned(),
                capability: capability.name(),
            });
        }
    }
    Ok(())
}

/// Whether two versions are semver-compatible: the same major version, or below 1.0 the same
/// minor version.
fn same_line(a: &Version, b: &Version) -> bool {
    match (a.major, b.major) {
        (0, 0) => a.minor == b.minor,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hot_instance_is_swapped_without_a_lock() {
        use crossbeam_utils::atomic::AtomicCell;
        assert!(AtomicCell::<Option<Box<super::Instance>>>::is_lock_free());
    }
}
