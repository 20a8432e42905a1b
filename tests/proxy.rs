//! The PROXY protocol (`--proxy-from`): from a listed address, the v1 or v2 header
//! names the client, whom per-IP limits and logs then see; a missing, malformed or
//! truncated header drops that connection alone; from an unlisted address a header
//! is not honoured.

mod common;
use common::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::Message;

fn v1(client: &str) -> Vec<u8> {
    let (ip, port) = client.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 80\r\n").into_bytes()
}

/// A v2 header: PROXY (or LOCAL) over TCP/IPv4.
fn v2(client: SocketAddr, local: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    if local {
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return h;
    }
    let SocketAddr::V4(c) = client else {
        panic!("v4 only")
    };
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

/// A connection that sends `header` and then asks for the upgrade: the HTTP status.
fn through_proxy(server: &Server, header: &[u8]) -> (u16, TcpStream) {
    let mut s = raw(server.addr);
    s.write_all(header).unwrap();
    let status = request_upgrade(&mut s, server.addr, &server.path);
    (status, s)
}

fn echoes(s: &mut TcpStream, text: &[u8]) {
    s.write_all(&frame(0x81, text)).unwrap();
    assert_eq!(read_frame(s).unwrap(), (0x81, text.to_vec()));
}

#[test]
fn per_ip_limits_and_logs_see_the_client_named_by_the_header() {
    let server = Server::start(&[
        "--proxy-from",
        "127.0.0.0/8",
        "--max-connections-per-ip",
        "1",
    ]);
    let (status, mut a) = through_proxy(&server, &v1("203.0.113.7:40000"));
    assert_eq!(status, 101);
    echoes(&mut a, b"v1");
    assert!(server.wait_logged("203.0.113.7:40000"));
    // The same client through another proxy connection, in v2: over its limit.
    let same = v2("203.0.113.7:40001".parse().unwrap(), false);
    assert_eq!(through_proxy(&server, &same).0, 503);
    // Another client through the same proxy is let in.
    let (status, mut c) = through_proxy(&server, &v2("198.51.100.9:5000".parse().unwrap(), false));
    assert_eq!(status, 101);
    echoes(&mut c, b"v2");
    assert!(server.wait_logged("198.51.100.9:5000"));
    // LOCAL (a proxy's own health check) keeps the socket's address.
    let (status, mut d) = through_proxy(&server, &v2("0.0.0.0:0".parse().unwrap(), true));
    assert_eq!(status, 101);
    echoes(&mut d, b"local");
    echoes(&mut a, b"still there");
}

#[test]
fn missing_malformed_or_truncated_headers_drop_that_connection_alone() {
    let server = Server::start(&["--proxy-from", "127.0.0.1", "--handshake-timeout", "1s"]);
    let (status, mut healthy) = through_proxy(&server, &v1("192.0.2.1:1000"));
    assert_eq!(status, 101);
    let request = upgrade_request(server.addr, &server.path, "");
    let mut truncated_v2 = v2("192.0.2.2:1000".parse().unwrap(), false);
    truncated_v2.truncate(20);
    let mut bad_version = v2("192.0.2.3:1000".parse().unwrap(), false);
    bad_version[12] = 0x31;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", request.clone().into_bytes()),
        ("malformed v1", b"PROXY TCP4 nonsense\r\n".to_vec()),
        (
            "v1 unknown protocol",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        ),
        ("bad v2 version", bad_version),
        ("truncated v1", b"PROXY TCP4 192.0.2.9 127.0.0.1".to_vec()),
        ("truncated v2", truncated_v2),
        (
            "overlong v1",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
        ),
    ];
    for (name, bytes) in cases {
        let mut s = raw(server.addr);
        s.write_all(&bytes).unwrap();
        // Nothing comes back, not even an HTTP error: the socket is closed.
        let got =
            read_to_eof(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got.is_empty(),
            "{name}: got {:?}",
            String::from_utf8_lossy(&got)
        );
        echoes(&mut healthy, name.as_bytes());
    }
    assert!(server.wait_logged("no valid PROXY header"));
    assert!(server.wait_logged("no PROXY header in time"));
}

#[test]
fn a_header_from_an_unlisted_address_is_not_honoured() {
    let server = Server::start(&["--proxy-from", "10.0.0.0/8"]);
    assert_eq!(through_proxy(&server, &v1("203.0.113.7:40000")).0, 400);
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("no proxy needed from here"));
    assert!(!server.logged("203.0.113.7"));
}

#[test]
fn bad_proxy_ranges_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--proxy-from", "10.0.0.0/33"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.0/33"));
}
