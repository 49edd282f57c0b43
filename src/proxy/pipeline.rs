//! [`Pipeline`]: what happens to every message, whichever transports carry it. A message is
//! validated (envelope only), correlated with its session's pending requests, and, when no
//! interceptor wants it, forwarded as the very bytes it arrived in. Otherwise it goes through the
//! [`InterceptorChain`] and the outcome is enacted: forwarded (maybe modified), answered with an
//! error or a mock, or held (pause, delay) on a task of its own while the rest of the session's
//! traffic goes on. Bad input is answered with a JSON-RPC error and never reaches the other side,
//! and so is a request past the session's bound on requests awaiting answers. An answer that
//! matches no request awaiting one (late, duplicate, after a cancel) is dropped and counted: it
//! could otherwise slip past interceptors that look at answers by their request's method.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;

use crate::auth::Principal;

use arc_swap::{ArcSwap, Guard};
use tokio_util::task::TaskTracker;

use crate::interceptor::{
    CallTracer, ChainOutcome, InterceptAction, InterceptContext, InterceptorChain, PauseController,
    Resolution,
};
use crate::protocol::{
    CANCELLED, Direction, ErrorCode, INITIALIZE, Message, MessageKind, error_response, id_key,
};
use crate::record::{SessionTape, TapeEntry, TapeRecorder};
use crate::session::{
    LiveSession, PendingRequest, Session, SessionError, SessionId, SessionManager, SessionStatus,
    Verdict,
};
use crate::telemetry::{Audit, Metrics, PluginTracer, RequestInfo, RequestTrace, Tracing};
use crate::transport::{Cancel, Frame, Outbox, Sending, TransportType};

/// The shared machinery every session's messages pass through.
pub struct Pipeline {
    pub sessions: Arc<SessionManager>,
    /// The current chain snapshot; a reload swaps it, and a message keeps the snapshot it
    /// started with until it is delivered.
    pub chain: Arc<ArcSwap<InterceptorChain>>,
    pub pauses: Arc<PauseController>,
    pub max_message_size: usize,
    /// Messages in one JSON-RPC batch.
    pub max_batch_size: usize,
    /// Answers dropped because no request awaited them.
    pub unmatched_answers: AtomicU64,
    /// What operators graph: messages, sessions, upstream latency.
    pub metrics: Arc<Metrics>,
    /// Where verdicts other than continue are recorded, when `[audit]` is configured.
    pub audit: Option<Arc<Audit>>,
    /// Where requests are traced, when `[telemetry]` names an OTLP endpoint.
    pub tracing: Option<Arc<Tracing>>,
    /// Where sessions are recorded, when `[record]` is configured.
    pub recorder: Option<Arc<TapeRecorder>>,
}

/// The default bound on messages in one batch.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;

impl Pipeline {
    pub fn new(
        sessions: Arc<SessionManager>,
        chain: Arc<ArcSwap<InterceptorChain>>,
        pauses: Arc<PauseController>,
        max_message_size: usize,
    ) -> Self {
        Self {
            sessions,
            chain,
            pauses,
            max_message_size,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            unmatched_answers: AtomicU64::new(0),
            metrics: Arc::default(),
            audit: None,
            tracing: None,
            recorder: None,
        }
    }
}

/// What tracking decided for a message.
enum Tracked {
    /// On it goes; for an answer, with the request it answers, and for the
    /// handshake's two messages, the session status they bring once their protocol version
    /// is noted.
    Go(Option<PendingRequest>, Option<SessionStatus>),
    /// A request refused (the session's bound on requests awaiting answers).
    Refused(SessionError),
    /// An answer no request awaits.
    Unmatched,
}

/// The method of the request an answer answers.
fn answered_method(answered: &Option<PendingRequest>) -> Option<&str> {
    answered.as_ref().map(|request| request.method.as_str())
}

/// What the pipeline keeps at hand for one session, to avoid a store read per message.
pub struct SessionContext {
    pub id: SessionId,
    /// What changes with every message: requests awaiting answers, last activity.
    live: Arc<LiveSession>,
    principal: Option<Arc<Principal>>,
    client_transport: TransportType,
    upstream_transport: TransportType,
    protocol_version: Mutex<Option<Arc<str>>>,
    /// The client's `clientInfo`, from its initialize request until the server answers.
    client_info: Mutex<Option<serde_json::Value>>,
    frames: AtomicU64,
    /// The upstream's own id for the session, once its handshake gives one.
    upstream_session_id: Arc<OnceLock<String>>,
    /// Messages held by a pause or a delay, each on a task of its own.
    pub(super) held: TaskTracker,
    /// Fires when the session starts to end: held messages are then blocked, not delivered.
    pub(super) ending: Cancel,
    /// The spans of traced requests awaiting their answers, by [`id_key`]: as bounded as the
    /// requests awaiting answers, since every way a request leaves them takes its span too.
    traces: Mutex<HashMap<String, RequestTrace>>,
    /// The session's tape, when it is recorded.
    pub(super) tape: Option<SessionTape>,
}

