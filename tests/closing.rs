//! How a WebSocket connection ends, on raw sockets against the real binary:
//!
//! - the close handshake: the client's Close is echoed (code and reason) and the
//!   server then ends the TCP connection; data after the client's Close is ignored;
//! - failures, each with its exact close code and nothing else: protocol errors 1002,
//!   invalid UTF-8 1007, too big 1009 (`--max-frame`, `--max-message`), then the end
//!   of TCP — also when the client keeps sending behind its bad frame (lingering
//!   close: the Close must not be lost to a TCP reset);
//! - connections that end without a close handshake (FIN, RST): their slot is freed.
//!
//! Every table case asserts the server's exact answer AND that a healthy tungstenite
//! client, connected to the same server before the case ran, still gets its echo
//! afterwards. Cases within a table run one after another on one server; failures are
//! collected and reported together, so one run shows every case that is wrong.
//! (HTTP-level refusals are tests/handshake.rs's; echoes of valid traffic,
//! tests/echo.rs's.)

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// The close handshake, and failures on an upgraded raw socket.
// ---------------------------------------------------------------------------------

struct FrameCase {
    name: String,
    /// Sent right after the upgrade.
    bytes: Vec<u8>,
    /// Echo frames (first byte, payload) expected before the Close.
    echoes: Vec<(u8, Vec<u8>)>,
    /// The Close frame's code; 0 when `echoes` ends with the whole Close frame.
    close: u16,
}

