//! Echo of valid traffic by the real `wsloop` binary on loopback: payload sizes around
//! every frame-length encoding boundary, fragmentation with interleaved control frames,
//! frames that arrive in pieces (down to one byte per write), ping/pong, pipelining and
//! many concurrent clients.
//!
//! (How connections end — the close handshake, and the close codes for bad frames and
//! for messages over the limits — is tests/closing.rs's; frames sent right behind the
//! upgrade request, tests/handshake.rs's.)

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tungstenite::Message;

/// Payload sizes that cross each length encoding: 7-bit, 16-bit and 64-bit.
const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, (1 << 20) + 1];

/// Deterministic, position-dependent bytes (a shifted or truncated echo would differ).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// ASCII text of `len` bytes whose content depends on the position.
fn text_pattern(len: usize, seed: u32) -> String {
    pattern(len, seed)
        .into_iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect()
}

/// Reads frames until one that is not a server Ping.
fn read_data_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let (b0, payload) = read_frame(s).expect("read frame");
        if b0 & 0x0f != 0x9 {
            return (b0, payload);
        }
    }
}

#[test]
fn echoes_text_at_every_length_boundary() {
    let server = Server::start(&[]);
    let mut ws = connect(server.url());
    for (i, &len) in SIZES.iter().enumerate() {
        let text = text_pattern(len, i as u32);
        ws.send(Message::text(text.clone())).expect("send");
        match ws.read().expect("read echo") {
            Message::Text(got) => {
                assert_eq!(got.len(), len, "text echo of {len} bytes has wrong length");
                assert!(got.as_str() == text, "text echo of {len} bytes differs");
            }
            other => panic!("text of {len} bytes echoed as {other:?}"),
        }
    }
}

#[test]
fn echoes_binary_at_every_length_boundary() {
    let server = Server::start(&[]);
    let mut ws = connect(server.url());
    for (i, &len) in SIZES.iter().enumerate() {
        let data = pattern(len, 100 + i as u32);
        ws.send(Message::binary(data.clone())).expect("send");
        match ws.read().expect("read echo") {
            Message::Binary(got) => {
                assert_eq!(
                    got.len(),
                    len,
                    "binary echo of {len} bytes has wrong length"
                );
                assert!(got[..] == data[..], "binary echo of {len} bytes differs");
            }
            other => panic!("binary of {len} bytes echoed as {other:?}"),
        }
    }
}

#[test]
fn echo_frames_use_the_right_length_encoding() {
    // Raw frames: the server's reply header must be a single unmasked FIN frame with
    // the same opcode and exact length, whatever the size class.
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    for (i, &len) in SIZES.iter().enumerate() {
        let data = pattern(len, 200 + i as u32);
        s.write_all(&frame(0x82, &data)).unwrap();
        let (b0, got) = read_data_frame(&mut s);
        assert_eq!(b0, 0x82, "binary echo of {len} bytes: first byte");
        assert_eq!(got.len(), len);
        assert!(got == data, "binary echo of {len} bytes differs");
    }
}

#[test]
fn fragmented_text_with_ping_in_the_middle() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    // Three fragments of one text message ("Hello, wörld": the ö straddles the
    // second and third fragment), a Ping between the first and the second.
    let whole = "Hello, wörld".as_bytes();
    let (a, rest) = whole.split_at(5);
    let (b, c) = rest.split_at(4); // ", w" + first byte of ö
    let mut bytes = frame(0x01, a);
    bytes.extend(frame(0x89, b"mid-ping"));
    bytes.extend(frame(0x00, b));
    bytes.extend(frame(0x80, c));
    s.write_all(&bytes).unwrap();
    let (b0, payload) = read_frame(&mut s).unwrap();
    assert_eq!(b0, 0x8a, "expected a Pong first");
    assert_eq!(payload, b"mid-ping");
    let (b0, payload) = read_frame(&mut s).unwrap();
    assert_eq!(
        b0, 0x81,
        "the message must come back as one final text frame"
    );
    assert_eq!(payload, whole);
}

#[test]
fn frames_in_pieces_are_echoed() {
    let server = Server::start(&[]);
    let mut ok = connect(server.url());
    let mut s = upgraded(server.addr, &server.path);
    // One byte per write: a text message over 125 bytes (16-bit length), then a
    // fragmented binary message with a Ping in the middle.
    let text = "héllo wörld € 𝄞 ".repeat(12);
    let mut bytes = frame(0x81, text.as_bytes());
    bytes.extend(frame(0x02, &[1, 2, 3]));
    bytes.extend(frame(0x89, b"mid"));
    bytes.extend(frame(0x80, &[4, 5]));
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(100));
    }
    expect_frame(&mut s, 0x81, text.as_bytes()).unwrap();
    expect_frame(&mut s, 0x8A, b"mid").unwrap();
    expect_frame(&mut s, 0x82, &[1, 2, 3, 4, 5]).unwrap();
    // Three bytes per write: fragments split mid-header, a Ping between them.
    let mut bytes = frame(0x01, b"one ");
    bytes.extend(frame(0x89, b"p"));
    bytes.extend(frame(0x00, b"two "));
    bytes.extend(frame(0x80, b"three"));
    for chunk in bytes.chunks(3) {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let (b0, payload) = read_frame(&mut s).unwrap();
    assert_eq!((b0, payload.as_slice()), (0x8a, &b"p"[..]));
    let (b0, payload) = read_frame(&mut s).unwrap();
    assert_eq!((b0, payload.as_slice()), (0x81, &b"one two three"[..]));
    // A fragmented binary message as well.
    let data = pattern(70_000, 7);
    let mut bytes = frame(0x02, &data[..30_000]);
    bytes.extend(frame(0x00, &data[30_000..69_999]));
    bytes.extend(frame(0x80, &data[69_999..]));
    s.write_all(&bytes).unwrap();
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x82);
    assert!(payload == data, "reassembled binary message differs");
    // Then a clean close.
    s.write_all(&close_frame(1000, b"")).unwrap();
    expect_close(&mut s, 1000).unwrap();
    echo_ok(&mut ok, "frames in pieces").unwrap();
}

