//! Lock waiters woken by the release instead of polling for it.
//!
//! The race it closes: a waiter that polls with jittered sleeps finds a released lock only at
//! its next poll, so every hand-over of a hot journey's lock costs idle time (half a poll
//! interval on average), and the holder that released it, already running, tends to win the
//! next round. Here the release script publishes the released token on the lock's own channel
//! (`<lock key>:released`, same hash tag, so on a cluster `SPUBLISH` stays on the lock's node),
//! and the store's subscriber wakes the waiter that has waited longest in this process.
//!
//! What it guarantees:
//! - **No lost wake-up turns into a hang.** A notification can be lost (published before the
//!   subscription was confirmed, a reconnect, a waiter that gave up after it was chosen); every
//!   wait is also bounded by a fallback poll, which is also how a lock that expired (its holder
//!   died) is found.
//! - **FIFO within a process.** Waiters of one lock keep the ticket they took when they first
//!   waited; a waiter that was woken but lost the race to another process goes back to its
//!   place, ahead of later arrivals. Across processes each release wakes every process' oldest
//!   waiter and the lock's `SET NX` picks one, so a waiter's chance of losing `k` rounds in a
//!   row falls geometrically; the retry budget bounds the rest.
//! - **No subscription is left behind.** A lock's channel is subscribed while this process has
//!   a waiter for it, and unsubscribed when the last one leaves. One task issues every
//!   subscribe and unsubscribe in order and acts on the waiters present when it runs, so a
//!   late unsubscribe never cancels a newer waiter's subscription.
//!
//! Releases are deduplicated by token: with several lock masters, each publishes the same
//! release once, and only the first wakes anyone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::handle::{Redis, Subscriber};

/// The channel a lock's release is published on.
pub(crate) fn channel(lock_key: &str) -> String {
    format!("{lock_key}:released")
}

/// The waiters of this process' locks, and one subscriber per lock master that wakes them.
#[derive(Debug, Clone)]
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
    /// Per lock master: whether its release must be published with `SPUBLISH` to reach the
    /// subscriber.
    sharded: Vec<bool>,
}

#[derive(Debug)]
struct Shared {
    channels: Mutex<HashMap<String, Waiting>>,
    /// One per subscriber: channels whose subscription it must bring in line with `channels`.
    reconcile: Vec<mpsc::UnboundedSender<String>>,
    next_ticket: std::sync::atomic::AtomicU64,
}

/// The waiters of one lock in this process.
#[derive(Debug)]
struct Waiting {
    /// Armed waiters by ticket: the oldest is woken first.
    queue: BTreeMap<u64, oneshot::Sender<()>>,
    /// Waiters registered, armed or not; the channel is dropped when it reaches zero.
    registered: usize,
    /// True once Redis confirmed the subscription.
    subscribed: watch::Sender<bool>,
    /// The last release that woke someone, to ignore its copies from other masters.
    last_release: Option<String>,
}

impl Wakeups {
    /// Opens a subscriber connection to each lock master and starts the tasks that serve
    /// them; they end when the last clone of the returned value is dropped. A master that
    /// cannot be subscribed to now only costs its notifications: waiters still poll.
    pub(crate) async fn start(nodes: &[Redis]) -> Self {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let mut subscribers = Vec::with_capacity(nodes.len());
        let mut sharded = Vec::with_capacity(nodes.len());
        for node in nodes {
            sharded.push(node.is_cluster());
            match node.subscriber(push_tx.clone()).await {
                Ok(subscriber) => subscribers.push(subscriber),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot subscribe to a lock master's releases; its waiters will poll"
                ),
            }
        }
        let (reconcile, requests): (Vec<_>, Vec<_>) = subscribers
            .iter()
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let shared = Arc::new(Shared {
            channels: Mutex::new(HashMap::new()),
            reconcile,
            next_ticket: std::sync::atomic::AtomicU64::new(0),
        });
        for (subscriber, requests) in subscribers.into_iter().zip(requests) {
            tokio::spawn(manage(Arc::downgrade(&shared), requests, subscriber));
        }
        tokio::spawn(deliver(Arc::downgrade(&shared), push_rx));
        Self { shared, sharded }
    }

    /// Whether lock master `node`'s releases must be published with `SPUBLISH`.
    pub(crate) fn sharded(&self, node: usize) -> bool {
        self.sharded.get(node).copied().unwrap_or(false)
    }

    /// Registers a waiter for the lock whose release is published on `channel`. Register
    /// before the attempt that may fail, so a release between that attempt and the wait is not
    /// missed.
    pub(crate) fn register(&self, channel: &str) -> Waiter {
        let ticket = self
            .shared
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let subscribed = {
            let mut channels = self.shared.lock();
            let waiting = channels.entry(channel.to_owned()).or_insert_with(|| {
                // First waiter: ask for the subscription.
                self.shared.reconcile(channel);
                Waiting {
                    queue: BTreeMap::new(),
                    registered: 0,
                    subscribed: watch::Sender::new(false),
                    last_release: None,
                }
            });
            waiting.registered += 1;
            waiting.queue.insert(ticket, tx);
            waiting.subscribed.subscribe()
        };
        Waiter {
            shared: Arc::clone(&self.shared),
            channel: channel.to_owned(),
            ticket,
            woken: Some(rx),
            subscribed,
        }
    }
}

