//! Opening and serving one session. [`Pipeline::open_session`] turns a client connection into a
//! session: it is created within the session limit (or revived from a durable store, its upstream
//! session resumed), its upstream side connected, and the client side told either way. Serving it
//! runs two pumps (client to server, server to client) feeding the [`Pipeline`]: a task reading a
//! stream side's frames, or the consumer of an HTTP side's queue, which runs only while frames
//! wait. It ends in order whichever side goes first. When the client leaves, the server's stdin is
//! closed and its last answers are still relayed; when the server dies, every request it left
//! unanswered gets a JSON-RPC error; when the session is closed (idle timeout, shutdown, a removal
//! on another replica), both sides are released, except that on shutdown a durable store keeps a
//! revivable session and its upstream session open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{Lane, Pipeline, SessionContext};
use crate::protocol::{Direction, ErrorCode, error_response};
use crate::session::{LiveSession, Session, SessionError, SessionId};
use crate::telemetry as metrics;
use crate::transport::{
    Admission, Cancel, Closed, Connection, ConnectionCloser, Frame, Inbound, Outbox,
    OutgoingTransport, Queue, TransportError, TransportType,
};

/// Why a session could not be opened or served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How long each step of ending a session (a side finishing on its own, a server exiting) may
/// take before it is forced.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// What became of the upstream side.
    pub upstream: Closed,
    /// Whether the upstream went away before the client did.
    pub upstream_first: bool,
}

enum Ending {
    ClientLeft,
    UpstreamLeft,
    SessionClosed,
}

/// A session being served: its two pumps running, and what ending it takes.
struct Serving {
    /// Counts the session among those its opener waits for, until it has wound down.
    tracked: TaskTrackerToken,
    /// Whoever waits for the session's end.
    ended: Option<oneshot::Sender<Result<SessionEnd, SessionError>>>,
    session: SessionId,
    client_transport: TransportType,
    live: Arc<LiveSession>,
    context: Arc<SessionContext>,
    client: Ends,
    upstream: Ends,
    from_client: Pump,
    from_upstream: Pump,
}

/// What is left of a side's [`Connection`] once its pump reads its frames.
struct Ends {
    transport_type: TransportType,
    outbox: Outbox,
    closer: Box<dyn ConnectionCloser>,
}

/// What feeds one side's frames into the pipeline: a task reading its stream, or its queue's
/// consumer (running only while frames wait).
enum Pump {
    Task { task: JoinHandle<()>, stop: Cancel },
    Queue(Queue<Frame>),
}

/// A session being served, with no task of its own: whichever of its ends comes first (a side
/// leaving, the session closed) starts winding it down.
struct Watch {
    pipeline: Arc<Pipeline>,
    state: Mutex<Watching>,
}

enum Watching {
    /// Being set up; an end that comes meanwhile is kept.
    Starting(Option<Ending>),
    Serving(Serving),
    /// Winding down or over.
    Ended,
}

