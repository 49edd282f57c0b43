//! [`PauseController`]: holds paused messages until an operator approves, modifies or denies
//! them ([`PauseController::settle`], through the admin API), or their timeout runs out (then
//! the policy of the interceptor that held them, or the global [`PauseTimeoutPolicy`], decides).
//! Each held message carries the digest of its exact bytes: an operator settles what they saw,
//! and a message is settled exactly once whatever races. Holding a message parks only that
//! message's task; the rest of the session's traffic goes on. Holds are bounded in number, and
//! every hold and settlement is announced to [`PauseController::subscribe`]rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot};

use super::InterceptContext;
use crate::protocol::{Direction, Message};
use crate::session::SessionId;

/// How a held message is released.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Resume,
    Modify(Message),
    Block { reason: String },
}

/// What happens to a held message whose timeout runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseTimeoutPolicy {
    /// Deliver it (as if approved).
    #[serde(alias = "approve")]
    Continue,
    /// Answer it with an error (as if denied).
    #[default]
    #[serde(alias = "deny")]
    Block,
}

/// Who holds a message, and what its timeout means.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    /// The interceptor that paused it.
    pub plugin: Option<Arc<str>>,
    /// The version of the chain it paused in.
    pub chain_version: u64,
    /// The holder's own timeout policy, over the controller's.
    pub on_timeout: Option<PauseTimeoutPolicy>,
}

/// A held message, as an operator sees it.
#[derive(Debug, Clone)]
pub struct PausedMessage {
    pub id: u64,
    pub session_id: SessionId,
    pub direction: Direction,
    pub method: Option<String>,
    pub message: Message,
    /// `sha256:` and the hex digest of the message's exact bytes.
    pub digest: String,
    pub plugin: Option<Arc<str>>,
    pub chain_version: u64,
    pub since: SystemTime,
    pub deadline: SystemTime,
}

/// How a held message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Denied,
    Modified,
    TimedOut,
    /// Its session ended first.
    Ended,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Approved,
        Outcome::Denied,
        Outcome::Modified,
        Outcome::TimedOut,
        Outcome::Ended,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Denied => "denied",
            Outcome::Modified => "modified",
            Outcome::TimedOut => "timed_out",
            Outcome::Ended => "ended",
        }
    }

    fn of(resolution: &Resolution) -> Self {
        match resolution {
            Resolution::Resume => Outcome::Approved,
            Resolution::Modify(_) => Outcome::Modified,
            Resolution::Block { .. } => Outcome::Denied,
        }
    }
}

/// What a [`PauseController`] announces.
#[derive(Debug, Clone)]
pub enum PauseEvent {
    Held(PausedMessage),
    Settled {
        id: u64,
        session_id: SessionId,
        method: Option<String>,
        plugin: Option<Arc<str>>,
        outcome: Outcome,
        /// Who settled it: an operator (as the admin API names them), or membrane.
        by: String,
        /// Why, for a denial.
        reason: Option<String>,
    },
}

/// Why a settlement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("no held message has id {0}")]
    Unknown(u64),
    #[error("held message {0} was already settled, timed out or ended with its session")]
    Gone(u64),
    #[error("held message {0} is not the message you saw: its digest is {1}")]
    Stale(u64, String),
}

struct Held {
    paused: PausedMessage,
    release: oneshot::Sender<Resolution>,
}

pub struct PauseController {
    on_timeout: PauseTimeoutPolicy,
    max_held: usize,
    next_id: AtomicU64,
    held: Mutex<BTreeMap<u64, Held>>,
    events: broadcast::Sender<PauseEvent>,
    /// Settled messages, by [`Outcome`].
    outcomes: [AtomicU64; 5],
}

/// The default bound on messages held at once.
pub const DEFAULT_MAX_HELD: usize = 1024;

impl PauseController {
    pub fn new(on_timeout: PauseTimeoutPolicy) -> Self {
        Self::bounded(on_timeout, DEFAULT_MAX_HELD)
    }

    /// A controller that holds at most `max_held` messages; past that, a pause blocks at once.
    pub fn bounded(on_timeout: PauseTimeoutPolicy, max_held: usize) -> Self {
        Self {
            on_timeout,
            max_held,
            next_id: AtomicU64::new(1),
            held: Mutex::default(),
            events: broadcast::channel(256).0,
            outcomes: Default::default(),
        }
    }