impl Wakeups {
    /// This process' waiters for the lock whose releases go to `channel`.
    pub(crate) fn waiters(&self, channel: &str) -> LockWaiters {
        self.shared
            .lock()
            .get(channel)
            .map_or(LockWaiters::default(), |w| LockWaiters {
                queued: w.registered,
                subscribed: *w.subscribed.borrow(),
            })
    }
}

/// What this process knows of the waiters for one lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockWaiters {
    /// Acquisitions of this process waiting for the lock.
    pub queued: usize,
    /// Whether Redis has confirmed the subscription to the lock's releases.
    pub subscribed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reconcile(&self, channel: &str) {
        for manager in &self.reconcile {
            // A manager that has stopped has nothing left to subscribe.
            let _ = manager.send(channel.to_owned());
        }
    }

    /// Wakes the oldest armed waiter of `channel` for the release of `token`.
    fn wake(&self, channel: &str, token: &str) {
        let mut channels = self.lock();
        let Some(waiting) = channels.get_mut(channel) else {
            return;
        };
        if waiting.last_release.as_deref() == Some(token) {
            return;
        }
        waiting.last_release = Some(token.to_owned());
        // A waiter that gave up has dropped its receiver: the next one is woken instead.
        while let Some((_, tx)) = waiting.queue.pop_first() {
            if tx.send(()).is_ok() {
                break;
            }
        }
    }
}

/// One waiter's place in its lock's queue; leaving (drop) gives the place up.
#[derive(Debug)]
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    channel: String,
    ticket: u64,
    woken: Option<oneshot::Receiver<()>>,
    subscribed: watch::Receiver<bool>,
}

/// Why [`Waiter::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The lock was released.
    Released,
    /// The fallback poll interval passed without a notification.
    Timeout,
}

impl Waiter {
    /// Waits at most `within` for Redis to confirm the channel's subscription; a waiter that
    /// retries after this cannot miss a release by subscribing too late.
    pub(crate) async fn subscribed(&mut self, within: Duration) {
        let _ = tokio::time::timeout(within, self.subscribed.wait_for(|s| *s)).await;
    }

    /// Waits until the lock is released or `fallback` has passed, then takes its place in the
    /// queue again (same ticket), ready for the next attempt.
    pub(crate) async fn wait(&mut self, fallback: Duration) -> Woken {
        let woken = match self.woken.take() {
            Some(rx) => match tokio::time::timeout(fallback, rx).await {
                Ok(Ok(())) => Woken::Released,
                Ok(Err(_)) | Err(_) => Woken::Timeout,
            },
            None => {
                tokio::time::sleep(fallback).await;
                Woken::Timeout
            }
        };
        self.rearm();
        woken
    }

    fn rearm(&mut self) {
        let (tx, rx) = oneshot::channel();
        let mut channels = self.shared.lock();
        if let Some(waiting) = channels.get_mut(&self.channel) {
            waiting.queue.insert(self.ticket, tx);
            self.woken = Some(rx);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut channels = self.shared.lock();
        let Some(waiting) = channels.get_mut(&self.channel) else {
            return;
        };
        waiting.queue.remove(&self.ticket);
        waiting.registered = waiting.registered.saturating_sub(1);
        if waiting.registered == 0 {
            channels.remove(&self.channel);
            self.shared.reconcile(&self.channel);
        }
    }
}

/// Brings each requested channel's subscription in line with whether it has waiters now.
async fn manage(
    shared: Weak<Shared>,
    mut requests: mpsc::UnboundedReceiver<String>,
    mut subscriber: Subscriber,
) {
    let mut active: HashSet<String> = HashSet::new();
    while let Some(channel) = requests.recv().await {
        let wanted = match shared.upgrade() {
            Some(shared) => shared.lock().contains_key(&channel),
            None => return,
        };
        match (wanted, active.contains(&channel)) {
            (true, false) => match subscriber.subscribe(&channel).await {
                Ok(()) => {
                    active.insert(channel.clone());
                }
                // The waiters fall back to polling.
                Err(e) => {
                    tracing::debug!(%channel, error = %e, "cannot subscribe to a lock's releases");
                }
            },
            (false, true) => {
                if let Err(e) = subscriber.unsubscribe(&channel).await {
                    tracing::debug!(%channel, error = %e, "cannot unsubscribe from a lock's releases");
                }
                active.remove(&channel);
            }
            _ => {}
        }
        if active.contains(&channel)
            && let Some(shared) = shared.upgrade()
            && let Some(waiting) = shared.lock().get(&channel)
        {
            waiting.subscribed.send_replace(true);
        }
    }
}

/// Delivers published releases to the waiters.
async fn deliver(shared: Weak<Shared>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = pushes.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if matches!(push.kind, PushKind::Message | PushKind::SMessage)
            && let [channel, token, ..] = push.data.as_slice()
            && let (Some(channel), Some(token)) = (text(channel), text(token))
        {
            shared.wake(&channel, &token);
        }
    }
}

fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(value).ok()
}
