//! What an application plugs into the loop: the [`Handler`] callbacks, and the small
//! types they speak in. Handlers never see sockets; they act through a
//! [`Ctx`](crate::Ctx) during callbacks, and through [`Server`](crate::Server) or a
//! [`Sender`](crate::Sender) from anywhere else.

use super::ctx::Ctx;
use super::data::Data;
use crate::protocol::handshake::Request;
use std::fmt;
use tungstenite::Message;

/// A connection, from its upgrade until its `on_close`. Ids are never reused for
/// another connection while the server runs: a slot that is reused gets a new
/// generation, so a send to a closed id fails instead of reaching the slot's next
/// tenant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    pub(crate) fn key(self) -> usize {
        self.key as usize
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}.{})", self.key, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.key, self.generation)
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code: the peer's, the server's (1001, 1002, 1007, 1009, …), or 1006
    /// when the connection ended without a close frame.
    pub code: u16,
    /// The reason text that went with the code.
    pub reason: String,
}

/// An application timer: a key of the application's choice, on its own or tied to a
/// connection (then it is cancelled when the connection closes). Setting a timer that
/// is already armed moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer {
    /// The application's name for the timer.
    pub key: u64,
    /// The connection it belongs to, if any.
    pub conn: Option<ConnId>,
}

impl Timer {
    /// A timer of the application's own.
    pub fn new(key: u64) -> Timer {
        Timer { key, conn: None }
    }

    /// A timer that belongs to `conn` and dies with it.
    pub fn on(conn: ConnId, key: u64) -> Timer {
        Timer {
            key,
            conn: Some(conn),
        }
    }
}

/// The verdict on an upgrade request, from [`Handler::on_upgrade`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Switch protocols, adding these response headers (a cookie, say).
    Accept {
        /// Extra header lines of the 101 response, as name and value.
        headers: Vec<(String, String)>,
    },
    /// Answer with this HTTP status and a one-line text body, and close.
    Reject {
        /// The status: 401, 403, 429, …
        status: u16,
        /// The body text.
        reason: String,
        /// Extra header lines (e.g. `WWW-Authenticate`, `Retry-After`).
        headers: Vec<(String, String)>,
    },
}

impl Upgrade {
    /// Accept, with no extra headers.
    pub fn accept() -> Upgrade {
        Upgrade::Accept {
            headers: Vec::new(),
        }
    }

    /// Refuse with `status` (400–599) and a one-line `reason`.
    pub fn reject(status: u16, reason: &str) -> Upgrade {
        Upgrade::Reject {
            status,
            reason: reason.to_string(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header to either verdict.
    pub fn header(mut self, name: &str, value: &str) -> Upgrade {
        match &mut self {
            Upgrade::Accept { headers } | Upgrade::Reject { headers, .. } => {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        self
    }
}

/// Whether the server answers a Ping with the automatic Pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPong {
    /// Answer (the default, as RFC 6455 requires).
    Send,
    /// Do not: the handler answers itself, or means not to.
    Skip,
}

/// Application callbacks, all called on the loop's thread. Only `on_message` is
/// required; each callback can act on any connection through `ctx`.
pub trait Handler {
    /// An upgrade request passed the server's checks (path, origin, limits): accept
    /// it, with extra response headers if need be, or refuse it with a status — where
    /// a service authenticates, before the 101 (gorilla does this in the HTTP handler
    /// before `Upgrade`). Accepts by default.
    fn on_upgrade(&mut self, _request: &Request) -> Upgrade {
        Upgrade::accept()
    }

    /// A connection completed its upgrade.
    fn on_open(&mut self, _ctx: &mut Ctx, _conn: ConnId, _request: &Request) {}

    /// A complete text or binary message arrived.
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message);

    /// A complete text or binary message arrived, borrowed from the loop's receive
    /// buffer if it came in one frame (see [`Data`]). Every message comes here first;
    /// by default it becomes an owned `Message` for [`on_message`](Self::on_message).
    /// Override it to read messages where they lie: a small one then costs no
    /// allocation, and `ctx.send(conn, data)` answers with one copy into the output.
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, data: Data<'_>) {
        self.on_message(ctx, conn, data.into_message());
    }

    /// A Ping arrived (gorilla's `SetPingHandler`); the automatic Pong goes out unless
    /// this returns [`AutoPong::Skip`].
    fn on_ping(&mut self, _ctx: &mut Ctx, _conn: ConnId, _payload: &[u8]) -> AutoPong {
        AutoPong::Send
    }

    /// A Pong arrived (gorilla's `SetPongHandler`), e.g. the answer to a Ping sent with
    /// a timestamp as its payload.
    fn on_pong(&mut self, _ctx: &mut Ctx, _conn: ConnId, _payload: &[u8]) {}

    /// Output that had to wait for the socket has partly or wholly gone out; `buffered`
    /// bytes are still waiting (uWebSockets' `drain`). A producer that stopped at a
    /// high-water mark of its own resumes here.
    fn on_drain(&mut self, _ctx: &mut Ctx, _conn: ConnId, _buffered: usize) {}

    /// A timer the application set has come (never early, at most one 10 ms tick late).
    fn on_timer(&mut self, _ctx: &mut Ctx, _timer: Timer) {}

    /// The connection is closing or gone; called once per opened connection. The id
    /// is dead after this returns: sends to it fail.
    fn on_close(&mut self, _ctx: &mut Ctx, _conn: ConnId, _close: &Close) {}
}

/// Sends every text and binary message back to its sender, unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        // An echo to a connection that is open by definition cannot fail.
        let _ = ctx.send(conn, msg);
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, data: Data<'_>) {
        let _ = ctx.send(conn, data);
    }
}