fn fc(name: impl Into<String>, bytes: Vec<u8>, close: u16) -> FrameCase {
    FrameCase {
        name: name.into(),
        bytes,
        echoes: Vec::new(),
        close,
    }
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Runs frame cases on `server`, each on a freshly upgraded raw socket.
fn run_frame_cases(server: &Server, cases: &[FrameCase]) {
    run_table(
        server,
        cases,
        |c| c.name.clone(),
        |c| {
            let mut s = upgraded(server.addr, &server.path);
            // The server may close before it has read everything: ignore write errors.
            let _ = s.write_all(&c.bytes);
            for (b0, payload) in &c.echoes {
                expect_frame(&mut s, *b0, payload)?;
            }
            if c.close == 0 {
                // The Close was among the expected frames: only the end of TCP follows.
                return expect_eof(&mut s, ANSWER_WITHIN);
            }
            expect_close(&mut s, c.close)
        },
    );
}

#[test]
fn frame_violations() {
    let server = Server::start(&[]);
    let mut cases = vec![
        fc(
            "unmasked text frame",
            vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
            1002,
        ),
        fc("unmasked empty binary frame", vec![0x82, 0x00], 1002),
        fc("RSV1 set", frame(0xC1, b"x"), 1002),
        fc("RSV2 set", frame(0xA1, b"x"), 1002),
        fc("RSV3 set", frame(0x91, b"x"), 1002),
        fc("RSV bits on a ping", frame(0xF9, b""), 1002),
        fc("fragmented ping", frame(0x09, b"p"), 1002),
        fc("fragmented pong", frame(0x0A, b"p"), 1002),
        fc(
            "fragmented close",
            frame(0x08, &close_payload(1000, b"")),
            1002,
        ),
        fc("ping with 126 bytes", frame(0x89, &[b'p'; 126]), 1002),
        fc(
            "close with 200 bytes",
            frame(0x88, &close_payload(1000, &[b'r'; 198])),
            1002,
        ),
        fc(
            "continuation with nothing to continue",
            frame(0x80, b"cont"),
            1002,
        ),
        fc("non-final continuation first", frame(0x00, b"cont"), 1002),
        fc(
            "text inside a fragmented text message",
            cat(&[frame(0x01, b"start"), frame(0x81, b"intruder")]),
            1002,
        ),
        fc(
            "binary inside a fragmented text message",
            cat(&[frame(0x01, b"start"), frame(0x02, b"intruder")]),
            1002,
        ),
        fc(
            "text inside a fragmented binary message",
            cat(&[
                frame(0x02, b"start"),
                frame(0x00, b"more"),
                frame(0x81, b"x"),
            ]),
            1002,
        ),
        fc("close with 1-byte payload", frame(0x88, &[0x03]), 1002),
        fc(
            "close with invalid UTF-8 reason",
            frame(0x88, &close_payload(1000, b"bad \xff\xfe reason")),
            1007,
        ),
        fc(
            "text with invalid UTF-8",
            frame(0x81, b"ab\xc0\x80cd"),
            1007,
        ),
        FrameCase {
            name: "valid text echoed, then text with invalid UTF-8 is not".into(),
            bytes: cat(&[frame(0x81, b"valid"), frame(0x81, b"ok\xff\xfe")]),
            echoes: vec![(0x81, b"valid".to_vec())],
            close: 1007,
        },
        fc(
            "fragmented text ending in a truncated sequence",
            cat(&[frame(0x01, b"caf"), frame(0x80, b"\xc3")]),
            1007,
        ),
        fc(
            "text with a lone surrogate",
            frame(0x81, b"\xed\xa0\x80"),
            1007,
        ),
        fc(
            "text ending mid-character",
            frame(0x81, b"ok\xe2\x82"),
            1007,
        ),
        fc(
            "invalid UTF-8 split across fragments",
            cat(&[frame(0x01, b"ab\xf4"), frame(0x80, b"\x90\x80\x80")]),
            1007,
        ),
        fc(
            "fragmented text ending mid-character",
            cat(&[
                frame(0x01, b"ok\xe2"),
                frame(0x00, b"\x82"),
                frame(0x80, b""),
            ]),
            1007,
        ),
        fc(
            "64-bit length with the top bit set (header only)",
            vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            1002,
        ),
    ];
    for op in (3..=7).chain(11..=15) {
        cases.push(fc(
            format!("reserved opcode {op}"),
            frame(0x80 | op, b"x"),
            1002,
        ));
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        cases.push(fc(
            format!("close with code {code}"),
            frame(0x88, &close_payload(code, b"")),
            1002,
        ));
    }
    // Valid frames before the violation are echoed first, in order.
    cases.push(FrameCase {
        name: "echoes before a bad frame".into(),
        bytes: cat(&[
            frame(0x81, b"one"),
            frame(0x82, b"two"),
            frame(0xC1, b"bad"),
        ]),
        echoes: vec![(0x81, b"one".to_vec()), (0x82, b"two".to_vec())],
        close: 1002,
    });
    run_frame_cases(&server, &cases);
}

/// Valid close codes are echoed back with their reason (RFC 6455 5.5.1), nothing
/// else is sent, and the connection ends.
#[test]
fn valid_close_codes_are_echoed() {
    let server = Server::start(&[]);
    let mut cases: Vec<FrameCase> = [1000u16, 1001, 1003, 1007, 1011, 3000, 4999]
        .into_iter()
        .map(|code| fc(format!("close {code}"), close_frame(code, b"bye"), code))
        .chain(std::iter::once(FrameCase {
            name: "empty close".into(),
            bytes: frame(0x88, b""),
            echoes: vec![],
            close: 1005,
        }))
        .collect();
    // After real traffic, and the reason comes back too: a close frame with exactly
    // 4000 "bye" (the expected Close frame is compared whole, then TCP must end).
    cases.push(FrameCase {
        name: "close 4000 \"bye\" after a message".into(),
        bytes: cat(&[frame(0x81, b"before"), close_frame(4000, b"bye")]),
        echoes: vec![
            (0x81, b"before".to_vec()),
            (0x88, close_payload(4000, b"bye")),
        ],
        close: 0,
    });
    run_frame_cases(&server, &cases);
}

/// tungstenite's client closing with 4000 "bye" gets exactly that back and then the
/// end of the connection.
#[test]
fn close_handshake_with_tungstenite_client() {
    let server = Server::start(&[]);
    let mut ws = connect(server.url());
    assert_echo(&mut ws, tungstenite::Message::text("hi"));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    let mut got_close = None;
    // Bounded by the client's 10 s read timeout and by this count.
    for _ in 0..1000 {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => got_close = f,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error after close: {e}"),
        }
    }
    let f = got_close.expect("server answered Close with a code");
    assert_eq!(u16::from(f.code), 4000);
    assert_eq!(f.reason.as_str(), "bye");
}

