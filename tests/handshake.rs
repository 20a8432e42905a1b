//! The HTTP upgrade of the real `wsloop` binary: every refusal with its exact status
//! and headers (a one-line body, then the socket closes) — also for a TLS ClientHello,
//! a request in one-byte writes, and a request head far over `--max-request` whose
//! client keeps sending; the upgrade path, origin policies and subprotocol choice;
//! requests that arrive in pieces or with frames right behind them.
//!
//! (The connection limits' 503 is tests/faults.rs's; what happens on an upgraded
//! connection is tests/echo.rs's and tests/closing.rs's.)

mod common;
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

/// Sends a request and expects 101 and a working echo on that socket.
fn assert_upgrades(addr: SocketAddr, request: &str) {
    let mut s = raw(addr);
    s.write_all(request.as_bytes()).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "request:\n{request}\nreply:\n{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    s.write_all(&frame(0x81, b"upgraded")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"upgraded".to_vec()));
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

struct Refusal {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Headers the response must carry, with exactly these values.
    headers: &'static [(&'static str, &'static str)],
}

fn refusal(
    name: &'static str,
    request: impl Into<Vec<u8>>,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> Refusal {
    Refusal {
        name,
        request: request.into(),
        status,
        headers,
    }
}

const ALLOW_GET: &[(&str, &str)] = &[("Allow", "GET")];
const UPGRADE_WS: &[(&str, &str)] = &[("Upgrade", "websocket")];
const VERSION_13: &[(&str, &str)] = &[("Sec-WebSocket-Version", "13")];

/// Every refusal of the default configuration, table-driven: the exact status and
/// headers, a one-line body that Content-Length measures, no Sec-WebSocket-Accept, the
/// socket closed after it, and a healthy client unaffected.
#[test]
fn refusals() {
    let server = Server::start(&[]);
    let (a, p) = (server.addr, server.path.clone());
    let req = |edit: &dyn Fn(String) -> String| request_with(a, &p, edit);
    let several_kib: String = (0..40)
        .map(|i| format!("X-Filler-{i:02}: {}\r\n", "v".repeat(240)))
        .collect();
    let many_lines: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = vec![
        // Not a WebSocket request, or not HTTP/1.1 at all: 400.
        refusal("not HTTP: hello", "hello\r\n\r\n", 400, &[]),
        refusal(
            "not HTTP: binary junk with a blank line",
            b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(),
            400,
            &[],
        ),
        refusal(
            "not HTTP: the start of a TLS record, then a blank line",
            "\x16\x03\x01\x02\x00garbage\r\n\r\n",
            400,
            &[],
        ),
        refusal(
            "request line without version",
            req(&|r| r.replacen(" HTTP/1.1", "", 1)),
            400,
            &[],
        ),
        refusal(
            "a header line without a colon",
            format!("GET {p} HTTP/1.1\r\nHost: {a}\r\nthis is not a header\r\n\r\n"),
            400,
            &[],
        ),
        refusal(
            "HTTP/1.0",
            req(&|r| r.replacen("HTTP/1.1", "HTTP/1.0", 1)),
            400,
            &[],
        ),
        refusal(
            "missing Host",
            req(&|r| r.replacen(&format!("Host: {a}\r\n"), "", 1)),
            400,
            &[],
        ),
        refusal(
            "missing Sec-WebSocket-Key",
            req(&|r| r.replacen(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "", 1)),
            400,
            &[],
        ),
        refusal(
            "malformed Sec-WebSocket-Key (not 16 bytes)",
            req(&|r| r.replacen(KEY, "c2hvcnQ=", 1)),
            400,
            &[],
        ),
        refusal(
            "malformed Sec-WebSocket-Key (too short, not base64 of 16 bytes)",
            req(&|r| r.replacen(KEY, "tooshort", 1)),
            400,
            &[],
        ),
        refusal(
            "malformed Sec-WebSocket-Key (bad base64)",
            req(&|r| r.replacen(KEY, "dGhlIHNhbXBsZSBub25j!!==", 1)),
            400,
            &[],
        ),
        refusal(
            "empty Sec-WebSocket-Key",
            req(&|r| r.replacen(KEY, "", 1)),
            400,
            &[],
        ),
        // Not GET: 405 with Allow.
        refusal(
            "POST",
            req(&|r| r.replacen("GET", "POST", 1)),
            405,
            ALLOW_GET,
        ),
        refusal(
            "POST with a body",
            format!("POST {p} HTTP/1.1\r\nHost: {a}\r\nContent-Length: 2\r\n\r\nhi"),
            405,
            ALLOW_GET,
        ),
        refusal(
            "HEAD",
            req(&|r| r.replacen("GET", "HEAD", 1)),
            405,
            ALLOW_GET,
        ),
        // Not an upgrade to WebSocket: 426 with Upgrade: websocket.
        refusal(
            "plain HTTP GET",
            format!("GET {p} HTTP/1.1\r\nHost: {a}\r\nAccept: text/html\r\n\r\n"),
            426,
            UPGRADE_WS,
        ),
        refusal(
            "missing Upgrade",
            req(&|r| r.replacen("Upgrade: websocket\r\n", "", 1)),
            426,
            UPGRADE_WS,
        ),
        refusal(
            "Upgrade: h2c",
            req(&|r| r.replacen("Upgrade: websocket", "Upgrade: h2c", 1)),
            426,
            UPGRADE_WS,
        ),
        refusal(
            "missing Connection",
            req(&|r| r.replacen("Connection: Upgrade\r\n", "", 1)),
            426,
            UPGRADE_WS,
        ),
        refusal(
            "Connection: keep-alive only",
            req(&|r| r.replacen("Connection: Upgrade", "Connection: keep-alive", 1)),
            426,
            UPGRADE_WS,
        ),
        // Another version: 426 with the one we speak.
        refusal(
            "Sec-WebSocket-Version 12",
            req(&|r| r.replacen("Version: 13", "Version: 12", 1)),
            426,
            VERSION_13,
        ),
        refusal(
            "missing Sec-WebSocket-Version",
            req(&|r| r.replacen("Sec-WebSocket-Version: 13\r\n", "", 1)),
            426,
            VERSION_13,
        ),
        // Another path: 404.
        refusal("path /nope", upgrade_request(a, "/nope", ""), 404, &[]),
        refusal(
            "path /ws/extra",
            upgrade_request(a, "/ws/extra", ""),
            404,
            &[],
        ),
        refusal("path /", upgrade_request(a, "/", ""), 404, &[]),
        // Over --max-request (8KiB): 431, without waiting for the end of the head.
        refusal(
            "several KiB of headers",
            upgrade_request(a, &p, &several_kib),
            431,
            &[],
        ),
        refusal(
            "one huge header (9000 bytes)",
            upgrade_request(a, &p, &format!("X-Huge: {}\r\n", "h".repeat(9000))),
            431,
            &[],
        ),
        refusal(
            "header block that never ends (20 KiB, no blank line)",
            format!(
                "GET {p} HTTP/1.1\r\nHost: {a}\r\nX-Endless: {}",
                "e".repeat(20_000)
            ),
            431,
            &[],
        ),
        refusal(
            "too many header lines (100 short ones)",
            upgrade_request(a, &p, &many_lines),
            431,
            &[],
        ),
    ];
    run_table(
        &server,
        &cases,
        |c| c.name.to_string(),
        |c| refused(a, &c.request, c.status, c.headers).map(drop),
    );
}

/// Requests at the edges of what is accepted: a query string on the path, and a
/// request head of exactly --max-request bytes.
#[test]
fn edge_requests_upgrade() {
    let server = Server::start(&[]);
    let a = server.addr;
    assert_upgrades(a, &upgrade_request(a, "/ws?room=1", ""));
    let base = upgrade_request(a, "/ws", "").len();
    let fill = 8192 - base - "X-Fill: \r\n".len();
    let fits = upgrade_request(a, "/ws", &format!("X-Fill: {}\r\n", "c".repeat(fill)));
    assert_eq!(fits.len(), 8192);
    assert_upgrades(a, &fits);
}

#[test]
fn max_request_flag_moves_the_431_limit() {
    let server = Server::start(&["--max-request", "1KiB"]);
    let a = server.addr;
    let big = format!("X-Big: {}\r\n", "a".repeat(1100));
    assert_refused(a, &upgrade_request(a, "/ws", &big), 431);
    assert_upgrades(a, &upgrade_request(a, "/ws", "X-Small: 1\r\n"));
}

/// A browser pointed `wss://` at this plain port sends a TLS ClientHello, which has no
/// CRLF at all. It can never become a valid request; the server owes the client a 400
/// (as it gives "hello\r\n\r\n") and should not hold the socket until the handshake
/// timeout.
#[test]
fn tls_client_hello_gets_400_at_once() {
    // Long handshake timeout so that "dropped at the timeout" is told apart from "answered".
    let server = Server::start(&["--handshake-timeout", "20s"]);
    let mut ok = connect(server.url());
    let got = refused(server.addr, &tls_client_hello(), 400, &[]);
    echo_ok(&mut ok, "TLS ClientHello").unwrap();
    if let Err(e) = got {
        panic!("TLS ClientHello: expected 400 within {ANSWER_WITHIN:?}: {e}");
    }
}

/// A request head far over --max-request whose client keeps sending (1 MiB of header
/// lines, from a writer thread) still gets its whole 431, then the end of the
/// connection: the server must not reset it while its data is unread (lingering close,
/// as in tests/closing.rs). Ten rounds: a lost answer shows only now and then.
#[test]
fn keeps_sending_over_max_request_still_gets_431() {
    let server = Server::start(&[]);
    let a = server.addr;
    let mut head = format!("GET {} HTTP/1.1\r\nHost: {a}\r\n", server.path).into_bytes();
    for i in 0.. {
        if head.len() >= 1 << 20 {
            break;
        }
        head.extend(format!("X-Filler-{i}: {}\r\n", "v".repeat(200)).into_bytes());
    }
    let rounds: Vec<usize> = (1..=10).collect();
    run_table(
        &server,
        &rounds,
        |r| format!("round {r} of 10"),
        |_| {
            let mut s = raw(a);
            let writer = keep_sending(&s, head.clone());
            let got = read_to_eof(&mut s, ANSWER_WITHIN)
                .and_then(|all| parse_reply(&all))
                .and_then(|r| check_refusal(&r, 431, &[]));
            let sent = writer.join().expect("writer thread");
            got.map_err(|e| format!("{e} (the client had sent {sent} of {} bytes)", head.len()))
        },
    );
}

#[test]
fn custom_path() {
    let server = Server::start(&["--path", "/chat"]);
    assert_eq!(server.path, "/chat");
    let a = server.addr;
    assert_refused(a, &upgrade_request(a, "/ws", ""), 404);
    assert_upgrades(a, &upgrade_request(a, "/chat", ""));
}

#[test]
fn default_policy_refuses_cross_origin_with_403() {
    let server = Server::start(&[]);
    let a = server.addr;
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "Origin: http://evil.example\r\n"),
        403,
    );
    // Same host, different port: a different origin.
    let other_port = format!("Origin: http://127.0.0.1:{}\r\n", a.port() ^ 1);
    assert_refused(a, &upgrade_request(a, "/ws", &other_port), 403);
    assert_refused(a, &upgrade_request(a, "/ws", "Origin: null\r\n"), 403);
    // Same origin as Host is allowed, and so is a request without Origin.
    assert_upgrades(
        a,
        &upgrade_request(a, "/ws", &format!("Origin: http://{a}\r\n")),
    );
    assert_upgrades(a, &upgrade_request(a, "/ws", ""));
}