impl Pipeline {
    /// Opens a session for `client` with a connection to `upstream` of its own (for a stateless
    /// exchange, one made for it; for a session revived from the store, the upstream session it
    /// had), tells the client side whether it was admitted, and serves the session to its end.
    pub fn open_session(
        self: &Arc<Self>,
        client: Connection,
        upstream: Arc<dyn OutgoingTransport>,
    ) -> impl Future<Output = Result<SessionEnd, ProxyError>> + Send + 'static {
        let (ended, end) = oneshot::channel();
        let opening = self.start(client, upstream, &TaskTracker::new(), Some(ended));
        async move {
            opening.await?;
            Ok(end.await.expect("every session served is wound down")?)
        }
    }

    /// Opens a session as [`Pipeline::open_session`] does, and resolves once it is served (or
    /// refused). From then on nothing waits for it: its end, whichever comes first, starts a
    /// task that winds it down. `sessions` counts it until it has, and runs that task.
    pub fn start_session(
        self: &Arc<Self>,
        client: Connection,
        upstream: Arc<dyn OutgoingTransport>,
        sessions: &TaskTracker,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send + use<> {
        self.start(client, upstream, sessions, None)
    }

    fn start(
        self: &Arc<Self>,
        client: Connection,
        upstream: Arc<dyn OutgoingTransport>,
        sessions: &TaskTracker,
        ended: Option<oneshot::Sender<Result<SessionEnd, SessionError>>>,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send + use<> {
        let (pipeline, tracked) = (self.clone(), sessions.token());
        async move { pipeline.admit(client, &*upstream, tracked, ended).await }
    }

    /// Creates the session (or revives it), connects its upstream side, tells the client side,
    /// and starts serving it.
    async fn admit(
        self: &Arc<Self>,
        mut client: Connection,
        upstream: &dyn OutgoingTransport,
        tracked: TaskTrackerToken,
        ended: Option<oneshot::Sender<Result<SessionEnd, SessionError>>>,
    ) -> Result<(), ProxyError> {
        let opening = &mut client.opening;
        let principal = opening.principal.clone();
        let revived = opening.resume.is_some();
        let opened = match &opening.resume {
            Some(id) => self
                .sessions
                .revive(id, principal.as_ref(), upstream.transport_type())
                .await
                .and_then(|session| session.ok_or(SessionError::Unknown)),
            None => {
                self.sessions
                    .create(client.transport_type, upstream.transport_type(), principal)
                    .await
            }
        };
        let mut session = match opened {
            Ok(session) => session,
            Err(e) => {
                opening.answer(match e {
                    SessionError::Unknown => Admission::Unknown,
                    _ => Admission::Busy(e.to_string()),
                });
                return Err(e.into());
            }
        };
        let connected = match (&opening.stateless, revived) {
            (Some((version, forwarded)), _) => {
                session.protocol_version = Some(version.clone());
                upstream.connect_stateless(version, forwarded).await
            }
            (None, true) => {
                let version = session.protocol_version.as_deref().unwrap_or_default();
                let id = session.upstream_session_id.as_deref();
                upstream.resume(id, version, &client.listening).await
            }
            (None, false) => upstream.connect(&client.listening).await,
        };
        let upstream = match connected {
            Ok(upstream) => upstream,
            Err(e) => {
                // A revived session stays in the store: the upstream may be back later.
                let _ = self.sessions.remove(&session.id, revived).await;
                let reason = format!("could not reach the upstream server: {e}");
                tracing::warn!("{reason}");
                opening.answer(Admission::Unreachable(reason));
                return Err(e.into());
            }
        };
        if upstream.transport_type == TransportType::StreamableHttp {
            // An HTTP upstream frames each answer itself; the client side follows it from the
            // first request on (so the link comes before the client hears it is admitted).
            upstream.answer_modes.link(&client.answer_modes);
        }
        client
            .opening
            .answer(Admission::Admitted(session.id.clone()));
        self.serve(session, client, upstream, tracked, ended);
        Ok(())
    }

    /// Starts relaying between `client` and `upstream` for `session` (just created, see
    /// [`SessionManager::create`](crate::session::SessionManager::create)).
    fn serve(
        self: &Arc<Self>,
        session: Session,
        client: Connection,
        upstream: Connection,
        tracked: TaskTrackerToken,
        ended: Option<oneshot::Sender<Result<SessionEnd, SessionError>>>,
    ) {
        let live = self
            .sessions
            .live(&session.id)
            .expect("a session just created is live");
        let mut context =
            SessionContext::new(&session, live.clone(), upstream.peer_session_id.clone());
        context.tape = self
            .recorder
            .as_ref()
            .and_then(|recorder| recorder.open(&session));
        let context = Arc::new(context);
        tracing::info!(session = %session.id.redacted(), "session started");
        self.metrics
            .session_opened(session.client_transport, session.upstream_transport);

        let to_server = Lane {
            direction: Direction::ClientToServer,
            forward: upstream.outbox.clone(),
            reply: client.outbox.clone(),
        };
        let to_client = Lane {
            direction: Direction::ServerToClient,
            forward: client.outbox.clone(),
            reply: upstream.outbox.clone(),
        };
        let watch = Arc::new(Watch {
            pipeline: self.clone(),
            state: Mutex::new(Watching::Starting(None)),
        });
        let (client_left, upstream_left) = (watch.clone(), watch.clone());
        let serving = Serving {
            from_client: self.pump(&context, to_server, client.inbound, move || {
                client_left.end(Ending::ClientLeft)
            }),
            from_upstream: self.pump(&context, to_client, upstream.inbound, move || {
                upstream_left.end(Ending::UpstreamLeft)
            }),
            tracked,
            ended,
            session: session.id,
            client_transport: session.client_transport,
            live,
            context,
            client: Ends {
                transport_type: client.transport_type,
                outbox: client.outbox,
                closer: client.closer,
            },
            upstream: Ends {
                transport_type: upstream.transport_type,
                outbox: upstream.outbox,
                closer: upstream.closer,
            },
        };
        watch.serve(serving);
    }

    /// Ends a session in order after `ending`, then removes it.
    async fn wind_down(
        self: &Arc<Self>,
        serving: Serving,
        ending: Ending,
    ) -> Result<SessionEnd, SessionError> {
        let Serving {
            session,
            client_transport,
            live,
            context,
            client,
            upstream,
            from_client,
            from_upstream,
            ..
        } = serving;
        // From here on, the client's new requests are refused, and held messages are blocked
        // rather than delivered.
        client.closer.closing();
        context.ending.cancel();
        // Closed for a restart, a session that can be revived stays in the store and upstream.
        let keep = live.kept()
            && matches!(ending, Ending::SessionClosed)
            && upstream.transport_type == TransportType::StreamableHttp;
        let upstream_closed = match ending {
            Ending::ClientLeft => {
                // Closing the server's stdin asks it to exit; relay its last words meanwhile.
                let closed = upstream.closer.close(SHUTDOWN_GRACE).await;
                from_upstream.finish(SHUTDOWN_GRACE).await;
                closed
            }
            Ending::UpstreamLeft => {
                from_client.finish(Duration::ZERO).await;
                upstream.closer.close(SHUTDOWN_GRACE).await
            }
            Ending::SessionClosed => {
                from_client.finish(Duration::ZERO).await;
                let closed = if keep {
                    upstream.closer.detach(SHUTDOWN_GRACE).await
                } else {
                    upstream.closer.close(SHUTDOWN_GRACE).await
                };
                from_upstream.finish(SHUTDOWN_GRACE).await;
                closed
            }
        };
        // Held messages settle (each request answered once) before what is pending is failed.
        self.pauses.release_session(&session);
        context.held.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, context.held.wait()).await;

        let unanswered = live.drain_pending(Direction::ClientToServer);
        let reason = match ending {
            Ending::SessionClosed => "the session was closed before the server answered".into(),
            _ => format!(
                "upstream server {} before answering",
                upstream_closed.description
            ),
        };
        for request in unanswered {
            let error = error_response(Some(&request.id), ErrorCode::UpstreamUnavailable, &reason);
            client.outbox.send(error).await;
        }
        client.closer.close(SHUTDOWN_GRACE).await;
        let ended = match ending {
            Ending::ClientLeft => metrics::Ending::ClientLeft,
            Ending::UpstreamLeft => metrics::Ending::UpstreamLeft,
            Ending::SessionClosed => metrics::Ending::Closed,
        };
        self.metrics.session_closed(client_transport, ended);
        self.sessions.remove(&session, keep).await?;
        tracing::info!(session = %session.redacted(), upstream = %upstream_closed.description, "session ended");
        Ok(SessionEnd {
            upstream: upstream_closed,
            upstream_first: matches!(ending, Ending::UpstreamLeft),
        })
    }

    /// Starts feeding frames from one side into the pipeline until that side ends or the pump
    /// is stopped; a frame already read is always carried through.
    /// `ended` is called once the side has ended and its last frame been carried through.
    fn pump(
        self: &Arc<Self>,
        session: &Arc<SessionContext>,
        lane: Lane,
        inbound: Inbound,
        ended: impl FnOnce() + Send + 'static,
    ) -> Pump {
        let mut inbound = match inbound {
            Inbound::Stream(frames) => frames,
            Inbound::Queue(frames) => {
                let (pipeline, session, lane) = (self.clone(), session.clone(), Arc::new(lane));
                frames.consume(move |frame| {
                    let (pipeline, session, lane) =
                        (pipeline.clone(), session.clone(), lane.clone());
                    async move { pipeline.process(&session, &lane, frame).await }
                });
                frames.on_ended(ended);
                return Pump::Queue(frames);
            }
        };
        let stop = Cancel::new();
        let (pipeline, session, stopped) = (self.clone(), session.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    biased;
                    _ = stopped.cancelled() => break,
                    frame = inbound.next() => frame,
                };
                let Some(frame) = frame else { break };
                pipeline.process(&session, &lane, frame).await;
            }
            ended();
        });
        Pump::Task { task, stop }
    }
}

