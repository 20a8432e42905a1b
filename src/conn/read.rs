//! The way in: the upgrade request, then frames — scanned as they arrive, read once
//! whole, and turned into messages for the handler. This is the one frame path: no
//! frame reaches the handler any other way.

use super::busy::Busy;
use super::{Conn, Edge, Effects, Env, Phase, flag};
use crate::app::data::Data;
use crate::app::handler::{AutoPong, Handler, Upgrade};
use crate::io::transport::Transport;
use crate::protocol::frame::{
    self, Head, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, RSV1,
};
use crate::protocol::handshake::{self, Outcome};
use crate::protocol::scan::Rejected;
use log::{debug, warn};
use std::io::ErrorKind;
use std::time::Instant;
use tungstenite::{Bytes, Message, Utf8Bytes};

/// A partial frame grows by doubling until this much of it has arrived; then room for
/// the rest is reserved at once (a client must send real data before its header's
/// claim is trusted with memory).
const RESERVE_AFTER: usize = 64 << 10;

/// Reads one connection may do per readiness event before the loop serves the others
/// (it comes back to this one on the next turn).
const READS_PER_TURN: u32 = 16;

/// Bytes one connection may read per readiness event (as 16 scratch reads did before
/// reads straight into a frame's buffer, which may be larger). 256 KiB was tried: at
/// 1 MiB messages it cost 25 % more CPU per message and gained no tail latency.
const BYTES_PER_TURN: usize = 2 << 20;

/// A frame with at least this much payload still to come is read straight into its
/// own buffer, not through the scratch buffer (a copy less); smaller rests come
/// with the frames behind them in one scratch read.
const DIRECT_FROM: u64 = 64 << 10;

/// Most bytes read straight into a frame's buffer at once.
const DIRECT_CHUNK: usize = 256 << 10;

/// A message made of frames the scanner approved: a text one is valid UTF-8.
fn approved(opcode: u8, payload: Bytes) -> Data<'static> {
    Data::Message(if opcode == OP_TEXT {
        // SAFETY: the scanner validated every byte of this (uncompressed) text message
        // as UTF-8, across fragments, before any of its frames was read.
        Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(payload) })
    } else {
        Message::Binary(payload)
    })
}

/// An approved message in one frame, borrowed where it was read.
fn approved_in_place(opcode: u8, payload: &[u8]) -> Data<'_> {
    if opcode == OP_TEXT {
        // SAFETY: as in `approved`; this frame is the whole message.
        Data::Text(unsafe { std::str::from_utf8_unchecked(payload) })
    } else {
        Data::Binary(payload)
    }
}

/// Keeps the start of an incomplete frame. Room for its rest is reserved at once when
/// that at most doubles what has arrived (no more than growth by doubling takes), or
/// once 64 KiB of it arrived (the frame is trusted then), so the frame is not moved
/// (copied again) while it completes, nor when the rest is read straight into it.
fn keep_incomplete(busy: &mut Busy, bytes: &[u8]) {
    let rest = usize::try_from(busy.scanner.frame_remaining()).unwrap_or(usize::MAX);
    let have = busy.partial.len() + bytes.len();
    if rest <= have || (have >= RESERVE_AFTER && rest != usize::MAX) {
        busy.partial.reserve(bytes.len() + rest);
    }
    busy.partial.extend_from_slice(bytes);
}

