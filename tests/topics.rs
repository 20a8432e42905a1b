//! Topics: subscribe, unsubscribe, publish from a callback, from the loop's owner and
//! from another thread; delivery to every subscriber exactly once and in order; the
//! limits; and a subscriber that stops reading, which must hold nobody else back.
//!
//! The server runs in-process on a thread of the test, with a handler of the test's:
//! a real server on loopback, driven by real clients.

mod common;

use common::{connect, connect_tuned, upgrade_request};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tungstenite::Message;
use wsloop::{Config, ConnId, Ctx, Handler, Request, SendError, Sender, Server, Shutdown};

/// Joins the topics named in `?join=a,b` at open; `pub:T:text` publishes `text` to
/// T; `unsub:T` leaves T; `bad:` asks for refused things and reports the errors.
struct Rooms;

impl Handler for Rooms {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        if let Some(q) = request.path.split_once("?join=").map(|(_, q)| q) {
            for topic in q.split(',').filter(|t| !t.is_empty()) {
                ctx.subscribe(conn, topic).unwrap();
            }
        }
        ctx.send(conn, Message::text("joined")).unwrap();
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        let Message::Text(text) = msg else { return };
        let text = text.as_str();
        if let Some(rest) = text.strip_prefix("pub:") {
            let (topic, body) = rest.split_once(':').unwrap_or((rest, ""));
            ctx.publish(topic, Message::text(body)).unwrap();
        } else if let Some(topic) = text.strip_prefix("unsub:") {
            ctx.unsubscribe(conn, topic);
            ctx.send(conn, Message::text("left")).unwrap();
        } else if text == "bad:" {
            let long = "t".repeat(300);
            let mut report = Vec::new();
            report.push(format!("{:?}", ctx.subscribe(conn, &long)));
            report.push(format!("{:?}", ctx.publish(&long, Message::text("x"))));
            report.push(format!("{:?}", ctx.publish("t", Message::Ping("p".into()))));
            for i in 0..10 {
                report.push(format!("{:?}", ctx.subscribe(conn, &format!("many{i}"))));
            }
            ctx.send(conn, Message::text(report.join(" "))).unwrap();
        }
    }
}