impl SessionContext {
    pub fn new(
        session: &Session,
        live: Arc<LiveSession>,
        upstream_session_id: Arc<OnceLock<String>>,
    ) -> Self {
        Self {
            id: session.id.clone(),
            live,
            principal: session.principal.clone(),
            client_transport: session.client_transport,
            upstream_transport: session.upstream_transport,
            protocol_version: Mutex::new(session.protocol_version.as_deref().map(Arc::from)),
            client_info: Mutex::default(),
            frames: AtomicU64::new(0),
            upstream_session_id,
            held: TaskTracker::new(),
            ending: Cancel::new(),
            traces: Mutex::default(),
            tape: None,
        }
    }

    /// Records what became of the message in `ctx`: delivered (as `delivered` when it differs
    /// from what the tape copied) or answered in its place with `answer`.
    fn record(
        &self,
        ctx: &InterceptContext,
        delivered: Option<&Message>,
        answer: Option<&Message>,
    ) {
        let Some(tape) = &self.tape else {
            return;
        };
        let record = ctx.record.as_deref();
        let message = record.and_then(|record| record.seen.clone());
        let delivered = delivered
            .filter(|delivered| message.as_ref().is_none_or(|m| m.raw() != delivered.raw()));
        tape.record(TapeEntry {
            t: tape.elapsed(),
            direction: ctx.direction,
            message,
            verdicts: record.map(|r| r.verdicts.clone()).unwrap_or_default(),
            delivered: delivered.cloned(),
            answer: answer.cloned(),
        });
    }

    /// Records a message no interceptor wanted, forwarded as it came.
    fn record_passed(&self, direction: Direction, message: &Message) {
        if let Some(tape) = &self.tape {
            tape.record(TapeEntry {
                t: tape.elapsed(),
                direction,
                message: Some(message.clone()),
                verdicts: Vec::new(),
                delivered: None,
                answer: None,
            });
        }
    }

    /// What interceptors see of a message that arrived travelling `direction`.
    fn context(
        &self,
        direction: Direction,
        message: Message,
        answered: Option<PendingRequest>,
        frame_id: u64,
    ) -> InterceptContext {
        let transport = match direction {
            Direction::ClientToServer => self.client_transport,
            Direction::ServerToClient => self.upstream_transport,
        };
        let mut ctx =
            InterceptContext::new(message, direction, self.id.clone(), transport, frame_id);
        ctx.protocol_version = self.protocol_version();
        if let Some(answered) = answered {
            ctx.request_method = Some(answered.method);
            ctx.request = answered.request;
        }
        ctx.principal = self.principal.clone();
        ctx
    }

    /// The span of a traced request, once it is answered.
    fn answered(&self, request_id: &str, answer: &Message) {
        if let Some(trace) = self.forget_trace(request_id) {
            Tracing::answered(trace, answer);
        }
    }

    /// Takes the span of a traced request out of those awaiting answers (dropped, it ends).
    fn forget_trace(&self, request_id: &str) -> Option<RequestTrace> {
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        traces.remove(id_key(request_id).as_ref())
    }

