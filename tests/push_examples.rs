//! The push examples end to end: examples/ticker.rs (a producer thread publishing
//! through a `Sender`) and examples/heartbeat.rs (round-trip times from pong payloads,
//! a per-connection read deadline), each built, run on a free loopback port and talked
//! to with tungstenite clients.

use tungstenite::Message;

mod common;
use common::example::Example;
use common::{Client, connect, read_close_code, upgraded};
use std::time::Duration;

/// The next text message (pings and pongs skipped; tungstenite answers pings).
fn next_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The `seq` of a tick such as `{"symbol":"WSL","price":100.25,"seq":7}`.
fn seq_of(tick: &str) -> u64 {
    assert!(tick.starts_with(r#"{"symbol":"WSL","price":"#), "{tick}");
    let seq = tick
        .rsplit_once(r#""seq":"#)
        .and_then(|(_, s)| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("no seq in {tick}"));
    seq.parse().unwrap()
}

#[test]
fn ticker_pushes_the_same_ticks_to_every_client_in_order() {
    let ex = Example::start("ticker");
    let mut a = connect(&ex.url);
    let mut b = connect(&ex.url);
    // Both subscribed before this tick: from here on they see the same sequence.
    let first_a = seq_of(&next_text(&mut a));
    let mut first_b = seq_of(&next_text(&mut b));
    while first_b < first_a {
        first_b = seq_of(&next_text(&mut b));
    }
    let mut a_seen = vec![first_a];
    while *a_seen.last().unwrap() < first_b {
        a_seen.push(seq_of(&next_text(&mut a)));
    }
    let mut from = *a_seen.last().unwrap();
    assert_eq!(from, first_b);
    for _ in 0..5 {
        let (x, y) = (seq_of(&next_text(&mut a)), seq_of(&next_text(&mut b)));
        assert_eq!((x, y), (from + 1, from + 1), "ticks skipped or reordered");
        from = x;
    }
}

#[test]
fn heartbeat_reports_round_trip_times_and_closes_the_silent() {
    let ex = Example::start("heartbeat");
    let mut ws = connect(&ex.url);
    for _ in 0..2 {
        let text = next_text(&mut ws);
        let ms: f64 = text
            .strip_prefix("rtt ")
            .and_then(|t| t.strip_suffix(" ms"))
            .unwrap_or_else(|| panic!("unexpected {text:?}"))
            .parse()
            .unwrap();
        assert!(ms >= 0.0, "{text}");
    }
    // A client that never answers the pings (a raw socket that sends nothing) is
    // closed by its 5 s read deadline, while one that answers is kept: read the
    // answering one's reports (one a second) while the silent one waits.
    let addr = ex.url["ws://".len()..]
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    let mut silent = upgraded(addr, "/ws");
    for _ in 0..7 {
        assert!(next_text(&mut ws).starts_with("rtt "));
    }
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_close_code(&mut silent), Some(1001));
    // The other client is untouched.
    assert!(next_text(&mut ws).starts_with("rtt "));
}