#[test]
fn allow_origin_list() {
    let server = Server::start(&[
        "--allow-origin",
        "https://app.example",
        "--allow-origin",
        "http://other.example:8000",
    ]);
    let a = server.addr;
    assert_upgrades(
        a,
        &upgrade_request(a, "/ws", "Origin: https://app.example\r\n"),
    );
    assert_upgrades(
        a,
        &upgrade_request(a, "/ws", "Origin: http://other.example:8000\r\n"),
    );
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "Origin: https://evil.example\r\n"),
        403,
    );
    // Scheme matters.
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "Origin: http://app.example\r\n"),
        403,
    );
    // No Origin header: not a browser, allowed.
    assert_upgrades(a, &upgrade_request(a, "/ws", ""));
}

#[test]
fn allow_any_origin() {
    let server = Server::start(&["--allow-origin", "*"]);
    let a = server.addr;
    assert_upgrades(
        a,
        &upgrade_request(a, "/ws", "Origin: https://evil.example\r\n"),
    );
    assert_upgrades(a, &upgrade_request(a, "/ws", "Origin: null\r\n"));
    assert_upgrades(a, &upgrade_request(a, "/ws", ""));
}

fn client_with_protocols(url: &str, offer: &str) -> tungstenite::Result<Option<String>> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req)?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    set_client_timeout(&ws, Duration::from_secs(10));
    assert_echo(&mut ws, Message::text("sub"));
    Ok(chosen)
}

