//! Chat rooms on topics: a model for building a protocol of your own.
//!
//! ```text
//! cargo run --example chat -- [ADDR] [--redis redis://HOST:PORT] [--idle-notice SECS]
//! ```
//! It prints `listening on ws://ADDR/ws` and runs until SIGINT/SIGTERM, then closes the
//! members gracefully. Two processes share their rooms through Redis — in two
//! terminals, then talk to either (e.g. `websocat 'ws://127.0.0.1:8081/ws?name=bob'`):
//!
//! ```text
//! cargo run --features redis --example chat -- 127.0.0.1:8081 --redis redis://127.0.0.1:6379
//! cargo run --features redis --example chat -- 127.0.0.1:8082 --redis redis://127.0.0.1:6379
//! ```
//!
//! The protocol, all in text messages:
//!
//! * `ws://ADDR/ws?name=alice&room=lobby` joins room `lobby` (the default) as alice
//!   (percent decoding applied). Without a `name`, an `X-Chat-Name` request header, or
//!   else `guest-N`. Names and rooms are cut to 32 characters, control characters dropped.
//! * A text message `hi` from alice reaches every member of her room, alice included,
//!   as `alice: hi`, in the order the server took them.
//! * Joins and leaves are announced in batches, at most one line per kind every
//!   100 ms per room: `* alice, bob joined`, `* carol left` (past five names,
//!   `* a, b, c, d, e and 7 more joined`). A newcomer sees its own name in one.
//! * A binary message is refused: the sender is closed with 1003 ("text only").
//! * A member who has said nothing for `--idle-notice` (300 s) is told so, privately:
//!   `* you have said nothing for 300 s` — a timer per member, moved on every line.
//!
//! # Why topics
//!
//! A room is a topic: a line is published once, framed once, and shared by every
//! member's output queue; with `--redis` it reaches the members in other processes
//! too. Announcing each join to everyone would cost a room of N members N² messages
//! as it fills; batches keep it to one line per 100 ms. A member that reads slowly is
//! the server's business (`max_pending_output`, `write_timeout`); the others are never
//! held up.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, ErrorKind};
use std::time::Duration;
use wsloop::{Close, Config, ConnId, Ctx, Handler, Message, Request, Server, Timer};

/// Longest name or room kept, in characters.
const MAX_NAME: usize = 32;
/// Joins and leaves are gathered this long before they are announced.
const NOTICE_EVERY: Duration = Duration::from_millis(100);
/// Names listed in one notice; the rest are counted.
const NOTICE_NAMES: usize = 5;
/// The timer that sends the pending notices; a member's idle timer has its own key.
const NOTICES: u64 = 0;
const IDLE: u64 = 1;

/// A member: who, and in which room.
struct Member {
    name: String,
    room: String,
}

/// Joins and leaves not announced yet, per room.
#[derive(Default)]
struct Pending {
    joined: Vec<String>,
    left: Vec<String>,
}

#[derive(Default)]
struct Chat {
    members: HashMap<ConnId, Member>,
    pending: BTreeMap<String, Pending>,
    /// Numbers the `guest-N` names; never reused, unlike connection ids.
    guests: u64,
    /// How long a member may say nothing before being told.
    idle_notice: Duration,
}

impl Chat {
    /// Queues a join or leave notice; the first one arms the timer that sends them.
    fn notice(&mut self, ctx: &mut Ctx, member: &Member, joined: bool) {
        if self.pending.is_empty() {
            let _ = ctx.set_timer(Timer::new(NOTICES), NOTICE_EVERY);
        }
        let p = self.pending.entry(member.room.clone()).or_default();
        let names = if joined { &mut p.joined } else { &mut p.left };
        names.push(member.name.clone());
    }

    fn name_for(&mut self, request: &Request) -> String {
        let asked = query_param(&request.path, "name")
            .or_else(|| request.header("X-Chat-Name").map(str::to_string))
            .map(|n| clean(&n))
            .filter(|n| !n.is_empty());
        asked.unwrap_or_else(|| {
            self.guests += 1;
            format!("guest-{}", self.guests)
        })
    }
}

impl Handler for Chat {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        let room = query_param(&request.path, "room").map_or_else(String::new, |r| clean(&r));
        let member = Member {
            name: self.name_for(request),
            room: if room.is_empty() {
                "lobby".into()
            } else {
                room
            },
        };
        if ctx.subscribe(conn, &member.room).is_err() {
            let _ = ctx.close(conn, 1011, "cannot join");
            return;
        }
        self.notice(ctx, &member, true);
        self.members.insert(conn, member);
        let _ = ctx.set_timer(Timer::on(conn, IDLE), self.idle_notice);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        let Some(m) = self.members.get(&conn) else {
            return;
        };
        match msg {
            Message::Text(text) => {
                let line = format!("{}: {}", m.name, text.as_str());
                let _ = ctx.publish(&m.room, Message::text(line));
                // Setting an armed timer moves it: the idle clock starts again.
                let _ = ctx.set_timer(Timer::on(conn, IDLE), self.idle_notice);
            }
            // The server answers pings itself; only binary reaches here besides text.
            _ => {
                let _ = ctx.close(conn, 1003, "text only");
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        if let (IDLE, Some(conn)) = (timer.key, timer.conn) {
            let secs = self.idle_notice.as_secs();
            let _ = ctx.send(
                conn,
                Message::text(format!("* you have said nothing for {secs} s")),
            );
            return;
        }
        for (room, p) in std::mem::take(&mut self.pending) {
            for (names, verb) in [(p.joined, "joined"), (p.left, "left")] {
                if !names.is_empty() {
                    let _ = ctx.publish(&room, Message::text(announce(&names, verb)));
                }
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx, conn: ConnId, _close: &Close) {
        // The server ends its subscription; the id may be reused after this.
        if let Some(member) = self.members.remove(&conn) {
            self.notice(ctx, &member, false);
        }
    }
}

/// `* a, b and 3 more joined`.
fn announce(names: &[String], verb: &str) -> String {
    let shown = names.len().min(NOTICE_NAMES);
    let mut line = format!("* {}", names[..shown].join(", "));
    if names.len() > shown {
        line += &format!(" and {} more", names.len() - shown);
    }
    format!("{line} {verb}")
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
fn clean(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    kept.trim().to_string()
}

fn main() -> io::Result<()> {
    let bad = |what: String| io::Error::new(ErrorKind::InvalidInput, what);
    let mut cfg = Config::default();
    let mut addr = "127.0.0.1:8080".to_string();
    let mut chat = Chat {
        idle_notice: Duration::from_secs(300),
        ..Chat::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => cfg.redis = Some(args.next().ok_or_else(|| bad("--redis URL".into()))?),
            "--idle-notice" => {
                let secs = args.next().and_then(|s| s.parse().ok()).filter(|&s| s > 0);
                let secs = secs.ok_or_else(|| bad("--idle-notice SECONDS (at least 1)".into()))?;
                chat.idle_notice = Duration::from_secs(secs);
            }
            _ => addr = arg,
        }
    }
    let server = Server::bind(addr, cfg, chat)?;
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
        assert_eq!(clean("  bob\n\u{7}  "), "bob");
        assert_eq!(clean(&"x".repeat(100)).len(), MAX_NAME);
    }

    #[test]
    fn notices() {
        let names: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
        assert_eq!(announce(&names[..2], "joined"), "* m1, m2 joined");
        assert_eq!(
            announce(&names, "left"),
            "* m1, m2, m3, m4, m5 and 2 more left"
        );
    }
}
