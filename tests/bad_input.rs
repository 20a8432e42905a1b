//! Bad input, table-driven: malformed upgrade requests, protocol violations in frames,
//! and misbehaving connections. Every case asserts the server's exact answer (HTTP
//! status and headers, or WebSocket close code followed by the end of the TCP
//! connection) AND that a healthy tungstenite client, connected to the same server
//! before the case ran, still gets its echo afterwards.
//!
//! Cases within a table run one after another on one server; failures are collected
//! and reported together, so one run shows every case that is wrong.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// How long any single answer may take (the server answers bad input at once).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------------

/// A healthy client: connected before a case, it must echo after it.
fn healthy(server: &Server) -> Client {
    connect(&server.url())
}

/// Echo check that reports instead of panicking, so a table can go on.
fn echo_ok(ws: &mut Client, tag: &str) -> Result<(), String> {
    let msg = Message::text(format!("still alive after {tag}"));
    ws.send(msg.clone())
        .map_err(|e| format!("healthy client: send failed: {e}"))?;
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(got) if got == msg => return Ok(()),
            Ok(got) => return Err(format!("healthy client: wrong echo {got:?}")),
            Err(e) => return Err(format!("healthy client: read failed: {e}")),
        }
    }
}

/// Writes everything, tolerating the server closing early (it may answer and close
/// before reading the rest of an oversized request).
fn send_lossy(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Reads until EOF (or reset) within `ANSWER_WITHIN`. Err if the server kept the
/// connection open.
fn read_to_end_bounded(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {ANSWER_WITHIN:?} (got {} bytes: {:?})",
                all.len(),
                String::from_utf8_lossy(&all[..all.len().min(200)])
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(all),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// Checks that the server has ended the TCP connection (EOF or reset, nothing more).
fn expect_eof(s: &mut TcpStream) -> Result<(), String> {
    let rest = read_to_end_bounded(s)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} unexpected bytes before EOF: {rest:x?}",
            rest.len()
        ))
    }
}

/// Parses an HTTP response: status and the head.
fn parse_status(text: &str) -> u16 {
    if !text.starts_with("HTTP/1.1 ") {
        return 0;
    }
    status_of(text)
}

/// One frame from the server, with a bound on the wait.
fn next_frame(s: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    read_frame(s).map_err(|e| format!("no frame from server: {e}"))
}

/// Expects the next server frame to be a Close with `code`, then the end of TCP.
fn expect_close(s: &mut TcpStream, code: u16) -> Result<(), String> {
    let (b0, payload) = next_frame(s)?;
    if b0 != 0x88 {
        return Err(format!(
            "expected Close {code}, got frame {b0:#04x} with {} bytes {:?}",
            payload.len(),
            String::from_utf8_lossy(&payload[..payload.len().min(60)])
        ));
    }
    let got = if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    };
    if got != code {
        return Err(format!(
            "expected close code {code}, got {got} ({:?})",
            String::from_utf8_lossy(&payload[2.min(payload.len())..])
        ));
    }
    expect_eof(s).map_err(|e| format!("after Close {code}: {e}"))
}

/// Expects the next server frame to be exactly `b0` with `payload`.
fn expect_frame(s: &mut TcpStream, b0: u8, payload: &[u8]) -> Result<(), String> {
    let (g0, got) = next_frame(s)?;
    if g0 != b0 || got != payload {
        return Err(format!(
            "expected frame {b0:#04x} with {} bytes, got {g0:#04x} with {} bytes {:?}",
            payload.len(),
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(60)])
        ));
    }
    Ok(())
}

