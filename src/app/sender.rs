//! A way into the loop from other threads: a [`Sender`] queues requests and wakes the
//! loop, which applies them on its own thread — the one writer. gorilla's recipe puts
//! a channel in front of each connection's single writer; here the loop is that
//! writer for every connection, and this is its channel.

use super::ctx::{Command, ConnCommand, SendError, check, check_publish};
use super::handler::ConnId;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tungstenite::Message;

/// A cloneable handle to send to connections from any thread.
///
/// Every call returns at once. The queue into the loop is bounded
/// ([`Config::sender_queue`](crate::Config::sender_queue)): when it is full the call
/// fails with [`SendError::Full`] rather than blocking, so a producer never stalls on a
/// slow loop and decides itself whether to retry, drop or slow down. Once the server
/// is dropped every call fails with [`SendError::ServerGone`].
///
/// A request is checked against the connection when the loop applies it: a message
/// for a connection that closed meanwhile is dropped and counted
/// (`wsloop_commands_dropped_total`). Requests from one `Sender` (and its clones) are
/// applied in the order they were made.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

/// The state a `Sender` and the loop share.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// Mirrors the queue's length, for the loop to look without locking.
    len: AtomicUsize,
    capacity: usize,
    /// The longest topic name accepted.
    max_topic: usize,
    /// A wake-up is on its way: further sends need not make another.
    wake_pending: AtomicBool,
    waker: OnceLock<Arc<mio::Waker>>,
}

struct Queue {
    requests: VecDeque<Command>,
    rejected: u64,
    closed: bool,
}

impl Sender {
    /// Queues `msg` for `conn`.
    pub fn send(&self, conn: ConnId, msg: Message) -> Result<(), SendError> {
        check(&msg)?;
        self.push(Command::Conn(conn, ConnCommand::Send(msg)))
    }

    /// Starts the close handshake on `conn`.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), SendError> {
        self.push(Command::Conn(
            conn,
            ConnCommand::Close(code, reason.to_string()),
        ))
    }

    /// Subscribes `conn` to `topic`. A subscription over the connection's limit is
    /// refused when the loop applies it (counted as `wsloop_subscriptions_refused_total`).
    pub fn subscribe(&self, conn: ConnId, topic: &str) -> Result<(), SendError> {
        self.push(Command::Subscribe(conn, topic.to_string()))
    }

    /// Ends `conn`'s subscription to `topic`.
    pub fn unsubscribe(&self, conn: ConnId, topic: &str) -> Result<(), SendError> {
        self.push(Command::Unsubscribe(conn, topic.to_string()))
    }

    /// Publishes a text or binary message to `topic` (see
    /// [`Ctx::publish`](crate::Ctx::publish)).
    pub fn publish(&self, topic: &str, msg: Message) -> Result<(), SendError> {
        check_publish(topic, &msg, self.shared.max_topic)?;
        self.push(Command::Publish {
            topic: topic.to_string(),
            msg,
        })
    }

    /// Asks the loop to shut down gracefully, as [`Server::shutdown`] does.
    ///
    /// [`Server::shutdown`]: crate::Server::shutdown
    pub fn shutdown(&self, how: crate::server::Shutdown) -> Result<(), SendError> {
        self.push(Command::Shutdown(how))
    }

    /// Requests waiting for the loop.
    pub fn queued(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    pub(crate) fn push(&self, cmd: Command) -> Result<(), SendError> {
        let shared = &self.shared;
        {
            let mut q = shared.lock();
            if q.closed {
                return Err(SendError::ServerGone);
            }
            if q.requests.len() >= shared.capacity {
                q.rejected += 1;
                return Err(SendError::Full);
            }
            q.requests.push_back(cmd);
            shared.len.store(q.requests.len(), Ordering::Relaxed);
        }
        // One wake-up per batch: the loop clears the flag before it drains.
        if !shared.wake_pending.swap(true, Ordering::AcqRel)
            && let Some(waker) = shared.waker.get()
        {
            let _ = waker.wake();
        }
        Ok(())
    }
}

impl Shared {
    pub(crate) fn new(capacity: usize, max_topic: usize) -> Arc<Shared> {
        Arc::new(Shared {
            max_topic,
            queue: Mutex::new(Queue {
                requests: VecDeque::new(),
                rejected: 0,
                closed: false,
            }),
            len: AtomicUsize::new(0),
            capacity,
            wake_pending: AtomicBool::new(false),
            waker: OnceLock::new(),
        })
    }

    pub(crate) fn sender(self: &Arc<Self>) -> Sender {
        Sender {
            shared: self.clone(),
        }
    }

    /// The waker senders use from now on (set once, when the server is registered).
    pub(crate) fn set_waker(&self, waker: Arc<mio::Waker>) {
        let _ = self.waker.set(waker);
    }

    /// Moves up to `max` requests into `out`, oldest first.
    pub(crate) fn drain(&self, max: usize, out: &mut Vec<Command>) {
        self.wake_pending.store(false, Ordering::Release);
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut q = self.lock();
        let n = q.requests.len().min(max);
        out.extend(q.requests.drain(..n));
        self.len.store(q.requests.len(), Ordering::Relaxed);
    }

    /// Requests waiting, and requests refused because the queue was full, in all.
    pub(crate) fn depth_and_rejected(&self) -> (usize, u64) {
        let q = self.lock();
        (q.requests.len(), q.rejected)
    }

    pub(crate) fn has_requests(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    /// The server is gone: refuse everything from now on.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.requests.clear();
        self.len.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A producer that panicked while holding the lock left the queue whole (every
        // change under it is a single push or drain), so keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}
