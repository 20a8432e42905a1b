//! Deadlines of the real `wsloop` binary: keepalive pings, the idle (read) timeout,
//! the handshake timeout, and the write timeout for a client that never reads, with
//! the server's memory staying bounded and other clients unaffected meanwhile.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Reads until EOF or reset; `Some(elapsed since start)` if that happened before `within`.
fn wait_for_close(s: &mut TcpStream, start: Instant, within: Duration) -> Option<Duration> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(start.elapsed()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn server_pings_an_idle_client() {
    let server = Server::start(&["--ping-interval", "300ms", "--idle-timeout", "5s"]);
    let mut s = upgraded(server.addr, &server.path);
    let opened = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("a Ping before the idle timeout");
    let after = opened.elapsed();
    assert_eq!(b0, 0x89, "first frame to an idle client must be a Ping");
    assert!(payload.len() <= 125);
    // Not before the interval (the timer wheel ticks at 10 ms), and not much after.
    assert!(
        after >= Duration::from_millis(250),
        "pinged too early: {after:?}"
    );
    assert!(after < Duration::from_secs(3), "pinged too late: {after:?}");
}

#[test]
fn activity_postpones_the_ping() {
    // A client that keeps sending every 100 ms is never pinged with a 400 ms interval.
    let server = Server::start(&["--ping-interval", "400ms", "--idle-timeout", "5s"]);
    let mut s = upgraded(server.addr, &server.path);
    for i in 0..12u8 {
        s.write_all(&frame(0x82, &[i])).unwrap();
        let (b0, payload) = read_frame(&mut s).unwrap();
        assert_eq!(
            (b0, payload),
            (0x82, vec![i]),
            "got a frame other than the echo"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn silent_client_gets_close_1001_at_idle_timeout() {
    let server = Server::start(&["--ping-interval", "300ms", "--idle-timeout", "1s"]);
    let mut s = upgraded(server.addr, &server.path);
    let opened = Instant::now();
    // We never send anything: not even a Pong for the server's Ping.
    let mut saw_ping = false;
    let code = loop {
        let (b0, payload) = match read_frame(&mut s) {
            Ok(f) => f,
            Err(e) => panic!(
                "connection ended after {:?} without a Close frame (saw ping: {saw_ping}): {e}",
                opened.elapsed()
            ),
        };
        match b0 & 0x0f {
            0x9 => saw_ping = true,
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            op => panic!("unexpected opcode {op:#x}"),
        }
    };
    let at_close = opened.elapsed();
    assert!(saw_ping, "the server should ping before giving up");
    assert_eq!(code, 1001);
    assert!(
        at_close >= Duration::from_millis(900),
        "closed too early: {at_close:?}"
    );
    // The server drops the TCP connection too (it does not wait for our Close).
    let closed = wait_for_close(&mut s, opened, Duration::from_secs(5)).expect("TCP not closed");
    assert!(
        closed < Duration::from_millis(1000 + 1500),
        "connection closed only after {closed:?} (idle timeout 1s)"
    );
}

#[test]
fn pongs_keep_a_quiet_client_alive() {
    // A client that sends nothing but answers every Ping outlives several idle timeouts.
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "600ms"]);
    let mut s = upgraded(server.addr, &server.path);
    let opened = Instant::now();
    let mut pings = 0;
    while opened.elapsed() < Duration::from_millis(2000) {
        let (b0, payload) = read_frame(&mut s).expect("frame");
        assert_eq!(b0, 0x89, "expected only Pings, got {b0:#x} {payload:?}");
        pings += 1;
        s.write_all(&frame(0x8a, &payload)).unwrap();
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 2 s with a 200 ms interval"
    );
    s.write_all(&frame(0x81, b"alive")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"alive".to_vec()));
}

#[test]
fn next_ping_comes_ping_interval_after_the_pong() {
    // "Ping a client that sent nothing for this long": after our Pong the client has
    // been silent only since then, so the next Ping is due one interval later — not
    // at the idle deadline computed before the Pong arrived.
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "2s"]);
    let mut s = upgraded(server.addr, &server.path);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("first Ping");
    assert_eq!(b0, 0x89);
    for i in 0..5 {
        s.write_all(&frame(0x8a, &payload)).unwrap();
        let answered = Instant::now();
        let (b0, _) = read_frame(&mut s).expect("next Ping");
        let silence = answered.elapsed();
        assert_eq!(b0, 0x89);
        assert!(
            silence >= Duration::from_millis(150),
            "ping {} came {silence:?} after our Pong (interval 200ms)",
            i + 2
        );
        assert!(
            silence < Duration::from_millis(200 + 600),
            "ping {} came {silence:?} after our Pong, with --ping-interval 200ms",
            i + 2
        );
    }
}