/// A frame header claiming more than max_frame (just over it, and far over it, as text
/// and binary): answered with 1009 at once, before any payload, and the claimed
/// length is never allocated.
#[test]
fn oversized_frame_header_answered_at_once_without_allocating() {
    let server = Server::start(&["--max-frame", "16MiB", "--max-message", "64MiB"]);
    let mut ok = connect(server.url());
    echo_ok(&mut ok, "warm-up").unwrap();
    let before = server.rss();
    let mut peak = before;
    let claims: [u64; 4] = [(16 << 20) + 1, 64 << 20, 1 << 40, (1 << 63) - 1];
    for (i, claim) in claims.into_iter().enumerate() {
        for _ in 0..5 {
            let mut s = upgraded(server.addr, &server.path);
            let mut hdr = vec![if i % 2 == 0 { 0x82 } else { 0x81 }, 0x80 | 127];
            hdr.extend_from_slice(&claim.to_be_bytes());
            hdr.extend_from_slice(&[1, 2, 3, 4]);
            let t0 = Instant::now();
            s.write_all(&hdr).unwrap();
            expect_close(&mut s, 1009).unwrap_or_else(|e| panic!("claim {claim}: {e}"));
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "claim {claim}: 1009 took {:?}",
                t0.elapsed()
            );
            peak = peak.max(server.rss());
        }
    }
    echo_ok(&mut ok, "oversized headers").unwrap();
    let growth = peak.saturating_sub(before);
    println!("RSS before {before} B, peak {peak} B, growth {growth} B");
    assert!(
        growth < 4 << 20,
        "server RSS grew by {growth} bytes on frame headers claiming >= 16 MiB"
    );

    // A 16-bit length over a small limit, on another server.
    let small = Server::start(&["--max-frame", "1KiB", "--max-message", "1KiB"]);
    let mut ok = connect(small.url());
    let mut s = upgraded(small.addr, &small.path);
    s.write_all(&[0x82, 0x80 | 126, 0x04, 0x01]).unwrap();
    expect_close(&mut s, 1009).unwrap();
    // Exactly at the limit is echoed.
    let mut s = upgraded(small.addr, &small.path);
    s.write_all(&frame(0x82, &[5u8; 1024])).unwrap();
    expect_frame(&mut s, 0x82, &[5u8; 1024]).unwrap();
    echo_ok(&mut ok, "16-bit over limit").unwrap();
}