    fn protocol_version(&self) -> Option<Arc<str>> {
        self.protocol_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What is left of handling a message once its synchronous part is done: nothing, a wait for
/// room in the peer's queue, or the rest (an interceptor's work, an error to send) on the heap,
/// where it lives only while it runs, so the tasks that await it stay small while idle.
pub enum Rest<'a> {
    Done,
    Sending(Sending<'a>),
    Boxed(futures::future::BoxFuture<'a, ()>),
}

impl<'a> Rest<'a> {
    fn boxed(rest: impl Future<Output = ()> + Send + 'a) -> Self {
        Rest::Boxed(Box::pin(rest))
    }
}

impl Future for Rest<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Rest::Done => Poll::Ready(()),
            Rest::Sending(sending) => Pin::new(sending).poll(cx).map(drop),
            Rest::Boxed(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// One direction of a session: where its messages go, and where answers to their sender go.
#[derive(Clone)]
pub struct Lane {
    pub direction: Direction,
    pub forward: Outbox,
    pub reply: Outbox,
}

impl Pipeline {
    /// Handles one frame that arrived on `lane`: all of it at once when it is forwarded as it
    /// came, and what is left (a full queue's wait, an interceptor's work) in the future it
    /// returns.
    pub fn process<'a>(
        self: &'a Arc<Self>,
        session: &'a Arc<SessionContext>,
        lane: &'a Lane,
        frame: Frame,
    ) -> Rest<'a> {
        let frame_id = session.frames.fetch_add(1, Ordering::Relaxed) + 1;
        session.live.count_message(lane.direction);
        let message = match frame {
            Frame::Message(message) => message,
            Frame::Oversized { len, id, request } => {
                return Rest::boxed(self.reject_oversized(session, lane, len, id, request));
            }
        };
        let kind = match message.validate() {
            Ok(MessageKind::Batch) => {
                return Rest::boxed(self.process_batch(session, lane, message, frame_id));
            }
            Ok(kind) => kind,
            Err(e) => {
                return Rest::boxed(async move {
                    self.reject_invalid(lane, &e.to_string(), e.code()).await
                });
            }
        };
        match self.track(session, lane.direction, &message, kind) {
            Tracked::Go(answered, None) => {
                self.route(session, lane, message, kind, answered, frame_id)
            }
            Tracked::Go(answered, Some(status)) => Rest::boxed(async move {
                self.note_protocol_version(session, &message, status).await;
                self.route(session, lane, message, kind, answered, frame_id)
                    .await
            }),
            Tracked::Refused(reason) => {
                Rest::boxed(async move { self.refuse(lane, &message, &reason).await })
            }
            Tracked::Unmatched => {
                self.drop_unmatched(session, lane, &message);
                Rest::Done
            }
        }
    }

    /// Forwards a tracked message untouched when no interceptor wants it; otherwise runs the
    /// chain and enacts its outcome.
    fn route<'a>(
        self: &'a Arc<Self>,
        session: &'a Arc<SessionContext>,
        lane: &'a Lane,
        message: Message,
        kind: MessageKind,
        answered: Option<PendingRequest>,
        frame_id: u64,
    ) -> Rest<'a> {
        let method = message.method().or(answered_method(&answered));
        self.metrics.message(lane.direction, kind, method);
        let recorded = session.tape.is_some().then(|| message.clone());
        let (message, trace) = match &self.tracing {
            Some(tracing)
                if lane.direction == Direction::ClientToServer && kind == MessageKind::Request =>
            {
                let (message, trace) = self.trace_request(tracing, session, &message);
                let trace: Arc<dyn CallTracer> = Arc::new(PluginTracer {
                    tracing: tracing.clone(),
                    trace,
                });
                (message, Some(trace))
            }
            _ => (message, None),
        };
        let method = message.method().or(answered_method(&answered));
        let chain = self.chain.load();
        if !chain.wants(lane.direction, kind, method) {
            if let Some(recorded) = recorded {
                session.record_passed(lane.direction, &recorded);
            }
            return Rest::Sending(lane.forward.send(message));
        }
        let chain = Guard::into_inner(chain);
        let mut ctx = session.context(lane.direction, message, answered, frame_id);
        ctx.trace = trace;
        if recorded.is_some() {
            ctx.record = Some(Box::default());
        }
        Rest::boxed(self.intercept(session, lane, chain, ctx))
    }

    /// Runs the chain on a message and enacts its outcome.
    async fn intercept(
        self: &Arc<Self>,
        session: &Arc<SessionContext>,
        lane: &Lane,
        chain: Arc<InterceptorChain>,
        mut ctx: InterceptContext,
    ) {
        let outcome = chain.run(&mut ctx, 0).await;
        match outcome.action {
            InterceptAction::Pause { .. } | InterceptAction::Delay { .. } => {
                // Held messages wait on their own task; the lane moves on.
                let (pipeline, session, lane) = (self.clone(), session.clone(), lane.clone());
                session.held.clone().spawn(async move {
                    pipeline
                        .conclude(&session, &lane, &chain, ctx, outcome)
                        .await
                });
            }
            _ => self.conclude(session, lane, &chain, ctx, outcome).await,
        }
    }