/// Large frames are read straight into their own buffers (after their first 64 KiB)
/// while the frames behind them still come through the loop's shared buffer: every
/// byte must land in the right message, whatever the split between the two paths.
#[test]
fn large_and_small_frames_back_to_back_are_echoed() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    let text = "héllo wörld € 𝄞 ".repeat(100_000); // 2.3 MB of multi-byte text
    let big = pattern(3 << 20, 1);
    let frag = pattern(700_000, 2);
    let mut bytes = frame(0x81, text.as_bytes());
    bytes.extend(frame(0x82, b"small"));
    bytes.extend(frame(0x82, &big));
    bytes.extend(frame(0x81, "é".as_bytes()));
    bytes.extend(frame(0x02, &frag[..300_000]));
    bytes.extend(frame(0x89, b"mid"));
    bytes.extend(frame(0x80, &frag[300_000..]));
    let mut w = s.try_clone().unwrap();
    // Written by another thread: the echoes come back while the rest still goes out.
    let writer = std::thread::spawn(move || {
        for chunk in bytes.chunks(100_003) {
            w.write_all(chunk).unwrap();
        }
    });
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x81);
    assert!(payload == text.as_bytes(), "large text echo differs");
    expect_frame(&mut s, 0x82, b"small").unwrap();
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x82);
    assert!(payload == big, "large binary echo differs");
    expect_frame(&mut s, 0x81, "é".as_bytes()).unwrap();
    expect_frame(&mut s, 0x8A, b"mid").unwrap();
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x82);
    assert!(payload == frag, "fragmented large binary echo differs");
    writer.join().unwrap();
    s.write_all(&close_frame(1000, b"")).unwrap();
    expect_close(&mut s, 1000).unwrap();
}

/// Invalid UTF-8 in the last byte of a large text frame, which arrives through the
/// direct read path, still fails the connection with 1007.
#[test]
fn invalid_utf8_at_the_end_of_a_large_text_frame_is_1007() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    let mut text = text_pattern(1 << 20, 3).into_bytes();
    *text.last_mut().unwrap() = 0xFF;
    s.write_all(&frame(0x81, &text)).unwrap();
    expect_close(&mut s, 1007).unwrap();
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    for payload in [&b""[..], b"x", &[0u8, 1, 2, 255, 254][..], &[b'p'; 125][..]] {
        s.write_all(&frame(0x89, payload)).unwrap();
        let (b0, got) = read_frame(&mut s).unwrap();
        assert_eq!(
            b0,
            0x8a,
            "Pong expected for ping of {} bytes",
            payload.len()
        );
        assert_eq!(got, payload);
    }
    // And through tungstenite's client.
    let mut ws = connect(server.url());
    ws.send(Message::Ping(b"tung".to_vec().into())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"tung");
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("expected Pong, got {other:?}"),
        }
    }
}

#[test]
fn pipelined_messages_come_back_in_order() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    let mut bytes = Vec::new();
    for i in 0..1000 {
        bytes.extend(frame(0x81, format!("message number {i}").as_bytes()));
    }
    // One write for all 1000 frames.
    s.write_all(&bytes).unwrap();
    for i in 0..1000 {
        let (b0, payload) = read_data_frame(&mut s);
        assert_eq!(b0, 0x81, "echo {i}");
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!("message number {i}"),
            "echo {i} out of order or altered"
        );
    }
    // The connection still works afterwards.
    s.write_all(&frame(0x82, b"after")).unwrap();
    assert_eq!(read_data_frame(&mut s), (0x82, b"after".to_vec()));
}

#[test]
fn pipelined_with_tungstenite_client() {
    let server = Server::start(&[]);
    let mut ws = connect(server.url());
    for i in 0..1000 {
        ws.write(Message::binary(format!("{i:04}").into_bytes()))
            .unwrap();
    }
    ws.flush().unwrap();
    for i in 0..1000 {
        match ws.read().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], format!("{i:04}").as_bytes()),
            other => panic!("echo {i}: {other:?}"),
        }
    }
}

#[test]
fn fifty_concurrent_clients_echo_correctly() {
    const CLIENTS: usize = 50;
    const ROUNDS: usize = 20;
    let server = Server::start(&[]);
    let url = server.url();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let url = url.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut ws = connect(&url);
                // Everyone is connected before anyone sends.
                barrier.wait();
                for r in 0..ROUNDS {
                    if r % 2 == 0 {
                        assert_echo(&mut ws, Message::text(format!("client {c} round {r}")));
                    } else {
                        let len = 100 + (c * 997 + r * 131) % 20_000;
                        assert_echo(
                            &mut ws,
                            Message::binary(pattern(len, (c * 1000 + r) as u32)),
                        );
                    }
                }
                ws.close(None).unwrap();
                c
            })
        })
        .collect();
    let mut done = Vec::new();
    for h in handles {
        done.push(h.join().expect("a client thread failed"));
    }
    done.sort();
    assert_eq!(done, (0..CLIENTS).collect::<Vec<_>>());
}
