//! How an application acts: [`Ctx`] during callbacks, and the commands every way of
//! acting (a `Ctx`, the `Server`, a `Sender`) turns into, which the loop applies on its
//! own thread — one writer per connection, whoever asked.

use super::data::Data;
use super::handler::{ConnId, Timer};
use crate::io::outq::OutQueue;
use crate::protocol::frame::{self, MAX_CONTROL, OP_BINARY, OP_PING, OP_PONG, OP_TEXT};
use crate::server::topics::Topics;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::time::Duration;
use tungstenite::Message;

/// Why a message, close or timer was not accepted. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed, closing, or was never open (a stale id): its
    /// `on_close` has run or is running.
    Closed,
    /// Not a message an application sends: a raw frame.
    Unsupported,
    /// A ping or pong payload over the 125 bytes a control frame allows.
    ControlTooLong,
    /// A topic name longer than [`Config::max_topic_len`](crate::Config::max_topic_len).
    TopicTooLong,
    /// The connection already has
    /// [`Config::max_subscriptions`](crate::Config::max_subscriptions) subscriptions.
    TooManySubscriptions,
    /// [`Sender`](crate::Sender) only: its queue into the loop is full; the loop is
    /// behind. Retry later, drop the message, or slow down.
    Full,
    /// [`Sender`](crate::Sender) only: the server is gone.
    ServerGone,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection closed",
            SendError::Unsupported => "raw frames cannot be sent",
            SendError::ControlTooLong => "ping or pong payload over 125 bytes",
            SendError::TopicTooLong => "topic name too long",
            SendError::TooManySubscriptions => "too many subscriptions",
            SendError::Full => "sender queue full",
            SendError::ServerGone => "server gone",
        })
    }
}

impl std::error::Error for SendError {}

/// Something one connection is to do.
#[derive(Debug)]
pub(crate) enum ConnCommand {
    Send(Message),
    Close(u16, String),
}

/// A request the loop carries out.
#[derive(Debug)]
pub(crate) enum Command {
    Conn(ConnId, ConnCommand),
    SetTimer(Timer, Duration),
    CancelTimer(Timer),
    /// Per-connection ping interval and idle timeout (None: the server's).
    Timeouts(ConnId, Timeouts),
    /// A graceful shutdown, asked for by another thread.
    Shutdown(crate::server::Shutdown),
    Subscribe(ConnId, String),
    Unsubscribe(ConnId, String),
    /// A text or binary message for every subscriber of a topic.
    Publish {
        topic: String,
        msg: Message,
    },
    /// A message another process published, from the Redis bridge: for local
    /// subscribers only.
    #[cfg(feature = "redis")]
    Deliver {
        topic: String,
        msg: Message,
    },
}

/// The limits on topics a `Ctx` checks before queuing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicLimits {
    pub(crate) max_name: usize,
    pub(crate) max_subscriptions: usize,
}

/// Checks a message an application wants published.
pub(crate) fn check_publish(topic: &str, msg: &Message, max_name: usize) -> Result<(), SendError> {
    if topic.len() > max_name {
        return Err(SendError::TopicTooLong);
    }
    match msg {
        Message::Text(_) | Message::Binary(_) => Ok(()),
        _ => Err(SendError::Unsupported),
    }
}

/// A connection's heartbeat settings where they differ from the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

/// Checks a message an application wants sent.
pub(crate) fn check(msg: &Message) -> Result<(), SendError> {
    match msg {
        Message::Frame(_) => Err(SendError::Unsupported),
        Message::Ping(p) | Message::Pong(p) if p.len() > 125 => Err(SendError::ControlTooLong),
        _ => Ok(()),
    }
}

/// The bytes a frame with `payload` bytes takes in a connection's output.
fn frame_len(payload: usize) -> usize {
    frame::header(0, payload).1 + payload
}

/// The bytes `msg` (checked) adds to a connection's output.
fn wire_len(msg: &Message) -> usize {
    frame_len(match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(f) => {
            2 + f
                .as_ref()
                .map_or(0, |f| f.reason.len().min(MAX_CONTROL - 2))
        }
        Message::Frame(_) => 0,
    })
}

/// Which connections are open, by slot: a generation and an open bit per slot (4
/// bytes: ids are what every idle connection pays for), and the bytes waiting for
/// the connections that had any at the loop's last look. The loop writes it; `Ctx`
/// reads it to answer at once whether an id is still good.
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    /// The generation in the low 31 bits (it wraps there), and [`OPEN`].
    slots: Vec<u32>,
    /// Pending output by slot, for open connections that have some.
    buffered: HashMap<u32, u32>,
}

/// The bit of a slot's generation word that says the connection is open.
const OPEN: u32 = 1 << 31;

impl IdTable {
    /// The id of the connection now in slot `key`.
    pub(crate) fn id(&mut self, key: usize) -> ConnId {
        if key >= self.slots.len() {
            self.slots.resize(key + 1, 0);
        }
        ConnId {
            key: key as u32,
            generation: self.slots[key] & !OPEN,
        }
    }

