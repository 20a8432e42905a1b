//! One connection's state machine: handshake, open, closing, and the ways out. It is
//! generic over the byte stream, so the same code serves TCP, TLS and the fuzzers'
//! in-memory streams, and it knows nothing of the poll, the slab or other connections.
//!
//! The contract with the loop: every entry point is told the time and returns
//! [`Effects`] — what the loop must do next that it cannot see for itself. The rest
//! the loop derives from the connection's state after each call: the interest to
//! register ([`Conn::wants_write`]), whether to free its work state
//! ([`Conn::release_idle`]) and whether to remove it ([`Conn::is_dead`]).
//!
//! Memory follows the work: everything a connection needs only while it is busy (the
//! frame scanner, a partial frame, unsent output) lives in one [`Busy`] box that goes
//! back to a small per-loop pool as soon as the connection sits between messages with
//! nothing to send.

mod busy;
mod close;
pub(crate) mod compress;
mod deadline;
mod read;

pub(crate) use busy::Pool;
pub(crate) use deadline::Deadline;

use crate::app::ctx::{Command, ConnCommand, Ctx, Current, Timeouts};
use crate::app::handler::{ConnId, Handler};
use crate::config::Config;
use crate::io::transport::Transport;
use crate::protocol::frame::{self, MAX_CONTROL, OP_BINARY, OP_PING, OP_PONG, OP_TEXT};
use crate::server::metrics::Stats;
use busy::Busy;
use compress::{Codec, Negotiated};
use deadline::Stamp;
use log::debug;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;
use tungstenite::{Bytes, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// Exchanging messages.
    Open,
    /// We sent Close and wait for the peer's.
    Closing,
    /// The exchange is over: write out what is left, then drop.
    Draining,
    /// We failed the connection (an HTTP error or a Close with an error code): write it
    /// out, end our direction, and read and discard what the peer still sends until it
    /// ends its own, so that no reset destroys our answer before the peer reads it.
    Lingering,
    /// To be removed.
    Dead,
}

/// Frames from topics up to this size are copied into a subscriber's output rather
/// than shared (benches/fanout: a shared segment per message cost its reference count
/// and an iovec each, and made a flush several `writev`s past 64 messages).
const COPY_SHARED_UP_TO: usize = 512;

/// The reason a slow consumer is closed with.
const SLOW: &str = "slow consumer: output over max_pending_output";

/// What the loop must do after a call into a connection.
#[must_use]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effects(u8);

impl Effects {
    /// The deadline may have moved earlier than the armed timer: schedule it again.
    pub(crate) const RESCHEDULE: Effects = Effects(1);
    /// Input is left to read although no readiness event will say so: come back.
    pub(crate) const REVISIT: Effects = Effects(2);

    pub(crate) fn contains(self, e: Effects) -> bool {
        self.0 & e.0 == e.0
    }
}

impl std::ops::BitOrAssign for Effects {
    fn bitor_assign(&mut self, e: Effects) {
        self.0 |= e.0;
    }
}

/// How a readable call came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// New data arrived.
    New,
    /// The peer ended its direction or the socket failed: no further edge will come.
    Hangup,
    /// The loop comes back for input left from an earlier turn.
    Revisit,
}

/// One-bit facts about a connection, packed into a byte.
mod flag {
    /// on_open was called and on_close is still owed.
    pub(super) const OPENED: u8 = 1;
    /// A ping went out since the last byte received.
    pub(super) const PINGED: u8 = 2;
    /// Reading waits: for pending output to drain (open), or for good (lingering,
    /// once enough was discarded).
    pub(super) const READ_PAUSED: u8 = 4;
    /// Over max_connections or the per-IP limit: the upgrade gets 503.
    pub(super) const OVER_LIMIT: u8 = 8;
    /// Our direction of the stream is shut.
    pub(super) const WRITE_SHUT: u8 = 16;
}

