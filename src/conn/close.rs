//! The ways a connection ends, each in one place:
//!
//! | how | what the peer gets | then |
//! |---|---|---|
//! | we close (handler, shutdown) | Close with our code | `Closing`: wait for its Close |
//! | the peer closes | our Close echoing its code | `Draining`: write it, drop |
//! | the peer fell silent (idle timeout) | Close 1001 | `Draining`: nothing to wait for |
//! | we fail it (protocol error) | Close 1002/1007/1009 | `Lingering` |
//! | we refuse the upgrade | the HTTP reply | `Draining` if the request was all it sent, else `Lingering` |
//! | the peer is gone (EOF, reset, write error or timeout) | nothing | dropped at once |
//!
//! Lingering, as nginx's `lingering_close`: write the answer, end our direction, and
//! read and discard what the peer still sends (at most `max_message` bytes, at most
//! `close_timeout`) until it ends its own. Dropping a socket with unread input makes
//! the kernel send a reset, which can destroy our answer before the peer reads it.

use super::{Conn, Effects, Env, Phase, flag};
use crate::app::handler::{Close, Handler};
use crate::io::transport::Transport;
use crate::protocol::frame::{self, OP_CLOSE};
use log::debug;
use std::time::Instant;
use tungstenite::Bytes;

impl<S: Transport> Conn<S> {
    /// Sends Close with `code` on an open connection, then goes on to `then`:
    /// `Closing` to wait (up to close_timeout) for the peer's Close, or `Draining` to
    /// drop once it is written (the peer closed first, or fell silent: either way it
    /// has nothing unread to turn our close into a reset).
    pub(super) fn close<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        then: Phase,
        now: Instant,
        env: &mut Env<H>,
    ) {
        if self.phase != Phase::Open {
            return;
        }
        let what = if then == Phase::Closing {
            "closing"
        } else {
            "closed"
        };
        self.notify(code, reason, what, now, env);
        self.queue_close(code, reason, now, env);
        self.phase = then;
        self.busy(now, env).since = now;
        self.effects |= Effects::RESCHEDULE;
    }

    /// Fails the connection: Close with `code` (unless ours went out already), then
    /// linger. Input not yet read is dropped.
    pub(super) fn fail<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        now: Instant,
        env: &mut Env<H>,
    ) {
        self.notify(code, reason, "failing", now, env);
        let busy = self.busy(now, env);
        busy.partial = Vec::new();
        busy.message = Vec::new();
        if self.phase == Phase::Open {
            self.queue_close(code, reason, now, env);
        }
        self.linger(now);
    }

    /// An HTTP answer is queued: drop once it is written when the request was all the
    /// peer sent (nothing unread, so no reset), linger otherwise.
    pub(super) fn answered(&mut self, whole: bool, now: Instant) {
        if whole {
            self.phase = Phase::Draining;
            if let Some(busy) = self.busy.as_deref_mut() {
                busy.since = now;
            }
            self.effects |= Effects::RESCHEDULE;
        } else {
            self.linger(now);
        }
    }

    /// Enters `Lingering` once the answer is queued.
    pub(super) fn linger(&mut self, now: Instant) {
        self.phase = Phase::Lingering;
        self.flags &= !flag::READ_PAUSED;
        if let Some(busy) = self.busy.as_deref_mut() {
            busy.since = now;
        }
        self.effects |= Effects::RESCHEDULE;
    }

    /// The peer is gone: no close frame can be exchanged.
    pub(super) fn gone<H: Handler>(&mut self, why: &str, now: Instant, env: &mut Env<H>) {
        if self.flags & flag::OPENED != 0 {
            self.notify(1006, "", why, now, env);
        } else {
            debug!("{}: {why}", self.peer);
        }
        self.phase = Phase::Dead;
    }

    /// A Close frame arrived: the peer starts the close handshake, or answers ours.
    pub(super) fn on_close_frame<H: Handler>(
        &mut self,
        payload: &[u8],
        now: Instant,
        env: &mut Env<H>,
    ) {
        let (code, reason) = match frame::read_close(payload) {
            Ok(close) => close,
            Err((code, reason)) => return self.fail(code, reason, now, env),
        };
        if self.phase == Phase::Open {
            // Echo the peer's code, as RFC 6455 §5.5.1 suggests.
            self.close(code, reason, Phase::Draining, now, env);
        }
        self.phase = Phase::Draining;
    }

    fn queue_close<H>(&mut self, code: u16, reason: &str, now: Instant, env: &mut Env<H>) {
        let payload = Bytes::from(frame::close_payload(code, reason));
        self.queue_frame(OP_CLOSE, &payload, now, env);
    }

    /// Calls on_close once, with a debug line naming the peer and the code. What the
    /// handler asks of this connection now is moot; what it asks of others counts.
    pub(super) fn notify<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        what: &str,
        now: Instant,
        env: &mut Env<H>,
    ) {
        if self.flags & flag::OPENED == 0 {
            return;
        }
        self.flags &= !flag::OPENED;
        debug!("{}: {what}: code {code} {reason:?}", self.peer);
        *env.stats.closes.entry(code).or_default() += 1;
        let close = Close {
            code,
            reason: reason.to_string(),
        };
        let id = env.id;
        self.callback(now, env, |h, ctx| h.on_close(ctx, id, &close));
    }
}