/// Position-dependent bytes: a shifted or truncated echo differs.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// With `--max-message 64KiB --max-frame 64KiB`: messages (one frame, or many small
/// fragments) over the limit get 1009 and no partial echo; exactly the limit is echoed.
#[test]
fn message_over_limit_closes_1009() {
    let server = Server::start(&SMALL_LIMITS);
    let cases = vec![
        fc(
            "one binary frame of 65 KiB",
            frame(0x82, &pattern(65 << 10)),
            1009,
        ),
        fc(
            "one text frame of 65 KiB",
            frame(0x81, &[b't'; 65 << 10]),
            1009,
        ),
        {
            // 70 fragments of 1 KiB: each frame is tiny, the message is 70 KiB.
            let chunk = pattern(1024);
            let mut b = frame(0x02, &chunk);
            for _ in 0..68 {
                b.extend(frame(0x00, &chunk));
            }
            b.extend(frame(0x80, &chunk));
            fc("binary 70 x 1 KiB fragments", b, 1009)
        },
        {
            // Text fragments, never the final one: the limit must trip while the
            // message is still incomplete.
            let mut b = frame(0x01, &[b'u'; 1024]);
            for _ in 0..69 {
                b.extend(frame(0x00, &[b'u'; 1024]));
            }
            fc("text 70 x 1 KiB fragments, no final one", b, 1009)
        },
        {
            // 20 × 4 KiB = 80 KiB binary in fragments; the last ones push it over.
            let mut b = frame(0x02, &[1u8; 4096]);
            for _ in 0..18 {
                b.extend(frame(0x00, &[1u8; 4096]));
            }
            b.extend(frame(0x80, &[1u8; 4096]));
            fc("binary 20 x 4 KiB fragments", b, 1009)
        },
        {
            let mut b = frame(0x01, &[b'a'; 1000]);
            for _ in 0..70 {
                b.extend(frame(0x00, &[b'a'; 1000]));
            }
            b.extend(frame(0x80, b"end"));
            fc("text 72 x 1000 B fragments", b, 1009)
        },
        {
            // 1-byte fragments with pings between them: the pings are answered.
            let mut b = frame(0x02, b"x");
            let mut echoes = Vec::new();
            for i in 0..5 {
                b.extend(frame(0x00, b"y"));
                b.extend(frame(0x89, format!("p{i}").as_bytes()));
                echoes.push((0x8A, format!("p{i}").into_bytes()));
            }
            b.extend(frame(0x00, &vec![2u8; 65_000]));
            b.extend(frame(0x00, &vec![2u8; 1_000]));
            FrameCase {
                name: "tiny fragments and pings, then over".into(),
                bytes: b,
                echoes,
                close: 1009,
            }
        },
        {
            // Exactly at the limit is fine and echoed (one frame, 2 fragments, 64
            // fragments of 1 KiB), one byte more is not.
            let exact = pattern(64 << 10);
            let mut b = frame(0x82, &exact);
            b.extend(frame(0x02, &[3u8; 32 * 1024]));
            b.extend(frame(0x80, &[3u8; 32 * 1024]));
            for (i, chunk) in exact.chunks(1024).enumerate() {
                let first = if i == 0 { 0x02 } else { 0x00 };
                let fin = if i == 63 { 0x80 } else { 0x00 };
                b.extend(frame(first | fin, chunk));
            }
            b.extend(frame(0x02, &[4u8; 32 * 1024]));
            b.extend(frame(0x00, &[4u8; 32 * 1024]));
            b.extend(frame(0x80, &[4u8; 1]));
            FrameCase {
                name: "exactly max_message echoed, max_message + 1 is 1009".into(),
                bytes: b,
                echoes: vec![
                    (0x82, exact.clone()),
                    (0x82, vec![3u8; 64 * 1024]),
                    (0x82, exact),
                ],
                close: 1009,
            }
        },
    ];
    run_frame_cases(&server, &cases);
}

const SMALL_LIMITS: [&str; 4] = ["--max-message", "64KiB", "--max-frame", "64KiB"];

// ---------------------------------------------------------------------------------
// Connection behaviour.
// ---------------------------------------------------------------------------------

