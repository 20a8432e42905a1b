//! wsloop inside an application that owns its mio `Poll`: one loop serves a plain TCP
//! service of the application's own and a WebSocket server, and bridges them — every
//! line received on the plain TCP side goes to every WebSocket client. WebSocket
//! messages are echoed.
//!
//! ```text
//! cargo run --example embed -- [WS_ADDR] [TCP_ADDR]    # defaults 127.0.0.1:8080, 127.0.0.1:8081
//! ```
//! It prints both listening addresses and runs until SIGINT/SIGTERM, then closes the
//! WebSocket clients gracefully. Try `websocat ws://127.0.0.1:8080/ws` in one terminal
//! and `nc 127.0.0.1 8081` in another: what you type into nc shows in websocat.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::{BTreeSet, HashMap};
use std::io::{self, ErrorKind, Read};
use std::time::Instant;
use wsloop::{Close, Config, ConnId, Ctx, Handler, Message, Request, Server, Shutdown};

const TCP_LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The application's own connections use tokens from 2 up to WS_BASE - 1.
const WS_BASE: Token = Token(1_000_000);
/// A line longer than this is cut (a real service would choose its own rule).
const MAX_LINE: usize = 64 << 10;

/// Echoes, and keeps the set of open WebSocket clients for the bridge.
#[derive(Default)]
struct Clients {
    open: BTreeSet<ConnId>,
}

impl Handler for Clients {
    fn on_open(&mut self, _ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        self.open.insert(conn);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        let _ = ctx.send(conn, msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx, conn: ConnId, _close: &Close) {
        self.open.remove(&conn);
    }
}

/// A plain TCP client and the start of a line not yet complete.
struct Plain {
    stream: TcpStream,
    line: Vec<u8>,
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let ws_addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let tcp_addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());

    let mut poll = Poll::new()?;
    let cfg = Config {
        max_connections: 10_000,
        ..Config::default()
    };
    let mut ws = Server::bind(ws_addr.as_str(), cfg, Clients::default())?;
    ws.register(poll.registry(), WS_BASE)?;

    let tcp_addr = tcp_addr
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{tcp_addr}: {e}")))?;
    let mut tcp = TcpListener::bind(tcp_addr)?;
    poll.registry()
        .register(&mut tcp, TCP_LISTENER, Interest::READABLE)?;
    let mut signals = signal_hook_mio::v1_0::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    println!("tcp lines listening on {}", tcp.local_addr()?);
    println!("listening on ws://{}/ws", ws.local_addr());

    let mut plain: HashMap<Token, Plain> = HashMap::new();
    let mut next_token = 2;
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, ws.next_timeout(Instant::now()))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(e);
        }
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                t if ws.owns(t) => ws.handle_event(poll.registry(), event, now),
                SIGNALS => {
                    if signals.pending().next().is_some() {
                        ws.shutdown(poll.registry(), now, Shutdown::default());
                    }
                }
                TCP_LISTENER => loop {
                    match tcp.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next_token);
                            next_token = if next_token + 1 >= WS_BASE.0 {
                                2
                            } else {
                                next_token + 1
                            };
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            let line = Vec::new();
                            plain.insert(token, Plain { stream, line });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("tcp accept: {e}");
                            break;
                        }
                    }
                },
                token => {
                    let Some(client) = plain.get_mut(&token) else {
                        continue;
                    };
                    let (lines, open) = read_lines(client);
                    if !open {
                        plain.remove(&token);
                    }
                    // The bridge: each line to every WebSocket client. The message is
                    // built once; each send queues a reference-counted copy.
                    for line in lines {
                        let msg = Message::text(line);
                        let clients: Vec<ConnId> = ws.handler().open.iter().copied().collect();
                        let mut ctx = ws.ctx();
                        for id in clients {
                            // A client that closed meanwhile refuses: nothing to do.
                            let _ = ctx.send(id, msg.clone());
                        }
                    }
                }
            }
        }
        ws.handle_timers(poll.registry(), now);
        if ws.is_finished() {
            return Ok(());
        }
    }
}

/// Reads what is readable; returns the complete lines (without their `\n`) and
/// whether the client is still connected.
fn read_lines(client: &mut Plain) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    let open = loop {
        match client.stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' || client.line.len() >= MAX_LINE {
                        let line = std::mem::take(&mut client.line);
                        let text = String::from_utf8_lossy(&line);
                        lines.push(text.trim_end_matches('\r').to_string());
                    }
                    if b != b'\n' {
                        client.line.push(b);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    (lines, open)
}