    pub(crate) fn is_open(&self, id: ConnId) -> bool {
        self.slots.get(id.key()) == Some(&(id.generation | OPEN))
    }

    pub(crate) fn buffered(&self, id: ConnId) -> Option<usize> {
        self.is_open(id)
            .then(|| self.buffered.get(&id.key).map_or(0, |&b| b as usize))
    }

    /// Records what the loop saw after a call into the connection in slot `key`;
    /// true when that connection just stopped being open.
    pub(crate) fn update(&mut self, key: usize, open: bool, buffered: usize) -> bool {
        let Some(s) = self.slots.get_mut(key) else {
            return false;
        };
        let closed = *s & OPEN != 0 && !open;
        *s = *s & !OPEN | if open { OPEN } else { 0 };
        if open && buffered > 0 {
            let b = u32::try_from(buffered).unwrap_or(u32::MAX);
            self.buffered.insert(key as u32, b);
        } else if !self.buffered.is_empty() {
            self.buffered.remove(&(key as u32));
        }
        closed
    }

    /// The slot is free: the next connection in it gets a new generation.
    pub(crate) fn release(&mut self, key: usize) {
        if let Some(s) = self.slots.get_mut(key) {
            *s = s.wrapping_add(1) & !OPEN;
        }
        if !self.buffered.is_empty() {
            self.buffered.remove(&(key as u32));
        }
    }
}

/// The connection a callback is about, as it stands during the callback.
pub(crate) struct Current<'a> {
    pub(crate) id: ConnId,
    pub(crate) open: bool,
    pub(crate) buffered: usize,
    /// The connection's own output and socket, while its sends may be framed straight
    /// into them (uncompressed, and no command of its own queued that they must
    /// follow).
    pub(crate) out: Option<(&'a mut OutQueue, &'a mut dyn Write)>,
    /// Data messages and payload bytes framed into `out`, for the loop's counters.
    pub(crate) sent: (u64, u64),
}

/// A handler's way to act during a callback, on any connection. Commands take effect
/// in the order they were made: those for the connection being called back as soon
/// as the callback returns, the others at the end of the event.
pub struct Ctx<'a> {
    pub(crate) commands: &'a mut Vec<Command>,
    pub(crate) ids: &'a IdTable,
    pub(crate) topics: &'a Topics,
    pub(crate) limits: TopicLimits,
    pub(crate) current: Option<Current<'a>>,
}

impl<'a> Ctx<'a> {
    /// A `Ctx` for a callback about one connection, acting through this one's
    /// command list.
    pub(crate) fn about<'b>(&'b mut self, current: Current<'b>) -> Ctx<'b> {
        Ctx {
            commands: &mut *self.commands,
            ids: self.ids,
            topics: self.topics,
            limits: self.limits,
            current: Some(current),
        }
    }

