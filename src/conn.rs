//! One connection's state machine: handshake, open, closing, draining. It is generic
//! over the byte stream so the same code serves TCP, TLS and the fuzzers' in-memory
//! streams, and it knows nothing of the poll, the slab or other connections.
//!
//! Memory follows the work: everything a connection needs only while it is busy
//! (tungstenite's context, the frame scanner, a partial frame, unsent output) lives in
//! one [`Busy`] box that goes back to a small per-loop pool as soon as the connection
//! sits between messages with nothing to send.

use crate::config::Config;
use crate::handler::{Close, Command, ConnId, Ctx, Handler};
use crate::handshake::{self, Outcome};
use crate::metrics::Stats;
use crate::scan::{FrameScanner, Rejected, ScanError};
use crate::transport::Transport;
use crate::wire::{Outbuf, Wire};
use log::debug;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Instant;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::{CloseFrame, FrameHeader};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

/// A partial frame grows by doubling until this much of it has arrived; then room for
/// the rest is reserved at once (a client must send real data before its header's
/// claim is trusted with memory).
const RESERVE_AFTER: usize = 64 << 10;

/// Reads of the scratch buffer one connection may do per readiness event before the
/// loop serves the others (it comes back to this one on the next turn).
const READS_PER_TURN: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the HTTP upgrade request.
    Handshake,
    /// Exchanging messages.
    Open,
    /// We sent Close and wait for the peer's.
    Closing,
    /// Writing out what is left (an HTTP error, a final Close), then dropping.
    Draining,
    /// To be removed.
    Dead,
}

/// Everything a connection holds only while it has work in progress.
pub(crate) struct Busy {
    /// tungstenite's protocol state, held only while it has part of a message or a
    /// close in progress: a client stalled mid-frame keeps its bytes but not the
    /// context's read buffer.
    ws: Option<WebSocketContext>,
    scanner: FrameScanner,
    /// The request during the handshake, then the bytes of an incomplete frame.
    partial: Vec<u8>,
    out: Outbuf,
    /// When output became pending (write deadline), if it is.
    out_since: Option<Instant>,
    /// When Closing or Draining began.
    since: Instant,
}

impl Busy {
    pub(crate) fn new(cfg: &Config, now: Instant) -> Box<Busy> {
        Box::new(Busy {
            ws: None,
            scanner: FrameScanner::new(cfg.max_frame as u64),
            partial: Vec::new(),
            out: Outbuf::default(),
            out_since: None,
            since: now,
        })
    }
}

/// Busy states and tungstenite contexts of connections that went idle, ready for the
/// next busy one: a warm read buffer instead of a cold allocation per connection.
pub(crate) struct Pool {
    // Boxed so moving a state between a connection and the pool copies one pointer.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Busy>>,
    contexts: Vec<WebSocketContext>,
    max: usize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            boxes: Vec::new(),
            contexts: Vec::new(),
            max,
        }
    }

    /// Boxes and contexts held for reuse.
    pub(crate) fn len(&self) -> usize {
        self.boxes.len() + self.contexts.len()
    }

    fn put(&mut self, busy: Box<Busy>) {
        if self.boxes.len() < self.max {
            self.boxes.push(busy);
        }
    }

    fn put_context(&mut self, ws: WebSocketContext) {
        if self.contexts.len() < self.max {
            self.contexts.push(ws);
        }
    }

    fn take_context(&mut self, cfg: &Config) -> WebSocketContext {
        self.contexts.pop().unwrap_or_else(|| {
            let ws_cfg = WebSocketConfig::default()
                .read_buffer_size(cfg.read_buffer)
                .write_buffer_size(cfg.write_buffer)
                .max_write_buffer_size(usize::MAX)
                .max_message_size(Some(cfg.max_message))
                .max_frame_size(Some(cfg.max_frame));
            WebSocketContext::new(Role::Server, Some(ws_cfg))
        })
    }
}