impl Watch {
    /// Holds `serving` until its end; a session closed from now on ends it too.
    fn serve(self: &Arc<Self>, serving: Serving) {
        let live = serving.live.clone();
        let early = match std::mem::replace(&mut *self.state(), Watching::Serving(serving)) {
            Watching::Starting(early) => early,
            Watching::Serving(_) | Watching::Ended => unreachable!("a session is served once"),
        };
        if let Some(ending) = early {
            self.end(ending);
        }
        let watch = self.clone();
        live.on_close(move || watch.end(Ending::SessionClosed));
    }

    /// The session ends (the first call counts): it is wound down on a task of its own, which
    /// its opener's tracker runs.
    fn end(&self, ending: Ending) {
        let mut serving = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, Watching::Ended) {
                Watching::Serving(serving) => serving,
                Watching::Starting(early) => {
                    *state = Watching::Starting(early.or(Some(ending)));
                    return;
                }
                Watching::Ended => return,
            }
        };
        let pipeline = self.pipeline.clone();
        let ended = serving.ended.take();
        let sessions = serving.tracked.task_tracker().clone();
        sessions.spawn(async move {
            let result = pipeline.wind_down(serving, ending).await;
            match ended {
                Some(to) => drop(to.send(result)),
                None => {
                    if let Err(e) = result {
                        tracing::warn!("session failed: {e}");
                    }
                }
            }
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Watching> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue's consumer holds the session's other parts, which hold the queue: a pump dropped
/// before its queue ended (a session whose winding down never ran, as when the runtime stops)
/// lets go of it, so nothing is kept in a circle.
impl Drop for Pump {
    fn drop(&mut self) {
        if let Pump::Queue(frames) = self {
            frames.abort();
        }
    }
}

impl Pump {
    /// Resolves once the side has ended and its last frame has been carried through.
    async fn ended(&mut self) {
        match self {
            Pump::Task { task, .. } => {
                let _ = task.await;
            }
            Pump::Queue(frames) => frames.ended().await,
        }
    }

    /// Lets the pump end on its own for `patience`, then stops it between frames, and as a
    /// last resort (a peer that no longer reads) abandons the frame in hand.
    async fn finish(mut self, patience: Duration) {
        if tokio::time::timeout(patience, self.ended()).await.is_ok() {
            return;
        }
        match &self {
            Pump::Task { stop, .. } => stop.cancel(),
            Pump::Queue(frames) => frames.stop(),
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ended())
            .await
            .is_err()
        {
            match &self {
                Pump::Task { task, .. } => task.abort(),
                Pump::Queue(frames) => frames.abort(),
            }
        }
    }
}