    /// Queues a message for `conn`: a [`Message`] (text, binary, ping or pong; a Close
    /// closes, like [`close`](Self::close)), or bytes it borrows — `&str` for text,
    /// `&[u8]` for binary, a received [`Data`] — copied into the output, so that an
    /// answer to the connection being called back costs no allocation. Fails,
    /// queuing nothing, if `conn` is not open: a send never reaches another
    /// connection than the one meant.
    pub fn send<'m>(&mut self, conn: ConnId, msg: impl Into<Data<'m>>) -> Result<(), SendError> {
        let data = msg.into();
        if let Data::Message(msg) = &data {
            check(msg)?;
        }
        if self.send_direct(conn, &data) {
            return Ok(());
        }
        let msg = data.into_message();
        let bytes = wire_len(&msg);
        self.conn_command(conn, ConnCommand::Send(msg))?;
        self.count_queued(conn, bytes);
        Ok(())
    }

    /// Frames a message for the connection being called back straight into its
    /// output, where it may; false if it must go as a command.
    fn send_direct(&mut self, conn: ConnId, data: &Data) -> bool {
        let Some(c) = self.current.as_mut() else {
            return false;
        };
        let Some((out, socket)) = c.out.as_mut() else {
            return false;
        };
        if c.id != conn || !c.open {
            return false;
        }
        let opcode = match data {
            Data::Text(_) | Data::Message(Message::Text(_)) => OP_TEXT,
            Data::Binary(_) | Data::Message(Message::Binary(_)) => OP_BINARY,
            Data::Message(Message::Ping(_)) => OP_PING,
            Data::Message(Message::Pong(_)) => OP_PONG,
            Data::Message(Message::Close(_) | Message::Frame(_)) => return false,
        };
        let (header, used) = frame::header(frame::FIN | opcode, data.len());
        let before = out.len();
        match data {
            Data::Message(Message::Binary(b) | Message::Ping(b) | Message::Pong(b)) => {
                out.push_frame(&header[..used], b)
            }
            Data::Message(Message::Text(t)) => out.push_frame(&header[..used], t.as_ref()),
            _ => out.push_frame_through(&header[..used], data.as_bytes(), *socket),
        }
        if opcode & 0x08 == 0 {
            c.sent.0 += 1;
            c.sent.1 += data.len() as u64;
        }
        c.buffered = c.buffered.saturating_add(out.len() - before);
        true
    }

    /// Starts the close handshake on `conn` with `code` and `reason` (cut to 123
    /// bytes); its `on_close` follows at once.
    pub fn close(&mut self, conn: ConnId, code: u16, reason: &str) -> Result<(), SendError> {
        self.conn_command(conn, ConnCommand::Close(code, reason.to_string()))?;
        self.count_queued(conn, frame_len(2 + reason.len().min(MAX_CONTROL - 2)));
        Ok(())
    }

    /// Whether `conn` is open: messages to it are accepted.
    pub fn is_open(&self, conn: ConnId) -> bool {
        match &self.current {
            Some(c) if c.id == conn => c.open,
            _ => self.ids.is_open(conn),
        }
    }

    /// Bytes queued for `conn` that its socket has not taken yet (None if it is not
    /// open): exact for the connection being called back, what this callback queued
    /// for it included (a producer can send until this reaches a mark of its own,
    /// and resume in `on_drain`); as of the end of its last event for the others.
    pub fn buffered(&self, conn: ConnId) -> Option<usize> {
        match &self.current {
            Some(c) if c.id == conn => c.open.then_some(c.buffered),
            _ => self.ids.buffered(conn),
        }
    }

    /// Arms (or moves) an application timer to fire after `after`; it comes back in
    /// [`Handler::on_timer`](crate::Handler::on_timer). A timer tied to a connection
    /// that is not open is refused.
    pub fn set_timer(&mut self, timer: Timer, after: Duration) -> Result<(), SendError> {
        if let Some(conn) = timer.conn
            && !self.is_open(conn)
        {
            return Err(SendError::Closed);
        }
        self.commands.push(Command::SetTimer(timer, after));
        Ok(())
    }

    /// Disarms a timer, if armed.
    pub fn cancel_timer(&mut self, timer: Timer) {
        self.commands.push(Command::CancelTimer(timer));
    }

    /// Sets `conn`'s ping interval and idle timeout (gorilla's per-connection read
    /// deadline); None keeps the server's. An idle timeout longer than the ping
    /// interval gives a silent client a ping first; one within it is a plain read
    /// deadline — the server never pings, and a client silent that long is closed
    /// with 1001 (for an application that pings on its own timer).
    pub fn set_heartbeat(
        &mut self,
        conn: ConnId,
        ping_interval: Option<Duration>,
        idle_timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        if !self.is_open(conn) {
            return Err(SendError::Closed);
        }
        let t = Timeouts {
            ping_interval,
            idle_timeout,
        };
        self.commands.push(Command::Timeouts(conn, t));
        Ok(())
    }

    /// Subscribes `conn` to `topic` (again is a no-op); it then receives what is
    /// published there. Subscriptions end when the connection closes.
    pub fn subscribe(&mut self, conn: ConnId, topic: &str) -> Result<(), SendError> {
        if !self.is_open(conn) {
            return Err(SendError::Closed);
        }
        if topic.len() > self.limits.max_name {
            return Err(SendError::TopicTooLong);
        }
        if self.topics.count(conn.key) >= self.limits.max_subscriptions {
            return Err(SendError::TooManySubscriptions);
        }
        self.commands
            .push(Command::Subscribe(conn, topic.to_string()));
        Ok(())
    }

    /// Ends `conn`'s subscription to `topic`, if it has one.
    pub fn unsubscribe(&mut self, conn: ConnId, topic: &str) {
        self.commands
            .push(Command::Unsubscribe(conn, topic.to_string()));
    }

    /// Sends a text or binary message to every subscriber of `topic` — framed once,
    /// however many there are, and written with the rest of each subscriber's output
    /// at the end of the loop turn. Nobody subscribed costs nothing. With a bridge
    /// (`--redis`), subscribers in other processes get it too.
    pub fn publish(&mut self, topic: &str, msg: Message) -> Result<(), SendError> {
        check_publish(topic, &msg, self.limits.max_name)?;
        self.commands.push(Command::Publish {
            topic: topic.to_string(),
            msg,
        });
        Ok(())
    }

    /// Shuts the server down gracefully at the end of this turn, as
    /// [`Server::shutdown`](crate::Server::shutdown) does.
    pub fn shutdown(&mut self, how: crate::Shutdown) {
        self.commands.push(Command::Shutdown(how));
    }

    /// Output a callback queued for the connection it is about: `buffered` counts it
    /// until the callback returns (the loop writes it after).
    fn count_queued(&mut self, conn: ConnId, bytes: usize) {
        if let Some(c) = self.current.as_mut()
            && c.id == conn
        {
            c.buffered = c.buffered.saturating_add(bytes);
        }
    }

    fn conn_command(&mut self, conn: ConnId, cmd: ConnCommand) -> Result<(), SendError> {
        if !self.is_open(conn) {
            return Err(SendError::Closed);
        }
        // Its later sends must follow this command, not overtake it into the output.
        if let Some(c) = self.current.as_mut()
            && c.id == conn
        {
            c.out = None;
        }
        self.commands.push(Command::Conn(conn, cmd));
        Ok(())
    }
}