    /// Carries a chain outcome through to delivery, waiting out pauses and delays and resuming
    /// the chain after them.
    async fn conclude(
        &self,
        session: &SessionContext,
        lane: &Lane,
        chain: &InterceptorChain,
        mut ctx: InterceptContext,
        mut outcome: ChainOutcome,
    ) {
        let ended = || InterceptAction::Block {
            reason: "the session ended while the message was held".into(),
        };
        loop {
            let resume_at = outcome.resume_at;
            let stopped = match outcome.action {
                InterceptAction::Continue | InterceptAction::Modify(_) => {
                    if ctx.modified {
                        session.live.count_verdict(Verdict::Modified);
                        self.audit(&ctx, None, "modify", None);
                    }
                    self.note_unenforced(&ctx);
                    session.record(&ctx, Some(&ctx.message), None);
                    lane.forward.send(ctx.message).await;
                    return;
                }
                InterceptAction::Block { reason } => {
                    let by = outcome.stopped_by.as_deref().unwrap_or("membrane");
                    return self.block(session, lane, &ctx, by, &reason).await;
                }
                InterceptAction::Mock { response } => {
                    let by = outcome.stopped_by.as_deref();
                    return self.mock(session, lane, &ctx, by, response).await;
                }
                InterceptAction::Pause { timeout } => {
                    session.live.count_verdict(Verdict::Held);
                    let holder = chain.holder(resume_at, &ctx.session_id);
                    self.audit(&ctx, holder.plugin.as_deref(), "pause", None);
                    match self.pauses.hold(&ctx, timeout, holder).await {
                        Resolution::Resume => None,
                        Resolution::Modify(message) => {
                            chain.settle(&mut ctx, InterceptAction::Modify(message), resume_at - 1)
                        }
                        Resolution::Block { reason } => {
                            chain.settle(&mut ctx, InterceptAction::Block { reason }, resume_at - 1)
                        }
                    }
                }
                InterceptAction::Delay { duration, then } => {
                    let then = tokio::select! {
                        _ = tokio::time::sleep(duration) => *then,
                        _ = session.ending.cancelled() => ended(),
                    };
                    chain.settle(&mut ctx, then, resume_at - 1)
                }
            };
            outcome = match stopped {
                Some(outcome) => outcome,
                None => chain.run(&mut ctx, resume_at).await,
            };
        }
    }

