//! `--metrics-listen`: Prometheus text from the same loop, and the numbers move.

mod common;
use common::*;
use std::time::Duration;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

#[test]
fn metrics_move_with_traffic() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = server.metrics_addr();

    let (status, before) = scrape(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(before.contains("# TYPE wsloop_messages_in_total counter"));
    assert_eq!(metric(&before, "wsloop_messages_in_total"), 0);
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
    assert_eq!(metric(&after, "wsloop_messages_in_total"), 10);
    assert_eq!(metric(&after, "wsloop_messages_out_total"), 10);
    assert_eq!(
        metric(&after, "wsloop_bytes_in_total"),
        10 * "message 0".len() as u64
    );
    assert_eq!(metric(&after, "wsloop_handshakes_ok_total"), 2);
    assert_eq!(
        metric(&after, "wsloop_handshakes_failed_total{status=\"404\"}"),
        1
    );
    assert_eq!(metric(&after, "wsloop_closes_total{code=\"4000\"}"), 1);
    assert!(wait_until(Duration::from_secs(5), || {
        metric(&scrape(addr, "/metrics").1, "wsloop_open_connections") == 1
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
    let addr = server.metrics_addr();
    let mut silent = upgraded(server.addr, "/ws");
    assert_eq!(read_close_code(&mut silent), Some(1001));
    assert!(wait_until(Duration::from_secs(5), || {
        let text = scrape(addr, "/metrics").1;
        metric(&text, "wsloop_pings_sent_total") >= 1
            && metric(&text, "wsloop_deadline_closes_total{kind=\"idle\"}") == 1
            && metric(&text, "wsloop_closes_total{code=\"1001\"}") == 1
    }));
}