/// What a connection borrows from the loop while it handles one call.
pub(crate) struct Env<'a, H> {
    pub(crate) cfg: &'a Config,
    pub(crate) pool: &'a mut Pool,
    pub(crate) stats: &'a mut Stats,
    pub(crate) handler: &'a mut H,
    /// What callbacks act through; it collects their commands.
    pub(crate) ctx: Ctx<'a>,
    /// Commands for anything but this connection, carried out by the loop after
    /// this call.
    pub(crate) deferred: &'a mut Vec<Command>,
    /// The loop's start: connection timestamps count milliseconds from it.
    pub(crate) epoch: Instant,
    pub(crate) id: ConnId,
    /// This connection's heartbeat, where the application set one of its own.
    pub(crate) timeouts: Timeouts,
    /// The loop's permessage-deflate codec and per-connection windows.
    pub(crate) codec: &'a mut Codec,
}

/// A peer's address in 20 bytes instead of `SocketAddr`'s 32: every idle connection
/// holds one. IPv6 flow information and scope ids are dropped (logs, per-IP limits and
/// `Request::peer` need neither).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    ip: [u8; 16],
    port: u16,
    v4: bool,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let (ip, v4) = match addr.ip() {
            IpAddr::V4(ip) => (ip.to_ipv6_mapped().octets(), true),
            IpAddr::V6(ip) => (ip.octets(), false),
        };
        Peer {
            ip,
            port: addr.port(),
            v4,
        }
    }

    fn addr(self) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if self.v4 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, self.port)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// One client connection.
pub(crate) struct Conn<S> {
    stream: S,
    peer: Peer,
    /// Accept time during the handshake, then the time of the last byte received.
    last_read: Stamp,
    phase: Phase,
    flags: u8,
    /// Effects gathered during the current call, handed to the loop at its end.
    effects: Effects,
    /// The permessage-deflate it negotiated, if any.
    deflate: Negotiated,
    busy: Option<Box<Busy>>,
}

impl<S> Conn<S> {
    fn pinged(&self) -> bool {
        self.flags & flag::PINGED != 0
    }

    /// Open, and the application has not been told otherwise: messages are accepted.
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open && self.flags & flag::OPENED != 0
    }
}

impl<S: Transport> Conn<S> {
    pub(crate) fn new(
        stream: S,
        peer: SocketAddr,
        now: Instant,
        epoch: Instant,
        over_limit: bool,
    ) -> Self {
        Conn {
            stream,
            peer: Peer::new(peer),
            last_read: Stamp::at(now, epoch),
            phase: Phase::Handshake,
            flags: if over_limit { flag::OVER_LIMIT } else { 0 },
            effects: Effects::default(),
            deflate: Negotiated::default(),
            busy: None,
        }
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, for the loop to register and close.
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer.addr()
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.phase == Phase::Dead
    }

    /// The exchange is over: only writing out, lingering or removal remain.
    pub(crate) fn is_leaving(&self) -> bool {
        matches!(self.phase, Phase::Draining | Phase::Lingering | Phase::Dead)
    }