/// Runs each case with a fresh healthy client; panics with every failure at the end.
fn run_table<C>(
    server: &Server,
    cases: &[C],
    name: impl Fn(&C) -> String,
    run: impl Fn(&C) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for case in cases {
        let tag = name(case);
        let mut ok = healthy(server);
        if let Err(e) = run(case) {
            failures.push(format!("{tag}: {e}"));
        }
        if let Err(e) = echo_ok(&mut ok, &tag) {
            failures.push(format!("{tag}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

/// A request that is valid except for `edit` applied to the text.
fn request_with(addr: SocketAddr, path: &str, edit: impl Fn(String) -> String) -> Vec<u8> {
    edit(upgrade_request(addr, path, "")).into_bytes()
}

/// A TLS 1.2/1.3 ClientHello (record + handshake header, random, session id, cipher
/// suites, compression, SNI and supported_versions extensions), as a browser would send
/// to a `wss://` URL pointed at this plain-text port. Contains no CR or LF.
fn tls_client_hello() -> Vec<u8> {
    let host = b"localhost";
    let mut ext = Vec::new();
    // server_name
    let sni_len = host.len() + 5;
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(sni_len as u16).to_be_bytes());
    ext.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(host.len() as u16).to_be_bytes());
    ext.extend_from_slice(host);
    // supported_versions: TLS 1.3, 1.2
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    let mut body = vec![0x03, 0x03];
    body.extend((0..32u8).map(|i| 0x80 + i.wrapping_mul(37) % 0x80));
    body.push(32);
    body.extend((0..32u8).map(|i| 0x80 + i.wrapping_mul(11) % 0x80));
    let suites = [
        0x13u8, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f, 0xcc, 0xa9,
    ];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    assert!(!rec.contains(&b'\n') && !rec.contains(&b'\r'), "{rec:x?}");
    rec
}

// ---------------------------------------------------------------------------------
// HTTP: the upgrade request.
// ---------------------------------------------------------------------------------

struct HttpCase {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Header lines the response must contain.
    headers: &'static [&'static str],
}

#[test]
fn http_rejections() {
    let server = Server::start(&[]);
    let (a, p) = (server.addr, server.path.clone());
    let req = |edit: &dyn Fn(String) -> String| request_with(a, &p, edit);
    let several_kib: String = (0..40)
        .map(|i| format!("X-Filler-{i:02}: {}\r\n", "v".repeat(240)))
        .collect();
    let huge_header = format!("X-Huge: {}\r\n", "h".repeat(9000));
    let cases = vec![
        HttpCase {
            name: "not HTTP: hello",
            request: b"hello\r\n\r\n".to_vec(),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "not HTTP: binary junk with a blank line",
            request: b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "request line without version",
            request: req(&|r| r.replacen(" HTTP/1.1", "", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "POST",
            request: req(&|r| r.replacen("GET", "POST", 1)),
            status: 405,
            headers: &["Allow: GET"],
        },
        HttpCase {
            name: "HEAD",
            request: req(&|r| r.replacen("GET", "HEAD", 1)),
            status: 405,
            headers: &["Allow: GET"],
        },
        HttpCase {
            name: "HTTP/1.0",
            request: req(&|r| r.replacen("HTTP/1.1", "HTTP/1.0", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "missing Host",
            request: req(&|r| r.replacen(&format!("Host: {a}\r\n"), "", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "missing Upgrade",
            request: req(&|r| r.replacen("Upgrade: websocket\r\n", "", 1)),
            status: 426,
            headers: &["Upgrade: websocket"],
        },
        HttpCase {
            name: "wrong Upgrade",
            request: req(&|r| r.replacen("Upgrade: websocket", "Upgrade: h2c", 1)),
            status: 426,
            headers: &["Upgrade: websocket"],
        },
        HttpCase {
            name: "missing Connection",
            request: req(&|r| r.replacen("Connection: Upgrade\r\n", "", 1)),
            status: 426,
            headers: &["Upgrade: websocket"],
        },
        HttpCase {
            name: "Connection: keep-alive only",
            request: req(&|r| r.replacen("Connection: Upgrade", "Connection: keep-alive", 1)),
            status: 426,
            headers: &["Upgrade: websocket"],
        },
        HttpCase {
            name: "Sec-WebSocket-Version 12",
            request: req(&|r| r.replacen("Version: 13", "Version: 12", 1)),
            status: 426,
            headers: &["Sec-WebSocket-Version: 13"],
        },
        HttpCase {
            name: "missing Sec-WebSocket-Version",
            request: req(&|r| r.replacen("Sec-WebSocket-Version: 13\r\n", "", 1)),
            status: 426,
            headers: &["Sec-WebSocket-Version: 13"],
        },
        HttpCase {
            name: "missing Sec-WebSocket-Key",
            request: req(&|r| r.replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "malformed Sec-WebSocket-Key (not 16 bytes)",
            request: req(&|r| r.replacen(KEY, "c2hvcnQ=", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "malformed Sec-WebSocket-Key (bad base64)",
            request: req(&|r| r.replacen(KEY, "dGhlIHNhbXBsZSBub25j!!==", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "empty Sec-WebSocket-Key",
            request: req(&|r| r.replacen(KEY, "", 1)),
            status: 400,
            headers: &[],
        },
        HttpCase {
            name: "wrong path",
            request: req(&|r| r.replacen(&format!("GET {p} "), "GET /nope ", 1)),
            status: 404,
            headers: &[],
        },
        HttpCase {
            name: "several KiB of headers (over --max-request 8KiB)",
            request: upgrade_request(a, &p, &several_kib).into_bytes(),
            status: 431,
            headers: &[],
        },
        HttpCase {
            name: "one huge header (9000 bytes)",
            request: upgrade_request(a, &p, &huge_header).into_bytes(),
            status: 431,
            headers: &[],
        },
        HttpCase {
            name: "header block that never ends (20 KiB, no blank line)",
            request: format!(
                "GET {p} HTTP/1.1\r\nHost: {a}\r\nX-Endless: {}",
                "e".repeat(20_000)
            )
            .into_bytes(),
            status: 431,
            headers: &[],
        },
        HttpCase {
            name: "too many header lines (100 short ones)",
            request: upgrade_request(
                a,
                &p,
                &(0..100)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>(),
            )
            .into_bytes(),
            status: 431,
            headers: &[],
        },
    ];
    run_table(
        &server,
        &cases,
        |c| c.name.to_string(),
        |c| {
            let mut s = raw(server.addr);
            send_lossy(&mut s, &c.request);
            let all = read_to_end_bounded(&mut s)?;
            let text = String::from_utf8_lossy(&all).into_owned();
            let status = parse_status(&text);
            if status != c.status {
                return Err(format!(
                    "expected {}, got {status}: {:?}",
                    c.status,
                    &text[..text.len().min(300)]
                ));
            }
            let head = text.split("\r\n\r\n").next().unwrap_or("");
            for h in c.headers {
                if !head.lines().any(|l| l.eq_ignore_ascii_case(h)) {
                    return Err(format!("response lacks {h:?}: {head:?}"));
                }
            }
            // The response is well formed: Content-Length matches the body.
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                let body = text.len() - head.len() - 4;
                if body != len {
                    return Err(format!("Content-Length {len} but body of {body} bytes"));
                }
            }
            Ok(())
        },
    );
}

/// A browser pointed `wss://` at this plain port sends a TLS ClientHello, which has no
/// CRLF at all. It can never become a valid request; the server owes the client a 400
/// (as it gives "hello\r\n\r\n") and should not hold the socket until the handshake
/// timeout.
#[test]
fn http_tls_client_hello_gets_400_at_once() {
    // Long handshake timeout so that "dropped at the timeout" is told apart from "answered".
    let server = Server::start(&["--handshake-timeout", "20s"]);
    let mut ok = healthy(&server);
    let mut s = raw(server.addr);
    let t0 = Instant::now();
    s.write_all(&tls_client_hello()).unwrap();
    let got = read_to_end_bounded(&mut s);
    let took = t0.elapsed();
    echo_ok(&mut ok, "TLS ClientHello").unwrap();
    let all = got.unwrap_or_else(|e| {
        panic!("TLS ClientHello: expected 400 within {ANSWER_WITHIN:?}, observed: {e}")
    });
    let text = String::from_utf8_lossy(&all);
    assert_eq!(parse_status(&text), 400, "after {took:?}: {text:?}");
}

#[test]
fn http_request_in_one_byte_writes_upgrades() {
    let server = Server::start(&[]);
    let mut ok = healthy(&server);
    let mut s = raw(server.addr);
    let req = upgrade_request(server.addr, &server.path, "");
    for b in req.as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        // Give each byte its own segment (nodelay is set; a pause keeps them apart).
        std::thread::sleep(Duration::from_micros(200));
    }
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    s.write_all(&frame(0x81, b"trickled")).unwrap();
    expect_frame(&mut s, 0x81, b"trickled").unwrap();
    echo_ok(&mut ok, "1-byte request").unwrap();
}

#[test]
fn http_bytes_after_request_are_the_first_frame() {
    let server = Server::start(&[]);
    let mut ok = healthy(&server);
    let mut s = raw(server.addr);
    let mut bytes = upgrade_request(server.addr, &server.path, "").into_bytes();
    bytes.extend(frame(0x81, b"eager"));
    bytes.extend(frame(0x82, &[7u8; 300]));
    // And half of a third frame, completed after the 101.
    let third = frame(0x81, b"completed later");
    bytes.extend_from_slice(&third[..5]);
    s.write_all(&bytes).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    expect_frame(&mut s, 0x81, b"eager").unwrap();
    expect_frame(&mut s, 0x82, &[7u8; 300]).unwrap();
    s.write_all(&third[5..]).unwrap();
    expect_frame(&mut s, 0x81, b"completed later").unwrap();
    echo_ok(&mut ok, "bytes after request").unwrap();
}

// ---------------------------------------------------------------------------------
// Frames on an upgraded raw socket.
// ---------------------------------------------------------------------------------

struct FrameCase {
    name: String,
    /// Sent right after the upgrade.
    bytes: Vec<u8>,
    /// Echo frames (first byte, payload) expected before the Close.
    echoes: Vec<(u8, Vec<u8>)>,
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

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Runs frame cases on one server (default limits: 16 MiB frame and message).
fn run_frame_cases(server: &Server, cases: &[FrameCase]) {
    run_table(
        server,
        cases,
        |c| c.name.clone(),
        |c| {
            let mut s = upgraded(server.addr, &server.path);
            send_lossy(&mut s, &c.bytes);
            for (b0, payload) in &c.echoes {
                expect_frame(&mut s, *b0, payload)?;
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
        fc(
            "64-bit length 2^40 (header only, over max frame)",
            cat(&[
                vec![0x82, 0x80 | 127],
                (1u64 << 40).to_be_bytes().to_vec(),
                vec![1, 2, 3, 4],
            ]),
            1009,
        ),
        fc(
            "64-bit length max_frame + 1 (header only)",
            cat(&[
                vec![0x82, 0x80 | 127],
                ((16u64 << 20) + 1).to_be_bytes().to_vec(),
                vec![1, 2, 3, 4],
            ]),
            1009,
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

/// Valid close codes are echoed back (RFC 6455 5.5.1) and the connection ends.
#[test]
fn valid_close_codes_are_echoed() {
    let server = Server::start(&[]);
    let cases: Vec<FrameCase> = [1000u16, 1001, 1003, 1007, 1011, 3000, 4999]
        .into_iter()
        .map(|code| {
            fc(
                format!("close {code}"),
                frame(0x88, &close_payload(code, b"bye")),
                code,
            )
        })
        .chain(std::iter::once(FrameCase {
            name: "empty close".into(),
            bytes: frame(0x88, b""),
            echoes: vec![],
            close: 1005,
        }))
        .collect();
    run_frame_cases(&server, &cases);
}

/// A frame header claiming more than max_frame: answered with 1009 at once, before any
/// payload, and the claimed length is never allocated.
#[test]
fn oversized_frame_header_answered_at_once_without_allocating() {
    let server = Server::start(&["--max-frame", "16MiB", "--max-message", "64MiB"]);
    let mut ok = healthy(&server);
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
    let mut ok = healthy(&small);
    let mut s = upgraded(small.addr, &small.path);
    s.write_all(&[0x82, 0x80 | 126, 0x04, 0x01]).unwrap();
    expect_close(&mut s, 1009).unwrap();
    // Exactly at the limit is echoed.
    let mut s = upgraded(small.addr, &small.path);
    s.write_all(&frame(0x82, &[5u8; 1024])).unwrap();
    expect_frame(&mut s, 0x82, &[5u8; 1024]).unwrap();
    echo_ok(&mut ok, "16-bit over limit").unwrap();
}

/// Many small fragments adding up to more than max_message: 1009.
#[test]
fn message_over_limit_from_small_fragments() {
    let server = Server::start(&["--max-message", "64KiB", "--max-frame", "64KiB"]);
    let cases = vec![
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
            // Exactly at the limit is fine and echoed, one byte more is not.
            let mut b = frame(0x02, &[3u8; 32 * 1024]);
            b.extend(frame(0x80, &[3u8; 32 * 1024]));
            b.extend(frame(0x02, &[4u8; 32 * 1024]));
            b.extend(frame(0x00, &[4u8; 32 * 1024]));
            b.extend(frame(0x80, &[4u8; 1]));
            FrameCase {
                name: "exactly max_message echoed, max_message + 1 is 1009".into(),
                bytes: b,
                echoes: vec![(0x82, vec![3u8; 64 * 1024])],
                close: 1009,
            }
        },
    ];
    run_frame_cases(&server, &cases);
}

// ---------------------------------------------------------------------------------
// Connection behaviour.
// ---------------------------------------------------------------------------------

#[test]
fn data_after_client_close_is_ignored() {
    let server = Server::start(&[]);
    let mut ok = healthy(&server);
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
        let mut bytes = frame(0x88, &close_payload(1000, b"done"));
        if i == 0 {
            s.write_all(&bytes).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            send_lossy(&mut s, &trailing);
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
    let victim = upgrade_within(server, Duration::from_secs(2))
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
    let mut probe = upgrade_within(server, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{what}: slot not freed within 3 s"));
    echo_ok(ok, what).unwrap();
    // Give the slot back deterministically: a clean close, then the server's EOF.
    probe
        .write_all(&frame(0x88, &close_payload(1000, b"")))
        .unwrap();
    expect_close(&mut probe, 1000).unwrap();
}

/// A socket upgraded within `within` (retrying while the answer is 503).
fn upgrade_within(server: &Server, within: Duration) -> Option<TcpStream> {
    let mut got = None;
    wait_until(within, || {
        let mut s = raw(server.addr);
        s.write_all(upgrade_request(server.addr, &server.path, "").as_bytes())
            .unwrap();
        if read_head(&mut s).0 == 101 {
            got = Some(s);
        }
        got.is_some()
    });
    got
}

#[test]
fn tcp_close_without_close_frame_frees_the_slot() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut ok = healthy(&server);
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
    let answer = read_to_end_bounded(&mut s).expect("half a request and a FIN: closed at once");
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
    let server = Server::start(&["--max-connections", "2"]);
    let mut ok = healthy(&server);
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
    assert!(server_alive(&server));
}

fn server_alive(server: &Server) -> bool {
    std::fs::metadata(format!("/proc/{}/status", server.pid())).is_ok()
        && !std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
            .unwrap_or_default()
            .contains("State:\tZ")
}

#[test]
fn message_written_byte_by_byte_is_echoed() {
    let server = Server::start(&[]);
    let mut ok = healthy(&server);
    let mut s = upgraded(server.addr, &server.path);
    let text = "héllo wörld € 𝄞 ".repeat(12); // > 125 bytes: 16-bit length
    let mut bytes = frame(0x81, text.as_bytes());
    // A fragmented message with a ping in the middle, also byte by byte.
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
    // Then a clean close.
    s.write_all(&frame(0x88, &close_payload(1000, b"")))
        .unwrap();
    expect_close(&mut s, 1000).unwrap();
    echo_ok(&mut ok, "byte by byte").unwrap();
}
