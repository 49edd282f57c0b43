//! [`Queue`]: a bounded queue whose consumer runs, on a task of its own, only while the queue
//! holds something. An HTTP side's messages arrive on requests and leave on them, so a session
//! with HTTP on both sides keeps its inbound frames and its outboxes in these rather than in
//! channels read by tasks that wait: an idle session then has no task and no waiting receiver,
//! only four empty queues. Pushing waits while the queue is full (back-pressure), and the
//! consumer takes one item at a time, in order, as a reading task would.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Sending;
use super::cancel::wait_until;

/// A queue shared by its clones; see the module's documentation.
pub struct Queue<T>(Arc<Shared<T>>);

type Consuming = Pin<Box<dyn Future<Output = ()> + Send>>;
type Consumer<T> = Arc<dyn Fn(T) -> Consuming + Send + Sync>;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken when an item is taken (room for a waiting push), when the queue closes, and when
    /// the consumer goes idle.
    changed: Notify,
    depth: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Dropped once the queue has ended, so that what it holds (a session's parts, which may
    /// hold this queue) is released.
    consumer: Option<Consumer<T>>,
    /// Called once the queue has ended.
    on_ended: Option<Box<dyn FnOnce() + Send>>,
    /// A task is taking items.
    draining: bool,
    /// No more items are taken in.
    closed: bool,
    /// The item in hand is abandoned.
    aborted: bool,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.lock();
        f.debug_struct("Queue")
            .field("len", &state.items.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl<T: Send + 'static> Queue<T> {
    /// A queue that holds at most `depth` items.
    pub fn new(depth: usize) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State {
                items: VecDeque::new(),
                consumer: None,
                on_ended: None,
                draining: false,
                closed: false,
                aborted: false,
            }),
            changed: Notify::new(),
            depth,
        }))
    }

    /// Queues an item and starts the consumer if it is idle; waits while the queue is full.
    /// Resolves to `false` when the queue is closed and the item was not queued.
    pub fn push(&self, item: T) -> Sending<'_> {
        match self.try_push(item) {
            Ok(queued) => Sending::Done(queued),
            Err(item) => Sending::Waiting(Box::pin(self.push_when_room(item))),
        }
    }

    fn try_push(&self, item: T) -> Result<bool, T> {
        let mut state = self.0.lock();
        if state.closed {
            return Ok(false);
        }
        if state.items.len() >= self.0.depth {
            return Err(item);
        }
        state.items.push_back(item);
        self.start_if_ready(state);
        Ok(true)
    }

    async fn push_when_room(&self, mut item: T) -> bool {
        loop {
            let notified = self.0.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_push(item) {
                Ok(queued) => return queued,
                Err(back) => item = back,
            }
            notified.await;
        }
    }

    /// Hands each item, in order, to `consume` from now on; what was queued before goes first.
    pub fn consume<F>(&self, consume: impl Fn(T) -> F + Send + Sync + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut state = self.0.lock();
        if state.has_ended() {
            return;
        }
        state.consumer = Some(Arc::new(move |item| Box::pin(consume(item))));
        self.start_if_ready(state);
    }

    /// Takes no more items; what is queued is still consumed.
    pub fn close(&self) {
        let mut state = self.0.lock();
        state.closed = true;
        self.0.settle(state);
    }

    /// Closes the queue and gives what it holds `grace` to be consumed, then aborts it; `false`
    /// when it had to (a peer that no longer reads).
    pub async fn close_within(&self, grace: std::time::Duration) -> bool {
        self.close();
        let ended = tokio::time::timeout(grace, self.ended()).await.is_ok();
        if !ended {
            self.abort();
        }
        ended
    }

    /// Closes the queue and drops what it holds; the item being consumed is carried through.
    pub fn stop(&self) {
        self.end(false)
    }

    /// Closes the queue, drops what it holds and abandons the item being consumed.
    pub fn abort(&self) {
        self.end(true)
    }

    fn end(&self, abandon: bool) {
        let mut state = self.0.lock();
        state.closed = true;
        state.aborted |= abandon;
        let dropped = std::mem::take(&mut state.items);
        self.0.settle(state);
        drop(dropped);
    }

    /// Resolves once the queue is closed and everything it took in has been consumed.
    pub async fn ended(&self) {
        wait_until(&self.0.changed, || self.0.lock().has_ended()).await
    }

    /// Calls `then` once the queue has ended (now, if it has): how its reader hears the end
    /// without a task waiting for it.
    pub fn on_ended(&self, then: impl FnOnce() + Send + 'static) {
        let mut state = self.0.lock();
        if state.has_ended() {
            drop(state);
            then();
        } else {
            state.on_ended = Some(Box::new(then));
        }
    }

    /// Starts a task that consumes what is queued, unless one runs or there is no consumer.
    fn start_if_ready(&self, mut state: MutexGuard<'_, State<T>>) {
        if state.draining || state.items.is_empty() {
            return;
        }
        let Some(consumer) = state.consumer.clone() else {
            return;
        };
        state.draining = true;
        drop(state);
        let draining = Draining {
            shared: self.0.clone(),
            armed: true,
        };
        tokio::spawn(drain(draining, consumer));
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a change of state: once the queue has ended, lets go of its consumer and says so;
    /// wakes whoever waits either way.
    fn settle(&self, mut state: MutexGuard<'_, State<T>>) {
        let ended = state
            .has_ended()
            .then(|| (state.consumer.take(), state.on_ended.take()));
        drop(state);
        if let Some((consumer, on_ended)) = ended {
            drop(consumer);
            if let Some(on_ended) = on_ended {
                on_ended();
            }
        }
        self.changed.notify_waiters();
    }
}

