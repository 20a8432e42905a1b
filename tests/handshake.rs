//! The HTTP upgrade of the real `wsloop` binary: every rejection with its exact
//! status (and a one-line body, then the socket closes), origin policies, the
//! connection limit, subprotocol choice, and requests that arrive in pieces or with
//! frames right behind them.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

/// A parsed HTTP error reply.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request`, reads the reply, and asserts the server then closes the socket
/// (EOF or reset within 5 s, not a read timeout).
fn send(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = raw(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A server that answers early may reset the rest of a big write; the reply
    // still arrives first.
    let _ = s.write_all(request);
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&all).into_owned();
    assert!(closed, "server did not close the socket after:\n{text}");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let status = status_of(head);
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Asserts `request` is refused with `status` and a well-formed one-line body.
fn assert_refused(addr: SocketAddr, request: &str, status: u16) -> Reply {
    let r = send(addr, request.as_bytes());
    assert_eq!(r.status, status, "request:\n{request}\nreply:\n{}", r.head);
    assert!(r.head.starts_with("HTTP/1.1 "), "{}", r.head);
    assert!(
        !r.body.is_empty() && r.body.ends_with('\n') && r.body.matches('\n').count() == 1,
        "body must be one line of text: {:?}",
        r.body
    );
    let len: usize = r
        .header("Content-Length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(len, r.body.len(), "Content-Length matches the body");
    assert!(
        r.header("Sec-WebSocket-Accept").is_none(),
        "a refusal must not accept"
    );
    r
}

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

#[test]
fn wrong_path_is_404() {
    let server = Server::start(&[]);
    let a = server.addr;
    assert_refused(a, &upgrade_request(a, "/nope", ""), 404);
    assert_refused(a, &upgrade_request(a, "/ws/extra", ""), 404);
    assert_refused(a, &upgrade_request(a, "/", ""), 404);
    // A query string on the right path is fine.
    assert_upgrades(a, &upgrade_request(a, "/ws?room=1", ""));
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

#[test]
fn plain_http_get_is_426() {
    let server = Server::start(&[]);
    let a = server.addr;
    let r = assert_refused(
        a,
        &format!("GET /ws HTTP/1.1\r\nHost: {a}\r\nAccept: text/html\r\n\r\n"),
        426,
    );
    assert_eq!(r.header("Upgrade"), Some("websocket"), "{}", r.head);
    // Upgrade to something else, or no Connection: Upgrade, is not WebSocket either.
    let h2c = upgrade_request(a, "/ws", "").replace("Upgrade: websocket", "Upgrade: h2c");
    assert_refused(a, &h2c, 426);
    let no_conn =
        upgrade_request(a, "/ws", "").replace("Connection: Upgrade", "Connection: keep-alive");
    assert_refused(a, &no_conn, 426);
}

#[test]
fn version_12_is_426_with_version_13_header() {
    let server = Server::start(&[]);
    let a = server.addr;
    let req = upgrade_request(a, "/ws", "").replace("Version: 13", "Version: 12");
    let r = assert_refused(a, &req, 426);
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"), "{}", r.head);
    let missing = upgrade_request(a, "/ws", "").replace("Sec-WebSocket-Version: 13\r\n", "");
    let r = assert_refused(a, &missing, 426);
    assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"), "{}", r.head);
}

#[test]
fn malformed_requests_are_400() {
    let server = Server::start(&[]);
    let a = server.addr;
    // Not HTTP at all (a TLS ClientHello start).
    assert_refused(a, "\x16\x03\x01\x02\x00garbage\r\n\r\n", 400);
    // A header line without a colon.
    assert_refused(
        a,
        &format!("GET /ws HTTP/1.1\r\nHost: {a}\r\nthis is not a header\r\n\r\n"),
        400,
    );
    // HTTP/1.0.
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "").replace("HTTP/1.1", "HTTP/1.0"),
        400,
    );
    // No Host.
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "").replace(&format!("Host: {a}\r\n"), ""),
        400,
    );
    // Bad or missing key.
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "").replace(KEY, "tooshort"),
        400,
    );
    assert_refused(
        a,
        &upgrade_request(a, "/ws", "").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
        400,
    );
}

