//! `--metrics-listen`: Prometheus text from the same loop, and the numbers move.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (status_of(&body), body)
}

/// The metrics endpoint's address, from the server's log.
fn metrics_addr(server: &Server) -> SocketAddr {
    let mut addr = None;
    let found = wait_until(Duration::from_secs(5), || {
        addr = server.logs.lock().unwrap().iter().find_map(|l| {
            l.split("metrics on http://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        });
        addr.is_some()
    });
    assert!(found, "no metrics address in the server's log");
    addr.unwrap()
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_with_traffic() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);

    let (status, before) = scrape(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(before.contains("# TYPE wsloop_messages_in_total counter"));
    assert_eq!(value(&before, "wsloop_messages_in_total"), 0);
    assert_eq!(scrape(addr, "/other").0, 404);

    let mut ws = connect(server.url());
    for i in 0..10 {
        assert_echo(&mut ws, Message::text(format!("message {i}")));
    }
    assert_eq!(
        http(
            server.addr,
            upgrade_request(server.addr, "/nope", "").as_bytes()
        )
        .0,
        404
    );
    let mut closing = connect(server.url());
    closing
        .close(Some(CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        }))
        .unwrap();
    while closing.read().is_ok() {}

    let (_, after) = scrape(addr, "/metrics");
    assert_eq!(value(&after, "wsloop_messages_in_total"), 10);
    assert_eq!(value(&after, "wsloop_messages_out_total"), 10);
    assert_eq!(
        value(&after, "wsloop_bytes_in_total"),
        10 * "message 0".len() as u64
    );
    assert_eq!(value(&after, "wsloop_handshakes_ok_total"), 2);
    assert_eq!(
        value(&after, "wsloop_handshakes_failed_total{status=\"404\"}"),
        1
    );
    assert_eq!(value(&after, "wsloop_closes_total{code=\"4000\"}"), 1);
    assert!(wait_until(Duration::from_secs(5), || {
        value(&scrape(addr, "/metrics").1, "wsloop_open_connections") == 1
    }));
    // The endpoint itself does not disturb the WebSocket side.
    assert_echo(&mut ws, Message::text("still echoing"));
}

#[test]
fn pings_and_idle_closes_are_counted() {
    let server = Server::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--ping-interval",
        "200ms",
        "--idle-timeout",
        "500ms",
    ]);
    let addr = metrics_addr(&server);
    let mut silent = upgraded(server.addr, "/ws");
    assert_eq!(read_close_code(&mut silent), Some(1001));
    assert!(wait_until(Duration::from_secs(5), || {
        let text = scrape(addr, "/metrics").1;
        value(&text, "wsloop_pings_sent_total") >= 1
            && value(&text, "wsloop_deadline_closes_total{kind=\"idle\"}") == 1
            && value(&text, "wsloop_closes_total{code=\"1001\"}") == 1
    }));
}
