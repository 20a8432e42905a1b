//! The driver: the table of live connections and everything needed to drive them —
//! the timer wheel, the pool of busy states, the receive buffer, the handler and the
//! commands in flight. It turns readiness, deadlines and commands into calls on
//! connections and applies their [`Effects`]. The server and the fuzzers use this same
//! driver; only where the streams come from differs.

use super::Shutdown;
use super::app_timers::AppTimers;
use super::drain::Drain;
use super::metrics::Stats;
use super::timer::{Owner, TimerKey, TimerWheel};
use super::topics::{Change, Topics};
use crate::app::ctx::{Command, ConnCommand, Ctx, IdTable, Timeouts, TopicLimits};
use crate::app::handler::{ConnId, Handler};
use crate::config::Config;
use crate::conn::compress::{Codec, CompressionStats, Negotiated};
use crate::conn::{Conn, Edge, Effects, Env, Pool};
use crate::io::transport::Transport;
use crate::protocol::frame::{self, FIN, OP_BINARY, OP_TEXT, RSV1};
use log::debug;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tungstenite::{Bytes, Message};

/// Output from others is refused past this many times `max_pending_output`.
const HARD_FACTOR: usize = 4;
/// Busy-state boxes kept for reuse.
const POOL_MAX: usize = 64;
/// Size of the loop's one receive buffer: large reads for large messages, shared by all.
const SCRATCH: usize = 128 << 10;
/// Timer wheel resolution and size: 10 ms × 4096 slots covers 40 s in one revolution.
const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 4096;

/// Work lists keep up to this many entries' room between turns.
const KEEP: usize = 1024;

/// Gives back the room of an empty list that a burst made large.
fn trim<T>(list: &mut Vec<T>) {
    if list.is_empty() && list.capacity() > KEEP {
        list.shrink_to(KEEP);
    }
}

/// A frame built once for many connections: the header with a small payload in one
/// buffer, or the header alone and a large payload shared as it is.
struct SharedFrame {
    head: Bytes,
    body: Bytes,
    payload_len: usize,
}

impl SharedFrame {
    fn new(header: &[u8], payload: Bytes) -> SharedFrame {
        let payload_len = payload.len();
        if payload_len <= 4096 {
            let mut head = Vec::with_capacity(header.len() + payload_len);
            head.extend_from_slice(header);
            head.extend_from_slice(&payload);
            SharedFrame {
                head: head.into(),
                body: Bytes::new(),
                payload_len,
            }
        } else {
            SharedFrame {
                head: Bytes::copy_from_slice(header),
                body: payload,
                payload_len,
            }
        }
    }
}

/// A topic's message on its way to the subscribers: framed once plain, and compressed
/// once per window size among the subscribers that negotiated compression, when the
/// first of them is met.
struct Outgoing {
    opcode: u8,
    payload: Bytes,
    plain: SharedFrame,
    compressed: [Option<Option<SharedFrame>>; 8],
}

impl Outgoing {
    fn new(opcode: u8, payload: Bytes) -> Outgoing {
        let (header, used) = frame::header(FIN | opcode, payload.len());
        Outgoing {
            opcode,
            plain: SharedFrame::new(&header[..used], payload.clone()),
            payload,
            compressed: Default::default(),
        }
    }

    /// The frame for the subscriber in slot `key`, which negotiated `n`; a compressed
    /// one goes into its history too.
    fn frame_for(&mut self, codec: &mut Codec, n: Negotiated, key: u32) -> &SharedFrame {
        let Outgoing {
            opcode,
            payload,
            plain,
            compressed,
        } = self;
        if !codec.wants(n, payload.len()) {
            return plain;
        }
        let bits = Codec::window_bits(n).clamp(8, 15);
        let made = compressed[usize::from(bits - 8)].get_or_insert_with(|| {
            codec.deflate_shared(bits, payload).map(|body| {
                let (header, used) = frame::header(FIN | RSV1 | *opcode, body.len());
                SharedFrame::new(&header[..used], body.into())
            })
        });
        match made {
            Some(frame) => {
                codec.sent_shared(n, key, payload, frame.payload_len);
                frame
            }
            None => plain,
        }
    }
}