/// What a connection borrows from the loop while it handles one event.
pub(crate) struct Env<'a, H> {
    pub(crate) cfg: &'a Config,
    pub(crate) pool: &'a mut Pool,
    pub(crate) handler: &'a mut H,
    pub(crate) ctx: &'a mut Ctx,
    /// Commands for other connections, applied by the loop after this event.
    pub(crate) deferred: &'a mut Vec<(ConnId, Command)>,
    pub(crate) now: Instant,
    /// The loop's start: connection timestamps count milliseconds from it.
    pub(crate) epoch: Instant,
    pub(crate) id: ConnId,
    pub(crate) stats: &'a mut Stats,
}

impl<H> Env<'_, H> {
    fn take_busy(&mut self) -> Box<Busy> {
        match self.pool.boxes.pop() {
            Some(b) => b,
            None => Busy::new(self.cfg, self.now),
        }
    }
}

/// Milliseconds since the loop's epoch, wrapping every 49.7 days: 4 bytes per connection
/// instead of a 16-byte `Instant`. Only differences are used, and a connection's silence
/// never lasts anywhere near the wrap (the idle timeout ends it first).
#[derive(Debug, Clone, Copy)]
struct Stamp(u32);

impl Stamp {
    fn at(now: Instant, epoch: Instant) -> Stamp {
        // Truncation is the wrap.
        Stamp(now.saturating_duration_since(epoch).as_millis() as u32)
    }

    /// The instant this stamp stands for, as seen from `now`.
    fn instant(self, now: Instant, epoch: Instant) -> Instant {
        let ago = Stamp::at(now, epoch).0.wrapping_sub(self.0);
        now.checked_sub(std::time::Duration::from_millis(u64::from(ago)))
            .unwrap_or(epoch)
    }
}