#[test]
fn big_headers_are_431() {
    let server = Server::start(&[]);
    let a = server.addr;
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    assert_refused(a, &upgrade_request(a, "/ws", &big), 431);
    // Headers that never end, past the limit: refused without waiting for the end.
    let endless = format!(
        "GET /ws HTTP/1.1\r\nHost: {a}\r\nX-Junk: {}",
        "b".repeat(10_000)
    );
    assert_refused(a, &endless, 431);
    // Just under the limit is fine.
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

#[test]
fn post_is_405() {
    let server = Server::start(&[]);
    let a = server.addr;
    let r = assert_refused(
        a,
        &upgrade_request(a, "/ws", "").replacen("GET", "POST", 1),
        405,
    );
    assert_eq!(r.header("Allow"), Some("GET"), "{}", r.head);
    let body = format!("POST /ws HTTP/1.1\r\nHost: {a}\r\nContent-Length: 2\r\n\r\nhi");
    assert_refused(a, &body, 405);
}

#[test]
fn over_max_connections_is_503_until_one_closes() {
    let server = Server::start(&["--max-connections", "2"]);
    let a = server.addr;
    let mut first = connect(&server.url());
    let mut second = connect(&server.url());
    assert_echo(&mut first, Message::text("1"));
    assert_echo(&mut second, Message::text("2"));
    let r = assert_refused(a, &upgrade_request(a, "/ws", ""), 503);
    assert!(r.header("Retry-After").is_some(), "{}", r.head);
    // tungstenite's client sees the refusal too.
    match tungstenite::connect(server.url()) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        Err(e) => panic!("expected HTTP 503, got {e}"),
        Ok(_) => panic!("a third connection was accepted with --max-connections 2"),
    }
    // The two open clients are unaffected.
    assert_echo(&mut first, Message::text("still 1"));
    assert_echo(&mut second, Message::text("still 2"));
    // Close one; a new client gets in again.
    second.close(None).unwrap();
    while second.read().is_ok() {}
    let mut got_in = None;
    let ok = wait_until(Duration::from_secs(5), || {
        let mut s = raw(a);
        s.write_all(upgrade_request(a, "/ws", "").as_bytes())
            .unwrap();
        let (status, _) = read_head(&mut s);
        if status == 101 {
            got_in = Some(s);
            true
        } else {
            assert_eq!(status, 503, "only 503 is expected while the slot frees up");
            false
        }
    });
    assert!(ok, "no new connection accepted after one of two closed");
    let mut s = got_in.unwrap();
    s.write_all(&frame(0x81, b"third")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"third".to_vec()));
    assert_echo(&mut first, Message::text("first still fine"));
    // And now, with 2 open again, the next one is refused.
    assert_refused(a, &upgrade_request(a, "/ws", ""), 503);
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
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
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
fn request_in_one_byte_writes_still_upgrades() {
    let server = Server::start(&[]);
    let a = server.addr;
    let mut s = raw(a);
    let req = upgrade_request(a, "/ws", "");
    let started = Instant::now();
    for b in req.as_bytes() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A frame in 1-byte writes too.
    for b in frame(0x81, b"trickle") {
        s.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"trickle".to_vec()));
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

#[test]
fn frames_sent_with_the_request_are_echoed() {
    let server = Server::start(&[]);
    let a = server.addr;
    let mut s = raw(a);
    let mut bytes = upgrade_request(a, "/ws", "").into_bytes();
    bytes.extend(frame(0x81, b"early"));
    bytes.extend(frame(0x82, &[1, 2, 3]));
    bytes.extend(frame(0x89, b"p"));
    s.write_all(&bytes).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"early".to_vec()));
    assert_eq!(read_frame(&mut s).unwrap(), (0x82, vec![1, 2, 3]));
    assert_eq!(read_frame(&mut s).unwrap(), (0x8a, b"p".to_vec()));
}

#[test]
fn partial_frame_sent_with_the_request_completes_later() {
    let server = Server::start(&[]);
    let a = server.addr;
    let mut s = raw(a);
    let f = frame(0x81, b"split across writes");
    let mut bytes = upgrade_request(a, "/ws", "").into_bytes();
    bytes.extend_from_slice(&f[..5]);
    s.write_all(&bytes).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    s.write_all(&f[5..]).unwrap();
    assert_eq!(
        read_frame(&mut s).unwrap(),
        (0x81, b"split across writes".to_vec())
    );
}
