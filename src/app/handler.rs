//! What an application plugs into the loop: the [`Handler`] callbacks and the [`Ctx`]
//! through which they act on connections. Handlers never see sockets.

use crate::protocol::handshake::Request;
use tungstenite::Message;

/// Identifies a connection while it is open. An id is reused after its `on_close`,
/// like a mio token, so a handler that keeps ids must forget them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code: the peer's, the server's (1001, 1002, 1007, 1009, …), or 1006
    /// when the connection ended without a close frame.
    pub code: u16,
    /// The reason text that went with the code.
    pub reason: String,
}

/// A request a handler makes of the server during a callback.
#[derive(Debug)]
pub(crate) enum Command {
    Send(Message),
    Close(u16, String),
}

/// The handler's way to act: queue messages and closes for any open connection.
/// Commands take effect when the callback returns, in the order they were made.
#[derive(Debug, Default)]
pub struct Ctx {
    pub(crate) commands: Vec<(ConnId, Command)>,
}

impl Ctx {
    /// Queues `msg` (text, binary, ping or pong) for `conn`. Ignored if `conn` is no longer open.
    pub fn send(&mut self, conn: ConnId, msg: Message) {
        self.commands.push((conn, Command::Send(msg)));
    }

    /// Starts the close handshake on `conn` with `code` and `reason` (at most 123 bytes).
    pub fn close(&mut self, conn: ConnId, code: u16, reason: &str) {
        self.commands
            .push((conn, Command::Close(code, reason.to_string())));
    }
}

/// Application callbacks, all called on the loop's thread.
pub trait Handler {
    /// A connection completed its upgrade.
    fn on_open(&mut self, _ctx: &mut Ctx, _conn: ConnId, _request: &Request) {}
    /// A complete text or binary message arrived (pings and pongs are answered by the server).
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message);
    /// The connection is closing or gone; called once per opened connection. The id
    /// must not be used after this returns.
    fn on_close(&mut self, _ctx: &mut Ctx, _conn: ConnId, _close: &Close) {}
}

/// Sends every text and binary message back to its sender, unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        ctx.send(conn, msg);
    }
}