    /// Bytes waiting for the socket.
    pub(crate) fn pending_output(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.out.len())
    }

    /// Whether anything waits for the socket to become writable.
    pub(crate) fn wants_write(&self) -> bool {
        self.pending_output() > 0 || self.stream.has_pending()
    }

    /// The socket is readable (or the loop revisits input left from an earlier turn).
    pub(crate) fn on_readable<H: Handler>(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        env: &mut Env<H>,
        edge: Edge,
    ) -> Effects {
        match self.phase {
            Phase::Handshake => self.read_request(now, scratch, env),
            Phase::Open | Phase::Closing => self.read_frames(now, scratch, env, edge),
            Phase::Lingering => self.discard_input(now, scratch, env, edge),
            Phase::Draining | Phase::Dead => {}
        }
        std::mem::take(&mut self.effects)
    }

    /// The socket is writable: send what is pending, and tell the handler how much
    /// still waits.
    pub(crate) fn on_writable<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) -> Effects {
        let waited = self.pending_output() > 0;
        self.flush(now, env);
        if waited && self.is_open() {
            let (id, buffered) = (env.id, self.pending_output());
            self.callback(now, env, |h, ctx| h.on_drain(ctx, id, buffered));
            self.flush(now, env);
        }
        std::mem::take(&mut self.effects)
    }

    /// The connection's timer fired: act on its deadline if it has passed (the timer
    /// may be early: a busy connection never moves it, see `deadline`).
    pub(crate) fn on_timer<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) -> Effects {
        self.effects |= Effects::RESCHEDULE;
        let Some((at, kind)) = self.deadline(env.cfg, env.timeouts, now, env.epoch) else {
            return std::mem::take(&mut self.effects);
        };
        if at > now {
            return std::mem::take(&mut self.effects);
        }
        match kind {
            Deadline::Handshake => {
                debug!("{}: handshake timeout", self.peer);
                env.stats.deadline_closes.handshake += 1;
                self.phase = Phase::Dead;
            }
            Deadline::Ping => {
                self.flags |= flag::PINGED;
                env.stats.pings_sent += 1;
                self.queue_frame(OP_PING, &Bytes::new(), now, env);
            }
            Deadline::Idle => {
                env.stats.deadline_closes.idle += 1;
                self.close(1001, "idle timeout", Phase::Draining, now, env);
            }
            Deadline::Write => {
                env.stats.deadline_closes.write += 1;
                self.gone("write timeout", now, env);
            }
            Deadline::Slow => {
                env.stats.slow_consumers_dropped += 1;
                self.fail(1008, SLOW, now, env);
            }
            Deadline::Close => {
                debug!("{}: close timeout", self.peer);
                env.stats.deadline_closes.close += 1;
                self.phase = Phase::Dead;
            }
        }
        self.flush(now, env);
        std::mem::take(&mut self.effects)
    }

    /// Carries out a handler's command; the one way commands take effect, whichever
    /// callback made them and whichever connection it was for. Output is queued, not
    /// written: the loop flushes once the call that made it is over.
    pub(crate) fn apply<H: Handler>(
        &mut self,
        cmd: ConnCommand,
        now: Instant,
        env: &mut Env<H>,
    ) -> Effects {
        if self.is_open() {
            match cmd {
                ConnCommand::Send(msg) => self.send(msg, now, env),
                ConnCommand::Close(code, reason) => {
                    self.close(code, &reason, Phase::Closing, now, env)
                }
            }
        } else {
            env.stats.commands_dropped += 1;
        }
        std::mem::take(&mut self.effects)
    }

    /// Queues a frame built once for many connections (a topic's message): its head,
    /// and its body when large, shared rather than copied — unless the frame is small.
    pub(crate) fn queue_shared(
        &mut self,
        head: &Bytes,
        body: &Bytes,
        pool: &mut Pool,
        cfg: &Config,
        now: Instant,
    ) {
        let busy = self.busy_from(pool, cfg, now);
        if body.is_empty() && head.len() <= COPY_SHARED_UP_TO {
            // A small frame is cheaper copied than shared: no reference count to
            // touch, and a turn's worth of them leaves in one contiguous slice.
            busy.out.push_bytes(head);
        } else {
            busy.out.push_shared(head.clone());
            busy.out.push_shared(body.clone());
        }
    }

    /// What permessage-deflate this connection negotiated.
    pub(crate) fn negotiated(&self) -> Negotiated {
        self.deflate
    }

    /// A consumer too slow for what others send it: fail it (1008).
    pub(crate) fn fail_slow<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) -> Effects {
        if self.is_open() {
            env.stats.slow_consumers_dropped += 1;
            self.fail(1008, SLOW, now, env);
        }
        std::mem::take(&mut self.effects)
    }

    /// Shutdown: a connection still in its handshake is dropped.
    pub(crate) fn drop_handshake<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) -> Effects {
        if self.phase == Phase::Handshake {
            self.gone("server shutting down", now, env);
        }
        std::mem::take(&mut self.effects)
    }

    /// Writes pending output; the loop calls it after `apply`, once per turn.
    pub(crate) fn flush<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) {
        if self.phase == Phase::Dead {
            return;
        }
        if let Err(e) = self.stream.flush_pending() {
            return self.gone(&format!("write failed: {e}"), now, env);
        }
        if let Some(busy) = self.busy.as_deref_mut() {
            let written = match busy.out.write_to(&mut self.stream) {
                Ok(n) => n,
                Err(e) => return self.gone(&format!("write failed: {e}"), now, env),
            };
            // The write deadline counts from the socket's last progress; the slow
            // consumer deadline from when the output went over its bound.
            let before = busy.out_since;
            busy.out_since = match busy.out.is_empty() {
                true => None,
                false if written > 0 || before.is_none() => Some(now),
                false => before,
            };
            let over = busy.out.len() > env.cfg.max_pending_output;
            let before_over = busy.over_since;
            busy.over_since = match (over, before_over) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
            };
            if (before.is_none() && busy.out_since.is_some())
                || (before_over.is_none() && busy.over_since.is_some())
            {
                self.effects |= Effects::RESCHEDULE;
            }
        }
        if self.wants_write() {
            return;
        }
        match self.phase {
            Phase::Draining => self.phase = Phase::Dead,
            Phase::Lingering if self.flags & flag::WRITE_SHUT == 0 => {
                self.flags |= flag::WRITE_SHUT;
                self.stream.shutdown_write();
            }
            Phase::Open if self.flags & flag::READ_PAUSED != 0 => {
                self.flags &= !flag::READ_PAUSED;
                self.effects |= Effects::REVISIT;
            }
            _ => {}
        }
    }

    /// Returns the busy box to the pool once the connection sits between messages with
    /// nothing to send: an idle connection then holds only its socket and timestamps.
    pub(crate) fn release_idle(&mut self, cfg: &Config, pool: &mut Pool) {
        if self.phase == Phase::Open
            && self.busy.as_deref().is_some_and(Busy::is_idle)
            && let Some(busy) = self.busy.take()
        {
            pool.put(busy, cfg);
        }
    }

    fn busy<H>(&mut self, now: Instant, env: &mut Env<H>) -> &mut Busy {
        self.busy_from(env.pool, env.cfg, now)
    }

    /// The busy state, taken from `pool` if the connection has none: its scanner
    /// allows compressed frames when the connection negotiated them.
    fn busy_from(&mut self, pool: &mut Pool, cfg: &Config, now: Instant) -> &mut Busy {
        let deflate = self.deflate.is_on();
        self.busy.get_or_insert_with(|| {
            let mut busy = pool.take(cfg, now);
            busy.scanner.allow_compression(deflate);
            busy
        })
    }

    /// Queues a message. A Close goes through the close handshake; a raw frame is not
    /// the application's to send.
    fn send<H: Handler>(&mut self, msg: Message, now: Instant, env: &mut Env<H>) {
        let (opcode, payload) = match msg {
            Message::Text(t) => (OP_TEXT, Bytes::from(t)),
            Message::Binary(b) => (OP_BINARY, b),
            Message::Ping(p) => (OP_PING, p),
            Message::Pong(p) => (OP_PONG, p),
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1000, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                });
                return self.close(code, &reason, Phase::Closing, now, env);
            }
            Message::Frame(_) => {
                debug!(
                    "{}: raw frame not sent (not an application message)",
                    self.peer
                );
                return;
            }
        };
        if opcode & 0x08 != 0 && payload.len() > MAX_CONTROL {
            debug!("{}: control frame over 125 bytes not sent", self.peer);
            return;
        }
        if opcode & 0x08 == 0 {
            env.stats.messages_out += 1;
            env.stats.bytes_out += payload.len() as u64;
            if env.codec.wants(self.deflate, payload.len()) {
                let mut compressed = Vec::new();
                if env
                    .codec
                    .deflate(self.deflate, env.id.key, &payload, &mut compressed)
                {
                    let byte0 = frame::FIN | frame::RSV1 | opcode;
                    return self.queue(byte0, &Bytes::from(compressed), now, env);
                }
            }
        }
        self.queue_frame(opcode, &payload, now, env);
    }

    /// Appends one final frame to the output.
    fn queue_frame<H>(&mut self, opcode: u8, payload: &Bytes, now: Instant, env: &mut Env<H>) {
        self.queue(frame::FIN | opcode, payload, now, env);
    }

    /// Appends one frame with `byte0` (FIN, RSV and opcode bits) to the output.
    fn queue<H>(&mut self, byte0: u8, payload: &Bytes, now: Instant, env: &mut Env<H>) {
        let (header, used) = frame::header(byte0, payload.len());
        self.busy(now, env).out.push_frame(&header[..used], payload);
    }

    /// Calls the handler about this connection, then carries out what it asked.
    fn callback<H: Handler, R>(
        &mut self,
        now: Instant,
        env: &mut Env<H>,
        f: impl FnOnce(&mut H, &mut Ctx) -> R,
    ) -> R {
        let open = self.is_open();
        let buffered = self.pending_output();
        // Its own sends are framed straight into its output, unless they may need
        // compressing (the codec is the loop's).
        let out = match (open && !self.deflate.is_on(), self.busy.as_deref_mut()) {
            (true, Some(busy)) => Some((&mut busy.out, &mut self.stream as &mut dyn Write)),
            _ => None,
        };
        let mut ctx = env.ctx.about(Current {
            id: env.id,
            open,
            buffered,
            out,
            sent: (0, 0),
        });
        let r = f(env.handler, &mut ctx);
        if let Some(Current { sent, .. }) = ctx.current {
            env.stats.messages_out += sent.0;
            env.stats.bytes_out += sent.1;
        }
        // Checked here, not in the call: an echo queues no command, once per message.
        if !env.ctx.commands.is_empty() {
            self.dispatch(now, env);
        }
        r
    }

    /// Routes the commands a callback made: this connection's are applied at once, in
    /// order; everything else is the loop's, after this call.
    fn dispatch<H: Handler>(&mut self, now: Instant, env: &mut Env<H>) {
        // Taken and given back so the command list keeps its allocation.
        let mut commands = std::mem::take(env.ctx.commands);
        for cmd in commands.drain(..) {
            match cmd {
                Command::Conn(id, c) if id == env.id => {
                    let effects = self.apply(c, now, env);
                    self.effects |= effects;
                }
                other => env.deferred.push(other),
            }
        }
        if env.ctx.commands.is_empty() {
            *env.ctx.commands = commands;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peer addresses survive their compact form: v4, v6, and a v4-mapped v6 that
    /// stays v6.
    #[test]
    fn peers_round_trip() {
        for a in [
            "127.0.0.1:80",
            "[::1]:443",
            "[::ffff:10.0.0.1]:9",
            "[fe80::1]:65535",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(Peer::new(addr).addr(), addr);
            assert_eq!(Peer::new(addr).to_string(), a);
        }
        assert!(std::mem::size_of::<Peer>() <= 20);
    }

    /// An idle connection is this struct in the slab plus a wheel node: keep it small.
    #[test]
    fn idle_connection_is_small() {
        let size = std::mem::size_of::<Conn<crate::io::stream::Stream>>();
        // mio's sockets carry a selector id in debug builds only.
        let limit = if cfg!(debug_assertions) { 64 } else { 56 };
        assert!(size <= limit, "Conn is {size} bytes");
        let busy = std::mem::size_of::<Busy>();
        assert!(busy <= 512, "Busy is {busy} bytes");
    }
}