    /// Holds the message until it is settled or `timeout` runs out.
    pub async fn hold(
        &self,
        ctx: &InterceptContext,
        timeout: Duration,
        holder: Holder,
    ) -> Resolution {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (release, released) = oneshot::channel();
        let since = SystemTime::now();
        let paused = PausedMessage {
            id,
            session_id: ctx.session_id.clone(),
            direction: ctx.direction,
            method: ctx.method().map(str::to_owned),
            digest: digest(&ctx.message),
            message: ctx.message.clone(),
            plugin: holder.plugin,
            chain_version: holder.chain_version,
            since,
            deadline: since + timeout,
        };
        {
            let mut held = self.held.lock();
            if held.len() >= self.max_held {
                tracing::warn!(
                    max = self.max_held,
                    "too many messages held; blocked at once"
                );
                return Resolution::Block {
                    reason: format!(
                        "membrane already holds {} messages for approval",
                        self.max_held
                    ),
                };
            }
            tracing::info!(pause = id, session = %ctx.session_id.redacted(), method = ctx.method(), plugin = paused.plugin.as_deref(), ?timeout, "message held");
            let _ = self.events.send(PauseEvent::Held(paused.clone()));
            held.insert(id, Held { paused, release });
        }
        let mut released = released;
        match tokio::time::timeout(timeout, &mut released).await {
            Ok(Ok(resolution)) => resolution,
            _ => {
                let Some(held) = self.held.lock().remove(&id) else {
                    // Settled just as the time ran out: the settlement stands.
                    return released.await.unwrap_or(Resolution::Block {
                        reason: "the held message was settled as it timed out".into(),
                    });
                };
                let policy = holder.on_timeout.unwrap_or(self.on_timeout);
                tracing::info!(pause = id, ?policy, "held message timed out");
                self.announce(&held.paused, Outcome::TimedOut, "membrane (timeout)", None);
                match policy {
                    PauseTimeoutPolicy::Continue => Resolution::Resume,
                    PauseTimeoutPolicy::Block => Resolution::Block {
                        reason: format!("held for approval for {timeout:?}; nobody approved it"),
                    },
                }
            }
        }
    }

    /// The message held under `id`, if it still is.
    pub fn held(&self, id: u64) -> Option<PausedMessage> {
        self.held.lock().get(&id).map(|h| h.paused.clone())
    }

    /// Messages currently held, oldest first.
    pub fn paused(&self) -> Vec<PausedMessage> {
        self.held
            .lock()
            .values()
            .map(|h| h.paused.clone())
            .collect()
    }

    /// Settles held message `id` on behalf of `by`, provided `digest` is still its digest;
    /// exactly one settlement of a message succeeds.
    pub fn settle(
        &self,
        id: u64,
        digest: &str,
        resolution: Resolution,
        by: &str,
    ) -> Result<(), SettleError> {
        let mut held = self.held.lock();
        let Some(entry) = held.get(&id) else {
            return Err(match id < self.next_id.load(Ordering::Relaxed) {
                true => SettleError::Gone(id),
                false => SettleError::Unknown(id),
            });
        };
        if entry.paused.digest != digest {
            return Err(SettleError::Stale(id, entry.paused.digest.clone()));
        }
        let entry = held.remove(&id).expect("just seen");
        drop(held);
        let reason = match &resolution {
            Resolution::Block { reason } => Some(reason.clone()),
            _ => None,
        };
        self.announce(&entry.paused, Outcome::of(&resolution), by, reason);
        // A holder gone (its task ended with the runtime) has nothing left to release.
        let _ = entry.release.send(resolution);
        Ok(())
    }

    /// Blocks every message a session still holds (the session is ending); returns how many.
    pub fn release_session(&self, session_id: &SessionId) -> usize {
        let ended: Vec<Held> = {
            let mut held = self.held.lock();
            let ids: Vec<u64> = held
                .iter()
                .filter(|(_, h)| &h.paused.session_id == session_id)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| held.remove(id)).collect()
        };
        for h in &ended {
            self.announce(&h.paused, Outcome::Ended, "membrane (session end)", None);
        }
        let count = ended.len();
        for h in ended {
            let reason = "the session ended while the message was held".to_owned();
            let _ = h.release.send(Resolution::Block { reason });
        }
        count
    }

    /// Every hold and settlement from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PauseEvent> {
        self.events.subscribe()
    }

    /// How many held messages were settled, by outcome.
    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        Outcome::ALL
            .iter()
            .map(|o| (o.name(), self.outcomes[*o as usize].load(Ordering::Relaxed)))
            .collect()
    }

    fn announce(&self, paused: &PausedMessage, outcome: Outcome, by: &str, reason: Option<String>) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(PauseEvent::Settled {
            id: paused.id,
            session_id: paused.session_id.clone(),
            method: paused.method.clone(),
            plugin: paused.plugin.clone(),
            outcome,
            by: by.to_owned(),
            reason,
        });
    }
}

