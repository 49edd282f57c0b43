//! [`PauseController`]: holds paused messages until an operator resumes, modifies or blocks
//! them, or their timeout runs out (then the [`PauseTimeoutPolicy`] decides). Holding a message
//! parks only that message's task; the rest of the session's traffic goes on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

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
    Continue,
    #[default]
    Block,
}

/// A held message, as an operator sees it.
#[derive(Debug, Clone)]
pub struct PausedMessage {
    pub id: u64,
    pub session_id: SessionId,
    pub direction: Direction,
    pub method: Option<String>,
    pub message: Message,
    pub since: SystemTime,
    pub timeout: Duration,
}

struct Held {
    paused: PausedMessage,
    release: oneshot::Sender<Resolution>,
}

pub struct PauseController {
    on_timeout: PauseTimeoutPolicy,
    next_id: AtomicU64,
    held: Mutex<BTreeMap<u64, Held>>,
}

impl PauseController {
    pub fn new(on_timeout: PauseTimeoutPolicy) -> Self {
        Self {
            on_timeout,
            next_id: AtomicU64::new(1),
            held: Mutex::default(),
        }
    }

    /// Holds the message until it is released or `timeout` runs out.
    pub async fn hold(&self, ctx: &InterceptContext, timeout: Duration) -> Resolution {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (release, released) = oneshot::channel();
        let paused = PausedMessage {
            id,
            session_id: ctx.session_id.clone(),
            direction: ctx.direction,
            method: ctx.method().map(str::to_owned),
            message: ctx.message.clone(),
            since: SystemTime::now(),
            timeout,
        };
        tracing::info!(pause = id, session = %ctx.session_id.redacted(), method = ctx.method(), ?timeout, "message paused");
        self.held().insert(id, Held { paused, release });
        match tokio::time::timeout(timeout, released).await {
            Ok(Ok(resolution)) => resolution,
            _ => {
                self.held().remove(&id);
                tracing::info!(pause = id, policy = ?self.on_timeout, "pause timed out");
                match self.on_timeout {
                    PauseTimeoutPolicy::Continue => Resolution::Resume,
                    PauseTimeoutPolicy::Block => Resolution::Block {
                        reason: format!("held for approval for {timeout:?}; nobody released it"),
                    },
                }
            }
        }
    }

    /// Messages currently held, oldest first.
    pub fn paused(&self) -> Vec<PausedMessage> {
        self.held().values().map(|h| h.paused.clone()).collect()
    }

    /// Releases a held message; `false` when no message with this id is held.
    pub fn release(&self, id: u64, resolution: Resolution) -> bool {
        match self.held().remove(&id) {
            Some(held) => held.release.send(resolution).is_ok(),
            None => false,
        }
    }

    /// Blocks every message a session still holds (the session is ending); returns how many.
    pub fn release_session(&self, session_id: &SessionId) -> usize {
        let mut held = self.held();
        let ids: Vec<u64> = held
            .iter()
            .filter(|(_, h)| &h.paused.session_id == session_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(h) = held.remove(id) {
                let reason = "the session ended while the message was held".to_owned();
                let _ = h.release.send(Resolution::Block { reason });
            }
        }
        ids.len()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    async fn held_id(controller: &PauseController) -> u64 {
        loop {
            if let Some(p) = controller.paused().first() {
                return p.id;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_operator_releases_a_held_message() {
        let controller = Arc::new(PauseController::new(PauseTimeoutPolicy::Block));
        let holder = {
            let controller = controller.clone();
            tokio::spawn(async move { controller.hold(&ctx(), Duration::from_secs(30)).await })
        };
        let id = held_id(&controller).await;
        assert_eq!(controller.paused()[0].method.as_deref(), Some("tools/call"));
        let replacement = Message::new(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(controller.release(id, Resolution::Modify(replacement.clone())));
        assert_eq!(holder.await.unwrap(), Resolution::Modify(replacement));
        assert!(controller.paused().is_empty());
        assert!(
            !controller.release(id, Resolution::Resume),
            "released once only"
        );
    }

    #[tokio::test]
    async fn an_ending_session_blocks_what_it_holds() {
        let controller = Arc::new(PauseController::new(PauseTimeoutPolicy::Continue));
        let holder = {
            let controller = controller.clone();
            tokio::spawn(async move { controller.hold(&ctx(), Duration::from_secs(30)).await })
        };
        held_id(&controller).await;
        assert_eq!(controller.release_session(&SessionId::from("other")), 0);
        assert_eq!(controller.release_session(&SessionId::from("s")), 1);
        assert!(matches!(holder.await.unwrap(), Resolution::Block { .. }));
    }

    #[tokio::test]
    async fn the_timeout_policy_decides_when_nobody_does() {
        let blocking = PauseController::new(PauseTimeoutPolicy::Block);
        assert!(matches!(
            blocking.hold(&ctx(), Duration::from_millis(10)).await,
            Resolution::Block { .. }
        ));
        let passing = PauseController::new(PauseTimeoutPolicy::Continue);
        assert_eq!(
            passing.hold(&ctx(), Duration::from_millis(10)).await,
            Resolution::Resume
        );
        assert!(passing.paused().is_empty());
    }
}
