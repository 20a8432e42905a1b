//! wsloop inside an application that owns its mio `Poll`: one loop serves a plain TCP
//! echo service of the application's own and a WebSocket echo server.
//!
//! ```text
//! cargo run --example embed -- [WS_ADDR] [TCP_ADDR]    # defaults 127.0.0.1:8080, 127.0.0.1:8081
//! ```
//! It prints both listening addresses and runs until SIGINT/SIGTERM, then closes the
//! WebSocket clients gracefully.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;
use wsloop::{Config, Echo, Server};

const TCP_LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The application's own connections use tokens from 2 up to WS_BASE - 1.
const WS_BASE: Token = Token(1_000_000);

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let ws_addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let tcp_addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let parse = |a: &str| {
        a.parse()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{a}: {e}")))
    };

    let mut poll = Poll::new()?;
    let mut ws = Server::bind(
        parse(&ws_addr)?,
        Config {
            max_connections: 10_000,
            ..Config::default()
        },
        Echo,
    )?;
    ws.register(poll.registry(), WS_BASE)?;

    let mut tcp = TcpListener::bind(parse(&tcp_addr)?)?;
    poll.registry()
        .register(&mut tcp, TCP_LISTENER, Interest::READABLE)?;
    let mut signals = signal_hook_mio::v1_0::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    println!("tcp echo listening on {}", tcp.local_addr()?);
    println!("listening on ws://{}/ws", ws.local_addr());

    let mut plain: HashMap<Token, TcpStream> = HashMap::new();
    let mut next_token = 2;
    let mut events = Events::with_capacity(256);
    loop {
        poll.poll(&mut events, ws.next_timeout(Instant::now()))
            .or_else(|e| {
                if e.kind() == ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let now = Instant::now();
        for event in events.iter() {
            match event.token() {
                t if ws.owns(t) => ws.handle_event(poll.registry(), event, now),
                SIGNALS => {
                    if signals.pending().next().is_some() {
                        ws.shutdown(poll.registry(), now);
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
                            plain.insert(token, stream);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("tcp accept: {e}");
                            break;
                        }
                    }
                },
                token => {
                    if let Some(stream) = plain.get_mut(&token)
                        && !echo_plain(stream)
                    {
                        plain.remove(&token);
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

/// Echoes what is readable; false once the peer is gone. (Blocking-free but simple:
/// a real service would buffer output the socket does not take at once.)
fn echo_plain(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
