//! A chat room on the [`Handler`] API: a model for building a protocol of your own.
//!
//! ```text
//! cargo run --example chat -- [ADDR]    # default 127.0.0.1:8080
//! ```
//! It prints `listening on ws://ADDR/ws` and runs until SIGINT/SIGTERM, then closes the
//! members gracefully. The protocol, all in text messages:
//!
//! * A member's name comes from the query string (`ws://ADDR/ws?name=alice`, percent
//!   decoding applied) or else an `X-Chat-Name` request header; without either it is
//!   `guest-N`. Names are cut to 32 characters, control characters dropped.
//! * On joining, the others get `* alice joined`.
//! * A text message `hi` from alice reaches every other member as `alice: hi`; the
//!   sender gets nothing back.
//! * A binary message is refused: the sender is closed with 1003 ("text only").
//! * On leaving (close, error, timeout or disconnect), the others get `* alice left`.
//!
//! # Slow members
//!
//! The handler does not buffer per member and never waits on one: each broadcast is one
//! [`Ctx::send`] per member, and a member that reads slowly is the server's business.
//! Its unsent output stays in that connection's own buffer; while that holds more than
//! [`Config::max_pending_output`](wsloop::Config::max_pending_output), the server stops
//! reading from it, and output that stays unsent for
//! [`Config::write_timeout`](wsloop::Config::write_timeout) closes it, which ends in
//! `on_close` here like any other leave. The other members are never held up.
//!
//! # Ids
//!
//! [`ConnId`]s are reused after `on_close`, so the room forgets a member there and keys
//! nothing by id beyond that point.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use wsloop::{Close, Config, ConnId, Ctx, Handler, Message, Request, Server};

/// Longest name kept, in characters.
const MAX_NAME: usize = 32;

/// The room: every open connection is a member.
#[derive(Default)]
struct Room {
    members: BTreeMap<ConnId, String>,
    /// Numbers the `guest-N` names; never reused, unlike connection ids.
    guests: u64,
}

impl Room {
    /// Sends `text` to every member but `except`; the message is built once and cloned
    /// (a reference-counted copy) for each member.
    fn broadcast(&self, ctx: &mut Ctx, except: ConnId, text: String) {
        let msg = Message::text(text);
        for &id in self.members.keys().filter(|&&id| id != except) {
            let _ = ctx.send(id, msg.clone());
        }
    }

    fn name_for(&mut self, request: &Request) -> String {
        let asked = query_param(&request.path, "name")
            .or_else(|| request.header("X-Chat-Name").map(str::to_string))
            .map(|n| clean_name(&n))
            .filter(|n| !n.is_empty());
        asked.unwrap_or_else(|| {
            self.guests += 1;
            format!("guest-{}", self.guests)
        })
    }
}

impl Handler for Room {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        let name = self.name_for(request);
        self.broadcast(ctx, conn, format!("* {name} joined"));
        self.members.insert(conn, name);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        let Some(name) = self.members.get(&conn) else {
            return;
        };
        match msg {
            Message::Text(text) => {
                let line = format!("{name}: {}", text.as_str());
                self.broadcast(ctx, conn, line);
            }
            // The server answers pings itself; only binary reaches here besides text.
            _ => {
                let _ = ctx.close(conn, 1003, "text only");
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx, conn: ConnId, _close: &Close) {
        if let Some(name) = self.members.remove(&conn) {
            self.broadcast(ctx, conn, format!("* {name} left"));
        }
    }
}

/// The first value of `key` in the query string of `target`, percent-decoded.
fn query_param(target: &str, key: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as space); malformed escapes are kept as they are,
/// and invalid UTF-8 is replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Drops control characters, trims, and keeps at most [`MAX_NAME`] characters.
fn clean_name(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    kept.trim().to_string()
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let server = Server::bind(addr, Config::default(), Room::default())?;
    println!(
        "listening on ws://{}{}",
        server.local_addr(),
        server.config().path
    );
    server.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("/ws?name=alice", "name").as_deref(),
            Some("alice")
        );
        assert_eq!(
            query_param("/ws?x=1&name=J%C3%BCrgen+K", "name").as_deref(),
            Some("Jürgen K")
        );
        assert_eq!(query_param("/ws?name", "name").as_deref(), Some(""));
        assert_eq!(query_param("/ws?nam=x", "name"), None);
        assert_eq!(query_param("/ws", "name"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("  bob\n\u{7}  "), "bob");
        assert_eq!(clean_name(&"x".repeat(100)).len(), MAX_NAME);
    }
}
