//! A producer thread pushes to every client: a JSON price every 100 ms, from a thread
//! that is not the loop's, through a [`wsloop::Sender`] (the recipe's "one writer fed
//! by a channel"). Clients subscribe to the `prices` topic when they open, so each tick
//! is framed once for all of them.
//!
//! ```text
//! cargo run --example ticker -- [ADDR]       # default 127.0.0.1:8080
//! python3 -m websockets ws://127.0.0.1:8080/ws
//! ```
//! It prints `listening on ws://ADDR/ws` and runs until SIGINT/SIGTERM. Each client
//! receives `{"symbol":"WSL","price":100.25,"seq":1}` ten times a second.

use std::io;
use std::time::Duration;
use wsloop::{Config, ConnId, Ctx, Handler, Message, Request, SendError, Server};

/// Subscribes every client to the ticks; ignores what clients send.
struct Prices;

impl Handler for Prices {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        if let Err(e) = ctx.subscribe(conn, "prices") {
            eprintln!("{conn:?} not subscribed: {e}");
        }
    }

    fn on_message(&mut self, _ctx: &mut Ctx, _conn: ConnId, _msg: Message) {}
}

fn main() -> io::Result<()> {
    // Server::bind parses it, and says what is wrong with a bad one.
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let server = Server::bind(addr, Config::default(), Prices)?;
    println!("listening on ws://{}/ws", server.local_addr());
    let sender = server.sender();
    std::thread::spawn(move || {
        let mut price = 100.0_f64;
        for seq in 1u64.. {
            std::thread::sleep(Duration::from_millis(100));
            // A bounded random walk; a real feed would read a socket or a queue here.
            price = (price + ((seq * 7919 % 13) as f64 - 6.0) * 0.05).max(1.0);
            let tick = format!(r#"{{"symbol":"WSL","price":{price:.2},"seq":{seq}}}"#);
            match sender.publish("prices", Message::text(tick)) {
                Ok(()) => {}
                // The loop is behind: skip this tick rather than queue stale prices.
                Err(SendError::Full) => {}
                // The server stopped: so does the feed.
                Err(_) => return,
            }
        }
    });
    server.run()
}