#[test]
fn data_after_client_close_is_ignored() {
    let server = Server::start(&[]);
    let mut ok = connect(server.url());
    for (i, trailing) in [
        frame(0x81, b"after close"),
        cat(&[
            frame(0x81, b"after close"),
            frame(0x89, b"ping after close"),
        ]),
        frame(0xC1, b"even a bad frame"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = upgraded(server.addr, &server.path);
        // Same write, and (below) a separate write after the close.
        let mut bytes = close_frame(1000, b"done");
        if i == 0 {
            s.write_all(&bytes).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let _ = s.write_all(&trailing);
        } else {
            bytes.extend(trailing);
            s.write_all(&bytes).unwrap();
        }
        expect_close(&mut s, 1000).unwrap_or_else(|e| panic!("variant {i}: {e}"));
    }
    echo_ok(&mut ok, "data after close").unwrap();
}

/// Slot accounting with `--max-connections 2`: the healthy client holds one slot, the
/// case's client the other; a third gets 503 until the case's client is gone.
fn assert_slot_frees(
    server: &Server,
    ok: &mut Client,
    what: &str,
    misbehave: impl FnOnce(TcpStream),
) {
    // The slot may still be held by what the previous step did (a reset, say) for
    // the moment the server takes to see it.
    let victim = upgrade_within(server.addr, &server.path, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{what}: no free slot to start with"));
    let (status, text) = http(
        server.addr,
        upgrade_request(server.addr, &server.path, "").as_bytes(),
    );
    assert_eq!(
        status, 503,
        "{what}: third connection while two are open: {text}"
    );
    misbehave(victim);
    let mut probe = upgrade_within(server.addr, &server.path, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{what}: slot not freed within 3 s"));
    echo_ok(ok, what).unwrap();
    // Give the slot back deterministically: a clean close, then the server's EOF.
    probe.write_all(&close_frame(1000, b"")).unwrap();
    expect_close(&mut probe, 1000).unwrap();
}

#[test]
fn tcp_close_without_close_frame_frees_the_slot() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut ok = connect(server.url());
    assert_slot_frees(&server, &mut ok, "FIN without Close", drop);
    assert_slot_frees(&server, &mut ok, "FIN mid-frame", |mut s| {
        s.write_all(&frame(0x82, &[9u8; 1000])[..500]).unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
    });
    assert_slot_frees(&server, &mut ok, "FIN mid-fragmented message", |mut s| {
        s.write_all(&frame(0x01, b"part one")).unwrap();
        drop(s);
    });
    // Also a connection that never finished its handshake.
    let mut s = raw(server.addr);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer =
        read_to_eof(&mut s, ANSWER_WITHIN).expect("half a request and a FIN: closed at once");
    assert!(
        answer.is_empty(),
        "half a request and a FIN: no answer is owed, got {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_slot_frees(&server, &mut ok, "after a half request", drop);
}

/// SO_LINGER with a zero timeout: close() sends RST instead of FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` (valid for its size) on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
    drop(s);
}

#[test]
fn rst_mid_frame_frees_the_slot() {
    let mut server = Server::start(&["--max-connections", "2"]);
    let mut ok = connect(server.url());
    assert_slot_frees(&server, &mut ok, "RST mid-frame", |mut s| {
        s.write_all(&frame(0x82, &[9u8; 70_000])[..30_000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        reset(s);
    });
    assert_slot_frees(&server, &mut ok, "RST mid-header", |mut s| {
        s.write_all(&[0x82, 0xFF, 0, 0]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        reset(s);
    });
    assert_slot_frees(&server, &mut ok, "RST with unread echo pending", |mut s| {
        for _ in 0..20 {
            s.write_all(&frame(0x82, &[1u8; 60_000])).unwrap();
        }
        reset(s);
    });
    // And during the handshake.
    let mut s = raw(server.addr);
    s.write_all(b"GET /ws HTTP/1.1\r\nHo").unwrap();
    reset(s);
    assert_slot_frees(&server, &mut ok, "after RST in handshake", reset);
    assert!(server.alive(), "the server exited");
}

// ---------------------------------------------------------------------------------
// Lingering close: the client keeps sending behind its bad frame.
// ---------------------------------------------------------------------------------
//
// A server that fails a connection and then closes its socket while the client's data
// is still unread makes the kernel send a TCP reset, and the client can lose the
// Close frame (browsers then see 1006). The server must instead shut down its write
// side after the Close and read and discard (bounded) until the client's EOF. Each
// case runs LINGER_ROUNDS times: a lost Close shows only now and then.

const LINGER_ROUNDS: usize = 10;

/// About 1 MiB, all of it sent behind (or as the rest of) the bad frame.
const KEEP_SENDING: usize = 1 << 20;

/// Valid frames sent ahead of the bad one in half of the rounds: 1 MiB of echoes still
/// on their way to the client (in the server's socket buffer) when the server fails
/// the connection, so its Close waits behind them.
const AHEAD_FRAMES: usize = 32;
const AHEAD_FRAME: usize = 32 << 10;

/// Upgrades, then sends `ahead` valid frames, and `bytes` (the bad frame first) from a
/// writer thread while this thread reads: the echoes, then the Close with exactly
/// `code`, must arrive with nothing else, then the end of the TCP connection (EOF or
/// reset).
fn close_reaches_a_client_that_keeps_sending(
    server: &Server,
    ahead: usize,
    bytes: &[u8],
    code: u16,
) -> Result<(), String> {
    let mut s = upgraded(server.addr, &server.path);
    let echo = pattern(AHEAD_FRAME);
    let mut all = Vec::with_capacity(ahead * (AHEAD_FRAME + 14) + bytes.len());
    for _ in 0..ahead {
        all.extend(frame(0x82, &echo));
    }
    all.extend_from_slice(bytes);
    let total = all.len();
    let writer = keep_sending(&s, all);
    let got = (0..ahead)
        .try_for_each(|i| {
            expect_frame(&mut s, 0x82, &echo).map_err(|e| format!("echo {i} of {ahead}: {e}"))
        })
        .and_then(|()| expect_close(&mut s, code));
    let sent = writer.join().expect("writer thread");
    got.map_err(|e| format!("{e} (the client had sent {sent} of {total} bytes)"))
}

/// Runs `alone` LINGER_ROUNDS times on a fresh connection, and `behind` as often
/// behind 1 MiB of echoes, against `server`, a healthy client beside each round.
fn linger_rounds(server: &Server, alone: &[u8], behind: &[u8], code: u16) {
    let rounds: Vec<(usize, usize)> = (1..=LINGER_ROUNDS)
        .flat_map(|r| [(r, 0), (r, AHEAD_FRAMES)])
        .collect();
    run_table(
        server,
        &rounds,
        |(r, ahead)| {
            let what = if *ahead == 0 {
                "alone"
            } else {
                "behind 1 MiB of echoes"
            };
            format!("round {r} of {LINGER_ROUNDS}, {what}")
        },
        |(_, ahead)| {
            let bytes = if *ahead == 0 { alone } else { behind };
            close_reaches_a_client_that_keeps_sending(server, *ahead, bytes, code)
        },
    );
}

#[test]
fn keeps_sending_after_reserved_bits_still_gets_1002() {
    let server = Server::start(&[]);
    // A 1 MiB binary frame with RSV1 set (compressed, but nothing was negotiated).
    let bytes = frame(0xC2, &pattern(KEEP_SENDING));
    linger_rounds(&server, &bytes, &bytes, 1002);
}

#[test]
fn keeps_sending_after_an_unmasked_frame_still_gets_1002() {
    let server = Server::start(&[]);
    // A 1 MiB binary frame without a mask.
    let mut bytes = vec![0x82, 127];
    bytes.extend_from_slice(&(KEEP_SENDING as u64).to_be_bytes());
    bytes.extend(pattern(KEEP_SENDING));
    linger_rounds(&server, &bytes, &bytes, 1002);
}

#[test]
fn keeps_sending_after_invalid_utf8_still_gets_1007() {
    let server = Server::start(&[]);
    // A 1 MiB text frame that is invalid from its third byte on, then more frames.
    let mut text = b"ok\xff\xfe".to_vec();
    text.resize(KEEP_SENDING / 2, b'a');
    let mut bytes = frame(0x81, &text);
    while bytes.len() < KEEP_SENDING {
        bytes.extend(frame(0x82, &pattern(16 << 10)));
    }
    linger_rounds(&server, &bytes, &bytes, 1007);
}

#[test]
fn keeps_sending_a_frame_over_max_frame_still_gets_1009() {
    let server = Server::start(&SMALL_LIMITS);
    // A 1 MiB binary frame against --max-frame 64KiB: refused at its header, and the
    // client goes on sending its payload, more than --max-message (the server may stop
    // discarding after that much, and end the connection).
    let alone = frame(0x82, &pattern(KEEP_SENDING));
    // Behind echoes still on their way, the client sends less than --max-message after
    // the header, so a server that discards up to that bound owes it every echo and
    // the Close.
    let behind = &alone[..14 + (48 << 10)];
    linger_rounds(&server, &alone, behind, 1009);
}