#[test]
fn subprotocol_follows_server_preference() {
    let server = Server::start(&["--subprotocol", "b", "--subprotocol", "a"]);
    let url = server.url();
    assert_eq!(
        client_with_protocols(&url, "a, b").unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(
        client_with_protocols(&url, "b, a").unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(
        client_with_protocols(&url, "a").unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(
        client_with_protocols(&url, "c, a").unwrap().as_deref(),
        Some("a")
    );
}

#[test]
fn unknown_subprotocol_gets_none() {
    let server = Server::start(&["--subprotocol", "b", "--subprotocol", "a"]);
    let a = server.addr;
    // tungstenite's client insists on getting one of its offers back, so the reply
    // without the header surfaces as NoSubProtocol: that is the server choosing none.
    match client_with_protocols(&server.url(), "c") {
        Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                tungstenite::error::SubProtocolError::NoSubProtocol,
            ),
        )) => {}
        other => panic!("expected no subprotocol in the reply, got {other:?}"),
    }
    // On the wire: 101, no Sec-WebSocket-Protocol header, and the socket works.
    let mut s = raw(a);
    s.write_all(upgrade_request(a, "/ws", "Sec-WebSocket-Protocol: c\r\n").as_bytes())
        .unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "no subprotocol expected: {head}"
    );
    s.write_all(&frame(0x81, b"none")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"none".to_vec()));
    // Without --subprotocol, an offer gets nothing either.
    let plain = Server::start(&[]);
    let mut s = raw(plain.addr);
    s.write_all(upgrade_request(plain.addr, "/ws", "Sec-WebSocket-Protocol: a\r\n").as_bytes())
        .unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
}

