//! rawecho: the physical limit for the echo benchmarks. One thread, one mio
//! poll loop, no WebSocket work at all: it reads the HTTP upgrade request once
//! (up to "\r\n\r\n"), answers a valid 101, then echoes every byte verbatim
//! (so the client gets its own *masked* frames back, which loadgen accepts).
//!
//! Usage: rawecho --listen 127.0.0.1:PORT

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{ErrorKind, Read, Write};
use wsloop_bench_kit::{Args, find, header, raise_nofile, ws_accept};

const LISTENER: Token = Token(usize::MAX);
const MAX_REQ: usize = 8192;

struct Conn {
    sock: TcpStream,
    handshaken: bool,
    /// request bytes until the handshake is done
    req: Vec<u8>,
    /// bytes read but not yet written back (only when the peer is slow)
    pending: Vec<u8>,
    pending_off: usize,
}

fn main() {
    let args = Args::from_env();
    let listen = args.get("listen").unwrap_or("127.0.0.1:9001").to_string();
    args.finish();
    raise_nofile();
    let addr = listen.parse().expect("bad --listen");
    let mut listener = TcpListener::bind(addr).expect("bind");
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap();
    eprintln!(
        "rawecho listening on ws://{}/ws",
        listener.local_addr().unwrap()
    );
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 256 * 1024];

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let e = conns.vacant_entry();
                            let tok = Token(e.key());
                            if poll
                                .registry()
                                .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
                                .is_ok()
                            {
                                e.insert(Conn {
                                    sock,
                                    handshaken: false,
                                    req: Vec::new(),
                                    pending: Vec::new(),
                                    pending_off: 0,
                                });
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if !drive(c, &mut buf) {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

/// Flush pending output; returns Ok(true) when everything was written.
fn flush(c: &mut Conn) -> std::io::Result<bool> {
    while c.pending_off < c.pending.len() {
        match c.sock.write(&c.pending[c.pending_off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.pending_off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.pending.clear();
    c.pending_off = 0;
    Ok(true)
}

/// Handle readiness; returns false when the connection is finished.
fn drive(c: &mut Conn, buf: &mut [u8]) -> bool {
    match flush(c) {
        Ok(true) => {}
        Ok(false) => return true, // still blocked on output: do not read more
        Err(_) => return false,
    }
    loop {
        let n = match c.sock.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut data = &buf[..n];
        let resp;
        if !c.handshaken {
            c.req.extend_from_slice(data);
            let Some(end) = find(&c.req, b"\r\n\r\n") else {
                if c.req.len() > MAX_REQ {
                    return false;
                }
                continue;
            };
            let Some(k) = header(&c.req[..end], "sec-websocket-key") else {
                return false;
            };
            let accept = ws_accept(&k);
            resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let rest = c.req.split_off(end + 4);
            c.handshaken = true;
            c.req = Vec::new();
            c.pending.extend_from_slice(resp.as_bytes());
            c.pending.extend_from_slice(&rest);
            data = &[];
        }
        // echo: write straight from the read buffer, keep only what the
        // socket did not take
        let mut off = 0;
        if c.pending.is_empty() {
            while off < data.len() {
                match c.sock.write(&data[off..]) {
                    Ok(0) => return false,
                    Ok(w) => off += w,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
        c.pending.extend_from_slice(&data[off..]);
        match flush(c) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(_) => return false,
        }
        if n < buf.len() {
            // short read: the socket is drained (epoll is edge-triggered and
            // signals again when more data arrives)
            return true;
        }
    }
}
