//! [`InterceptorChain`]: interceptors in configured order. Each is asked only about messages in
//! its [`Interest`]; a `Modify` feeds the next one, and the first action that is neither
//! `Continue` nor `Modify` stops the chain. A paused or delayed message later resumes from the
//! interceptor after the one that held it, and what its timeout means is the holder's
//! [`LinkPolicy`]. An interceptor that fails is settled by its [`FailurePolicy`]. Each chain
//! built by a reload carries a new version, so an operator knows which chain held a message.

use std::sync::Arc;

use super::{Holder, InterceptAction, InterceptContext, Interceptor, PauseTimeoutPolicy};
use crate::protocol::{Direction, MessageKind};

/// What happens to a message when its interceptor fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Fail open: the message goes on as if the interceptor had said `Continue`.
    Continue,
    /// Fail closed: the message is blocked.
    #[default]
    Block,
}

/// What the operator configured for one interceptor of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkPolicy {
    pub on_error: FailurePolicy,
    /// What a message this interceptor paused becomes when nobody settles it in time; the
    /// `[pause]` policy when unset.
    pub on_pause_timeout: Option<PauseTimeoutPolicy>,
}

struct Link {
    interceptor: Arc<dyn Interceptor>,
    on_error: FailurePolicy,
    on_pause_timeout: Option<PauseTimeoutPolicy>,
}

/// Where the chain stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainOutcome {
    /// `Continue` when every interceptor let the message pass (the context then holds the
    /// message as modified); otherwise the action that stopped the chain, never `Modify`.
    pub action: InterceptAction,
    /// Index of the interceptor after the one that stopped the chain.
    pub resume_at: usize,
    /// Name of the interceptor that stopped the chain.
    pub stopped_by: Option<Arc<str>>,
}

#[derive(Default)]
pub struct InterceptorChain {
    links: Vec<Link>,
    version: u64,
}