/// A connection and what the loop keeps about it.
struct Slot<S> {
    conn: Conn<S>,
    /// WRITABLE is registered.
    writable: bool,
    /// Commands from elsewhere queued output: flush at the end of the turn.
    dirty: bool,
    /// What those commands asked of the loop, settled with the flush.
    pending: Effects,
    /// The generation of the id this connection has (see `IdTable`).
    generation: u32,
    /// Counts toward the connection limits: handshaking, open or closing, not on its
    /// way out after an answer (a rejected client that keeps its socket open is no
    /// longer served, even while the connection lingers).
    counted: bool,
}

/// Connections and the machinery that drives them.
pub(crate) struct Driver<S, H> {
    pub(crate) cfg: Config,
    slots: Slab<Slot<S>>,
    /// Connection deadlines and, under their own owners, everyone else's timers.
    pub(crate) wheel: TimerWheel,
    pool: Pool,
    scratch: Box<[u8]>,
    pub(crate) handler: H,
    /// Which ids are open; what `Ctx` checks sends against.
    pub(crate) ids: IdTable,
    /// What callbacks asked for, while they run.
    commands: Vec<Command>,
    /// Commands for the loop to carry out: from callbacks (for anything but the
    /// connection called back), from the `Server` and from `Sender`s.
    pub(crate) deferred: Vec<Command>,
    app_timers: AppTimers,
    /// Heartbeats the application set per connection, by slot.
    timeouts: HashMap<u32, Timeouts>,
    /// Closes spread over a period, during a graceful shutdown.
    drain: Option<Drain>,
    /// A shutdown a callback or another thread asked for, for the server to begin.
    pub(crate) shutdown_request: Option<Shutdown>,
    topics: Topics,
    /// permessage-deflate: the loop's codec and the windows of connections with context
    /// takeover.
    codec: Codec,
    /// Topics that gained their first or lost their last subscriber, for a bridge.
    pub(crate) topic_changes: Vec<Change>,
    /// Local publishes, kept for a bridge to other processes when there is one.
    pub(crate) bridged: Option<Vec<(String, Message)>>,
    /// Connections with input left to read without a new readiness edge.
    revisit: Vec<usize>,
    /// Connections that got output from commands and wait for their flush.
    dirty: Vec<usize>,
    /// Timers that expired this turn (kept to reuse the allocation).
    expired: Vec<TimerKey>,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections that count toward the limits.
    counted: usize,
    pub(crate) stats: Stats,
    /// Connection timestamps count from here.
    epoch: Instant,
    /// The token of slab slot 0.
    first_token: usize,
}

impl<S: Transport, H: Handler> Driver<S, H> {
    pub(crate) fn new(cfg: Config, handler: H, now: Instant) -> Self {
        Driver {
            slots: Slab::new(),
            wheel: TimerWheel::new(now, TICK, SLOTS),
            pool: Pool::new(POOL_MAX),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            handler,
            ids: IdTable::default(),
            commands: Vec::new(),
            deferred: Vec::new(),
            app_timers: AppTimers::default(),
            timeouts: HashMap::new(),
            drain: None,
            shutdown_request: None,
            topics: Topics::default(),
            codec: Codec::new(cfg.compression),
            topic_changes: Vec::new(),
            bridged: cfg.redis.as_ref().map(|_| Vec::new()),
            revisit: Vec::new(),
            dirty: Vec::new(),
            expired: Vec::new(),
            per_ip: HashMap::new(),
            counted: 0,
            stats: Stats::default(),
            epoch: now,
            first_token: 0,
            cfg,
        }
    }

    /// Connections get tokens `first .. first + capacity`.
    pub(crate) fn set_first_token(&mut self, first: usize) {
        self.first_token = first;
    }

    /// Connections held, handshakes included.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Busy states held for reuse.
    pub(crate) fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// Connection `key`'s stream.
    pub(crate) fn stream(&self, key: usize) -> Option<&S> {
        self.slots.get(key).map(|s| s.conn.stream())
    }

    /// Bytes waiting for connection `key`'s socket.
    pub(crate) fn pending_output(&self, key: usize) -> Option<usize> {
        self.slots.get(key).map(|s| s.conn.pending_output())
    }

