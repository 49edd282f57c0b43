//! [`InterceptorChain`]: interceptors in configured order. Each is asked only about messages in
//! its [`Interest`]; a `Modify` feeds the next one, and the first action that is neither
//! `Continue` nor `Modify` stops the chain. A paused or delayed message later resumes from the
//! interceptor after the one that held it, and what its timeout means is the holder's
//! [`LinkPolicy`]. An interceptor that fails is settled by its [`FailurePolicy`]; one in
//! [`Mode::Audit`] is asked and its verdict noted, never enforced; a link with a canary asks
//! the candidate for a stable fraction of sessions instead. When the message's session is
//! recorded, the chain notes every verdict and the message as it reached the recorder's place
//! ([`ChainRecord`]). Each chain built by a reload carries a new version, so an operator knows
//! which chain held a message.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{
    ChainRecord, Holder, InterceptAction, InterceptContext, Interceptor, Interest, LinkVerdict,
    PauseTimeoutPolicy,
};
use crate::protocol::{Direction, MessageKind};
use crate::session::SessionId;

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

/// Whether an interceptor's verdicts take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// The interceptor runs and its verdict is logged, counted and recorded, but the message
    /// goes on as if it had said `Continue`.
    Audit,
}

/// What the operator configured for one interceptor of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkPolicy {
    pub on_error: FailurePolicy,
    /// What a message this interceptor paused becomes when nobody settles it in time; the
    /// `[pause]` policy when unset.
    pub on_pause_timeout: Option<PauseTimeoutPolicy>,
    pub mode: Mode,
}

