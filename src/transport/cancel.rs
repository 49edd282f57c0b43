//! [`Cancel`]: a flag that a session's parts raise once to tell the others to end (a
//! connection closed, a session closing, a pump to stop). It answers as tokio-util's
//! `CancellationToken` does, without child tokens, in a quarter of its memory: every session
//! has several, and an idle session should cost little. [`wait_until`] is how it waits, and
//! how anything kept as an atomic beside a [`Notify`] is waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A cancellation flag shared by its clones.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag and wakes whoever waits for it; later calls do nothing.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised.
    pub async fn cancelled(&self) {
        wait_until(&self.0.notify, || self.is_cancelled()).await
    }

    /// [`Cancel::cancelled`], owning its flag.
    pub async fn cancelled_owned(self) {
        self.cancelled().await
    }
}

/// Resolves once `done` holds, checking it again each time `notify` wakes its waiters.
pub(crate) async fn wait_until(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between the two still wakes it.
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_every_waiter_once_and_stays_raised() {
        let cancel = Cancel::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| tokio::spawn(cancel.clone().cancelled_owned()))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        cancel.cancel();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a waiter was not woken")
                .unwrap();
        }
        assert!(cancel.is_cancelled());
        cancel.cancel();
        // Raised before anyone waits: resolves at once.
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .unwrap();
    }
}