    /// Takes a new connection: registers it (readable), arms its handshake deadline.
    /// Over `max_connections` or the per-IP limit it is served only its 503.
    pub(crate) fn insert(
        &mut self,
        registry: &Registry,
        mut stream: S,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        let mut over_limit = self.counted >= self.cfg.max_connections;
        if let Some(limit) = self.cfg.max_connections_per_ip {
            let n = self.per_ip.entry(peer.ip()).or_insert(0);
            over_limit |= *n >= limit;
            *n += 1;
        }
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let token = Token(self.first_token + key);
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
            debug!("{peer}: register failed: {e}");
            self.forget_ip(peer.ip());
            return None;
        }
        let conn = Conn::new(stream, peer, now, self.epoch, over_limit);
        let generation = self.ids.id(key).generation;
        entry.insert(Slot {
            conn,
            writable: false,
            dirty: false,
            pending: Effects::default(),
            counted: true,
            generation,
        });
        self.counted += 1;
        self.settle(registry, key, Effects::RESCHEDULE, now);
        Some(key)
    }

    /// A readiness event for connection `key`.
    pub(crate) fn on_event(
        &mut self,
        registry: &Registry,
        key: usize,
        readable: bool,
        writable: bool,
        hangup: bool,
        now: Instant,
    ) {
        let edge = if hangup { Edge::Hangup } else { Edge::New };
        let effects = self.with_conn(key, |conn, scratch, env| {
            let mut effects = Effects::default();
            if writable {
                effects |= conn.on_writable(now, env);
            }
            if readable {
                effects |= conn.on_readable(now, scratch, env, edge);
            }
            effects
        });
        if let Some(effects) = effects {
            self.settle(registry, key, effects, now);
        }
        self.run_deferred(now);
    }

    /// Expires timers: connections' deadlines are handled here, the other owners'
    /// keys are returned in `others`.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant, others: &mut Vec<TimerKey>) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for &key in &expired {
            match key.owner() {
                Owner::Conn => {
                    let key = key.index();
                    let effects = self.with_conn(key, |conn, _, env| conn.on_timer(now, env));
                    if let Some(effects) = effects {
                        self.settle(registry, key, effects, now);
                    }
                }
                Owner::App => {
                    if let Some(timer) = self.app_timers.fired(key.index()) {
                        self.call_handler(|h, ctx| h.on_timer(ctx, timer));
                    }
                }
                Owner::Scraper => others.push(key),
            }
        }
        expired.clear();
        self.expired = expired;
        self.run_deferred(now);
    }

    /// The end of a loop turn: input left from earlier turns, then the output that
    /// commands queued this turn, one write per connection however many commands
    /// (sends, publishes) fed it.
    pub(crate) fn end_turn(&mut self, registry: &Registry, now: Instant) {
        let mut revisit = std::mem::take(&mut self.revisit);
        for &key in &revisit {
            let effects = self.with_conn(key, |conn, scratch, env| {
                conn.on_readable(now, scratch, env, Edge::Revisit)
            });
            if let Some(effects) = effects {
                self.settle(registry, key, effects, now);
            }
        }
        if self.revisit.is_empty() {
            revisit.clear();
            self.revisit = revisit;
        }
        self.close_drained(now);
        self.run_deferred(now);
        self.flush_dirty(registry, now);
        // A burst (thousands connecting at once) must not leave its lists' capacity
        // behind: memory follows the work.
        trim(&mut self.revisit);
        trim(&mut self.dirty);
        trim(&mut self.expired);
        trim(&mut self.deferred);
        trim(&mut self.commands);
    }

    /// Closes the open connections with `code`, spread evenly over `period`. The
    /// handshakes under way finish (within the handshake timeout) and are closed with
    /// `code` as they open: a client whose connect the kernel already took is told to
    /// come back, not reset. A zero `period` closes everything at once and drops the
    /// handshakes.
    pub(crate) fn shutdown(
        &mut self,
        registry: &Registry,
        now: Instant,
        code: u16,
        reason: &str,
        period: Duration,
    ) {
        let mut open = Vec::new();
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            if period.is_zero() {
                let effects = self.with_conn(key, |conn, _, env| conn.drop_handshake(now, env));
                if let Some(effects) = effects {
                    self.settle(registry, key, effects, now);
                }
            }
            let id = self.ids.id(key);
            if self.slots.contains(key) && self.ids.is_open(id) {
                open.push(id);
            }
        }
        self.drain = Some(Drain {
            ids: open,
            done: 0,
            start: now,
            period,
            code,
            reason: reason.to_string(),
        });
        self.close_drained(now);
        self.run_deferred(now);
        self.flush_dirty(registry, now);
    }

    /// Closes at once the connections a drain had not come to yet, and drops the
    /// handshakes still under way.
    pub(crate) fn hurry_drain(&mut self, registry: &Registry, now: Instant) {
        if let Some(drain) = self.drain.as_mut() {
            drain.period = Duration::ZERO;
        }
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            let effects = self.with_conn(key, |conn, _, env| conn.drop_handshake(now, env));
            if let Some(effects) = effects {
                self.settle(registry, key, effects, now);
            }
        }
        self.close_drained(now);
        self.run_deferred(now);
        self.flush_dirty(registry, now);
    }

    /// When the next spread close is due, during a drain.
    pub(crate) fn next_drain_close(&self) -> Option<Instant> {
        self.drain.as_ref().and_then(Drain::next_at)
    }

    /// Work is waiting that no event will announce.
    pub(crate) fn has_work(&self) -> bool {
        !self.revisit.is_empty() || !self.deferred.is_empty() || !self.dirty.is_empty()
    }

    /// A `Ctx` for acting outside callbacks: its commands run at the end of the turn.
    pub(crate) fn ctx_outside(&mut self) -> Ctx<'_> {
        let limits = self.topic_limits();
        Ctx {
            commands: &mut self.deferred,
            ids: &self.ids,
            topics: &self.topics,
            limits,
            current: None,
        }
    }

    /// Topics with subscribers, and subscriptions in all.
    pub(crate) fn topic_counts(&self) -> (usize, usize) {
        (self.topics.len(), self.topics.subscriptions())
    }

    /// Bytes through the compression codec, and connections holding context windows.
    pub(crate) fn compression(&self) -> (CompressionStats, usize) {
        (self.codec.stats, self.codec.windows.len())
    }

    fn topic_limits(&self) -> TopicLimits {
        TopicLimits {
            max_name: self.cfg.max_topic_len,
            max_subscriptions: self.cfg.max_subscriptions,
        }
    }

    /// Armed application timers.
    pub(crate) fn app_timers(&self) -> usize {
        self.app_timers.len()
    }

    /// Queues the closes of a drain that are due.
    fn close_drained(&mut self, now: Instant) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        let due = drain.due(now);
        for &id in &drain.ids[drain.done..due] {
            let close = ConnCommand::Close(drain.code, drain.reason.clone());
            self.deferred.push(Command::Conn(id, close));
        }
        drain.done = due;
    }

    /// Calls the handler outside any connection's event (an application timer).
    fn call_handler(&mut self, f: impl FnOnce(&mut H, &mut Ctx)) {
        let limits = self.topic_limits();
        let mut ctx = Ctx {
            commands: &mut self.commands,
            ids: &self.ids,
            topics: &self.topics,
            limits,
            current: None,
        };
        f(&mut self.handler, &mut ctx);
        self.deferred.append(&mut self.commands);
    }

    /// Carries out the loop's commands. Output they queue for connections waits for
    /// `flush_dirty`, at the end of the turn.
    fn run_deferred(&mut self, now: Instant) {
        while !self.deferred.is_empty() {
            for cmd in std::mem::take(&mut self.deferred) {
                self.run(cmd, now);
            }
        }
    }

    /// Writes the output commands queued, one write per connection, and settles each.
    /// Repeats while that makes more (an on_close after a failed write).
    fn flush_dirty(&mut self, registry: &Registry, now: Instant) {
        while !self.dirty.is_empty() {
            for key in std::mem::take(&mut self.dirty) {
                let effects = self.with_conn(key, |conn, _, env| {
                    conn.flush(now, env);
                    Effects::default()
                });
                let Some(mut effects) = effects else {
                    continue;
                };
                if let Some(slot) = self.slots.get_mut(key) {
                    slot.dirty = false;
                    effects |= std::mem::take(&mut slot.pending);
                }
                self.settle(registry, key, effects, now);
            }
            self.run_deferred(now);
        }
    }

    fn run(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Conn(id, cmd) => {
                if !self.ids.is_open(id) {
                    self.stats.commands_dropped += 1;
                    return;
                }
                let key = id.key();
                if self.drop_if_slow(key, now) {
                    return;
                }
                let effects = self.with_conn(key, |conn, _, env| conn.apply(cmd, now, env));
                if let Some(effects) = effects {
                    self.mark_dirty(key, effects);
                }
            }
            Command::Publish { topic, msg } => {
                if let Some(out) = self.bridged.as_mut() {
                    // To other processes at the end of the turn; here at once.
                    out.push((topic.clone(), msg.clone()));
                }
                self.publish(&topic, msg, now);
            }
            #[cfg(feature = "redis")]
            Command::Deliver { topic, msg } => self.publish(&topic, msg, now),
            Command::Subscribe(id, topic) => {
                if self.ids.is_open(id)
                    && self
                        .topics
                        .subscribe(
                            id.key,
                            &topic,
                            self.cfg.max_subscriptions,
                            &mut self.topic_changes,
                        )
                        .is_err()
                {
                    self.stats.subscriptions_refused += 1;
                    debug!("{id}: subscription to {topic:?} refused: too many");
                }
            }
            Command::Unsubscribe(id, topic) => {
                if self.ids.is_open(id) {
                    self.topics
                        .unsubscribe(id.key, &topic, &mut self.topic_changes);
                }
            }
            Command::SetTimer(timer, after) => {
                if timer.conn.is_none_or(|c| self.ids.is_open(c)) {
                    self.app_timers.set(timer, now + after, &mut self.wheel);
                }
            }
            Command::CancelTimer(timer) => self.app_timers.cancel(timer, &mut self.wheel),
            Command::Shutdown(how) => {
                self.shutdown_request.get_or_insert(how);
            }
            Command::Timeouts(id, timeouts) => {
                if self.ids.is_open(id) {
                    if timeouts == Timeouts::default() {
                        self.timeouts.remove(&id.key);
                    } else {
                        self.timeouts.insert(id.key, timeouts);
                    }
                    self.mark_dirty(id.key(), Effects::RESCHEDULE);
                }
            }
        }
    }

    /// Frames `msg` once and queues the frame for every open subscriber of `topic`.
    fn publish(&mut self, topic: &str, msg: Message, now: Instant) {
        let Some(members) = self.topics.members(topic) else {
            return;
        };
        let (opcode, payload) = match msg {
            Message::Text(t) => (OP_TEXT, Bytes::from(t)),
            Message::Binary(b) => (OP_BINARY, b),
            // Refused when the command was made.
            _ => return,
        };
        let mut out = Outgoing::new(opcode, payload);
        let hard_limit = self.cfg.max_pending_output.saturating_mul(HARD_FACTOR);
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        for key in members {
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            if !slot.conn.is_open() {
                continue;
            }
            if slot.conn.pending_output() > hard_limit {
                slow.push(key);
                continue;
            }
            let frame = out.frame_for(&mut self.codec, slot.conn.negotiated(), key as u32);
            slot.conn
                .queue_shared(&frame.head, &frame.body, &mut self.pool, &self.cfg, now);
            delivered += 1;
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(key);
            }
        }
        // Over the limit before this one: the socket may take some now; if not, the
        // subscriber is dropped, else it gets the message.
        for key in slow {
            if !self.drop_if_slow(key, now)
                && let Some(slot) = self.slots.get_mut(key)
            {
                let frame = out.frame_for(&mut self.codec, slot.conn.negotiated(), key as u32);
                slot.conn
                    .queue_shared(&frame.head, &frame.body, &mut self.pool, &self.cfg, now);
                delivered += 1;
            }
        }
        self.stats.messages_out += delivered;
        self.stats.bytes_out += delivered * out.payload.len() as u64;
        self.stats.published += 1;
    }

    /// Output from others stops at a hard bound: a connection whose unsent output is
    /// over `HARD_FACTOR × max_pending_output` even after the socket took what it
    /// would is failed (1008) rather than given more, so memory stays bounded whatever
    /// is sent to it. (Over `max_pending_output` alone, a connection has `SLOW_AFTER`
    /// to catch up — see the Slow deadline — and its own echoes are bounded by
    /// reading pausing instead.)
    fn drop_if_slow(&mut self, key: usize, now: Instant) -> bool {
        let limit = self.cfg.max_pending_output.saturating_mul(HARD_FACTOR);
        if self
            .slots
            .get(key)
            .is_none_or(|s| s.conn.pending_output() <= limit)
        {
            return false;
        }
        let effects = self.with_conn(key, |conn, _, env| {
            conn.flush(now, env);
            if conn.pending_output() <= limit {
                return Effects::default();
            }
            conn.fail_slow(now, env)
        });
        if let Some(effects) = effects {
            self.mark_dirty(key, effects);
        }
        self.slots.get(key).is_none_or(|s| !s.conn.is_open())
    }

    /// Output was queued for `key` by a command: flush and settle at the end of the turn.
    fn mark_dirty(&mut self, key: usize, effects: Effects) {
        if let Some(slot) = self.slots.get_mut(key) {
            slot.pending |= effects;
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Calls `f` on connection `key` with what it borrows from the loop; None if there
    /// is no such connection.
    fn with_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Conn<S>, &mut [u8], &mut Env<H>) -> Effects,
    ) -> Option<Effects> {
        let timeouts = self.timeouts_of(key);
        let limits = self.topic_limits();
        let slot = self.slots.get_mut(key)?;
        let id = ConnId {
            key: key as u32,
            generation: slot.generation,
        };
        let mut env = Env {
            cfg: &self.cfg,
            pool: &mut self.pool,
            stats: &mut self.stats,
            handler: &mut self.handler,
            ctx: Ctx {
                commands: &mut self.commands,
                ids: &self.ids,
                topics: &self.topics,
                limits,
                current: None,
            },
            deferred: &mut self.deferred,
            epoch: self.epoch,
            id,
            timeouts,
            codec: &mut self.codec,
        };
        Some(f(&mut slot.conn, &mut self.scratch, &mut env))
    }

    /// Brings the loop in line with the connection after a call: removal, pooling,
    /// interest, timer and revisits.
    fn settle(&mut self, registry: &Registry, key: usize, effects: Effects, now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let conn = &mut slot.conn;
        if slot.counted && conn.is_leaving() {
            slot.counted = false;
            self.counted -= 1;
            let ip = conn.peer().ip();
            self.forget_ip(ip);
            return self.settle(registry, key, effects, now);
        }
        if conn.is_dead() {
            let mut slot = self.slots.remove(key);
            slot.conn.stream_mut().close();
            if let Some(timer) = TimerKey::new(Owner::Conn, key) {
                self.wheel.cancel(timer);
            }
            if self.ids.update(key, false, 0) {
                self.closed(key);
            }
            self.ids.release(key);
            return;
        }
        // A handshake that was under way when the drain began: closed as it opens.
        if let Some(drain) = &self.drain
            && conn.is_open()
        {
            let id = self.ids.id(key);
            if !self.ids.is_open(id) {
                let close = ConnCommand::Close(drain.code, drain.reason.clone());
                self.deferred.push(Command::Conn(id, close));
            }
        }
        let closed = self.ids.update(key, conn.is_open(), conn.pending_output());
        conn.release_idle(&self.cfg, &mut self.pool);
        let pending = conn.pending_output() as u64;
        self.stats.pending_output_high_water = self.stats.pending_output_high_water.max(pending);
        let want_write = conn.wants_write();
        if want_write != slot.writable {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(self.first_token + key);
            if registry
                .reregister(conn.stream_mut(), token, interest)
                .is_ok()
            {
                slot.writable = want_write;
            }
        }
        if effects.contains(Effects::RESCHEDULE)
            && let Some(timer) = TimerKey::new(Owner::Conn, key)
        {
            let timeouts = self.timeouts_of(key);
            let conn = &self.slots[key].conn;
            match conn.deadline(&self.cfg, timeouts, now, self.epoch) {
                Some((at, _)) => self.wheel.schedule(timer, at),
                None => self.wheel.cancel(timer),
            }
        }
        if effects.contains(Effects::REVISIT) {
            self.revisit.push(key);
        }
        if closed {
            self.closed(key);
        }
    }

    /// The connection in slot `key` is no longer open (its on_close ran): what it
    /// had beyond its own state goes — subscriptions, timers, heartbeat settings.
    fn closed(&mut self, key: usize) {
        self.codec.closed(key as u32);
        self.topics.leave_all(key as u32, &mut self.topic_changes);
        self.app_timers.conn_closed(key, &mut self.wheel);
        self.timeouts.remove(&(key as u32));
    }

    fn timeouts_of(&self, key: usize) -> Timeouts {
        if self.timeouts.is_empty() {
            return Timeouts::default();
        }
        self.timeouts
            .get(&(key as u32))
            .copied()
            .unwrap_or_default()
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        if self.cfg.max_connections_per_ip.is_some()
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slab slot is what an idle connection costs besides its wheel node.
    #[test]
    fn slot_is_small() {
        let size = std::mem::size_of::<Slot<crate::io::stream::Stream>>();
        // mio's sockets carry a selector id in debug builds only.
        let limit = if cfg!(debug_assertions) { 72 } else { 64 };
        assert!(size <= limit, "Slot is {size} bytes");
    }
}