/// One client connection.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    pub(crate) peer: SocketAddr,
    /// Accept time during the handshake, then the time of the last byte received.
    last_read: Stamp,
    phase: Phase,
    /// on_open was called and on_close is still owed.
    opened: bool,
    /// A ping went out since the last byte received.
    pinged: bool,
    /// Over max_connections (or the per-IP limit): the upgrade gets 503.
    pub(crate) over_limit: bool,
    /// The deadline may have moved earlier: the loop must re-arm the timer.
    pub(crate) rearm: bool,
    /// Reading stopped before WouldBlock (fairness or backpressure released): revisit.
    pub(crate) more_input: bool,
    /// Reading is paused until pending output drains.
    read_paused: bool,
    /// WRITABLE interest is registered.
    pub(crate) writable_interest: bool,
    busy: Option<Box<Busy>>,
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
            peer,
            last_read: Stamp::at(now, epoch),
            phase: Phase::Handshake,
            opened: false,
            pinged: false,
            over_limit,
            rearm: true,
            more_input: false,
            read_paused: false,
            writable_interest: false,
            busy: None,
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.phase == Phase::Dead
    }

    /// Bytes waiting for the socket.
    pub(crate) fn pending_output(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.out.len())
    }

    /// Whether anything waits for the socket to become writable.
    pub(crate) fn wants_write(&self) -> bool {
        self.pending_output() > 0 || self.stream.has_pending()
    }

    /// The instant of this connection's nearest deadline.
    pub(crate) fn deadline(&self, cfg: &Config, now: Instant, epoch: Instant) -> Option<Instant> {
        let last_read = self.last_read.instant(now, epoch);
        let since = self.busy.as_ref().map_or(last_read, |b| b.since);
        match self.phase {
            Phase::Handshake => Some(last_read + cfg.handshake_timeout),
            Phase::Open => {
                let read = if self.pinged {
                    last_read + cfg.idle_timeout
                } else {
                    last_read + cfg.ping_interval
                };
                let write = self
                    .busy
                    .as_ref()
                    .and_then(|b| b.out_since)
                    .map(|t| t + cfg.write_timeout);
                Some(write.map_or(read, |w| w.min(read)))
            }
            Phase::Closing | Phase::Draining => Some(since + cfg.close_timeout),
            Phase::Dead => None,
        }
    }

    /// The socket is readable (or the loop revisits a connection that had more input).
    /// `to_end`: read until WouldBlock even after a short read, because no new readiness
    /// edge may come (the peer already closed, or this is a revisit).
    pub(crate) fn on_readable<H: Handler>(
        &mut self,
        scratch: &mut [u8],
        env: &mut Env<H>,
        to_end: bool,
    ) {
        self.more_input = false;
        match self.phase {
            Phase::Handshake => self.read_request(scratch, env),
            Phase::Open | Phase::Closing => self.read_frames(scratch, env, to_end),
            Phase::Draining | Phase::Dead => {}
        }
    }

    /// The socket is writable: send what is pending.
    pub(crate) fn on_writable<H: Handler>(&mut self, env: &mut Env<H>) {
        match self.stream.flush_pending() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.gone(env, &format!("write failed: {e}")),
        }
        let Some(busy) = self.busy.as_deref_mut() else {
            return;
        };
        match busy.out.write_to(&mut self.stream) {
            Ok(true) => {
                busy.out_since = None;
                self.rearm = true;
                if self.phase == Phase::Draining {
                    self.phase = Phase::Dead;
                } else if self.read_paused {
                    self.read_paused = false;
                    self.more_input = true;
                }
            }
            Ok(false) => {}
            Err(e) => self.gone(env, &format!("write failed: {e}")),
        }
    }

    /// The timer fired: act on whichever deadline passed.
    pub(crate) fn on_timer<H: Handler>(&mut self, env: &mut Env<H>) {
        let now = env.now;
        let cfg = env.cfg;
        let last_read = self.last_read.instant(now, env.epoch);
        self.rearm = true;
        match self.phase {
            Phase::Handshake if now >= last_read + cfg.handshake_timeout => {
                debug!("{}: handshake timeout", self.peer);
                env.stats.deadline_closes.handshake += 1;
                self.phase = Phase::Dead;
            }
            Phase::Open => {
                let write_stuck = self
                    .busy
                    .as_ref()
                    .and_then(|b| b.out_since)
                    .is_some_and(|t| now >= t + cfg.write_timeout);
                if write_stuck {
                    env.stats.deadline_closes.write += 1;
                    self.gone(env, "write timeout");
                } else if now >= last_read + cfg.idle_timeout {
                    env.stats.deadline_closes.idle += 1;
                    self.fail(env, 1001, "idle timeout");
                } else if !self.pinged && now >= last_read + cfg.ping_interval {
                    self.pinged = true;
                    env.stats.pings_sent += 1;
                    self.send_now(env, Message::Ping(Default::default()));
                }
            }
            Phase::Closing | Phase::Draining => {
                let since = self.busy.as_ref().map_or(last_read, |b| b.since);
                if now >= since + cfg.close_timeout {
                    debug!("{}: close timeout", self.peer);
                    env.stats.deadline_closes.close += 1;
                    self.phase = Phase::Dead;
                }
            }
            _ => {}
        }
    }

    /// A command from a handler call made for another connection.
    pub(crate) fn deliver<H: Handler>(&mut self, cmd: Command, env: &mut Env<H>) {
        if !self.opened || self.phase != Phase::Open {
            return;
        }
        match cmd {
            Command::Send(msg) => self.send_now(env, msg),
            Command::Close(code, reason) => self.start_close(env, code, &reason),
        }
    }

    /// Graceful shutdown: Close 1001 to open connections, drop half-open ones.
    pub(crate) fn shutdown<H: Handler>(&mut self, env: &mut Env<H>) {
        match self.phase {
            Phase::Handshake => self.phase = Phase::Dead,
            Phase::Open => self.start_close(env, 1001, "server shutting down"),
            _ => {}
        }
    }

    /// Returns what the connection no longer needs to the pool: tungstenite's context
    /// once it holds no part of a message, and the whole busy state once the connection
    /// sits between messages with nothing pending. An idle connection then holds only its
    /// socket and timestamps.
    pub(crate) fn release_if_idle(&mut self, cfg: &Config, pool: &mut Pool) {
        if self.phase != Phase::Open {
            return;
        }
        let Some(busy) = self.busy.as_deref_mut() else {
            return;
        };
        if busy.ws.as_ref().is_some_and(|ws| ws.can_write()) && !busy.scanner.message_open() {
            // A context that carried a frame larger than its read buffer kept the grown
            // buffer: drop it rather than pool it. (Large writes bypass its buffer.)
            let grew = busy.scanner.take_largest_frame() > cfg.read_buffer as u64;
            if let Some(ws) = busy.ws.take()
                && !grew
            {
                pool.put_context(ws);
            }
        }
        let idle = busy.ws.is_none()
            && busy.scanner.between_messages()
            && busy.partial.is_empty()
            && busy.out.is_empty();
        if idle && let Some(mut busy) = self.busy.take() {
            if busy.partial.capacity() > cfg.read_buffer {
                busy.partial = Vec::new();
            }
            pool.put(busy);
        }
    }

    fn read_request<H: Handler>(&mut self, scratch: &mut [u8], env: &mut Env<H>) {
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    debug!("{}: closed during handshake", self.peer);
                    self.phase = Phase::Dead;
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read failed during handshake: {e}", self.peer);
                    self.phase = Phase::Dead;
                    return;
                }
            };
            let busy = self.busy.get_or_insert_with(|| env.take_busy());
            let before = busy.partial.len();
            busy.partial.extend_from_slice(&scratch[..n]);
            // Parse the first bytes (so a TLS hello or other non-HTTP gets its 400 at once)
            // and then once per new line: a request trickling in byte by byte must not
            // cost a parse per byte.
            let new_line = scratch[..n].contains(&b'\n');
            if before > 0 && !new_line && busy.partial.len() <= env.cfg.max_request {
                continue;
            }
            match handshake::evaluate(&busy.partial, env.cfg, self.peer, self.over_limit) {
                Outcome::Partial => continue,
                Outcome::Respond { status, reply } => {
                    debug!("{}: answered over HTTP with {status}", self.peer);
                    if status != 200 {
                        *env.stats.handshakes_failed.entry(status).or_default() += 1;
                    }
                    self.drain_then_drop(env, &reply);
                    return;
                }
                Outcome::Accept {
                    reply,
                    consumed,
                    request,
                } => {
                    let rest = busy.partial.split_off(consumed);
                    busy.partial.clear();
                    let mut wire = Wire {
                        stream: &mut self.stream,
                        input: &[],
                        out: &mut busy.out,
                    };
                    if let Err(e) = wire.write_all(&reply) {
                        debug!("{}: write failed during handshake: {e}", self.peer);
                        self.phase = Phase::Dead;
                        return;
                    }
                    env.stats.handshakes_ok += 1;
                    self.phase = Phase::Open;
                    self.opened = true;
                    self.last_read = Stamp::at(env.now, env.epoch);
                    self.rearm = true;
                    debug!(
                        "{}: open {} subprotocol={}",
                        self.peer,
                        request.path,
                        request.subprotocol.as_deref().unwrap_or("-")
                    );
                    env.handler.on_open(env.ctx, env.id, &request);
                    self.apply_commands(env);
                    // Bytes sent right behind the request are the first frames.
                    if !rest.is_empty() && !self.ingest(&rest, env) {
                        return;
                    }
                    return self.read_frames(scratch, env, true);
                }
            }
        }
    }

    fn read_frames<H: Handler>(&mut self, scratch: &mut [u8], env: &mut Env<H>, to_end: bool) {
        // A short read from a kernel socket took everything queued: reading again would
        // only return WouldBlock, one syscall per batch for nothing (edge-triggered
        // epoll reports whatever arrives later).
        let stop_short = !to_end && self.stream.short_read_drains();
        let mut reads = 0;
        loop {
            if self.pending_output() > env.cfg.max_pending_output {
                self.read_paused = true;
                break;
            }
            if reads == READS_PER_TURN {
                self.more_input = true;
                break;
            }
            let n = match self.stream.read(scratch) {
                Ok(0) => return self.gone(env, "peer closed the connection"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.gone(env, &format!("read failed: {e}")),
            };
            reads += 1;
            self.last_read = Stamp::at(env.now, env.epoch);
            if self.pinged {
                // The answer to our ping: the next one is due a ping interval from now,
                // not at the idle deadline the timer holds (once per ping, not per message).
                self.pinged = false;
                self.rearm = true;
            }
            if !self.ingest(&scratch[..n], env) {
                return;
            }
            if stop_short && n < scratch.len() {
                break;
            }
        }
        self.flush(env);
    }

    /// Scans newly received bytes and hands the whole frames among them to tungstenite;
    /// false when the connection stopped being readable.
    fn ingest<H: Handler>(&mut self, data: &[u8], env: &mut Env<H>) -> bool {
        let busy = self.busy.get_or_insert_with(|| env.take_busy());
        let (complete, error) = match busy.scanner.scan(data) {
            Ok(c) => (c, None),
            Err(Rejected { complete, error }) => (complete, Some(error)),
        };
        let ok = if busy.partial.is_empty() {
            let frames = &data[..complete];
            let ok = if complete == 0 {
                true
            } else if let Some((text, header_len, mask)) = self.big_frame(frames, env.cfg) {
                let mut payload = frames[header_len..].to_vec();
                unmask(&mut payload, mask);
                self.deliver_big(text, payload.into(), env)
            } else {
                self.feed(frames, env)
            };
            if ok
                && error.is_none()
                && let Some(busy) = self.busy.as_deref_mut()
            {
                busy.partial.extend_from_slice(&data[complete..]);
            }
            ok
        } else {
            let prev = busy.partial.len();
            let rest = usize::try_from(busy.scanner.frame_remaining()).unwrap_or(0);
            if prev + data.len() >= RESERVE_AFTER && complete == 0 {
                busy.partial.reserve(data.len() + rest);
            }
            busy.partial.extend_from_slice(data);
            if complete == 0 {
                true
            } else {
                let whole = prev + complete;
                let mut frames = std::mem::take(&mut busy.partial);
                busy.partial = frames.split_off(whole);
                if let Some((text, header_len, mask)) = self.big_frame(&frames, env.cfg) {
                    // The frame was assembled here: its buffer becomes the message.
                    unmask(&mut frames[header_len..], mask);
                    let payload = Bytes::from(frames).slice(header_len..);
                    self.deliver_big(text, payload, env)
                } else {
                    self.feed(&frames, env)
                }
            }
        };
        if !ok {
            return false;
        }
        match error {
            None => true,
            Some(e) => {
                let (code, reason) = match e {
                    ScanError::Protocol(r) => (1002, r),
                    ScanError::FrameTooLarge => (1009, "frame too large"),
                    ScanError::InvalidUtf8 => (1007, "invalid UTF-8 in text message"),
                };
                self.fail(env, code, reason);
                false
            }
        }
    }

    /// `frames` is one big final data frame that tungstenite's state allows.
    fn big_frame(&self, frames: &[u8], cfg: &Config) -> Option<(bool, usize, [u8; 4])> {
        let ws_ready = self
            .busy
            .as_ref()
            .is_some_and(|b| b.ws.as_ref().is_none_or(|ws| ws.can_read()));
        big_frame(frames, cfg.read_buffer).filter(|_| ws_ready)
    }

    /// Hands a big message that skipped tungstenite to the handler; false when the
    /// connection stopped being readable.
    fn deliver_big<H: Handler>(&mut self, text: bool, payload: Bytes, env: &mut Env<H>) -> bool {
        // The frame never reached the context, so its size says nothing of the
        // context's buffers.
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.scanner.take_largest_frame();
        }
        let msg = if text {
            match Utf8Bytes::try_from(payload) {
                Ok(text) => Message::Text(text),
                Err(_) => {
                    self.fail(env, 1007, "invalid UTF-8 in text message");
                    return false;
                }
            }
        } else {
            Message::Binary(payload)
        };
        if self.opened {
            env.stats.messages_in += 1;
            env.stats.bytes_in += msg.len() as u64;
            env.handler.on_message(env.ctx, env.id, msg);
            self.apply_commands(env);
        }
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    /// Lets tungstenite read whole frames from `frames` and dispatches the messages;
    /// false when the connection stopped being readable.
    fn feed<H: Handler>(&mut self, frames: &[u8], env: &mut Env<H>) -> bool {
        let Some(busy) = self.busy.as_deref_mut() else {
            return false;
        };
        let ws = busy
            .ws
            .get_or_insert_with(|| env.pool.take_context(env.cfg));
        let mut wire = Wire {
            stream: &mut self.stream,
            input: frames,
            out: &mut busy.out,
        };
        let end = loop {
            match ws.read(&mut wire) {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    if !self.opened {
                        continue;
                    }
                    env.stats.messages_in += 1;
                    env.stats.bytes_in += msg.len() as u64;
                    env.handler.on_message(env.ctx, env.id, msg);
                    let mut stop = None;
                    // Taken and given back so the command list keeps its allocation.
                    let mut commands = std::mem::take(&mut env.ctx.commands);
                    for (id, cmd) in commands.drain(..) {
                        if id != env.id {
                            env.deferred.push((id, cmd));
                        } else if stop.is_none() && self.opened {
                            stop = own_command(
                                ws,
                                &mut wire,
                                cmd,
                                env,
                                &mut self.phase,
                                &mut self.opened,
                                self.peer,
                            );
                        }
                    }
                    if env.ctx.commands.is_empty() {
                        env.ctx.commands = commands;
                    }
                    if let Some(end) = stop {
                        break end;
                    }
                    // Only reachable in the batch where the handler closed: once it has,
                    // `opened` is false and later messages are skipped above.
                    if self.phase == Phase::Closing {
                        busy.since = env.now;
                        self.rearm = true;
                    }
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    notify(
                        &mut self.opened,
                        env,
                        self.peer,
                        code,
                        &reason,
                        "closed by peer",
                    );
                }
                Ok(_) => {}
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => break End::More,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break End::Closed,
                Err(WsError::Io(e)) => break End::Gone(format!("I/O error: {e}")),
                Err(e) => {
                    let (code, reason) = close_code(&e);
                    break End::Fail(code, reason);
                }
            }
        };
        self.end(env, end)
    }

    /// Acts on how a batch of frames ended; false when the connection stopped being readable.
    fn end<H: Handler>(&mut self, env: &mut Env<H>, end: End) -> bool {
        match end {
            End::More => true,
            End::Closed => {
                self.drain_then_drop(env, &[]);
                false
            }
            End::Fail(code, reason) => {
                self.fail(env, code, &reason);
                false
            }
            End::Gone(why) => {
                self.gone(env, &why);
                false
            }
        }
    }

    /// Hands tungstenite's batched output to the socket.
    fn flush<H: Handler>(&mut self, env: &mut Env<H>) {
        let Some(busy) = self.busy.as_deref_mut() else {
            return;
        };
        let Some(ws) = busy.ws.as_mut() else {
            return;
        };
        let mut wire = Wire {
            stream: &mut self.stream,
            input: &[],
            out: &mut busy.out,
        };
        let end = match ws.flush(&mut wire) {
            Ok(()) => End::More,
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => End::Closed,
            Err(WsError::Io(e)) => End::Gone(format!("write failed: {e}")),
            Err(e) => End::Gone(format!("flush failed: {e}")),
        };
        self.note_output(env.now);
        self.end(env, end);
    }

    /// Starts the write deadline when output becomes pending.
    fn note_output(&mut self, now: Instant) {
        if let Some(busy) = self.busy.as_deref_mut()
            && !busy.out.is_empty()
            && busy.out_since.is_none()
        {
            busy.out_since = Some(now);
            self.rearm = true;
        }
    }

    /// Sends one message outside a read batch (ping, or a handler's send to us).
    fn send_now<H: Handler>(&mut self, env: &mut Env<H>, msg: Message) {
        let busy = self.busy.get_or_insert_with(|| env.take_busy());
        count_out(env.stats, &msg);
        let ws = busy
            .ws
            .get_or_insert_with(|| env.pool.take_context(env.cfg));
        let mut wire = Wire {
            stream: &mut self.stream,
            input: &[],
            out: &mut busy.out,
        };
        match send(ws, &mut wire, msg, env.cfg) {
            Ok(()) => self.flush(env),
            Err(WsError::Io(e)) => self.gone(env, &format!("write failed: {e}")),
            Err(e) => debug!("{}: message not sent: {e}", self.peer),
        }
    }

    /// Sends Close and waits (up to close_timeout) for the peer's.
    fn start_close<H: Handler>(&mut self, env: &mut Env<H>, code: u16, reason: &str) {
        notify(&mut self.opened, env, self.peer, code, reason, "closing");
        let busy = self.busy.get_or_insert_with(|| env.take_busy());
        let ws = busy
            .ws
            .get_or_insert_with(|| env.pool.take_context(env.cfg));
        let mut wire = Wire {
            stream: &mut self.stream,
            input: &[],
            out: &mut busy.out,
        };
        let _ = ws.close(&mut wire, Some(close_frame(code, reason)));
        busy.since = env.now;
        self.phase = Phase::Closing;
        self.rearm = true;
        self.note_output(env.now);
    }

    /// Applies what the handler asked of this connection outside a read batch.
    fn apply_commands<H: Handler>(&mut self, env: &mut Env<H>) {
        for (id, cmd) in std::mem::take(&mut env.ctx.commands) {
            if id == env.id {
                self.deliver(cmd, env);
            } else {
                env.deferred.push((id, cmd));
            }
        }
    }

    /// Fails the connection: Close with `code`, write it out, drop.
    pub(crate) fn fail<H: Handler>(&mut self, env: &mut Env<H>, code: u16, reason: &str) {
        notify(&mut self.opened, env, self.peer, code, reason, "failing");
        let mut close = Vec::new();
        // An idle connection gave its state back to the pool; it still gets its Close.
        let busy = self.busy.get_or_insert_with(|| env.take_busy());
        // No context means none was needed since the last message: it would be open.
        if busy.ws.as_ref().is_none_or(|ws| ws.can_write()) {
            // Echoes batched before the bad frame go out first, in order.
            if let Some(ws) = busy.ws.as_mut() {
                let mut wire = Wire {
                    stream: &mut self.stream,
                    input: &[],
                    out: &mut busy.out,
                };
                let _ = ws.flush(&mut wire);
            }
            // Format the frame ourselves: after a read error tungstenite's own state
            // may refuse to write, and the client is owed the code either way.
            let frame = tungstenite::protocol::frame::Frame::close(Some(close_frame(code, reason)));
            let _ = frame.format(&mut close);
        }
        self.drain_then_drop(env, &close);
    }

    /// The peer is gone (EOF, reset, write error): no close frame can be exchanged.
    fn gone<H: Handler>(&mut self, env: &mut Env<H>, why: &str) {
        if self.opened {
            notify(&mut self.opened, env, self.peer, 1006, "", why);
        } else {
            debug!("{}: {why}", self.peer);
        }
        self.phase = Phase::Dead;
    }

    /// Queues `bytes` behind any pending output, stops reading, and drops the
    /// connection once everything is written (or close_timeout passes).
    fn drain_then_drop<H>(&mut self, env: &mut Env<H>, bytes: &[u8]) {
        let busy = self.busy.get_or_insert_with(|| env.take_busy());
        let mut wire = Wire {
            stream: &mut self.stream,
            input: &[],
            out: &mut busy.out,
        };
        let written = wire.write_all(bytes).is_ok();
        busy.since = env.now;
        self.rearm = true;
        self.phase = if written && (!busy.out.is_empty() || self.stream.has_pending()) {
            Phase::Draining
        } else {
            Phase::Dead
        };
    }
}