struct Link {
    interceptor: Arc<dyn Interceptor>,
    policy: LinkPolicy,
    /// A candidate version asked instead of `interceptor` for this fraction of sessions.
    canary: Option<(Arc<dyn Interceptor>, LinkPolicy, f64)>,
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
    /// Where a recorded session's tape takes its copy of a message: before the link of this
    /// index (the chain's length: after every link).
    record_at: usize,
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
            policy,
            canary: None,
        });
        self
    }

    /// Has `candidate` stand in for the last interceptor appended, in `fraction` of sessions
    /// (the same sessions for as long as the chain serves them).
    pub fn with_canary(
        mut self,
        candidate: Arc<dyn Interceptor>,
        policy: LinkPolicy,
        fraction: f64,
    ) -> Self {
        if let Some(link) = self.links.last_mut() {
            link.canary = Some((candidate, policy, fraction.clamp(0.0, 1.0)));
        }
        self
    }

    /// Recorded sessions' tapes copy messages as they reach the link at `index` (so links
    /// before it, a secret redactor say, keep what they remove off the tape).
    pub fn recording_at(mut self, index: usize) -> Self {
        self.record_at = index;
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

    /// Who holds a message of `session` the chain paused, resuming at `resume_at` (see
    /// [`ChainOutcome`]).
    pub fn holder(&self, resume_at: usize, session: &SessionId) -> Holder {
        let link = resume_at.checked_sub(1).and_then(|i| self.links.get(i));
        let serving = link.map(|link| link.serving(session));
        Holder {
            plugin: serving.map(|(interceptor, _)| interceptor.name().into()),
            chain_version: self.version,
            on_timeout: serving.and_then(|(_, policy)| policy.on_pause_timeout),
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
        self.any_interest(|interest| interest.matches(direction, kind, method))
    }

    /// Whether any interceptor wants the answers (results or errors) travelling `direction` to
    /// requests of `method`: such a request is kept until answered, for plugins to read.
    pub fn wants_answers(&self, direction: Direction, method: &str) -> bool {
        self.any_interest(|interest| interest.matches_answers(direction, method))
    }

    /// Whether the interest of any interceptor, canaries included, is `wanted`.
    #[inline]
    fn any_interest(&self, wanted: impl Fn(&Interest) -> bool) -> bool {
        self.links.iter().any(|link| {
            wanted(link.interceptor.interest())
                || (link.canary.as_ref())
                    .is_some_and(|(candidate, ..)| wanted(candidate.interest()))
        })
    }

    /// Runs the interceptors from index `from` on; `ctx.message` ends as the chain left it.
    pub async fn run(&self, ctx: &mut InterceptContext, from: usize) -> ChainOutcome {
        for (index, link) in self.links.iter().enumerate().skip(from) {
            if index == self.record_at {
                ChainRecord::reached(ctx);
            }
            let (interceptor, policy) = link.serving(&ctx.session_id);
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
            let decided = match interceptor.intercept_now(ctx) {
                Some(decided) => decided,
                None => interceptor.intercept(ctx).await,
            };
            let (action, error) = match decided {
                Ok(action) => (action, None),
                Err(e) => (
                    fail(interceptor.name(), policy.on_error, &e.0, ctx),
                    Some(e.0),
                ),
            };
            if let Some(call) = call {
                call.verdict(action.name());
            }
            let enforced = policy.mode == Mode::Enforce;
            if let Some(record) = &mut ctx.record {
                record.verdicts.push(LinkVerdict::of(
                    interceptor.name(),
                    &action,
                    error,
                    enforced,
                ));
            }
            if !enforced {
                if action != InterceptAction::Continue {
                    tracing::info!(interceptor = interceptor.name(), session = %ctx.session_id.redacted(), method = ctx.method(), "audit mode, not enforced: {}", action.name());
                    ctx.unenforced
                        .push((interceptor.name().into(), action.name()));
                }
                continue;
            }
            if let Some(outcome) = self.settle(ctx, action, index) {
                return outcome;
            }
        }
        if self.record_at >= self.links.len() {
            ChainRecord::reached(ctx);
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
        let (interceptor, policy) = self.links[index].serving(&ctx.session_id);
        let name = interceptor.name();
        let action = match action {
            InterceptAction::Continue => return None,
            InterceptAction::Modify(message) => match message.validate() {
                Ok(MessageKind::Batch) => fail(
                    name,
                    policy.on_error,
                    "replaced a message with a batch",
                    ctx,
                ),
                Ok(_) => {
                    ctx.message = message;
                    ctx.modified = true;
                    return None;
                }
                Err(e) => {
                    let error = format!("replaced a message with an invalid one: {e}");
                    fail(name, policy.on_error, &error, ctx)
                }
            },
            InterceptAction::Delay { duration, then } => match *then {
                InterceptAction::Pause { .. } | InterceptAction::Delay { .. } => fail(
                    name,
                    policy.on_error,
                    "a delay must end in a final verdict",
                    ctx,
                ),
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
            stopped_by: Some(name.into()),
        })
    }
}

impl Link {
    /// The interceptor that serves `session`: the canary for its fraction of sessions.
    fn serving(&self, session: &SessionId) -> (&Arc<dyn Interceptor>, &LinkPolicy) {
        match &self.canary {
            Some((candidate, policy, fraction)) if in_fraction(session, *fraction) => {
                (candidate, policy)
            }
            _ => (&self.interceptor, &self.policy),
        }
    }
}

/// Whether `session` falls in the first `fraction` of sessions, by a hash of its id: the same
/// answer for the session's whole life, uniform over random ids.
fn in_fraction(session: &SessionId, fraction: f64) -> bool {
    let mut hasher = std::hash::DefaultHasher::new();
    session.as_str().hash(&mut hasher);
    (hasher.finish() as f64) < fraction * u64::MAX as f64
}

/// The action the failure policy dictates for a failed interceptor, logged.
fn fail(
    name: &str,
    on_error: FailurePolicy,
    error: &str,
    ctx: &InterceptContext,
) -> InterceptAction {
    tracing::warn!(
        interceptor = name,
        session = %ctx.session_id.redacted(),
        method = ctx.method(),
        policy = ?on_error,
        "interceptor failed: {error}"
    );
    match on_error {
        FailurePolicy::Continue => InterceptAction::Continue,
        FailurePolicy::Block => InterceptAction::Block {
            reason: format!("interceptor '{name}' failed"),
        },
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

    #[tokio::test]
    async fn audit_mode_notes_a_verdict_without_enforcing_it() {
        let audited = Scripted::new("audited", Ok(block("would")));
        let policy = LinkPolicy {
            mode: Mode::Audit,
            ..LinkPolicy::default()
        };
        let chain = InterceptorChain::new().with_policy(audited, policy);
        let mut ctx = ctx();
        ctx.record = Some(Box::default());
        assert_eq!(
            chain.run(&mut ctx, 0).await.action,
            InterceptAction::Continue
        );
        assert_eq!(ctx.unenforced, vec![(Arc::from("audited"), "block")]);
        let record = ctx.record.unwrap();
        assert!(!record.verdicts[0].enforced);
        assert_eq!(record.verdicts[0].reason.as_deref(), Some("would"));
    }

    #[tokio::test]
    async fn a_canary_serves_its_fraction_of_sessions_the_same_way_each_time() {
        let stable = Scripted::new("stable", Ok(InterceptAction::Continue));
        let candidate = Scripted::new("candidate", Ok(block("new")));
        let chain = |fraction| {
            InterceptorChain::new()
                .with(stable.clone(), FailurePolicy::Block)
                .with_canary(candidate.clone(), LinkPolicy::default(), fraction)
        };
        let (none, all, half) = (chain(0.0), chain(1.0), chain(0.5));
        let mut on_candidate = 0;
        for _ in 0..1000 {
            let session = SessionId::generate();
            let mut ctx = ctx();
            ctx.session_id = session.clone();
            assert_eq!(
                none.run(&mut ctx.clone(), 0).await.action,
                InterceptAction::Continue
            );
            assert_eq!(all.run(&mut ctx.clone(), 0).await.action, block("new"));
            let first = half.run(&mut ctx.clone(), 0).await;
            assert_eq!(
                half.run(&mut ctx, 0).await,
                first,
                "a session keeps its version"
            );
            on_candidate += usize::from(first.stopped_by.as_deref() == Some("candidate"));
        }
        assert!(
            (400..=600).contains(&on_candidate),
            "{on_candidate} of 1000"
        );
    }

    #[tokio::test]
    async fn the_tape_copies_a_message_where_the_recorder_sits() {
        let redact = Scripted::new("redact", Ok(InterceptAction::Modify(Message::new(LIST))));
        let after = Scripted::new("after", Ok(InterceptAction::Continue));
        let chain = |at| {
            InterceptorChain::new()
                .with(redact.clone(), FailurePolicy::Block)
                .with(after.clone(), FailurePolicy::Block)
                .recording_at(at)
        };
        for (at, seen) in [(0, CALL), (1, LIST), (2, LIST)] {
            let mut ctx = ctx();
            ctx.record = Some(Box::default());
            chain(at).run(&mut ctx, 0).await;
            let record = ctx.record.unwrap();
            assert_eq!(record.seen.unwrap().as_str(), seen, "recording at {at}");
            assert_eq!(record.verdicts.len(), 2);
        }
        let stopper = Scripted::new("stopper", Ok(block("no")));
        let chain = InterceptorChain::new()
            .with(stopper, FailurePolicy::Block)
            .recording_at(1);
        let mut ctx = ctx();
        ctx.record = Some(Box::default());
        chain.run(&mut ctx, 0).await;
        assert!(
            ctx.record.unwrap().seen.is_none(),
            "stopped before the recorder's place"
        );
    }
}