impl<T> State<T> {
    fn has_ended(&self) -> bool {
        self.closed && !self.draining && self.items.is_empty()
    }
}

/// Consumes items until the queue runs empty (or is aborted), then goes idle. The queue's
/// memory goes with the last item: an idle queue holds none.
async fn drain<T>(mut draining: Draining<T>, consume: Consumer<T>) {
    let shared = draining.shared.clone();
    loop {
        let item = {
            let mut state = shared.lock();
            match state.items.pop_front() {
                Some(item) => item,
                None => {
                    // Idle in the same breath as found empty, so a push meanwhile starts anew.
                    state.items = VecDeque::new();
                    state.draining = false;
                    draining.armed = false;
                    shared.settle(state);
                    return;
                }
            }
        };
        shared.changed.notify_waiters();
        let aborted = wait_until(&shared.changed, || shared.lock().aborted);
        tokio::select! {
            biased;
            () = consume(item) => {}
            () = aborted => return,
        }
    }
}

/// Marks the queue idle when its consumer's task ends without running it empty: aborted, a
/// panic, or dropped, even before it first ran (a runtime shutting down).
struct Draining<T> {
    shared: Arc<Shared<T>>,
    armed: bool,
}

impl<T> Drop for Draining<T> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.lock();
            state.draining = false;
            self.shared.settle(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn consumes_in_order_what_came_before_and_after_the_consumer() {
        let queue = Queue::new(8);
        assert!(queue.push(1).await);
        let (seen, mut heard) = tokio::sync::mpsc::unbounded_channel();
        queue.consume(move |n: i32| {
            let seen = seen.clone();
            async move {
                tokio::task::yield_now().await;
                seen.send(n).unwrap();
            }
        });
        for n in 2..=5 {
            assert!(queue.push(n).await);
        }
        for n in 1..=5 {
            assert_eq!(
                tokio::time::timeout(WAIT, heard.recv()).await.unwrap(),
                Some(n)
            );
        }
        queue.close();
        assert!(!queue.push(6).await, "a closed queue takes nothing");
        tokio::time::timeout(WAIT, queue.ended()).await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_queue_has_no_task() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let queue = Queue::new(8);
        let (taken, mut heard) = tokio::sync::mpsc::unbounded_channel();
        queue.consume(move |n: i32| {
            let taken = taken.clone();
            async move {
                taken.send(n).unwrap();
            }
        });
        assert_eq!(tasks(), before, "no task before anything is queued");
        for n in 0..3 {
            assert!(queue.push(n).await);
            assert_eq!(
                tokio::time::timeout(WAIT, heard.recv()).await.unwrap(),
                Some(n)
            );
            // The consumer's task ends once the queue has run empty.
            for _ in 0..100 {
                if tasks() == before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(tasks(), before, "the consumer's task ended with the work");
        }
    }

    #[tokio::test]
    async fn its_end_is_told_once_the_last_item_is_consumed() {
        let queue = Queue::new(8);
        let (told, mut heard) = tokio::sync::oneshot::channel();
        queue.on_ended(move || told.send(()).unwrap());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = std::sync::Mutex::new(Some(released));
        queue.consume(move |_: i32| {
            let released = released.lock().unwrap().take();
            async move {
                if let Some(released) = released {
                    let _ = released.await;
                }
            }
        });
        assert!(queue.push(1).await);
        queue.close();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(heard.try_recv().is_err(), "not while an item is in hand");
        release.send(()).unwrap();
        tokio::time::timeout(WAIT, heard).await.unwrap().unwrap();
        // Told at once when it has ended already.
        let (told, heard) = tokio::sync::oneshot::channel();
        queue.on_ended(move || told.send(()).unwrap());
        tokio::time::timeout(WAIT, heard).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_holds_its_pushers_back() {
        let queue = Queue::new(2);
        assert!(queue.push(1).await);
        assert!(queue.push(2).await);
        let mut third = spawn_push(&queue, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "the third push waits for room");
        let consumed = Arc::new(AtomicUsize::new(0));
        let counter = consumed.clone();
        queue.consume(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        assert!(
            tokio::time::timeout(WAIT, &mut third)
                .await
                .unwrap()
                .unwrap()
        );
        queue.close();
        tokio::time::timeout(WAIT, queue.ended()).await.unwrap();
        assert_eq!(consumed.load(Ordering::SeqCst), 3);
    }

    fn spawn_push(queue: &Queue<i32>, n: i32) -> tokio::task::JoinHandle<bool> {
        let queue = queue.clone();
        tokio::spawn(async move { queue.push(n).await })
    }

    #[tokio::test]
    async fn aborting_abandons_the_item_in_hand_and_drops_the_rest() {
        let queue = Queue::new(8);
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        queue.consume(|item: Counted| async move {
            std::future::pending::<()>().await;
            drop(item);
        });
        for _ in 0..3 {
            assert!(queue.push(Counted(dropped.clone())).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.close();
        let ended = tokio::time::timeout(Duration::from_millis(50), queue.ended()).await;
        assert!(ended.is_err(), "closing waits for the item in hand");
        queue.stop();
        let ended = tokio::time::timeout(Duration::from_millis(50), queue.ended()).await;
        assert!(ended.is_err(), "stopping carries the item in hand through");
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "what was queued is dropped"
        );
        queue.abort();
        tokio::time::timeout(WAIT, queue.ended()).await.unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_consumer_whose_task_never_ran_is_let_go() {
        let held = Arc::new(());
        let queue = Queue::new(8);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let kept = held.clone();
            queue.consume(move |_: i32| {
                let _ = &kept;
                async {}
            });
            // Queued, and a task started to consume it; nothing here yields, so it never runs.
            assert!(queue.push(1).await);
        });
        drop(runtime);
        queue.abort();
        assert_eq!(Arc::strong_count(&held), 1, "the consumer was released");
    }

    #[tokio::test]
    async fn an_ended_queue_lets_go_of_its_consumer() {
        let queue = Queue::new(8);
        let held = Arc::new(());
        let kept = held.clone();
        queue.consume(move |_: i32| {
            let _ = &kept;
            async {}
        });
        assert!(queue.push(1).await);
        queue.close();
        tokio::time::timeout(WAIT, queue.ended()).await.unwrap();
        // The consumer task drops its handle just after marking the queue idle.
        for _ in 0..100 {
            if Arc::strong_count(&held) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(Arc::strong_count(&held), 1, "the consumer was released");
    }
}