/// How a batch of frames ended.
enum End {
    /// All frames consumed; the connection goes on.
    More,
    /// The close handshake completed.
    Closed,
    /// A protocol error: close with this code.
    Fail(u16, String),
    /// The socket failed.
    Gone(String),
}

/// Applies a handler's command for the connection whose frames are being read.
#[allow(clippy::too_many_arguments)]
fn own_command<S: Transport, H>(
    ws: &mut WebSocketContext,
    wire: &mut Wire<S>,
    cmd: Command,
    env: &mut Env<H>,
    phase: &mut Phase,
    opened: &mut bool,
    peer: SocketAddr,
) -> Option<End>
where
    H: Handler,
{
    match cmd {
        Command::Send(msg) => {
            count_out(env.stats, &msg);
            match send(ws, wire, msg, env.cfg) {
                Ok(()) => None,
                Err(WsError::Io(e)) => Some(End::Gone(format!("write failed: {e}"))),
                Err(e) => {
                    debug!("{peer}: message not sent: {e}");
                    None
                }
            }
        }
        Command::Close(code, reason) => {
            notify(opened, env, peer, code, &reason, "closing");
            match ws.close(wire, Some(close_frame(code, &reason))) {
                Err(WsError::Io(e)) => Some(End::Gone(format!("write failed: {e}"))),
                _ => {
                    *phase = Phase::Closing;
                    None
                }
            }
        }
    }
}