/// `sha256:` and the hex digest of a message's exact bytes.
pub fn digest(message: &Message) -> String {
    format!("sha256:{:x}", Sha256::digest(message.raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportType;

    fn ctx() -> InterceptContext {
        InterceptContext::new(
            Message::new(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
            Direction::ClientToServer,
            SessionId::from("s"),
            TransportType::Stdio,
            1,
        )
    }

    fn holding(
        controller: &Arc<PauseController>,
        holder: Holder,
    ) -> tokio::task::JoinHandle<Resolution> {
        let controller = controller.clone();
        tokio::spawn(async move {
            controller
                .hold(&ctx(), Duration::from_secs(30), holder)
                .await
        })
    }

    async fn first_held(controller: &PauseController) -> PausedMessage {
        loop {
            if let Some(p) = controller.paused().into_iter().next() {
                return p;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_operator_settles_what_they_saw_once() {
        let controller = Arc::new(PauseController::new(PauseTimeoutPolicy::Block));
        let mut events = controller.subscribe();
        let holder = Holder {
            plugin: Some("approval".into()),
            chain_version: 3,
            on_timeout: None,
        };
        let task = holding(&controller, holder);
        let held = first_held(&controller).await;
        assert!(matches!(events.recv().await, Ok(PauseEvent::Held(p)) if p.id == held.id));
        assert_eq!(held.method.as_deref(), Some("tools/call"));
        assert_eq!(held.plugin.as_deref(), Some("approval"));
        assert_eq!(held.chain_version, 3);
        assert_eq!(held.digest, digest(&ctx().message));
        assert_eq!(
            held.deadline.duration_since(held.since).unwrap(),
            Duration::from_secs(30)
        );

        let stale = controller.settle(held.id, "sha256:00", Resolution::Resume, "test");
        assert!(matches!(stale, Err(SettleError::Stale(..))));
        assert_eq!(
            controller.settle(held.id + 1, &held.digest, Resolution::Resume, "test"),
            Err(SettleError::Unknown(held.id + 1))
        );
        let replacement = Message::new(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        controller
            .settle(
                held.id,
                &held.digest,
                Resolution::Modify(replacement.clone()),
                "test",
            )
            .unwrap();
        assert_eq!(task.await.unwrap(), Resolution::Modify(replacement));
        assert!(matches!(
            events.recv().await,
            Ok(PauseEvent::Settled {
                outcome: Outcome::Modified,
                ..
            })
        ));
        assert!(controller.paused().is_empty());
        assert_eq!(
            controller.settle(held.id, &held.digest, Resolution::Resume, "test"),
            Err(SettleError::Gone(held.id)),
            "settled once only"
        );
    }

    #[tokio::test]
    async fn racing_settlements_settle_once() {
        let controller = Arc::new(PauseController::new(PauseTimeoutPolicy::Block));
        let task = holding(&controller, Holder::default());
        let held = first_held(&controller).await;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (controller, digest) = (controller.clone(), held.digest.clone());
                std::thread::spawn(move || {
                    controller.settle(held.id, &digest, Resolution::Resume, "test")
                })
            })
            .collect();
        let won = racers
            .into_iter()
            .filter_map(|racer| racer.join().ok())
            .filter(Result::is_ok)
            .count();
        assert_eq!(won, 1);
        assert_eq!(task.await.unwrap(), Resolution::Resume);
    }

    #[tokio::test]
    async fn an_ending_session_blocks_what_it_holds() {
        let controller = Arc::new(PauseController::new(PauseTimeoutPolicy::Continue));
        let task = holding(&controller, Holder::default());
        first_held(&controller).await;
        assert_eq!(controller.release_session(&SessionId::from("other")), 0);
        assert_eq!(controller.release_session(&SessionId::from("s")), 1);
        assert!(matches!(task.await.unwrap(), Resolution::Block { .. }));
    }

    #[tokio::test]
    async fn the_holders_policy_then_the_controllers_decides_when_nobody_does() {
        let short = Duration::from_millis(10);
        let blocking = PauseController::new(PauseTimeoutPolicy::Block);
        assert!(matches!(
            blocking.hold(&ctx(), short, Holder::default()).await,
            Resolution::Block { .. }
        ));
        let approving = Holder {
            on_timeout: Some(PauseTimeoutPolicy::Continue),
            ..Holder::default()
        };
        assert_eq!(
            blocking.hold(&ctx(), short, approving).await,
            Resolution::Resume
        );
        let passing = PauseController::new(PauseTimeoutPolicy::Continue);
        assert_eq!(
            passing.hold(&ctx(), short, Holder::default()).await,
            Resolution::Resume
        );
        assert!(passing.paused().is_empty());
    }

    #[tokio::test]
    async fn holds_past_the_bound_are_blocked_at_once() {
        let controller = Arc::new(PauseController::bounded(PauseTimeoutPolicy::Continue, 1));
        let _first = holding(&controller, Holder::default());
        first_held(&controller).await;
        let second = controller
            .hold(&ctx(), Duration::from_secs(30), Holder::default())
            .await;
        assert!(matches!(second, Resolution::Block { .. }));
    }
}