    /// Starts the span of a client's request (kept until its answer) and returns the request
    /// to forward, its `_meta` naming the span.
    fn trace_request(
        &self,
        tracing: &Tracing,
        session: &SessionContext,
        request: &Message,
    ) -> (Message, RequestTrace) {
        let version = session.protocol_version();
        let id = request.id().unwrap_or_default();
        let info = RequestInfo {
            method: request.method().unwrap_or_default(),
            session_id: (session.client_transport == TransportType::StreamableHttp)
                .then_some(session.id.as_str()),
            request_id: id,
            protocol_version: version.as_deref(),
        };
        let (traced, trace) = tracing.request(request, info);
        session
            .traces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id_key(id).into_owned(), trace.clone());
        (traced, trace)
    }

    fn audit(
        &self,
        ctx: &InterceptContext,
        plugin: Option<&str>,
        verdict: &str,
        reason: Option<&str>,
    ) {
        if let Some(audit) = &self.audit {
            audit.verdict(ctx, plugin, verdict, reason, true);
        }
    }

    /// Counts and audits the verdicts of interceptors in audit mode, which were not enforced.
    fn note_unenforced(&self, ctx: &InterceptContext) {
        for (plugin, verdict) in &ctx.unenforced {
            self.metrics.unenforced(plugin, verdict);
            if let Some(audit) = &self.audit {
                audit.verdict(ctx, Some(plugin), verdict, None, false);
            }
        }
    }

    /// A blocked request is answered with an error; a blocked answer is replaced by one (so the
    /// requester is not left waiting); a blocked notification is dropped.
    async fn block(
        &self,
        session: &SessionContext,
        lane: &Lane,
        ctx: &InterceptContext,
        by: &str,
        reason: &str,
    ) {
        session.live.count_verdict(Verdict::Blocked);
        self.audit(ctx, Some(by), "block", Some(reason));
        let message = &ctx.message;
        tracing::info!(session = %ctx.session_id.redacted(), interceptor = by, method = ctx.method(), id = message.id(), "blocked: {reason}");
        self.answer_instead(
            session,
            lane,
            ctx,
            error_response(message.id(), ErrorCode::Blocked, reason),
        )
        .await;
    }

    /// A mocked request is answered by the mock; a mocked answer is replaced by it.
    async fn mock(
        &self,
        session: &SessionContext,
        lane: &Lane,
        ctx: &InterceptContext,
        by: Option<&str>,
        response: Message,
    ) {
        session.live.count_verdict(Verdict::Mocked);
        self.audit(ctx, by, "mock", None);
        tracing::debug!(session = %ctx.session_id, method = ctx.method(), "mocked");
        self.answer_instead(session, lane, ctx, response).await;
    }

    /// Delivers `answer` in place of the message: to the sender of a request (which the other
    /// side never sees), or onwards in place of an answer. A notification has no one to answer.
    async fn answer_instead(
        &self,
        session: &SessionContext,
        lane: &Lane,
        ctx: &InterceptContext,
        answer: Message,
    ) {
        self.note_unenforced(ctx);
        session.record(ctx, None, Some(&answer));
        match ctx.message.kind() {
            Some(MessageKind::Request) => {
                if let Some(id) = ctx.message.id() {
                    // It will never reach the other side: nothing awaits its answer.
                    session.live.resolve_request(ctx.direction, id);
                    session.answered(id, &answer);
                }
                lane.reply.send(answer).await;
            }
            Some(MessageKind::Response | MessageKind::Error) => {
                lane.forward.send(answer).await;
            }
            _ => tracing::debug!(method = ctx.method(), "notification dropped"),
        }
    }

    /// Correlates requests and answers (and cancellations), follows the protocol version
    /// through `initialize`, and marks the session active.
    fn track(
        &self,
        session: &SessionContext,
        direction: Direction,
        message: &Message,
        kind: MessageKind,
    ) -> Tracked {
        if kind == MessageKind::Notification {
            if message.method() == Some(CANCELLED) {
                self.forget_cancelled(session, direction, message);
            }
            // Requests and answers touch the session as they are tracked; this does for the rest.
            session.live.touch();
            return Tracked::Go(None, None);
        }
        let Some(id) = message.id() else {
            // An error about a message that had no readable id: nothing to match, nothing
            // a method-scoped interceptor could be asked about.
            return Tracked::Go(None, None);
        };
        match kind {
            MessageKind::Request => {
                let method = message.method().unwrap_or_default();
                // Plugins that want this request's answers may read it then.
                let answers_wanted = self.chain.load().wants_answers(direction.reverse(), method);
                let kept = answers_wanted.then(|| message.clone());
                if let Err(refused) = session.live.record_request(direction, id, method, kept) {
                    return Tracked::Refused(refused);
                }
                let handshake = method == INITIALIZE && direction == Direction::ClientToServer;
                Tracked::Go(None, handshake.then_some(SessionStatus::Initializing))
            }
            MessageKind::Response | MessageKind::Error => {
                let Some(request) = session.live.resolve_request(direction.reverse(), id) else {
                    return Tracked::Unmatched;
                };
                if direction == Direction::ServerToClient {
                    if let Ok(waited) = request.sent_at.elapsed() {
                        self.metrics.upstream_answered(waited.as_secs_f64());
                    }
                    if self.tracing.is_some() {
                        session.answered(id, message);
                    }
                }
                let handshake = request.method == INITIALIZE && kind == MessageKind::Response;
                Tracked::Go(Some(request), handshake.then_some(SessionStatus::Active))
            }
            _ => Tracked::Go(None, None),
        }
    }

    /// A request the session cannot take now is answered with an error, the session goes on.
    async fn refuse(&self, lane: &Lane, request: &Message, reason: &SessionError) {
        tracing::warn!(direction = ?lane.direction, "request refused: {reason}");
        let error = error_response(request.id(), ErrorCode::LimitExceeded, &reason.to_string());
        lane.reply.send(error).await;
    }

    /// An answer nobody waits for goes no further.
    fn drop_unmatched(&self, session: &SessionContext, lane: &Lane, answer: &Message) {
        let dropped = self.unmatched_answers.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(session = %session.id, direction = ?lane.direction, id = answer.id(), dropped, "dropped an answer that no request awaits");
    }

    /// A cancelled request will get no answer: stop waiting for one.
    fn forget_cancelled(&self, session: &SessionContext, direction: Direction, message: &Message) {
        let Ok(value) = message.to_value() else {
            return;
        };
        let request_id = &value["params"]["requestId"];
        if request_id.is_number() || request_id.is_string() {
            let request_id = request_id.to_string();
            session.live.resolve_request(direction, &request_id);
            // No answer will end its span: a cancelled request's span ends with the cancel.
            session.forget_trace(&request_id);
        }
    }

    /// Notes the protocol version of the handshake's request (proposed, `Initializing`) or
    /// answer (agreed, `Active`), and with the answer, writes the session's record.
    async fn note_protocol_version(
        &self,
        session: &SessionContext,
        message: &Message,
        status: SessionStatus,
    ) {
        let field = match status {
            SessionStatus::Initializing => "params",
            _ => "result",
        };
        let Ok(value) = message.to_value() else {
            return;
        };
        let Some(version) = value[field]["protocolVersion"].as_str() else {
            return;
        };
        *session
            .protocol_version
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(version.into());
        let version = version.to_owned();
        let upstream_session_id = session.upstream_session_id.get().cloned();
        let info = |name| value[field].get(name).cloned();
        let client_info = || {
            session
                .client_info
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if status == SessionStatus::Initializing {
            // Proposed only: the store hears the version the server agrees to.
            *client_info() = info("clientInfo");
            return;
        }
        let (client_info, server_info) = (client_info().take(), info("serverInfo"));
        if let Some(tape) = &session.tape {
            tape.handshake(&version, client_info.clone(), server_info.clone());
        }
        tracing::debug!(session = %session.id, version, upstream_session = upstream_session_id.as_deref().unwrap_or("-"), "session initialized");
        let _ = self
            .sessions
            .update(&session.id, |s| {
                s.protocol_version = Some(version.clone());
                s.status = status;
                let raw = |info: Option<serde_json::Value>| {
                    info.and_then(|info| serde_json::value::to_raw_value(&info).ok())
                };
                s.client_info = raw(client_info);
                s.server_info = raw(server_info);
                if upstream_session_id.is_some() {
                    s.upstream_session_id = upstream_session_id.clone();
                }
            })
            .await;
    }

    /// A batch goes through as is when no interceptor wants any of its messages; otherwise each
    /// message goes through the chain on its own (so a batch can never smuggle one past it).
    async fn process_batch(
        self: &Arc<Self>,
        session: &Arc<SessionContext>,
        lane: &Lane,
        batch: Message,
        frame_id: u64,
    ) {
        self.metrics
            .message(lane.direction, MessageKind::Batch, None);
        if batch.batch_len() > self.max_batch_size {
            let reason = format!(
                "a batch of {} messages exceeds the limit of {}",
                batch.batch_len(),
                self.max_batch_size
            );
            return self
                .reject_invalid(lane, &reason, ErrorCode::InvalidRequest)
                .await;
        }
        let elements = match batch.batch_elements() {
            Ok(elements) if !elements.is_empty() => elements,
            _ => {
                return self
                    .reject_invalid(lane, "empty batch", ErrorCode::InvalidRequest)
                    .await;
            }
        };
        let mut tracked = Vec::with_capacity(elements.len());
        let mut all_valid = true;
        for element in elements {
            match element.validate() {
                Ok(MessageKind::Batch) => {
                    all_valid = false;
                    self.reject_invalid(lane, "nested batch", ErrorCode::InvalidRequest)
                        .await
                }
                Ok(kind) => match self.track(session, lane.direction, &element, kind) {
                    Tracked::Go(answered, handshake) => {
                        if let Some(status) = handshake {
                            self.note_protocol_version(session, &element, status).await;
                        }
                        tracked.push((element, kind, answered))
                    }
                    Tracked::Refused(reason) => {
                        all_valid = false;
                        self.refuse(lane, &element, &reason).await
                    }
                    Tracked::Unmatched => {
                        all_valid = false;
                        self.drop_unmatched(session, lane, &element)
                    }
                },
                Err(e) => {
                    all_valid = false;
                    self.reject_invalid(lane, &e.to_string(), e.code()).await
                }
            }
        }
        // Only a batch that is valid throughout and wanted by nobody goes through whole.
        let wanted = !all_valid
            || tracked.iter().any(|(element, kind, answered)| {
                let method = element.method().or(answered_method(answered));
                self.chain.load().wants(lane.direction, *kind, method)
            });
        if wanted {
            for (element, kind, answered) in tracked {
                self.route(session, lane, element, kind, answered, frame_id)
                    .await;
            }
        } else if !tracked.is_empty() {
            session.record_passed(lane.direction, &batch);
            lane.forward.send(batch).await;
        }
    }

    /// Bytes that are not a JSON-RPC message never reach the other side. A client is told why;
    /// a server's stray output is logged.
    async fn reject_invalid(&self, lane: &Lane, reason: &str, code: ErrorCode) {
        match lane.direction {
            Direction::ClientToServer => {
                tracing::warn!("client sent an invalid message: {reason}");
                lane.reply.send(error_response(None, code, reason)).await;
            }
            Direction::ServerToClient => {
                tracing::warn!(
                    "upstream wrote something that is not a JSON-RPC message, dropped: {reason}"
                );
            }
        }
    }

    /// An oversized message is discarded. An oversized answer to a pending request is replaced
    /// by an error to the requester; an oversized request is answered with one.
    async fn reject_oversized(
        &self,
        session: &SessionContext,
        lane: &Lane,
        len: usize,
        id: Option<String>,
        request: bool,
    ) {
        let reason = format!(
            "message of {len} bytes exceeds the maximum message size of {} bytes",
            self.max_message_size
        );
        tracing::warn!(session = %session.id.redacted(), direction = ?lane.direction, "{reason}");
        let answered = match &id {
            Some(id) if !request => session
                .live
                .resolve_request(lane.direction.reverse(), id)
                .is_some(),
            _ => false,
        };
        let error = error_response(id.as_deref(), ErrorCode::InvalidRequest, &reason);
        if answered {
            lane.forward.send(error).await;
        } else if request || lane.direction == Direction::ClientToServer && id.is_none() {
            // An answer nobody waits for is dropped: its id belongs to the other side.
            lane.reply.send(error).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::interceptor::{
        FailurePolicy, Filter, InterceptError, Interceptor, Interest, PauseTimeoutPolicy,
    };
    use crate::session::SessionConfig;

    /// What the recorder saw of one message: kind, method, protocol version.
    type Seen = (MessageKind, Option<String>, Option<Arc<str>>);

    /// Records what it is shown and blocks `tools/call` requests for the tool "blocked".
    struct Recorder {
        interest: Interest,
        seen: Mutex<Vec<Seen>>,
    }

    #[async_trait]
    impl Interceptor for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn interest(&self) -> &Interest {
            &self.interest
        }
        async fn intercept(
            &self,
            ctx: &InterceptContext,
        ) -> Result<InterceptAction, InterceptError> {
            let kind = ctx.message.kind().unwrap();
            let method = ctx.method().map(str::to_owned);
            self.seen
                .lock()
                .unwrap()
                .push((kind, method, ctx.protocol_version.clone()));
            Ok(if ctx.message.as_str().contains("\"blocked\"") {
                InterceptAction::Block {
                    reason: "no".into(),
                }
            } else {
                InterceptAction::Continue
            })
        }
    }

    struct Harness {
        pipeline: Arc<Pipeline>,
        recorder: Arc<Recorder>,
        session: Arc<SessionContext>,
        to_server: Lane,
        to_client: Lane,
        server_in: flume::Receiver<Message>,
        client_in: flume::Receiver<Message>,
    }

    async fn harness() -> Harness {
        let recorder = Arc::new(Recorder {
            interest: Filter::new(["tools/*"], &[], &[]).into(),
            seen: Mutex::default(),
        });
        let chain = InterceptorChain::new().with(recorder.clone(), FailurePolicy::Block);
        let pipeline = Arc::new(Pipeline::new(
            Arc::new(SessionManager::with_config(SessionConfig {
                max_pending_requests: 4,
                ..SessionConfig::default()
            })),
            Arc::new(ArcSwap::from_pointee(chain)),
            Arc::new(PauseController::new(PauseTimeoutPolicy::Block)),
            1024,
        ));
        let session = pipeline
            .sessions
            .create(TransportType::Stdio, TransportType::Stdio, None)
            .await
            .unwrap();
        let (server, server_in) = Outbox::channel();
        let (client, client_in) = Outbox::channel();
        Harness {
            recorder,
            session: Arc::new(SessionContext::new(
                &session,
                pipeline.sessions.live(&session.id).unwrap(),
                Default::default(),
            )),
            to_server: Lane {
                direction: Direction::ClientToServer,
                forward: server.clone(),
                reply: client.clone(),
            },
            to_client: Lane {
                direction: Direction::ServerToClient,
                forward: client,
                reply: server,
            },
            pipeline,
            server_in,
            client_in,
        }
    }

    impl Harness {
        async fn client_sends(&self, json: &str) {
            let frame = Frame::Message(Message::new(json.to_owned()));
            self.pipeline
                .process(&self.session, &self.to_server, frame)
                .await;
        }
        async fn server_sends(&self, json: &str) {
            let frame = Frame::Message(Message::new(json.to_owned()));
            self.pipeline
                .process(&self.session, &self.to_client, frame)
                .await;
        }
        async fn stored(&self) -> Session {
            self.pipeline
                .sessions
                .get(&self.session.id)
                .await
                .unwrap()
                .unwrap()
        }
    }

    #[tokio::test]
    async fn follows_the_handshake_and_correlates_answers() {
        let h = harness().await;
        h.client_sends(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#).await;
        let proposed = h.stored().await;
        assert_eq!(
            (proposed.protocol_version, proposed.status),
            (None, SessionStatus::Initializing),
            "the store is written once the server agrees"
        );
        h.server_sends(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-03-26"}}"#)
            .await;
        let stored = h.stored().await;
        assert_eq!(
            stored.protocol_version.as_deref(),
            Some("2025-03-26"),
            "the server's answer wins"
        );
        assert_eq!(stored.status, SessionStatus::Active);

        h.client_sends(
            r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"x"}}"#,
        )
        .await;
        assert_eq!(h.session.live.pending_count(), 1);
        h.server_sends(r#"{"jsonrpc":"2.0","id":"c1","result":{"content":[]}}"#)
            .await;
        assert!((h.session.live.pending_count() == 0));

        let seen = h.recorder.seen.lock().unwrap().clone();
        let version = Some(Arc::from("2025-03-26"));
        assert_eq!(
            seen,
            vec![
                (
                    MessageKind::Request,
                    Some("tools/call".into()),
                    version.clone()
                ),
                (MessageKind::Response, Some("tools/call".into()), version),
            ],
            "only wanted messages, answers matched to their request's method"
        );
        for _ in 0..2 {
            assert!(h.server_in.try_recv().is_ok());
            assert!(h.client_in.try_recv().is_ok());
        }
    }

    #[tokio::test]
    async fn a_cancelled_request_is_no_longer_awaited() {
        let h = harness().await;
        h.client_sends(r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#)
            .await;
        assert_eq!(h.session.live.pending_count(), 1);
        h.client_sends(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#,
        )
        .await;
        assert!((h.session.live.pending_count() == 0));
    }

    #[tokio::test]
    async fn a_blocked_request_is_answered_and_forgotten() {
        let h = harness().await;
        h.client_sends(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"blocked"}}"#,
        )
        .await;
        let answer = h.client_in.try_recv().unwrap().to_value().unwrap();
        assert_eq!(answer["id"], 5);
        assert_eq!(answer["error"]["code"], ErrorCode::Blocked.code());
        assert!(h.server_in.try_recv().is_err(), "the server never sees it");
        assert!((h.session.live.pending_count() == 0));
    }

    #[tokio::test]
    async fn answers_nobody_awaits_are_dropped_and_counted() {
        let h = harness().await;
        h.client_sends(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#)
            .await;
        assert!(h.server_in.try_recv().is_ok());
        h.server_sends(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#)
            .await;
        assert!(
            h.client_in.try_recv().is_ok(),
            "the awaited answer goes through"
        );
        for late in [
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":99,"result":{"tools":[]}}"#,
        ] {
            h.server_sends(late).await;
            assert!(h.client_in.try_recv().is_err(), "{late} is dropped");
        }
        assert_eq!(h.pipeline.unmatched_answers.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn requests_past_the_pending_bound_are_answered_with_an_error() {
        let h = harness().await;
        for id in 1..=4 {
            h.client_sends(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#))
                .await;
            assert!(h.server_in.try_recv().is_ok());
        }
        h.client_sends(r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#)
            .await;
        assert!(h.server_in.try_recv().is_err(), "the fifth never goes out");
        let refused = h.client_in.try_recv().unwrap().to_value().unwrap();
        assert_eq!(refused["id"], 5);
        assert_eq!(refused["error"]["code"], ErrorCode::LimitExceeded.code());
        h.server_sends(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
            .await;
        h.client_sends(r#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#)
            .await;
        assert!(h.server_in.try_recv().is_ok(), "an answer makes room");
    }

    #[tokio::test]
    async fn a_batch_is_split_only_when_an_interceptor_wants_part_of_it() {
        let h = harness().await;
        let untouched = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"}]"#;
        h.client_sends(untouched).await;
        assert_eq!(
            h.server_in.try_recv().unwrap().as_str(),
            untouched,
            "forwarded whole"
        );

        h.client_sends(r#"[{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"blocked"}}]"#).await;
        assert_eq!(h.server_in.try_recv().unwrap().id(), Some("2"));
        assert!(
            h.server_in.try_recv().is_err(),
            "the blocked element is not forwarded"
        );
        assert_eq!(h.client_in.try_recv().unwrap().id(), Some("3"));
    }
}
