//! The server of the fan-out benchmark (`benches/fanout/run.sh`): topics and nothing
//! else.
//!
//! ```text
//! cargo run --release --example fanout -- [ADDR] [--redis URL]   # default 127.0.0.1:8080
//! ```
//! * `ws://ADDR/ws?topic=a,b` subscribes the connection to topics `a` and `b`
//!   (`?topic=` alone: no topic, for measuring an idle connection).
//! * `ws://ADDR/ws?publish=a` makes a publisher: each text or binary message it sends
//!   is published to topic `a` (framed once, shared by every subscriber's queue).
//!
//! With `--redis URL` (feature `redis`) topics span every process on that Redis: the
//! Redis path of the benchmark publishes on one process and subscribes on another.
//!
//! It prints `listening on ws://ADDR/ws` on stderr and runs until killed.

use std::collections::HashMap;
use std::io;
use wsloop::{Config, ConnId, Ctx, Handler, Message, Request, Server};

#[derive(Default)]
struct Fanout {
    /// Publishers and the topic each one feeds.
    publishers: HashMap<ConnId, String>,
}

/// The value of `key` in the request's query string, as is (names here are plain).
fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let (_, q) = path.split_once('?')?;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Handler for Fanout {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        if let Some(topic) = query(&request.path, "publish") {
            self.publishers.insert(conn, topic.to_string());
        } else if let Some(topics) = query(&request.path, "topic") {
            for t in topics.split(',').filter(|t| !t.is_empty()) {
                if let Err(e) = ctx.subscribe(conn, t) {
                    eprintln!("subscribe {conn} to {t}: {e}");
                }
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        if let Some(topic) = self.publishers.get(&conn) {
            // A topic without subscribers is no error for a benchmark.
            let _ = ctx.publish(topic, msg);
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx, conn: ConnId, _close: &wsloop::Close) {
        self.publishers.remove(&conn);
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:8080".to_string();
    let mut cfg = Config::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => cfg.redis = args.next(),
            _ => addr = arg,
        }
    }
    let server = Server::bind(addr, cfg, Fanout::default())?;
    eprintln!(
        "listening on ws://{}{}",
        server.local_addr(),
        server.config().path
    );
    server.run()
}
