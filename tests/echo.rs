//! Echo behaviour of the real `wsloop` binary on loopback: payload sizes around every
//! frame-length encoding boundary, fragmentation with interleaved control frames,
//! ping/pong, the close handshake, pipelining, the size / UTF-8 / masking failures
//! and many concurrent clients.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
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

/// The socket reaches EOF (or is reset) within `within`, after any remaining data.
fn closes_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    false
}

/// A masked Close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(0x88, &payload)
}

#[test]
fn echoes_text_at_every_length_boundary() {
    let server = Server::start(&[]);
    let mut ws = connect(&server.url());
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
    let mut ws = connect(&server.url());
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
fn fragments_arriving_in_separate_segments() {
    // Same as above but every frame is its own write, and the text message's second
    // fragment is split mid-header, so the server sees partial frames.
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
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
    let mut ws = connect(&server.url());
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
fn close_handshake_echoes_code_and_reason_then_tcp_ends() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    // A message first, so the close comes after real traffic.
    s.write_all(&frame(0x81, b"before")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"before".to_vec()));
    s.write_all(&close_frame(4000, "bye")).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("server's Close");
    assert_eq!(b0, 0x88, "expected a final Close frame");
    assert!(payload.len() >= 2, "Close without a code: {payload:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4000);
    assert_eq!(&payload[2..], b"bye", "reason echoed");
    assert!(
        closes_within(&mut s, Duration::from_secs(3)),
        "server did not end the TCP connection after the close handshake"
    );
}

#[test]
fn close_handshake_with_tungstenite_client() {
    let server = Server::start(&[]);
    let mut ws = connect(&server.url());
    assert_echo(&mut ws, Message::text("hi"));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    let mut got_close = None;
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => got_close = f,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error after close: {e}"),
        }
    }
    let f = got_close.expect("server answered Close with a code");
    assert_eq!(u16::from(f.code), 4000);
    assert_eq!(f.reason.as_str(), "bye");
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
    let mut ws = connect(&server.url());
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

const SMALL_LIMITS: [&str; 4] = ["--max-message", "64KiB", "--max-frame", "64KiB"];

#[test]
fn message_over_max_message_closes_1009() {
    let server = Server::start(&SMALL_LIMITS);
    // Exactly the limit is fine.
    let mut s = upgraded(server.addr, &server.path);
    let ok = pattern(64 << 10, 1);
    s.write_all(&frame(0x82, &ok)).unwrap();
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x82);
    assert!(payload == ok, "64 KiB echo differs");
    // One frame of 65 KiB is not.
    let mut s = upgraded(server.addr, &server.path);
    let _ = s.write_all(&frame(0x82, &pattern(65 << 10, 2)));
    let (b0, payload) = read_frame(&mut s).expect("a Close frame, not an echo");
    assert_eq!(
        b0, 0x88,
        "first frame after an oversized message must be Close"
    );
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    assert!(closes_within(&mut s, Duration::from_secs(3)));
}

#[test]
fn text_message_over_max_message_closes_1009() {
    let server = Server::start(&SMALL_LIMITS);
    let mut s = upgraded(server.addr, &server.path);
    let _ = s.write_all(&frame(0x81, text_pattern(65 << 10, 3).as_bytes()));
    assert_eq!(read_close_code(&mut s), Some(1009));
}

#[test]
fn many_small_fragments_over_max_message_close_1009() {
    let server = Server::start(&SMALL_LIMITS);
    let mut s = upgraded(server.addr, &server.path);
    // 70 fragments of 1 KiB: each frame is tiny, the message is 70 KiB > 64 KiB.
    let chunk = pattern(1024, 4);
    let mut bytes = frame(0x02, &chunk);
    for _ in 0..68 {
        bytes.extend(frame(0x00, &chunk));
    }
    bytes.extend(frame(0x80, &chunk));
    let _ = s.write_all(&bytes);
    let (b0, payload) = read_frame(&mut s).expect("a Close frame, not an echo");
    assert_eq!(b0, 0x88, "no partial echo before the Close");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    assert!(closes_within(&mut s, Duration::from_secs(3)));

    // The same with text fragments, never sending the final one: the limit must
    // trip while the message is still incomplete.
    let mut s = upgraded(server.addr, &server.path);
    let text = text_pattern(1024, 5);
    let mut bytes = frame(0x01, text.as_bytes());
    for _ in 0..69 {
        bytes.extend(frame(0x00, text.as_bytes()));
    }
    let _ = s.write_all(&bytes);
    assert_eq!(read_close_code(&mut s), Some(1009));
}

#[test]
fn fragments_totalling_exactly_max_message_are_echoed() {
    let server = Server::start(&SMALL_LIMITS);
    let mut s = upgraded(server.addr, &server.path);
    let data = pattern(64 << 10, 6);
    let mut bytes = Vec::new();
    for (i, chunk) in data.chunks(1024).enumerate() {
        let first = if i == 0 { 0x02 } else { 0x00 };
        let fin = if i == 63 { 0x80 } else { 0x00 };
        bytes.extend(frame(first | fin, chunk));
    }
    s.write_all(&bytes).unwrap();
    let (b0, payload) = read_data_frame(&mut s);
    assert_eq!(b0, 0x82);
    assert!(payload == data, "reassembled 64 KiB differs");
}

#[test]
fn invalid_utf8_closes_1007() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    s.write_all(&frame(0x81, b"valid")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"valid".to_vec()));
    s.write_all(&frame(0x81, &[b'o', b'k', 0xff, 0xfe]))
        .unwrap();
    let (b0, payload) = read_frame(&mut s).expect("Close");
    assert_eq!(b0, 0x88, "invalid text must not be echoed");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    assert!(closes_within(&mut s, Duration::from_secs(3)));

    // Invalid UTF-8 spread over fragments (a truncated sequence at the end).
    let mut s = upgraded(server.addr, &server.path);
    let mut bytes = frame(0x01, "caf".as_bytes());
    bytes.extend(frame(0x80, &[0xc3]));
    s.write_all(&bytes).unwrap();
    assert_eq!(read_close_code(&mut s), Some(1007));
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let server = Server::start(&[]);
    let mut s = upgraded(server.addr, &server.path);
    // FIN + text, mask bit clear, 2-byte payload.
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("Close");
    assert_eq!(b0, 0x88, "an unmasked frame must not be echoed");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    assert!(closes_within(&mut s, Duration::from_secs(3)));
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
