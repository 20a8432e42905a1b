//! push-client: opens --connections N WebSocket connections (one at a time, each
//! upgraded before the next), sends `go` on the first, and counts the stamped binary
//! messages the server pushes until --messages M have arrived (or --timeout).
//! Latency is the arrival time minus the stamp (CLOCK_MONOTONIC, one clock for the
//! machine). With --echo a second thread, once `go` is sent, opens one more
//! connection and does text round trips on it (one every 200 µs) until the push ends.
//! Server CPU (utime+stime of --server-pid) is taken from `go` to the last message.
//!
//! The last stdout line is `RESULT key=value ...`.
//!
//! Usage: push-client --url ws://127.0.0.1:PORT/ws --connections 1000
//!        --messages 1000000 --server-pid PID [--echo] [--timeout 120s]

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use wsloop_bench_kit::*;
use wsloop_push_bench::{mono_ns, stamp_of};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame (FIN set) with `opcode` and a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// One server frame at the start of `buf`: (opcode, payload range, frame length).
fn parse_frame(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, hdr) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    // servers do not mask
    (buf.len() >= hdr + len).then_some((opcode, hdr..hdr + len, hdr + len))
}

/// Connects and upgrades; returns the stream and any bytes that came after the 101.
fn connect(url: &WsUrl) -> std::io::Result<(std::net::TcpStream, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect_timeout(&url.addr, Duration::from_secs(10))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path, url.host_header
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(std::io::Error::other("upgrade refused"));
            }
            return Ok((s, buf.split_off(end + 4)));
        }
        if buf.len() > 16 << 10 {
            return Err(std::io::Error::other("response head too long"));
        }
    }
}

/// Round trips of text messages on a connection of its own until `stop` (or 10,000).
fn echo_loop(url: &WsUrl, stop: &AtomicBool) -> Hist {
    let mut h = Hist::new();
    let Ok((mut s, mut buf)) = connect(url) else {
        eprintln!("echo client: connect failed");
        return h;
    };
    let mut chunk = [0u8; 4096];
    for _ in 0..10_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = mono_ns();
        if s.write_all(&client_frame(1, t0.to_string().as_bytes()))
            .is_err()
        {
            break;
        }
        // wait for the text frame (pushes never go to this connection)
        let back = loop {
            if let Some((op, _, len)) = parse_frame(&buf) {
                buf.drain(..len);
                if op == 1 {
                    break true;
                }
                continue;
            }
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break false,
            }
        };
        if !back {
            break;
        }
        h.record(mono_ns().saturating_sub(t0));
        thread::sleep(Duration::from_micros(200));
    }
    h
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    got: u64,
}

fn main() {
    let args = Args::from_env();
    let url = parse_ws_url(args.get("url").unwrap_or("ws://127.0.0.1:19300/ws"));
    let n: usize = args.num("connections", 1000);
    let messages: u64 = args.num("messages", 1_000_000);
    let pid: u32 = args.num("server-pid", 0);
    let echo = args.has("echo");
    let timeout = args.dur("timeout", Duration::from_secs(120));
    args.finish();
    raise_nofile();
    if n == 0 || n > 19_000 {
        die("--connections must be 1..=19000");
    }

    let mut poll = Poll::new().unwrap_or_else(|e| die(&format!("poll: {e}")));
    let mut conns = Vec::with_capacity(n);
    let setup = Instant::now();
    for i in 0..n {
        let (s, buf) = connect(&url).unwrap_or_else(|e| die(&format!("connection {i}: {e}")));
        s.set_nonblocking(true)
            .unwrap_or_else(|e| die(&format!("nonblocking: {e}")));
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap_or_else(|e| die(&format!("register: {e}")));
        conns.push(Conn {
            stream,
            buf,
            got: 0,
        });
    }
    let setup_s = setup.elapsed().as_secs_f64();
    println!("READY connections={n} setup_s={setup_s:.2}");

    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = proc_cpu_ticks(pid);
    let busy0 = machine_busy_ticks();
    let me0 = self_cpu();
    let t0 = Instant::now();
    let go = client_frame(1, b"go");
    // a 8-byte write into an empty socket buffer: goes out whole
    if conns[0].stream.write(&go).ok() != Some(go.len()) {
        die("could not send go");
    }
    let echo_thread = echo.then(|| {
        let stop = stop.clone();
        let url = parse_ws_url(&format!("ws://{}{}", url.host_header, url.path));
        thread::spawn(move || echo_loop(&url, &stop))
    });

    let mut hist = Hist::new();
    let mut got = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 << 10];
    let mut last = t0;
    while got < messages && t0.elapsed() < timeout {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            die(&format!("poll: {e}"));
        }
        let before = got;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) => c.buf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let now = mono_ns();
            let mut at = 0;
            while let Some((op, p, len)) = parse_frame(&c.buf[at..]) {
                if op == 2
                    && let Some(stamp) = stamp_of(&c.buf[at + p.start..at + p.end])
                {
                    hist.record(now.saturating_sub(stamp));
                    c.got += 1;
                    got += 1;
                }
                at += len;
            }
            c.buf.drain(..at);
        }
        if got > before {
            last = Instant::now();
        }
    }
    let secs = last.duration_since(t0).as_secs_f64().max(1e-9);
    let cpu1 = proc_cpu_ticks(pid);
    let busy1 = machine_busy_ticks();
    let me = self_cpu().saturating_sub(me0);
    stop.store(true, Ordering::Relaxed);
    let echo_hist = echo_thread.and_then(|t| t.join().ok());

    let tck = clk_tck() as f64;
    let server_cpu_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b - a) as f64 / tck,
        _ => f64::NAN,
    };
    let machine_pct = match (busy0, busy1) {
        (Some(a), Some(b)) => 100.0 * (b - a) as f64 / tck / secs,
        _ => f64::NAN,
    };
    let (min_c, max_c) = conns
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), c| (lo.min(c.got), hi.max(c.got)));
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut line = format!(
        "RESULT connections={n} messages={messages} delivered={got} secs={secs:.3} \
         deliveries_per_s={:.0} server_cpu_s={server_cpu_s:.2} server_cpu_pct={:.0} \
         server_cpu_us_per_msg={:.3} client_cpu_pct={:.0} machine_busy_pct={machine_pct:.0} \
         p50_us={:.0} p99_us={:.0} max_us={:.0} per_conn_min={min_c} per_conn_max={max_c} \
         setup_s={setup_s:.2}",
        got as f64 / secs,
        100.0 * server_cpu_s / secs,
        server_cpu_s * 1e6 / got.max(1) as f64,
        100.0 * me.as_secs_f64() / secs,
        us(hist.quantile(0.5)),
        us(hist.quantile(0.99)),
        us(hist.max),
    );
    if let Some(h) = echo_hist {
        line += &format!(
            " echo_n={} echo_p50_us={:.0} echo_p99_us={:.0} echo_max_us={:.0}",
            h.total,
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.max)
        );
    }
    println!("{line}");
    if got < messages {
        std::process::exit(1);
    }
}
