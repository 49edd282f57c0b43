//! Interception: what an interceptor sees ([`InterceptContext`]), what it may decide
//! ([`InterceptAction`]), what it declares it wants ([`Interest`]), the [`Interceptor`] trait that
//! native and Wasm interceptors share, the ordered [`InterceptorChain`] and the
//! [`PauseController`] that holds paused messages. No Wasm details live here.

mod chain;
mod interest;
mod pause;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use chain::{ChainOutcome, FailurePolicy, InterceptorChain, LinkPolicy, Mode};
pub use interest::{Filter, Interest};
pub use pause::{
    DEFAULT_MAX_HELD, Holder, Outcome, PauseController, PauseEvent, PauseTimeoutPolicy,
    PausedMessage, Resolution, SettleError, digest,
};

use crate::auth::Principal;
use crate::protocol::{Direction, Message};
use crate::session::SessionId;
use crate::transport::TransportType;

/// Everything an interceptor knows about a message.
#[derive(Debug, Clone)]
pub struct InterceptContext {
    pub message: Message,
    pub direction: Direction,
    pub session_id: SessionId,
    /// Who opened the session, when the client side authenticates.
    pub principal: Option<Arc<Principal>>,
    /// The transport the message arrived on.
    pub transport_type: TransportType,
    pub protocol_version: Option<Arc<str>>,
    /// For a response or error: the method of the request it answers.
    pub request_method: Option<String>,
    /// For a response or error: the request it answers, as it arrived, when the chain asked
    /// for answers to its method (plugins read its params).
    pub request: Option<Message>,
    /// Position of the message in its session, from 1.
    pub frame_id: u64,
    pub timestamp: Instant,
    pub metadata: BTreeMap<String, String>,
    /// Whether an interceptor (or an operator) replaced the message.
    pub modified: bool,
    /// Where interceptor calls are traced, when the message's request is.
    pub trace: Option<Arc<dyn CallTracer>>,
    /// What the chain did, noted when the session is recorded.
    pub record: Option<Box<ChainRecord>>,
    /// Verdicts of interceptors in audit mode that were not enforced: (interceptor, verdict).
    pub unenforced: Vec<(Arc<str>, &'static str)>,
}

impl InterceptContext {
    /// A context stamped now, with no protocol version, correlated request or metadata yet.
    pub fn new(
        message: Message,
        direction: Direction,
        session_id: SessionId,
        transport_type: TransportType,
        frame_id: u64,
    ) -> Self {
        Self {
            message,
            direction,
            session_id,
            principal: None,
            transport_type,
            protocol_version: None,
            request_method: None,
            request: None,
            frame_id,
            timestamp: Instant::now(),
            metadata: BTreeMap::new(),
            modified: false,
            trace: None,
            record: None,
            unenforced: Vec::new(),
        }
    }

    /// The message's method, or for an answer the method of the request it answers.
    pub fn method(&self) -> Option<&str> {
        self.message.method().or(self.request_method.as_deref())
    }

    /// The tool a `tools/call` request calls (parsed, so only on demand).
    pub fn tool_name(&self) -> Option<String> {
        if self.message.method() != Some("tools/call") {
            return None;
        }
        let message = self.message.to_value().ok()?;
        message["params"]["name"].as_str().map(str::to_owned)
    }
}

/// What an interceptor decides for a message.
#[derive(Debug, Clone, PartialEq)]
pub enum InterceptAction {
    /// Pass the message on unchanged.
    Continue,
    /// Replace the message; the next interceptor sees the replacement.
    Modify(Message),
    /// Do not deliver. A request is answered with a JSON-RPC error, an answer is replaced by
    /// one, a notification is dropped.
    Block { reason: String },
    /// Answer a request with this synthetic response instead of delivering it.
    Mock { response: Message },
    /// Hold the message in the [`PauseController`] until it is released or `timeout` runs out.
    Pause { timeout: Duration },
    /// Hold the message for `duration`, then apply `then`.
    Delay {
        duration: Duration,
        then: Box<InterceptAction>,
    },
}

impl InterceptAction {
    /// The verdict's name: `continue`, `modify`, `block`, `mock`, `pause` or `delay`.
    pub fn name(&self) -> &'static str {
        match self {
            InterceptAction::Continue => "continue",
            InterceptAction::Modify(_) => "modify",
            InterceptAction::Block { .. } => "block",
            InterceptAction::Mock { .. } => "mock",
            InterceptAction::Pause { .. } => "pause",
            InterceptAction::Delay { .. } => "delay",
        }
    }
}

/// What the chain did to one message of a recorded session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainRecord {
    /// The message as it reached the recorder's place in the chain; `None` when the chain
    /// stopped before it.
    pub seen: Option<Message>,
    /// Each interceptor's verdict, in chain order.
    pub verdicts: Vec<LinkVerdict>,
}

impl ChainRecord {
    /// Notes the message as it is now, unless an earlier copy was taken.
    pub(crate) fn reached(ctx: &mut InterceptContext) {
        if let Some(record) = &mut ctx.record
            && record.seen.is_none()
        {
            record.seen = Some(ctx.message.clone());
        }
    }
}

/// One interceptor's verdict on a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkVerdict {
    pub by: String,
    /// `continue`, `modify`, `block`, `mock`, `pause` or `delay`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the interceptor failed, when it did (its failure policy gave the verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `false` for an interceptor in audit mode: noted, not enforced.
    #[serde(default = "enforced", skip_serializing_if = "Clone::clone")]
    pub enforced: bool,
}

fn enforced() -> bool {
    true
}

impl LinkVerdict {
    pub fn of(by: &str, action: &InterceptAction, error: Option<String>, enforced: bool) -> Self {
        let reason = match action {
            InterceptAction::Block { reason } => Some(reason.clone()),
            _ => None,
        };
        Self {
            by: by.to_owned(),
            verdict: action.name().to_owned(),
            reason,
            error,
            enforced,
        }
    }
}

/// Traces interceptor calls (the telemetry room implements it): each call opens a span that
/// its verdict closes.
pub trait CallTracer: Send + Sync + std::fmt::Debug {
    fn start(&self, interceptor: &str) -> Box<dyn TracedCall>;
}

/// One interceptor call being traced.
pub trait TracedCall: Send {
    fn verdict(self: Box<Self>, verdict: &str);
}

/// An interceptor failed to decide (a Wasm trap, a malformed answer, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InterceptError(pub String);

/// Something that inspects messages and decides what happens to them.
#[async_trait]
pub trait Interceptor: Send + Sync {
    fn name(&self) -> &str;

    /// Which messages this interceptor wants; the chain never calls it for others.
    fn interest(&self) -> &Interest;

    async fn intercept(&self, ctx: &InterceptContext) -> Result<InterceptAction, InterceptError>;

    /// The decision at once, when this interceptor can make it without waiting; `None` sends
    /// the caller to [`Interceptor::intercept`]. It spares a decision that never waits (a Wasm
    /// plugin called directly) the boxed future of an async call.
    fn intercept_now(
        &self,
        _ctx: &InterceptContext,
    ) -> Option<Result<InterceptAction, InterceptError>> {
        None
    }
}
