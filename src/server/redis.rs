//! Topics across processes: a bridge to Redis pub/sub (feature `redis`, `--redis`).
//!
//! A topic is a Redis channel of the same name. A message published in this process
//! is delivered to its local subscribers at once, as without a bridge, and also
//! PUBLISHed to Redis wrapped in an envelope that names this process; every process
//! SUBSCRIBEs only to the topics that have local subscribers (driven by the topics'
//! [`Change`]s), delivers what arrives to them, and drops its own messages when
//! Redis hands them back — so no local subscriber gets a message twice.
//!
//! # Why threads
//!
//! The bridge is two threads, each with its own connection (a connection that has
//! subscribed cannot publish): the publisher takes local publishes from a bounded
//! channel and pipelines them; the subscriber keeps the subscriptions in line and
//! enters the loop through a [`Sender`], like any other thread. The loop's side is a
//! `try_send` and a channel push per turn: it never waits on Redis, whatever Redis
//! does. A non-blocking connection in the loop's own `Poll` would save the threads
//! and one queue hop, but the `redis` crate has no non-blocking sync API, so it would
//! mean a RESP parser and reconnect logic of our own on the loop — more code to fuzz
//! than two threads cost.
//!
//! # What is lost (at-most-once)
//!
//! Redis pub/sub keeps nothing: a message reaches the processes subscribed when Redis
//! handles it, once, or never. Lost are: messages published elsewhere while this
//! process's subscriber connection is down or resubscribing; local publishes while
//! the publisher connection is down (dropped, counted); local publishes past the
//! outbound queue's [`OUTBOUND`] and deliveries the loop's `Sender` queue refuses for
//! [`DELIVER_PATIENCE`]. Local subscribers never miss local publishes. Reconnects
//! back off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], resubscribe every topic with
//! local subscribers, and are logged (warn) and counted.
//!
//! # The envelope
//!
//! `wsl1`, the publishing process's 8-byte id, `t` (text) or `b` (binary), the
//! payload. Anything else on a subscribed channel, a text payload that is not UTF-8,
//! or a payload over `max_message`, is dropped (debug log, counted). The client reads
//! a message whole before it is checked; Redis's own pub/sub output-buffer limit (32
//! MiB by default) bounds it. Channels are global in Redis (every database sees
//! them): give wsloop a Redis of its own, or topic names nobody else publishes to.
//!
//! Subscription changes reach the subscriber thread through an unbounded channel
//! that it drains every [`POLL`] (every [`DELIVER_PATIENCE`] at worst, while the loop
//! refuses deliveries): it holds no more than the topics' churn meanwhile.

use super::metrics::BridgeGauges;
use super::topics::Change;
use crate::app::ctx::{Command, SendError};
use crate::app::sender::Sender;
use log::{debug, info, warn};
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};
use tungstenite::{Bytes, Message, Utf8Bytes};

/// Local publishes waiting for the publisher thread; more are dropped and counted.
pub(crate) const OUTBOUND: usize = 16_384;
/// How long the subscriber retries a delivery the loop's full queue refuses.
pub(crate) const DELIVER_PATIENCE: Duration = Duration::from_secs(1);
/// Reconnect backoff: doubles from the first to the last.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// See [`BACKOFF_MIN`].
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the subscriber, waiting for messages, looks at subscription changes: a
/// topic's first local subscriber is subscribed in Redis within about this long.
const POLL: Duration = Duration::from_millis(20);
/// Connect, read and write timeout of a Redis command: a Redis that hangs is treated
/// as gone.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that served this long before it failed was healthy: reconnecting
/// starts again from [`BACKOFF_MIN`].
const HEALTHY: Duration = Duration::from_secs(1);
/// An idle publisher checks its connection this often.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Publishes sent to Redis in one pipeline at most.
const BATCH: usize = 256;
const MAGIC: &[u8; 4] = b"wsl1";

/// What the loop keeps of the bridge: the two ways out to its threads, and the
/// state they report.
pub(crate) struct Bridge {
    publishes: SyncSender<(String, Message)>,
    changes: mpsc::Sender<Change>,
    status: Arc<Status>,
}

/// The bridge's state, for the metrics.
#[derive(Default)]
pub(crate) struct Status {
    subscriber_up: AtomicBool,
    publisher_up: AtomicBool,
    /// Connections made again after a failure.
    reconnects: AtomicU64,
    /// Messages dropped: Redis away, queues full, malformed or oversized.
    dropped: AtomicU64,
}