#[test]
fn request_in_one_byte_writes_upgrades() {
    let server = Server::start(&[]);
    let mut ok = connect(server.url());
    let mut s = raw(server.addr);
    let started = Instant::now();
    for b in upgrade_request(server.addr, &server.path, "").as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        // Give each byte its own segment (nodelay is set; a pause keeps them apart).
        std::thread::sleep(Duration::from_millis(1));
    }
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    s.write_all(&frame(0x81, b"trickled")).unwrap();
    expect_frame(&mut s, 0x81, b"trickled").unwrap();
    echo_ok(&mut ok, "1-byte request").unwrap();
}

#[test]
fn refusal_in_one_byte_writes() {
    let server = Server::start(&[]);
    let a = server.addr;
    let mut s = raw(a);
    for b in upgrade_request(a, "/other", "").as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 404, "{head}");
}

/// Bytes right behind the request (in the same write) are the first frames: whole
/// ones are echoed (a Ping answered) after the 101, and a frame cut short completes
/// with the next write.
#[test]
fn frames_right_behind_the_request_are_the_first_frames() {
    let server = Server::start(&[]);
    let mut ok = connect(server.url());
    let mut s = raw(server.addr);
    let mut bytes = upgrade_request(server.addr, &server.path, "").into_bytes();
    bytes.extend(frame(0x81, b"eager"));
    bytes.extend(frame(0x82, &[7u8; 300]));
    bytes.extend(frame(0x89, b"p"));
    // And half of a fourth frame, completed after the 101.
    let fourth = frame(0x81, b"completed later");
    bytes.extend_from_slice(&fourth[..5]);
    s.write_all(&bytes).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    expect_frame(&mut s, 0x81, b"eager").unwrap();
    expect_frame(&mut s, 0x82, &[7u8; 300]).unwrap();
    expect_frame(&mut s, 0x8a, b"p").unwrap();
    s.write_all(&fourth[5..]).unwrap();
    expect_frame(&mut s, 0x81, b"completed later").unwrap();
    echo_ok(&mut ok, "bytes after request").unwrap();
}