#[test]
fn client_answering_within_the_idle_window_is_kept() {
    // With --ping-interval 200ms --idle-timeout 1500ms a client has 1.3 s to answer a
    // Ping. It answers the first Ping at once and the second after 600 ms: it must not
    // be dropped.
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "1500ms"]);
    let mut s = upgraded(server.addr, &server.path);
    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let opened = Instant::now();
    for (i, delay) in [0u64, 600, 0, 600].into_iter().enumerate() {
        let (b0, payload) = match read_frame(&mut s) {
            Ok(f) => f,
            Err(e) => panic!(
                "dropped {:?} after opening, waiting for ping {} (previous answered after {} ms): {e}",
                opened.elapsed(),
                i + 1,
                if i == 0 {
                    0
                } else {
                    [0u64, 600, 0, 600][i - 1]
                }
            ),
        };
        if b0 == 0x88 {
            panic!(
                "closed with {payload:?} {:?} after opening, before ping {}",
                opened.elapsed(),
                i + 1
            );
        }
        assert_eq!(b0, 0x89, "only pings expected");
        std::thread::sleep(Duration::from_millis(delay));
        s.write_all(&frame(0x8a, &payload)).unwrap();
    }
    s.write_all(&frame(0x81, b"kept")).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("echo after the pings");
    assert_eq!((b0, payload), (0x81, b"kept".to_vec()));
}

#[test]
fn tungstenite_client_that_reads_is_not_dropped() {
    // tungstenite answers pings while reading; a client blocked in read() stays open.
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "500ms"]);
    let mut ws = connect(&server.url());
    // For 1.5 s nothing but pings (which tungstenite answers) may arrive.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(left)).unwrap();
        }
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break;
            }
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 1, "no ping within 1.5 s with a 200 ms interval");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    assert_echo(&mut ws, Message::text("still here"));
}

/// Dropped at a 500 ms handshake timeout: not before it, and within the slack of a loaded machine.
fn assert_dropped_at_500ms(closed: Duration) {
    assert!(
        closed >= Duration::from_millis(450),
        "dropped too early: {closed:?}"
    );
    assert!(
        closed < Duration::from_millis(500 + 1500),
        "dropped late: {closed:?}"
    );
}

#[test]
fn silent_socket_is_dropped_at_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let mut s = raw(server.addr);
    let start = Instant::now();
    let closed = wait_for_close(&mut s, start, Duration::from_secs(5))
        .expect("a socket that never sent a request was not dropped");
    assert_dropped_at_500ms(closed);
    // No HTTP reply is owed to a socket that said nothing; either way, the server is fine.
    let mut ws = connect(&server.url());
    assert_echo(&mut ws, Message::text("ok"));
}

#[test]
fn half_request_is_dropped_at_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let mut s = raw(server.addr);
    let start = Instant::now();
    let req = upgrade_request(server.addr, "/ws", "");
    s.write_all(&req.as_bytes()[..req.len() / 2]).unwrap();
    let closed = wait_for_close(&mut s, start, Duration::from_secs(5))
        .expect("a socket with half a request was not dropped");
    assert_dropped_at_500ms(closed);
}