impl InterceptorChain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an interceptor.
    pub fn with(self, interceptor: Arc<dyn Interceptor>, on_error: FailurePolicy) -> Self {
        let policy = LinkPolicy {
            on_error,
            ..LinkPolicy::default()
        };
        self.with_policy(interceptor, policy)
    }

    /// Appends an interceptor with its policies.
    pub fn with_policy(mut self, interceptor: Arc<dyn Interceptor>, policy: LinkPolicy) -> Self {
        self.links.push(Link {
            interceptor,
            on_error: policy.on_error,
            on_pause_timeout: policy.on_pause_timeout,
        });
        self
    }

    /// Stamps the chain with its version.
    pub fn versioned(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Who holds a message the chain paused, resuming at `resume_at` (see [`ChainOutcome`]).
    pub fn holder(&self, resume_at: usize) -> Holder {
        let link = resume_at.checked_sub(1).and_then(|i| self.links.get(i));
        Holder {
            plugin: link.map(|link| link.interceptor.name().into()),
            chain_version: self.version,
            on_timeout: link.and_then(|link| link.on_pause_timeout),
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether any interceptor wants this message: the native fast path. It neither allocates
    /// nor touches the message body.
    #[inline]
    pub fn wants(&self, direction: Direction, kind: MessageKind, method: Option<&str>) -> bool {
        self.links
            .iter()
            .any(|link| link.interceptor.interest().matches(direction, kind, method))
    }

    /// Runs the interceptors from index `from` on; `ctx.message` ends as the chain left it.
    pub async fn run(&self, ctx: &mut InterceptContext, from: usize) -> ChainOutcome {
        for (index, link) in self.links.iter().enumerate().skip(from) {
            let interceptor = &link.interceptor;
            let Some(kind) = ctx.message.kind() else {
                break;
            };
            if !interceptor
                .interest()
                .matches(ctx.direction, kind, ctx.method())
            {
                continue;
            }
            let call = ctx
                .trace
                .as_ref()
                .map(|trace| trace.start(interceptor.name()));
            let action = match interceptor.intercept(ctx).await {
                Ok(action) => action,
                Err(e) => link.fail(&e.0, ctx),
            };
            if let Some(call) = call {
                call.verdict(action.name());
            }
            if let Some(outcome) = self.settle(ctx, action, index) {
                return outcome;
            }
        }
        ChainOutcome {
            action: InterceptAction::Continue,
            resume_at: self.links.len(),
            stopped_by: None,
        }
    }

    /// Applies the action of the interceptor at `index`: `Continue` and a valid `Modify` let the
    /// chain go on (`None`); any other action stops it.
    pub fn settle(
        &self,
        ctx: &mut InterceptContext,
        action: InterceptAction,
        index: usize,
    ) -> Option<ChainOutcome> {
        let link = &self.links[index];
        let action = match action {
            InterceptAction::Continue => return None,
            InterceptAction::Modify(message) => match message.validate() {
                Ok(MessageKind::Batch) => link.fail("replaced a message with a batch", ctx),
                Ok(_) => {
                    ctx.message = message;
                    ctx.modified = true;
                    return None;
                }
                Err(e) => link.fail(&format!("replaced a message with an invalid one: {e}"), ctx),
            },
            InterceptAction::Delay { duration, then } => match *then {
                InterceptAction::Pause { .. } | InterceptAction::Delay { .. } => {
                    link.fail("a delay must end in a final verdict", ctx)
                }
                then => InterceptAction::Delay {
                    duration,
                    then: Box::new(then),
                },
            },
            other => other,
        };
        if action == InterceptAction::Continue {
            return None;
        }
        Some(ChainOutcome {
            action,
            resume_at: index + 1,
            stopped_by: Some(link.interceptor.name().into()),
        })
    }
}

impl Link {
    /// The action the failure policy dictates, logged.
    fn fail(&self, error: &str, ctx: &InterceptContext) -> InterceptAction {
        let name = self.interceptor.name();
        tracing::warn!(
            interceptor = name,
            session = %ctx.session_id.redacted(),
            method = ctx.method(),
            policy = ?self.on_error,
            "interceptor failed: {error}"
        );
        match self.on_error {
            FailurePolicy::Continue => InterceptAction::Continue,
            FailurePolicy::Block => InterceptAction::Block {
                reason: format!("interceptor '{name}' failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::interceptor::{Filter, InterceptError, Interest};
    use crate::protocol::Message;
    use crate::session::SessionId;
    use crate::transport::TransportType;

    /// Answers with a fixed action and records the messages it saw.
    struct Scripted {
        name: String,
        interest: Interest,
        action: Result<InterceptAction, String>,
        seen: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(name: &str, action: Result<InterceptAction, String>) -> Arc<Self> {
            Arc::new(Self {
                name: name.into(),
                interest: Interest::all(),
                action,
                seen: Mutex::default(),
            })
        }
        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Interceptor for Scripted {
        fn name(&self) -> &str {
            &self.name
        }
        fn interest(&self) -> &Interest {
            &self.interest
        }
        async fn intercept(
            &self,
            ctx: &InterceptContext,
        ) -> Result<InterceptAction, InterceptError> {
            self.seen
                .lock()
                .unwrap()
                .push(ctx.message.as_str().to_owned());
            self.action.clone().map_err(InterceptError)
        }
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
    const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

    fn ctx() -> InterceptContext {
        InterceptContext::new(
            Message::new(CALL),
            Direction::ClientToServer,
            SessionId::from("s"),
            TransportType::Stdio,
            1,
        )
    }

    fn block(reason: &str) -> InterceptAction {
        InterceptAction::Block {
            reason: reason.into(),
        }
    }

    #[tokio::test]
    async fn modify_feeds_the_next_interceptor_and_block_stops_the_chain() {
        let modify = Scripted::new("modify", Ok(InterceptAction::Modify(Message::new(LIST))));
        let blocker = Scripted::new("block", Ok(block("no")));
        let after = Scripted::new("after", Ok(InterceptAction::Continue));
        let chain = InterceptorChain::new()
            .with(modify.clone(), FailurePolicy::Block)
            .with(blocker.clone(), FailurePolicy::Block)
            .with(after.clone(), FailurePolicy::Block);
        let mut ctx = ctx();
        let outcome = chain.run(&mut ctx, 0).await;
        assert_eq!(outcome.action, block("no"));
        assert_eq!(outcome.resume_at, 2);
        assert_eq!(outcome.stopped_by.as_deref(), Some("block"));
        assert_eq!(blocker.seen(), vec![LIST.to_owned()]);
        assert!(after.seen().is_empty());
    }

    #[tokio::test]
    async fn interest_keeps_interceptors_away_from_other_messages() {
        let picky = Arc::new(Scripted {
            interest: Filter::new(["resources/*"], &[], &[]).into(),
            ..Arc::into_inner(Scripted::new("picky", Ok(block("x")))).unwrap()
        });
        let chain = InterceptorChain::new().with(picky.clone(), FailurePolicy::Block);
        assert!(!chain.wants(
            Direction::ClientToServer,
            MessageKind::Request,
            Some("tools/call")
        ));
        assert!(chain.wants(
            Direction::ClientToServer,
            MessageKind::Request,
            Some("resources/read")
        ));
        let outcome = chain.run(&mut ctx(), 0).await;
        assert_eq!(outcome.action, InterceptAction::Continue);
        assert!(picky.seen().is_empty());
    }

    #[tokio::test]
    async fn failure_policy_settles_errors_and_invalid_modifications() {
        let broken = Scripted::new("broken", Err("trap".into()));
        let open = InterceptorChain::new().with(broken.clone(), FailurePolicy::Continue);
        assert_eq!(
            open.run(&mut ctx(), 0).await.action,
            InterceptAction::Continue
        );
        let closed = InterceptorChain::new().with(broken, FailurePolicy::Block);
        assert!(matches!(
            closed.run(&mut ctx(), 0).await.action,
            InterceptAction::Block { .. }
        ));

        let garbage = Scripted::new(
            "garbage",
            Ok(InterceptAction::Modify(Message::new("{oops"))),
        );
        let chain = InterceptorChain::new().with(garbage, FailurePolicy::Block);
        let mut ctx = ctx();
        assert!(matches!(
            chain.run(&mut ctx, 0).await.action,
            InterceptAction::Block { .. }
        ));
        assert_eq!(
            ctx.message.as_str(),
            CALL,
            "an invalid replacement is never applied"
        );
    }

    #[tokio::test]
    async fn a_paused_message_resumes_after_the_interceptor_that_held_it() {
        let pause = Scripted::new(
            "pause",
            Ok(InterceptAction::Pause {
                timeout: Duration::from_secs(1),
            }),
        );
        let after = Scripted::new("after", Ok(InterceptAction::Continue));
        let chain = InterceptorChain::new()
            .with(pause.clone(), FailurePolicy::Block)
            .with(after.clone(), FailurePolicy::Block);
        let mut ctx = ctx();
        let outcome = chain.run(&mut ctx, 0).await;
        assert!(matches!(outcome.action, InterceptAction::Pause { .. }));
        let resumed = chain.run(&mut ctx, outcome.resume_at).await;
        assert_eq!(resumed.action, InterceptAction::Continue);
        assert_eq!(pause.seen().len(), 1);
        assert_eq!(after.seen().len(), 1);
    }
}