impl<S: Transport> Conn<S> {
    pub(super) fn read_request<H: Handler>(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        env: &mut Env<H>,
    ) {
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
            let over_limit = self.flags & flag::OVER_LIMIT != 0;
            let peer = self.peer.addr();
            let busy = self.busy(now, env);
            let before = busy.partial.len();
            busy.partial.extend_from_slice(&scratch[..n]);
            // Parse the first bytes (so a TLS hello or other non-HTTP gets its 400 at once)
            // and then once per new line: a request trickling in byte by byte must not
            // cost a parse per byte.
            let new_line = scratch[..n].contains(&b'\n');
            if before > 0 && !new_line && busy.partial.len() <= env.cfg.max_request {
                continue;
            }
            match handshake::evaluate(&busy.partial, env.cfg, peer, over_limit) {
                Outcome::Partial => continue,
                Outcome::Respond {
                    status,
                    reply,
                    whole,
                } => {
                    debug!("{peer}: answered over HTTP with {status}");
                    if status != 200 {
                        *env.stats.handshakes_failed.entry(status).or_default() += 1;
                    }
                    busy.partial.clear();
                    busy.out.push_bytes(&reply);
                    self.answered(whole, now);
                    return self.flush(now, env);
                }
                Outcome::Accept {
                    accept_key,
                    consumed,
                    request,
                    deflate,
                } => {
                    let mut rest = busy.partial.split_off(consumed);
                    busy.partial.clear();
                    let verdict = env.handler.on_upgrade(&request);
                    let reply = match &verdict {
                        Upgrade::Accept { headers } => {
                            handshake::switching_protocols(&accept_key, &request, headers)
                        }
                        Upgrade::Reject {
                            status,
                            reason,
                            headers,
                        } => handshake::refusal(*status, reason, headers),
                    };
                    let (status, reply) = match (verdict, reply) {
                        (Upgrade::Accept { .. }, Ok(reply)) => (101, reply),
                        (Upgrade::Reject { status, .. }, Ok(reply)) => (status, reply),
                        (_, Err(e)) => {
                            warn!("on_upgrade answered what cannot be sent: {e}");
                            let reply = handshake::error_reply(500, "internal error", &[]);
                            (500, reply)
                        }
                    };
                    busy.out.push_bytes(&reply);
                    if status != 101 {
                        debug!("{peer}: answered over HTTP with {status}");
                        *env.stats.handshakes_failed.entry(status).or_default() += 1;
                        self.answered(rest.is_empty(), now);
                        return self.flush(now, env);
                    }
                    env.stats.handshakes_ok += 1;
                    if let Some(agreement) = deflate {
                        busy.scanner.allow_compression(true);
                        self.deflate = super::Negotiated::new(&agreement);
                        env.codec.opened(env.id.key, &agreement);
                    }
                    self.phase = Phase::Open;
                    self.flags |= flag::OPENED;
                    self.last_read = super::Stamp::at(now, env.epoch);
                    self.effects |= Effects::RESCHEDULE;
                    debug!(
                        "{peer}: open {} subprotocol={}",
                        request.path,
                        request.subprotocol.as_deref().unwrap_or("-")
                    );
                    let id = env.id;
                    self.callback(now, env, |h, ctx| h.on_open(ctx, id, &request));
                    // Bytes sent right behind the request are the first frames.
                    if !rest.is_empty() {
                        self.ingest(&mut rest, now, env);
                    }
                    return self.read_frames(now, scratch, env, Edge::Revisit);
                }
            }
        }
    }

    pub(super) fn read_frames<H: Handler>(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        env: &mut Env<H>,
        edge: Edge,
    ) {
        // A short read from a kernel socket took everything queued: reading again would
        // only return WouldBlock, one syscall per batch for nothing (edge-triggered
        // epoll reports whatever arrives later).
        let stop_short = edge == Edge::New && self.stream.short_read_drains();
        let (mut reads, mut bytes) = (0, 0);
        while self.reading() {
            if self.pending_output() > env.cfg.max_pending_output {
                self.flags |= flag::READ_PAUSED;
                break;
            }
            if reads == READS_PER_TURN || bytes >= BYTES_PER_TURN {
                self.effects |= Effects::REVISIT;
                break;
            }
            let direct = self.direct_room();
            let read = match direct {
                Some(room) => self.read_direct(room),
                None => self.stream.read(scratch),
            };
            let n = match read {
                Ok(0) => return self.gone("peer closed the connection", now, env),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.gone(&format!("read failed: {e}"), now, env),
            };
            reads += 1;
            bytes += n;
            self.last_read = super::Stamp::at(now, env.epoch);
            if self.pinged() {
                // The answer to our ping: the next one is due a ping interval from now,
                // not at the idle deadline the timer holds (once per ping, not per message).
                self.flags &= !flag::PINGED;
                self.effects |= Effects::RESCHEDULE;
            }
            let asked = match direct {
                Some(room) => {
                    self.ingest_direct(n, now, env);
                    room
                }
                None => {
                    self.ingest(&mut scratch[..n], now, env);
                    scratch.len()
                }
            };
            if stop_short && n < asked {
                break;
            }
        }
        self.flush(now, env);
    }

    /// How much to read straight into the buffer of the frame in progress, if its
    /// rest is large (or it is being read that way already): never past the frame's
    /// end, so the frames behind it still come through the scratch buffer.
    fn direct_room(&self) -> Option<usize> {
        let busy = self.busy.as_deref()?;
        let rest = busy.scanner.frame_remaining();
        // The header is trusted with memory only once enough of the frame arrived.
        if !busy.reading_direct() && (busy.partial.len() < RESERVE_AFTER || rest < DIRECT_FROM) {
            return None;
        }
        Some(usize::try_from(rest).map_or(DIRECT_CHUNK, |r| r.min(DIRECT_CHUNK)))
    }

    /// Reads up to `room` bytes of the frame in progress into its own buffer: one
    /// allocation of the whole frame, holding what had arrived, so it never moves or
    /// grows while the rest is read (into its spare capacity: nothing is zeroed
    /// first).
    fn read_direct(&mut self, room: usize) -> std::io::Result<usize> {
        let Some(busy) = self.busy.as_deref_mut() else {
            return Ok(0);
        };
        if !busy.reading_direct() {
            let rest = usize::try_from(busy.scanner.frame_remaining()).unwrap_or(0);
            let mut frame = std::mem::take(&mut busy.partial);
            // Usually room was reserved as the frame's start was kept.
            frame.reserve_exact(rest);
            busy.direct_end = frame.len() + rest;
            // The payload is unmasked as it arrives, while it is still in cache; the
            // header's key is zeroed, so reading the whole frame does not do it again.
            busy.direct_key = ([0; 4], 0);
            if let Some(head) = frame::read_header(&frame) {
                let at = head.header_len;
                frame[at - 4..at].fill(0);
                frame::unmask(&mut frame[at..], head.mask);
                busy.direct_key = (head.mask, at);
            }
            busy.partial = frame;
        }
        self.stream.read_append(&mut busy.partial, room)
    }

    /// Scans the `n` bytes `read_direct` added and unmasks them; once they end the
    /// frame, reads it.
    fn ingest_direct<H: Handler>(&mut self, n: usize, now: Instant, env: &mut Env<H>) {
        let busy = self.busy(now, env);
        let end = busy.partial.len();
        // Never past the frame's end: the frame is either whole now or not yet.
        let whole = match busy.scanner.scan(&busy.partial[end - n..end]) {
            Ok(complete) => complete == n,
            Err(Rejected { error, .. }) => {
                busy.direct_end = 0;
                let (code, reason) = error.close();
                return self.fail(code, reason, now, env);
            }
        };
        let (mut key, payload_at) = busy.direct_key;
        key.rotate_left((end - n - payload_at) % 4);
        frame::unmask(&mut busy.partial[end - n..end], key);
        if whole {
            busy.direct_end = 0;
            let frames = std::mem::take(&mut busy.partial);
            self.read_owned(frames, now, env);
        }
    }

    /// Frames are still being read: open, or closing and waiting for the peer's Close.
    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Closing)
    }

    /// Scans newly received bytes and reads the whole frames among them; keeps the
    /// start of an incomplete frame for later.
    fn ingest<H: Handler>(&mut self, data: &mut [u8], now: Instant, env: &mut Env<H>) {
        let busy = self.busy(now, env);
        let (complete, error) = match busy.scanner.scan(data) {
            Ok(c) => (c, None),
            Err(Rejected { complete, error }) => (complete, Some(error)),
        };
        if busy.partial.is_empty() {
            self.read_region(&mut data[..complete], now, env);
        } else if complete > 0
            && let Some(end) = frame::frame_len(&busy.partial)
            && let Some(take) = end.checked_sub(busy.partial.len())
            && take <= complete
        {
            // The kept frame ends in this chunk: finish it, and read the whole frames
            // behind it where they are (each byte copied once, not the whole chunk
            // appended and its tail split off).
            busy.partial.extend_from_slice(&data[..take]);
            let first = std::mem::take(&mut busy.partial);
            self.read_owned(first, now, env);
            self.read_region(&mut data[take..complete], now, env);
        } else if complete > 0 {
            // The kept bytes were a header cut short: they and this chunk's whole
            // frames go together.
            busy.partial.extend_from_slice(&data[..complete]);
            let frames = std::mem::take(&mut busy.partial);
            self.read_owned(frames, now, env);
        }
        if let Some(e) = error {
            if self.reading() {
                let (code, reason) = e.close();
                self.fail(code, reason, now, env);
            }
        } else if self.reading()
            && let Some(busy) = self.busy.as_deref_mut()
        {
            keep_incomplete(busy, &data[complete..]);
        }
    }

    /// Frames assembled in a buffer of their own: one whole message in one frame
    /// becomes the message without a copy.
    fn read_owned<H: Handler>(&mut self, mut frames: Vec<u8>, now: Instant, env: &mut Env<H>) {
        if let Some(head) = frame::read_head(&frames)
            && head.frame_len() == frames.len()
            && head.is_final()
            && head.byte0 & RSV1 == 0
            && matches!(head.opcode(), OP_TEXT | OP_BINARY)
        {
            frame::unmask(&mut frames[head.header_len..], head.mask);
            let payload = Bytes::from(frames).slice(head.header_len..);
            return self.deliver(approved(head.opcode(), payload), now, env);
        }
        self.read_region(&mut frames, now, env);
    }

    /// Reads the whole, approved frames of `region`, unmasking them in place.
    fn read_region<H: Handler>(&mut self, region: &mut [u8], now: Instant, env: &mut Env<H>) {
        let mut pos = 0;
        while pos < region.len() && self.reading() {
            let Some(head) = frame::read_head(&region[pos..]) else {
                // The scanner approved whole frames only; never trust a broken promise.
                return self.fail(1002, "malformed frame", now, env);
            };
            let payload = &mut region[pos + head.header_len..pos + head.frame_len()];
            frame::unmask(payload, head.mask);
            self.on_frame(head, payload, now, env);
            pos += head.frame_len();
        }
    }

    fn on_frame<H: Handler>(&mut self, head: Head, payload: &[u8], now: Instant, env: &mut Env<H>) {
        match head.opcode() {
            OP_TEXT | OP_BINARY if head.is_final() && head.byte0 & RSV1 != 0 => {
                self.inflate(head.opcode(), payload, now, env);
            }
            OP_TEXT | OP_BINARY if head.is_final() => {
                self.deliver(approved_in_place(head.opcode(), payload), now, env);
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let busy = self.busy(now, env);
                if head.opcode() != OP_CONTINUATION {
                    busy.message_opcode = head.byte0 & (RSV1 | 0x0F);
                }
                busy.message.extend_from_slice(payload);
                if head.is_final() {
                    let message = std::mem::take(&mut busy.message);
                    let (opcode, rsv1) = (busy.message_opcode & 0x0F, busy.message_opcode & RSV1);
                    if rsv1 != 0 {
                        self.inflate(opcode, &message, now, env);
                    } else {
                        self.deliver(approved(opcode, Bytes::from(message)), now, env);
                    }
                }
            }
            OP_PING if self.is_open() => {
                let id = env.id;
                let reply = self.callback(now, env, |h, ctx| h.on_ping(ctx, id, payload));
                if reply == AutoPong::Send && self.is_open() {
                    self.queue_frame(OP_PONG, &Bytes::copy_from_slice(payload), now, env);
                }
            }
            OP_PONG if self.is_open() => {
                let id = env.id;
                self.callback(now, env, |h, ctx| h.on_pong(ctx, id, payload));
            }
            OP_PING | OP_PONG => {}
            OP_CLOSE => self.on_close_frame(payload, now, env),
            _ => self.fail(1002, "reserved opcode", now, env),
        }
    }

    /// Inflates a compressed message (its payload, fragments joined) and delivers it;
    /// fails the connection on a bomb (1009), a corrupt stream or bad UTF-8 (1007).
    fn inflate<H: Handler>(&mut self, opcode: u8, payload: &[u8], now: Instant, env: &mut Env<H>) {
        if !self.is_open() {
            return;
        }
        let mut plain = Vec::new();
        let inflated = env.codec.inflate(
            self.deflate,
            env.id.key,
            payload,
            env.cfg.max_message,
            &mut plain,
        );
        let msg = match inflated {
            Err((code, reason)) => return self.fail(code, reason, now, env),
            Ok(()) if opcode == OP_TEXT => match Utf8Bytes::try_from(plain) {
                Ok(text) => Message::Text(text),
                Err(_) => return self.fail(1007, "invalid UTF-8 in text message", now, env),
            },
            Ok(()) => Message::Binary(plain.into()),
        };
        self.deliver(Data::Message(msg), now, env);
    }

    /// Hands a complete message to the handler, then carries out what it asked for.
    fn deliver<H: Handler>(&mut self, data: Data, now: Instant, env: &mut Env<H>) {
        // After our Close the handler has had on_close: later messages are dropped.
        if !self.is_open() {
            return;
        }
        env.stats.messages_in += 1;
        env.stats.bytes_in += data.len() as u64;
        let id = env.id;
        self.callback(now, env, |h, ctx| h.on_data(ctx, id, data));
        if self.pending_output() >= env.cfg.write_buffer {
            self.flush(now, env);
        }
    }

    /// Reads and throws away what a failed peer still sends, up to `max_message`
    /// bytes; then waits, without reading, for it to hang up or the close timeout.
    pub(super) fn discard_input<H: Handler>(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        env: &mut Env<H>,
        edge: Edge,
    ) {
        if self.flags & flag::READ_PAUSED != 0 {
            if edge == Edge::Hangup {
                self.phase = Phase::Dead;
            }
            return;
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.phase = Phase::Dead;
                    return;
                }
                Ok(n) => {
                    let busy = self.busy(now, env);
                    busy.discarded += n;
                    if busy.discarded > env.cfg.max_message {
                        self.flags |= flag::READ_PAUSED;
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.phase = Phase::Dead;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::conn::busy::Pool;

    /// A frame's claimed length is trusted with memory only up to twice what has
    /// arrived; past that the rest is reserved once, so completing never moves it.
    #[test]
    fn the_rest_of_a_frame_is_reserved_once_half_or_64_kib_of_it_arrived() {
        let cfg = Config::default();
        let mut pool = Pool::new(1);
        let mut busy = pool.take(&cfg, Instant::now());
        // A 60 KiB binary frame: header (8 bytes with the mask) and 100 bytes of it.
        let mut head = vec![0x82, 0x80 | 126];
        head.extend_from_slice(&(60u16 << 10).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        let first = [head, vec![0; 100]].concat();
        assert_eq!(busy.scanner.scan(&first), Ok(0));
        keep_incomplete(&mut busy, &first);
        assert!(busy.partial.capacity() < 4 << 10, "a claim is not a reason");
        let more = vec![0; 40 << 10];
        assert_eq!(busy.scanner.scan(&more), Ok(0));
        keep_incomplete(&mut busy, &more);
        let (len, cap) = (busy.partial.len(), busy.partial.capacity());
        let frame = 8 + (60 << 10);
        assert!(
            cap >= frame && cap < 2 * frame,
            "room for the frame once half is here"
        );
        assert_eq!(len, first.len() + more.len());

        // A 1 MiB frame: room for all of it once 64 KiB arrived, not before.
        let mut busy = pool.take(&cfg, Instant::now());
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 20).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        let first = [head, vec![0; 1000]].concat();
        assert_eq!(busy.scanner.scan(&first), Ok(0));
        keep_incomplete(&mut busy, &first);
        assert!(busy.partial.capacity() < 4 << 10, "a claim is not a reason");
        let more = vec![0; RESERVE_AFTER];
        assert_eq!(busy.scanner.scan(&more), Ok(0));
        keep_incomplete(&mut busy, &more);
        assert!(
            busy.partial.capacity() >= 14 + (1 << 20),
            "trusted after 64 KiB"
        );
    }
}