/// Calls on_close once, with a debug line naming the peer and the code.
fn notify<H: Handler>(
    opened: &mut bool,
    env: &mut Env<H>,
    peer: SocketAddr,
    code: u16,
    reason: &str,
    what: &str,
) {
    if !*opened {
        return;
    }
    *opened = false;
    debug!("{peer}: {what}: code {code} {reason:?}");
    *env.stats.closes.entry(code).or_default() += 1;
    let close = Close {
        code,
        reason: reason.to_string(),
    };
    env.handler.on_close(env.ctx, env.id, &close);
    // The connection is closing: what the handler asks of it now is moot, what it
    // asks of others still counts.
    for (id, cmd) in std::mem::take(&mut env.ctx.commands) {
        if id != env.id {
            env.deferred.push((id, cmd));
        }
    }
}

/// Writes a message. A data message larger than the write buffer skips tungstenite's
/// buffer: after the context's queued output, its header and payload go straight to the
/// wire (copied only if the socket refuses part of it), and the context's buffer does not
/// grow to the message's size.
fn send<S: Write>(
    ws: &mut WebSocketContext,
    wire: &mut Wire<S>,
    msg: Message,
    cfg: &Config,
) -> tungstenite::Result<()> {
    let (opcode, payload): (OpData, &[u8]) = match &msg {
        Message::Text(t) if t.len() > cfg.write_buffer => (OpData::Text, t.as_bytes()),
        Message::Binary(b) if b.len() > cfg.write_buffer => (OpData::Binary, b),
        _ => return ws.write(wire, msg),
    };
    if !ws.can_write() {
        return Err(WsError::Protocol(
            tungstenite::error::ProtocolError::SendAfterClosing,
        ));
    }
    ws.flush(wire)?;
    let header = FrameHeader {
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    // Formatted on the stack first: one write for the header, not one per field.
    let mut buf = std::io::Cursor::new([0u8; 14]);
    header.format(payload.len() as u64, &mut buf)?;
    let header_len = buf.position() as usize;
    wire.write_all(&buf.get_ref()[..header_len])?;
    wire.write_all(payload)?;
    Ok(())
}

/// A single, whole, final text or binary frame larger than `min` bytes: whether it is
/// text, its header length and mask. Such a frame needs none of tungstenite's state, so
/// it skips tungstenite's read buffer (a copy and a zero-fill of the payload).
fn big_frame(region: &[u8], min: usize) -> Option<(bool, usize, [u8; 4])> {
    let mut cursor = std::io::Cursor::new(region);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let header_len = usize::try_from(cursor.position()).ok()?;
    let text = match header.opcode {
        OpCode::Data(OpData::Text) => true,
        OpCode::Data(OpData::Binary) => false,
        _ => return None,
    };
    let whole = usize::try_from(len).ok()? == region.len() - header_len;
    (header.is_final && whole && len > min as u64).then_some((text, header_len, header.mask?))
}

/// Unmasks a payload in place, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Counts an outgoing data message (pings and closes are counted where they are made).
fn count_out(stats: &mut Stats, msg: &Message) {
    if msg.is_text() || msg.is_binary() {
        stats.messages_out += 1;
        stats.bytes_out += msg.len() as u64;
    }
}

/// A Close frame; reasons are cut to the 123 bytes a control frame allows.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: code.into(),
        reason: reason[..end].to_string().into(),
    }
}

/// The close code RFC 6455 gives for a tungstenite read error.
fn close_code(e: &WsError) -> (u16, String) {
    match e {
        WsError::Capacity(c) => (1009, c.to_string()),
        WsError::Utf8(_) => (1007, "invalid UTF-8".into()),
        WsError::Protocol(p) => (1002, p.to_string()),
        other => (1011, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection is this struct in the slab plus a wheel node: keep it small.
    #[test]
    fn idle_connection_is_small() {
        let size = std::mem::size_of::<Conn<crate::transport::Stream>>();
        // mio's sockets carry a selector id in debug builds only.
        let limit = if cfg!(debug_assertions) { 80 } else { 72 };
        assert!(size <= limit, "Conn is {size} bytes");
        let busy = std::mem::size_of::<Busy>();
        assert!(busy <= 512, "Busy is {busy} bytes");
    }
}