#[test]
fn handshake_timeout_does_not_apply_after_upgrade() {
    // An upgraded connection lives past the handshake timeout.
    let server = Server::start(&["--handshake-timeout", "300ms"]);
    let mut s = upgraded(server.addr, &server.path);
    s.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("upgraded connection got {other:?} within 900 ms"),
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&frame(0x81, b"late")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"late".to_vec()));
}

/// A TCP connection whose receive buffer is made small before connecting (so the
/// window stays small and autotuning is off).
fn small_rcvbuf_connect(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Whether the peer closed or reset the connection, checked without reading.
fn peer_gone(s: &TcpStream) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[test]
fn client_that_never_reads_is_dropped_at_write_timeout_with_bounded_memory() {
    let server = Server::start(&[
        "--write-timeout",
        "1s",
        "--max-pending-output",
        "1MiB",
        "--ping-interval",
        "10s",
        "--idle-timeout",
        "20s",
    ]);
    // Another client echoing the whole time, each echo checked and timed.
    let mut other = connect(&server.url());
    assert_echo(&mut other, Message::text("warm-up"));
    let rss_before = server.rss();
    assert!(rss_before > 0, "cannot read the server's RSS");

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echoer = std::thread::spawn(move || {
        let mut n = 0u32;
        let mut slowest = Duration::ZERO;
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            let msg = Message::binary(format!("other client message {n}").repeat(50));
            assert_echo(&mut other, msg);
            slowest = slowest.max(t.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        (n, slowest)
    });

    // The slow client: upgrade by hand, then write 64 KiB messages without reading.
    let mut s = small_rcvbuf_connect(server.addr, 4096);
    s.set_nodelay(true).unwrap();
    s.write_all(upgrade_request(server.addr, &server.path, "").as_bytes())
        .unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let msg = frame(0x82, &vec![0xab; 64 << 10]);
    let started = Instant::now();
    let mut sent = 0;
    let mut blocked = None;
    let mut peak_rss = rss_before;
    // At most 1000 × 64 KiB = 64 MiB; with backpressure the write blocks long before.
    for _ in 0..1000 {
        match s.write_all(&msg) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = Some(Instant::now());
                break;
            }
            Err(e) => panic!("write failed before the server stopped reading: {e}"),
        }
        peak_rss = peak_rss.max(server.rss());
    }
    let blocked = blocked.unwrap_or_else(|| {
        panic!("the server read all {sent} messages of 64 KiB from a client that never reads (no backpressure)")
    });
    // Now wait (without reading) for the server to drop us.
    let dropped = wait_until(Duration::from_secs(6), || {
        peak_rss = peak_rss.max(server.rss());
        peer_gone(&s)
    });
    let dropped_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let (echoes, slowest) = echoer.join().expect("the other client failed meanwhile");
    let rss_after = server.rss();
    peak_rss = peak_rss.max(rss_after);

    eprintln!(
        "slow client: sent {sent} messages before blocking after {:?}, dropped {:?} after blocking; \
         rss before {} KiB, peak {} KiB, after {} KiB; other client: {echoes} echoes, slowest {:?}",
        blocked - started,
        dropped_at - blocked,
        rss_before >> 10,
        peak_rss >> 10,
        rss_after >> 10,
        slowest
    );
    assert!(
        dropped,
        "client that never reads was not dropped within 6 s of blocking (write timeout 1s)"
    );
    assert!(
        dropped_at - started >= Duration::from_millis(900),
        "dropped before the write timeout could have passed: {:?}",
        dropped_at - started
    );
    assert!(
        dropped_at - blocked <= Duration::from_millis(1000 + 3000),
        "dropped {:?} after the writes blocked (write timeout 1s)",
        dropped_at - blocked
    );
    let growth = peak_rss.saturating_sub(rss_before);
    assert!(
        growth < 64 << 20,
        "server RSS grew by {} KiB with --max-pending-output 1MiB",
        growth >> 10
    );
    assert!(
        echoes >= 10,
        "the other client got only {echoes} echoes meanwhile"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "the other client waited {slowest:?} for an echo"
    );
    assert!(
        server.logged("write timeout"),
        "the server should log the write timeout"
    );
}
