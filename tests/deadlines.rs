//! Deadlines of the real `wsloop` binary, each on one connection: keepalive pings,
//! the idle (read) timeout for a silent (dead) peer and not for one that answers
//! pings, the handshake timeout, and the write timeout for a client that never reads
//! (with the server's memory bounded and another client served meanwhile); each
//! deadline kept to (not early, not much late) and its slot freed after it.
//!
//! (The same deadlines at scale — a thousand slowloris sockets, thousands of stalled
//! connections — are tests/faults.rs's.)

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use tungstenite::Message;

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

/// A dead peer (sends nothing, not even a Pong) is pinged, gets Close 1001 at the idle
/// timeout, then the end of TCP; its slot (the only one) is freed.
#[test]
fn silent_client_gets_close_1001_at_idle_timeout_and_its_slot_back() {
    let idle = Duration::from_millis(600);
    let server = Server::start(&[
        "--ping-interval",
        "200ms",
        "--idle-timeout",
        "600ms",
        "--max-connections",
        "1",
    ]);
    let mut s = upgraded(server.addr, &server.path);
    let opened = Instant::now();
    // While it is open, the one slot is taken.
    assert_eq!(try_upgrade(server.addr, &server.path).0, 503);
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
            0x9 if b0 == 0x89 => saw_ping = true,
            0x8 if b0 == 0x88 => break close_code(&payload),
            _ => panic!("unexpected frame {b0:#04x} {payload:?}"),
        }
    };
    let at_close = opened.elapsed();
    assert!(saw_ping, "the server should ping before giving up");
    assert_eq!(code, 1001);
    assert!(
        at_close >= idle - Duration::from_millis(100),
        "closed too early: {at_close:?} (idle timeout {idle:?})"
    );
    // The server ends the TCP connection too (it does not wait for our Close).
    expect_eof(&mut s, idle + Duration::from_secs(2)).expect("TCP not ended after Close 1001");
    let ended = opened.elapsed();
    assert!(
        ended >= idle - Duration::from_millis(50),
        "ended too early: {ended:?}"
    );
    assert!(
        ended <= idle + Duration::from_secs(1),
        "ended late: {ended:?} (idle timeout {idle:?})"
    );
    let freed = wait_until(Duration::from_secs(1), || {
        try_upgrade(server.addr, &server.path).0 == 101
    });
    assert!(freed, "slot not freed after the dead peer was closed");
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("after dead peer"));
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

/// A peer that answers pings (tungstenite does while reading) but sends no data stays
/// connected past several idle timeouts.
#[test]
fn tungstenite_client_that_reads_is_not_dropped() {
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "500ms"]);
    let mut ws = connect(server.url());
    // For 1.5 s nothing but pings (which tungstenite answers) may arrive.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        set_client_timeout(&ws, left.min(Duration::from_millis(100)));
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("expected only pings, got {other:?}"),
        }
        let _ = ws.flush();
    }
    assert!(
        pings >= 2,
        "{pings} pings within 1.5 s with a 200 ms interval"
    );
    set_client_timeout(&ws, Duration::from_secs(5));
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
    read_to_eof(&mut s, Duration::from_secs(5))
        .expect("a socket that never sent a request was not dropped");
    let closed = start.elapsed();
    assert_dropped_at_500ms(closed);
    // No HTTP reply is owed to a socket that said nothing; either way, the server is fine.
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("ok"));
}

#[test]
fn half_request_is_dropped_at_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let mut s = raw(server.addr);
    let start = Instant::now();
    let req = upgrade_request(server.addr, "/ws", "");
    s.write_all(&req.as_bytes()[..req.len() / 2]).unwrap();
    read_to_eof(&mut s, Duration::from_secs(5))
        .expect("a socket with half a request was not dropped");
    let closed = start.elapsed();
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

/// A client that sends 64 KiB messages and never reads the echoes: the server stops
/// reading it (backpressure) so that its memory stays bounded, drops it at the write
/// timeout (not before), and serves another client meanwhile.
#[test]
fn client_that_never_reads_is_dropped_at_write_timeout_with_bounded_memory() {
    let write_timeout = Duration::from_secs(1);
    let mut server = Server::start(&[
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
    let other = Healthy::start(&server, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(100));
    let rss_before = server.rss();
    assert!(rss_before > 0, "cannot read the server's RSS");

    // The slow client: a small receive window, upgrade by hand, then write 64 KiB
    // messages without reading.
    let mut s = connect_tuned(server.addr, None, Some(4096)).expect("connect");
    assert_eq!(request_upgrade(&mut s, server.addr, &server.path), 101);
    s.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let msg = frame(0x82, &vec![0xab; 64 << 10]);
    let started = Instant::now();
    let mut sent = 0;
    let mut blocked = None;
    let mut peak_rss = rss_before;
    // At most 512 × 64 KiB = 32 MiB; with backpressure the write blocks long before.
    for _ in 0..512 {
        match s.write_all(&msg) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = Some(Instant::now());
                break;
            }
            // On a busy machine the write deadline can pass while this client is still
            // writing: the server dropped it, which is what is checked below.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
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
    let rss_after = server.rss();
    peak_rss = peak_rss.max(rss_after);
    let report = other.finish(Duration::from_secs(1));

    eprintln!(
        "slow client: sent {sent} messages before blocking after {:?}, dropped {:?} after blocking; \
         rss before {} KiB, peak {} KiB, after {} KiB; other client: {report:?}",
        blocked - started,
        dropped_at - blocked,
        rss_before >> 10,
        peak_rss >> 10,
        rss_after >> 10,
    );
    assert!(
        dropped,
        "client that never reads was not dropped within 6 s of blocking (write timeout 1s)"
    );
    assert!(
        dropped_at - started >= write_timeout,
        "dropped before the write timeout could have passed: {:?}",
        dropped_at - started
    );
    let growth = peak_rss.saturating_sub(rss_before);
    assert!(
        growth < 32 << 20,
        "server RSS grew by {} KiB with --max-pending-output 1MiB",
        growth >> 10
    );
    assert!(
        report.echoes >= 10,
        "the other client got only {} echoes meanwhile",
        report.echoes
    );
    assert!(
        server.wait_logged("write timeout"),
        "the server should log the write timeout"
    );
    assert!(server.alive(), "the server exited");
}
