//! Round-trip times from pongs: the server pings each client every second with the
//! send time as the payload, and on the pong tells the client its round-trip time.
//! It also shows the per-connection read deadline (gorilla's `SetReadDeadline` with a
//! pong handler): a client that answers no ping for 5 s is closed.
//!
//! ```text
//! cargo run --example heartbeat -- [ADDR]    # default 127.0.0.1:8080
//! python3 -m websockets ws://127.0.0.1:8080/ws
//! ```
//! Each client receives `rtt 0.21 ms` once a second (browsers and most clients answer
//! pings by themselves).

use std::io;
use std::time::{Duration, Instant};
use wsloop::{Config, ConnId, Ctx, Handler, Message, Request, Server, Timer};

const PING: u64 = 1;

/// Pings on a timer of its own, measures on the pong.
struct Heartbeat {
    /// Ping payloads carry nanoseconds since this instant.
    epoch: Instant,
}

impl Heartbeat {
    fn ping(&self, ctx: &mut Ctx, conn: ConnId) {
        let sent = self.epoch.elapsed().as_nanos() as u64;
        let _ = ctx.send(conn, Message::Ping(sent.to_be_bytes().to_vec().into()));
        let _ = ctx.set_timer(Timer::on(conn, PING), Duration::from_secs(1));
    }
}

impl Handler for Heartbeat {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        // Our own pings replace the server's; silent for 5 s (no pong) means dead.
        let _ = ctx.set_heartbeat(
            conn,
            Some(Duration::from_secs(3600)),
            Some(Duration::from_secs(5)),
        );
        self.ping(ctx, conn);
    }

    fn on_message(&mut self, _ctx: &mut Ctx, _conn: ConnId, _msg: Message) {}

    fn on_pong(&mut self, ctx: &mut Ctx, conn: ConnId, payload: &[u8]) {
        // Anything but our 8-byte stamp is an unsolicited pong: ignore it.
        let Ok(stamp) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let sent = Duration::from_nanos(u64::from_be_bytes(stamp));
        let rtt = self.epoch.elapsed().saturating_sub(sent);
        let text = format!("rtt {:.2} ms", rtt.as_secs_f64() * 1e3);
        let _ = ctx.send(conn, Message::text(text));
    }

    fn on_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        if let (PING, Some(conn)) = (timer.key, timer.conn) {
            self.ping(ctx, conn);
        }
    }
}

fn main() -> io::Result<()> {
    // Server::bind parses it, and says what is wrong with a bad one.
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let handler = Heartbeat {
        epoch: Instant::now(),
    };
    let server = Server::bind(addr, Config::default(), handler)?;
    println!("listening on ws://{}/ws", server.local_addr());
    server.run()
}
