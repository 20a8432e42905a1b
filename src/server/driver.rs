//! The driver: the table of live connections and everything needed to drive them —
//! the timer wheel, the pool of busy states, the receive buffer, the handler and the
//! commands in flight. It turns readiness, deadlines and commands into calls on
//! connections and applies their [`Effects`]. The server and the fuzzers use this same
//! driver; only where the streams come from differs.

use crate::app::handler::{Command, ConnId, Ctx, Handler};
use crate::config::Config;
use crate::conn::{Conn, Edge, Effects, Env, Pool};
use crate::io::transport::Transport;
use crate::server::metrics::Stats;
use crate::server::timer::{Owner, TimerKey, TimerWheel};
use log::debug;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Busy-state boxes kept for reuse.
const POOL_MAX: usize = 64;
/// Size of the loop's one receive buffer: large reads for large messages, shared by all.
const SCRATCH: usize = 128 << 10;
/// Timer wheel resolution and size: 10 ms × 4096 slots covers 40 s in one revolution.
const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 4096;

/// A connection and what the loop keeps about it.
struct Slot<S> {
    conn: Conn<S>,
    /// WRITABLE is registered.
    writable: bool,
    /// Commands from elsewhere queued output: flush at the end of the turn.
    dirty: bool,
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
    ctx: Ctx,
    /// Commands for other connections than the one a callback was about.
    deferred: Vec<(ConnId, Command)>,
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
            ctx: Ctx::default(),
            deferred: Vec::new(),
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
        entry.insert(Slot {
            conn,
            writable: false,
            dirty: false,
            counted: true,
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
        self.run_deferred(registry, now);
    }

    /// Expires timers: connections' deadlines are handled here, the other owners'
    /// keys are returned in `others`.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant, others: &mut Vec<TimerKey>) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for &key in &expired {
            if key.owner() != Owner::Conn {
                others.push(key);
                continue;
            }
            let key = key.index();
            if let Some(effects) = self.with_conn(key, |conn, _, env| conn.on_timer(now, env)) {
                self.settle(registry, key, effects, now);
            }
        }
        expired.clear();
        self.expired = expired;
        self.run_deferred(registry, now);
    }

    /// The end of a loop turn: input left from earlier turns, then the output that
    /// commands queued, one write per connection.
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
        self.run_deferred(registry, now);
    }

    /// Starts the close of every connection (1001), dropping half-open ones.
    pub(crate) fn shutdown(&mut self, registry: &Registry, now: Instant) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(effects) = self.with_conn(key, |conn, _, env| conn.shutdown(now, env)) {
                self.settle(registry, key, effects, now);
            }
        }
        self.run_deferred(registry, now);
    }

    /// Work is waiting that no event will announce.
    pub(crate) fn has_work(&self) -> bool {
        !self.revisit.is_empty()
    }

    /// Applies commands made for other connections, then flushes every connection
    /// they gave output to. Repeats while callbacks (on_close of a failed write) make
    /// more.
    fn run_deferred(&mut self, registry: &Registry, now: Instant) {
        while !self.deferred.is_empty() || !self.dirty.is_empty() {
            for (id, cmd) in std::mem::take(&mut self.deferred) {
                let key = id.0;
                let effects = self.with_conn(key, |conn, _, env| conn.apply(cmd, now, env));
                if let Some(effects) = effects {
                    if let Some(slot) = self.slots.get_mut(key)
                        && !slot.dirty
                    {
                        slot.dirty = true;
                        self.dirty.push(key);
                    }
                    self.settle(registry, key, effects, now);
                }
            }
            for key in std::mem::take(&mut self.dirty) {
                let effects = self.with_conn(key, |conn, _, env| {
                    conn.flush(now, env);
                    Effects::default()
                });
                if let Some(slot) = self.slots.get_mut(key) {
                    slot.dirty = false;
                }
                if let Some(effects) = effects {
                    self.settle(registry, key, effects, now);
                }
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
        let slot = self.slots.get_mut(key)?;
        let mut env = Env {
            cfg: &self.cfg,
            pool: &mut self.pool,
            stats: &mut self.stats,
            handler: &mut self.handler,
            ctx: &mut self.ctx,
            deferred: &mut self.deferred,
            epoch: self.epoch,
            id: ConnId(key),
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
            return;
        }
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
            match conn.deadline(&self.cfg, now, self.epoch) {
                Some((at, _)) => self.wheel.schedule(timer, at),
                None => self.wheel.cancel(timer),
            }
        }
        if effects.contains(Effects::REVISIT) {
            self.revisit.push(key);
        }
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
        let limit = if cfg!(debug_assertions) { 80 } else { 72 };
        assert!(size <= limit, "Slot is {size} bytes");
    }
}