/// A server on a thread of its own; shut down (and joined) when dropped.
struct InProc {
    addr: SocketAddr,
    metrics: SocketAddr,
    sender: Sender,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProc {
    fn start(mut cfg: Config) -> InProc {
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let server = Server::bind("127.0.0.1:0", cfg, Rooms).unwrap();
        let addr = server.local_addr().tcp().unwrap();
        let metrics = server.metrics_addr().unwrap();
        let sender = server.sender();
        let thread = std::thread::spawn(move || server.run().unwrap());
        InProc {
            addr,
            metrics,
            sender,
            thread: Some(thread),
        }
    }

    /// A value from the metrics endpoint.
    fn metric(&self, name: &str) -> u64 {
        let (status, text) = common::scrape(self.metrics, "/metrics");
        assert_eq!(status, 200);
        common::metric(&text, &format!("wsloop_{name}"))
    }

    fn url(&self, join: &str) -> String {
        format!("ws://{}/ws?join={join}", self.addr)
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        let _ = self.sender.shutdown(Shutdown::default());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config() -> Config {
    Config {
        max_subscriptions: 4,
        max_topic_len: 256,
        ..Config::default()
    }
}

fn next_text(ws: &mut common::Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn every_subscriber_gets_each_message_once_and_in_order() {
    let server = InProc::start(config());
    let mut members: Vec<_> = (0..20)
        .map(|_| {
            let mut ws = connect(server.url("room"));
            assert_eq!(next_text(&mut ws), "joined");
            ws
        })
        .collect();
    let mut other = connect(server.url("elsewhere"));
    assert_eq!(next_text(&mut other), "joined");
    let mut publisher = connect(server.url(""));
    assert_eq!(next_text(&mut publisher), "joined");
    // 50 messages in one write: one read batch, all published in one turn.
    let batch: Vec<Message> = (0..50)
        .map(|i| Message::text(format!("pub:room:m{i}")))
        .collect();
    for m in &batch {
        publisher.write(m.clone()).unwrap();
    }
    publisher.flush().unwrap();
    // From another thread too, through a Sender.
    let sender = server.sender.clone();
    std::thread::spawn(move || {
        for i in 50..60 {
            sender
                .publish("room", Message::text(format!("m{i}")))
                .unwrap();
        }
    })
    .join()
    .unwrap();
    for ws in &mut members {
        let got: Vec<String> = (0..60).map(|_| next_text(ws)).collect();
        let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want);
    }
    // Nothing reached the other topic's member or the unsubscribed publisher.
    other.send(Message::text("pub:elsewhere:only")).unwrap();
    assert_eq!(next_text(&mut other), "only");
    publisher.send(Message::text("pub:nobody:x")).unwrap();
    publisher
        .send(Message::text("pub:elsewhere:second"))
        .unwrap();
    assert_eq!(next_text(&mut other), "second");
}

#[test]
fn unsubscribe_and_close_end_delivery() {
    let server = InProc::start(config());
    let mut a = connect(server.url("t"));
    let mut b = connect(server.url("t"));
    assert_eq!(next_text(&mut a), "joined");
    assert_eq!(next_text(&mut b), "joined");
    a.send(Message::text("unsub:t")).unwrap();
    assert_eq!(next_text(&mut a), "left");
    b.send(Message::text("pub:t:after")).unwrap();
    assert_eq!(next_text(&mut b), "after");
    a.send(Message::text("pub:t:from-a")).unwrap();
    assert_eq!(next_text(&mut b), "from-a");
    // a gets nothing of either; its next message is its own request's answer.
    a.send(Message::text("unsub:t")).unwrap();
    assert_eq!(next_text(&mut a), "left");
    // b closes; a publish to t then reaches nobody, and a new member gets only what
    // is published after it joined.
    b.close(None).unwrap();
    while b.read().is_ok() {}
    a.send(Message::text("pub:t:to-nobody")).unwrap();
    let mut c = connect(server.url("t"));
    assert_eq!(next_text(&mut c), "joined");
    a.send(Message::text("pub:t:for-c")).unwrap();
    assert_eq!(next_text(&mut c), "for-c");
}

#[test]
fn limits_answer_with_errors() {
    let server = InProc::start(config());
    let mut ws = connect(server.url(""));
    assert_eq!(next_text(&mut ws), "joined");
    ws.send(Message::text("bad:")).unwrap();
    let report = next_text(&mut ws);
    let words: Vec<&str> = report.split(' ').collect();
    assert_eq!(words[0], "Err(TopicTooLong)");
    assert_eq!(words[1], "Err(TopicTooLong)");
    assert_eq!(words[2], "Err(Unsupported)");
    // The first four subscriptions are accepted, but they are not applied until the
    // callback returns: within one callback the count cannot see them, so the loop
    // enforces the limit when it applies them.
    assert!(words[3..].iter().all(|w| *w == "Ok(())"), "{report}");
    // The loop refused the ones over the limit: the connection is in 4 topics only.
    ws.send(Message::text("pub:many3:in")).unwrap();
    assert_eq!(next_text(&mut ws), "in");
    ws.send(Message::text("pub:many4:out")).unwrap();
    ws.send(Message::text("pub:many0:in-again")).unwrap();
    assert_eq!(next_text(&mut ws), "in-again");
    // From outside: a Sender's over-limit subscription is refused by the loop.
    let sender = server.sender.clone();
    assert_eq!(
        sender.publish(&"x".repeat(300), Message::text("y")),
        Err(SendError::TopicTooLong)
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped_and_holds_nobody_back() {
    let cfg = Config {
        max_pending_output: 256 << 10,
        ..config()
    };
    let server = InProc::start(cfg);
    // The stalled subscriber: a raw socket that never reads, with a small receive
    // buffer so that its output piles up on the server's side.
    let mut stalled = connect_tuned(server.addr, None, Some(4096)).unwrap();
    stalled
        .write_all(upgrade_request(server.addr, "/ws?join=feed", "").as_bytes())
        .unwrap();
    let mut healthy = connect(server.url("feed"));
    assert_eq!(next_text(&mut healthy), "joined");
    let payload = "p".repeat(32 << 10);
    // 200 × 32 KiB = 6.4 MiB through the topic, at a pace a reading client keeps up
    // with: far more than the stalled socket's buffers and its allowance of 256 KiB.
    let publisher = server.sender.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..200 {
            loop {
                match publisher.publish("feed", Message::text(format!("{i}:{payload}"))) {
                    Ok(()) => break,
                    Err(SendError::Full) => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("publish: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    for i in 0..200 {
        let got = next_text(&mut healthy);
        assert!(got.starts_with(&format!("{i}:")), "message {i}");
    }
    writer.join().unwrap();
    // The stalled one was failed (1008) instead of holding 6.4 MiB of output: at once
    // past 4 × its allowance, or a second after it went over.
    assert!(
        common::wait_until(Duration::from_secs(5), || server
            .metric("slow_consumers_dropped_total")
            == 1),
        "the stalled subscriber was not dropped"
    );
    assert_eq!(server.metric("closes_total{code=\"1008\"}"), 1);
    // The healthy one still works, and the topic has one member left.
    healthy.send(Message::text("pub:feed:still")).unwrap();
    assert_eq!(next_text(&mut healthy), "still");
    assert_eq!(server.metric("subscriptions"), 1);
    drop(stalled);
}