impl Status {
    /// Both connections are up.
    fn connected(&self) -> bool {
        self.subscriber_up.load(Ordering::Relaxed) && self.publisher_up.load(Ordering::Relaxed)
    }

    /// The state now, for one scrape.
    pub(crate) fn snapshot(&self) -> BridgeGauges {
        BridgeGauges {
            connected: self.connected(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Bridge {
    /// Starts the threads (they connect, and retry, on their own); fails only on a
    /// URL that does not parse.
    pub(crate) fn start(url: &str, sender: Sender, max_message: usize) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let id = process_id();
        let status = Arc::new(Status::default());
        let (publishes, outbound) = mpsc::sync_channel(OUTBOUND);
        let (changes, changed) = mpsc::channel();
        let publisher = Publisher {
            client: client.clone(),
            id,
            status: status.clone(),
        };
        std::thread::Builder::new()
            .name("wsloop-redis-pub".into())
            .spawn(move || publisher.run(&outbound))
            .map_err(redis::RedisError::from)?;
        let subscriber = Subscriber {
            client,
            id,
            status: status.clone(),
            sender,
            max_message,
            wanted: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("wsloop-redis-sub".into())
            .spawn(move || subscriber.run(&changed))
            .map_err(redis::RedisError::from)?;
        Ok(Bridge {
            publishes,
            changes,
            status,
        })
    }

    /// Hands the bridge this turn's local publishes and subscription changes; never
    /// blocks.
    pub(crate) fn forward(
        &self,
        publishes: &mut Vec<(String, Message)>,
        changes: &mut Vec<Change>,
    ) {
        for change in changes.drain(..) {
            let _ = self.changes.send(change);
        }
        for p in publishes.drain(..) {
            if let Err(TrySendError::Full(_)) = self.publishes.try_send(p) {
                self.status.drop_one();
            }
        }
    }

    /// What the threads report.
    pub(crate) fn status(&self) -> &Status {
        &self.status
    }
}

/// A random id for this process's envelopes.
fn process_id() -> [u8; 8] {
    // RandomState's keys come from the OS's randomness and differ at each call, so
    // two servers in one process get two ids.
    let seed = std::collections::hash_map::RandomState::new();
    seed.hash_one((std::process::id(), Instant::now()))
        .to_le_bytes()
}

/// Waits out a backoff step; false when the loop is gone (the channel closed).
fn backoff<T>(delay: &mut Duration, rx: &Receiver<T>, mut take: impl FnMut(T)) -> bool {
    let until = Instant::now() + *delay;
    *delay = (*delay * 2).min(BACKOFF_MAX);
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(item) => take(item),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Connects with the I/O timeouts set.
fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// Logs a lost or failed connection once per outage, counts the recovery, and
/// sets the backoff.
struct Outage {
    what: &'static str,
    since: Option<Instant>,
}

impl Outage {
    fn new(what: &'static str) -> Outage {
        Outage { what, since: None }
    }

    /// A connection made at `since` failed. One that had served a while starts the
    /// backoff over; one that fails at once (Redis answering errors, say) backs off
    /// further rather than spin.
    fn down(&mut self, e: &redis::RedisError, since: Instant, delay: &mut Duration) {
        if since.elapsed() >= HEALTHY {
            *delay = BACKOFF_MIN;
        }
        if self.since.is_none() {
            warn!(
                "redis {}: {e}; reconnecting (backoff {delay:?} up to {BACKOFF_MAX:?})",
                self.what
            );
            self.since = Some(Instant::now());
        } else {
            debug!("redis {}: {e}; retrying in {delay:?}", self.what);
        }
    }

    fn up(&mut self, status: &Status) {
        match self.since.take() {
            Some(t) => {
                status.reconnects.fetch_add(1, Ordering::Relaxed);
                info!(
                    "redis {} connected again after {:?}",
                    self.what,
                    t.elapsed()
                );
            }
            None => info!("redis {} connected", self.what),
        }
    }
}

struct Publisher {
    client: redis::Client,
    id: [u8; 8],
    status: Arc<Status>,
}

impl Publisher {
    /// Publishes what the loop sends until the loop is gone.
    fn run(self, rx: &Receiver<(String, Message)>) {
        let mut outage = Outage::new("publisher");
        let mut delay = BACKOFF_MIN;
        loop {
            match connect(&self.client) {
                Ok(mut conn) => {
                    outage.up(&self.status);
                    self.status.publisher_up.store(true, Ordering::Relaxed);
                    let since = Instant::now();
                    let served = self.serve(&mut conn, rx);
                    self.status.publisher_up.store(false, Ordering::Relaxed);
                    let Err(e) = served else {
                        return;
                    };
                    outage.down(&e, since, &mut delay);
                }
                Err(e) => outage.down(&e, Instant::now(), &mut delay),
            }
            // Publishes made while Redis is away are dropped, not sent late.
            if !backoff(&mut delay, rx, |_| self.status.drop_one()) {
                return;
            }
        }
    }

    /// Sends batches of publishes until the connection fails (Err) or the loop is
    /// gone (Ok).
    fn serve(
        &self,
        conn: &mut redis::Connection,
        rx: &Receiver<(String, Message)>,
    ) -> redis::RedisResult<()> {
        let mut envelope = Vec::new();
        loop {
            let first = match rx.recv_timeout(IDLE_PING) {
                Ok(p) => p,
                // An idle connection would learn only at the next publish that Redis
                // went away, and lose that publish.
                Err(RecvTimeoutError::Timeout) => {
                    redis::cmd("PING").exec(conn)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let mut pipe = redis::pipe();
            let mut n = 0;
            let mut next = Some(first);
            while let Some((topic, msg)) = next.take() {
                let (kind, payload): (u8, &[u8]) = match &msg {
                    Message::Text(t) => (b't', t.as_bytes()),
                    Message::Binary(b) => (b'b', b),
                    _ => continue,
                };
                envelope.clear();
                envelope.extend_from_slice(MAGIC);
                envelope.extend_from_slice(&self.id);
                envelope.push(kind);
                envelope.extend_from_slice(payload);
                pipe.cmd("PUBLISH").arg(topic).arg(&envelope[..]).ignore();
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = pipe.exec(conn) {
                self.status.dropped.fetch_add(n as u64, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

struct Subscriber {
    client: redis::Client,
    id: [u8; 8],
    status: Arc<Status>,
    sender: Sender,
    max_message: usize,
    /// Topics with local subscribers: what Redis should have us subscribed to.
    wanted: HashSet<String>,
}

/// Why the subscriber's connection ended.
enum End {
    Lost(redis::RedisError),
    /// The loop is gone: the thread ends.
    Gone,
}

impl From<redis::RedisError> for End {
    fn from(e: redis::RedisError) -> End {
        End::Lost(e)
    }
}

impl Subscriber {
    fn run(mut self, changes: &Receiver<Change>) {
        let mut outage = Outage::new("subscriber");
        let mut delay = BACKOFF_MIN;
        loop {
            match connect(&self.client) {
                Ok(mut conn) => {
                    outage.up(&self.status);
                    let since = Instant::now();
                    let served = self.serve(&mut conn, changes);
                    self.status.subscriber_up.store(false, Ordering::Relaxed);
                    match served {
                        Ok(()) | Err(End::Gone) => return,
                        Err(End::Lost(e)) => outage.down(&e, since, &mut delay),
                    }
                }
                Err(e) => outage.down(&e, Instant::now(), &mut delay),
            }
            let wanted = &mut self.wanted;
            if !backoff(&mut delay, changes, |c| apply(wanted, c)) {
                return;
            }
        }
    }

    /// Subscribes to every wanted topic, then follows changes and delivers messages
    /// until the connection fails or the loop is gone.
    fn serve(
        &mut self,
        conn: &mut redis::Connection,
        changes: &Receiver<Change>,
    ) -> Result<(), End> {
        let mut ps = conn.as_pubsub();
        let mut subscribed: HashSet<String> = HashSet::new();
        // After a connect, every wanted topic is (re)subscribed.
        let mut touched: HashSet<String> = self.wanted.clone();
        ps.set_read_timeout(Some(POLL))?;
        let mut up = false;
        loop {
            loop {
                match changes.try_recv() {
                    Ok(c) => {
                        touched.insert(topic_of(&c).to_string());
                        apply(&mut self.wanted, c);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(End::Gone),
                }
            }
            if !touched.is_empty() {
                // Subscription replies are awaited with the full timeout, not POLL's.
                ps.set_read_timeout(Some(IO_TIMEOUT))?;
                let (add, remove): (Vec<String>, Vec<String>) = touched
                    .drain()
                    .filter(|t| self.wanted.contains(t) != subscribed.contains(t))
                    .partition(|t| self.wanted.contains(t));
                if !add.is_empty() {
                    ps.subscribe(&add)?;
                    subscribed.extend(add);
                }
                if !remove.is_empty() {
                    ps.unsubscribe(&remove)?;
                    for t in &remove {
                        subscribed.remove(t);
                    }
                }
                ps.set_read_timeout(Some(POLL))?;
            }
            if !up {
                // Up once the resubscription after a connect went through.
                self.status.subscriber_up.store(true, Ordering::Relaxed);
                up = true;
            }
            match ps.get_message() {
                Ok(msg) => self.deliver(msg.get_channel_name(), msg.get_payload_bytes())?,
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(End::Lost(e)),
            }
        }
    }

    /// Hands a message from Redis to the loop, unless it is ours or not ours to take.
    fn deliver(&self, topic: &str, raw: &[u8]) -> Result<(), End> {
        let Some((id, kind, payload)) = open(raw) else {
            debug!(
                "redis: dropped a message on {topic:?} that is not a wsloop envelope ({} bytes)",
                raw.len()
            );
            self.status.drop_one();
            return Ok(());
        };
        if id == self.id {
            return Ok(());
        }
        if payload.len() > self.max_message {
            debug!(
                "redis: dropped a {} byte message on {topic:?}: over max_message",
                payload.len()
            );
            self.status.drop_one();
            return Ok(());
        }
        let payload = Bytes::copy_from_slice(payload);
        let msg = match kind {
            b't' => match Utf8Bytes::try_from(payload) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    debug!("redis: dropped a text message on {topic:?} that is not UTF-8");
                    self.status.drop_one();
                    return Ok(());
                }
            },
            _ => Message::Binary(payload),
        };
        let until = Instant::now() + DELIVER_PATIENCE;
        loop {
            let cmd = Command::Deliver {
                topic: topic.to_string(),
                msg: msg.clone(),
            };
            match self.sender.push(cmd) {
                Ok(()) => return Ok(()),
                // Redis holds what follows meanwhile.
                Err(SendError::Full) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(SendError::ServerGone) => return Err(End::Gone),
                Err(_) => {
                    debug!("redis: dropped a message on {topic:?}: the loop's queue is full");
                    self.status.drop_one();
                    return Ok(());
                }
            }
        }
    }
}

/// Keeps the set of wanted topics in line with a change.
fn apply(wanted: &mut HashSet<String>, change: Change) {
    match change {
        Change::Added(t) => wanted.insert(t.to_string()),
        Change::Removed(t) => wanted.remove(&*t),
    };
}

fn topic_of(change: &Change) -> &str {
    match change {
        Change::Added(t) | Change::Removed(t) => t,
    }
}

/// Splits an envelope into the sender's id, the kind and the payload.
fn open(raw: &[u8]) -> Option<([u8; 8], u8, &[u8])> {
    let rest = raw.strip_prefix(MAGIC)?;
    let (id, rest) = rest.split_first_chunk::<8>()?;
    let (&kind, payload) = rest.split_first()?;
    matches!(kind, b't' | b'b').then_some((*id, kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let mut e = MAGIC.to_vec();
        e.extend_from_slice(&[7; 8]);
        e.push(b't');
        assert_eq!(open(&e), Some(([7; 8], b't', &b""[..])));
        assert_eq!(open(&e[..12]), None);
        e.extend_from_slice(b"hi");
        assert_eq!(open(&e), Some(([7; 8], b't', &b"hi"[..])));
        e[12] = b'x';
        assert_eq!(open(&e), None);
        assert_eq!(open(b"wsl1short"), None);
        assert_eq!(open(b"hello world, not ours"), None);
        assert_ne!(process_id(), process_id());
    }

    #[test]
    fn wanted_follows_changes() {
        let mut w = HashSet::new();
        apply(&mut w, Change::Added("a".into()));
        apply(&mut w, Change::Added("b".into()));
        apply(&mut w, Change::Removed("a".into()));
        assert_eq!(w, HashSet::from(["b".to_string()]));
    }
}
