//! Topics across processes through a real `redis-server` (feature `redis`): the chat
//! example in two processes; subscriptions in Redis only for topics with local
//! subscribers; Redis killed in the middle of a flood and brought back; foreign,
//! malformed and oversized messages published straight into Redis.
//!
//! Two servers in one test process have two bridges with two process ids, which is
//! what Redis sees of two processes; the chat test runs two real ones. Each test
//! starts its own `redis-server` (Debian's, installed when missing) on a free port.

mod common;

use common::example::Example;
use common::inproc::Loop;
use common::redis::Redis;
use common::{Client, connect, metric, scrape, wait_until};
use std::collections::HashMap;
use std::time::Duration;
use tungstenite::Message;
use wsloop::{Config, ConnId, Ctx, Handler, Message as WsMessage, Request};

/// Long enough for anything a bridge does on loopback; only failures wait this long.
const WITHIN: Duration = Duration::from_secs(10);

/// `?topic=T` subscribes the connection to T (`&listen=0`: it only publishes); every
/// text or binary message it sends is published to T.
#[derive(Default)]
struct Relay {
    topics: HashMap<ConnId, String>,
}

impl Handler for Relay {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        let query = request.path.split_once('?').map_or("", |(_, q)| q);
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(k)?.strip_prefix('='))
        };
        let topic = param("topic").unwrap_or("t").to_string();
        if param("listen") != Some("0") {
            ctx.subscribe(conn, &topic).unwrap();
        }
        self.topics.insert(conn, topic);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: WsMessage) {
        if let Some(topic) = self.topics.get(&conn) {
            ctx.publish(topic, msg).unwrap();
        }
    }

    fn on_close(&mut self, _: &mut Ctx, conn: ConnId, _: &wsloop::Close) {
        self.topics.remove(&conn);
    }
}

/// A server bridged to `redis`, with metrics on a port of its own.
fn serve(redis: &Redis, max_message: usize) -> Loop<Relay> {
    let cfg = Config {
        redis: Some(redis.url()),
        max_message,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    Loop::start(cfg, Relay::default())
}

/// The value of a metric of `lp` now.
fn gauge(lp: &Loop<Relay>, series: &str) -> u64 {
    let addr = lp.with(|s, _| s.metrics_addr().expect("metrics on"));
    let (status, text) = scrape(addr, "/metrics");
    assert_eq!(status, 200);
    metric(&text, series)
}

fn join(lp: &Loop<Relay>, query: &str) -> Client {
    connect(format!("{}?{query}", lp.url))
}

/// The next text or binary message (pings and pongs skipped).
fn next(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

fn next_text(ws: &mut Client) -> String {
    match next(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Waits until Redis counts `n` subscriber connections on `channel`.
fn wait_subscribers(redis: &Redis, channel: &str, n: u64) {
    let ok = wait_until(WITHIN, || redis.subscribers(channel) == n);
    assert!(
        ok,
        "{channel}: {} subscribers in Redis, expected {n}",
        redis.subscribers(channel)
    );
}

/// Waits until `lp`'s bridge reports `series` at `value`.
fn wait_metric(lp: &Loop<Relay>, series: &str, value: u64) {
    let ok = wait_until(WITHIN, || gauge(lp, series) == value);
    assert!(ok, "{series} is {}, expected {value}", gauge(lp, series));
}

/// What our bridge publishes: `wsl1`, an 8-byte process id, `t` or `b`, the payload.
fn envelope(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut e = b"wsl1".to_vec();
    e.extend_from_slice(&[0x5a; 8]);
    e.push(kind);
    e.extend_from_slice(payload);
    e
}

/// The chat example in two processes on one Redis: members in either see every line
/// exactly once, each member's lines in the order they were said.
#[test]
fn chat_across_two_processes() {
    let redis = Redis::start();
    let url = redis.url();
    let a = Example::start_with("chat", &["--redis", &url]);
    let b = Example::start_with("chat", &["--redis", &url]);
    let enter = |ex: &Example, name: &str| {
        let mut ws = connect(format!("{}?name={name}", ex.url));
        assert_eq!(next_text(&mut ws), format!("* {name} joined"));
        ws
    };
    let mut alice = enter(&a, "alice");
    wait_subscribers(&redis, "lobby", 1);
    let mut bob = enter(&b, "bob");
    assert_eq!(next_text(&mut alice), "* bob joined");
    wait_subscribers(&redis, "lobby", 2);
    let carol = enter(&a, "carol");
    assert_eq!(next_text(&mut alice), "* carol joined");
    assert_eq!(next_text(&mut bob), "* carol joined");

    const N: usize = 300;
    let mut members = [("alice", alice), ("bob", bob), ("carol", carol)];
    for (name, ws) in members.iter_mut() {
        for i in 0..N {
            ws.send(Message::text(format!("{name} {i}"))).unwrap();
        }
    }
    for (me, ws) in members.iter_mut() {
        let mut next_of: HashMap<String, usize> = HashMap::new();
        for _ in 0..3 * N {
            let line = next_text(ws);
            let (who, rest) = line.split_once(": ").expect("a chat line");
            let (said_by, i) = rest.split_once(' ').expect("NAME I");
            assert_eq!(who, said_by, "{me} got {line:?}");
            let want = next_of.entry(who.to_string()).or_default();
            assert_eq!(i.parse::<usize>().unwrap(), *want, "{me} got {line:?}");
            *want += 1;
        }
        assert!(next_of.values().all(|&n| n == N), "{me}: {next_of:?}");
    }
    // Nothing more (no second copy) came before the next line.
    members[0].1.send(Message::text("end")).unwrap();
    for (me, ws) in members.iter_mut() {
        assert_eq!(next_text(ws), "alice: end", "{me}");
    }
    drop(members);
    wait_subscribers(&redis, "lobby", 0);
}

/// A process subscribes to a topic in Redis while it has subscribers of its own, once
/// however many, and never for a topic it only publishes to.
#[test]
fn subscribes_in_redis_only_for_local_subscribers() {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, 1 << 20), serve(&redis, 1 << 20));
    assert!(redis.channels().is_empty());

    let a1 = join(&a, "topic=x");
    wait_subscribers(&redis, "x", 1);
    let publisher = join(&a, "topic=y&listen=0");
    let b1 = join(&b, "topic=x");
    wait_subscribers(&redis, "x", 2);
    let a2 = join(&a, "topic=x");
    // A bridge takes changes in order: once z is there, a2's join was seen.
    let a3 = join(&a, "topic=z");
    wait_until(WITHIN, || redis.channels().contains(&"z".to_string()));
    assert_eq!(
        redis.subscribers("x"),
        2,
        "one Redis subscription per process"
    );
    assert_eq!(redis.channels(), ["x", "z"], "y has no subscriber anywhere");

    drop(b1);
    wait_subscribers(&redis, "x", 1);
    drop(a1);
    drop(a3);
    wait_subscribers(&redis, "z", 0);
    assert_eq!(redis.subscribers("x"), 1, "a2 still listens to x");
    drop(a2);
    wait_subscribers(&redis, "x", 0);
    assert!(redis.channels().is_empty());
    drop(publisher);
}

/// Redis dies in the middle of a flood: local subscribers miss nothing, the loop
/// serves on and says it is disconnected; Redis comes back on the same port: the
/// bridges reconnect, resubscribe, and cross-process delivery resumes. What was
/// published meanwhile is lost (at most once), never duplicated or reordered.
#[test]
fn redis_killed_mid_flood_then_back() {
    let mut redis = Redis::start();
    let (a, b) = (serve(&redis, 1 << 20), serve(&redis, 1 << 20));
    let mut publisher = join(&a, "topic=f&listen=0");
    let mut ra = join(&a, "topic=f");
    let mut rb = join(&b, "topic=f");
    wait_subscribers(&redis, "f", 2);
    for lp in [&a, &b] {
        wait_metric(lp, "wsloop_redis_connected", 1);
    }
    const BEFORE: usize = 100;
    const FLOOD: usize = 2000;
    const AFTER: usize = 100;
    for i in 0..BEFORE {
        publisher.send(Message::text(i.to_string())).unwrap();
    }
    for ws in [&mut ra, &mut rb] {
        for i in 0..BEFORE {
            assert_eq!(next_text(ws), i.to_string());
        }
    }

    // The flood, paced so that most of it comes after the kill.
    let flood = std::thread::spawn(move || {
        for i in BEFORE..BEFORE + FLOOD {
            publisher.send(Message::text(i.to_string())).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        publisher
    });
    for i in BEFORE..BEFORE + FLOOD {
        if i == BEFORE + 300 {
            redis.kill();
        }
        assert_eq!(next_text(&mut ra), i.to_string(), "local delivery");
    }
    let mut publisher = flood.join().unwrap();
    for lp in [&a, &b] {
        wait_metric(lp, "wsloop_redis_connected", 0);
    }
    assert!(
        gauge(&a, "wsloop_redis_dropped_total") > 0,
        "publishes dropped"
    );
    assert!(!a.ended() && !b.ended());

    redis.restart();
    for lp in [&a, &b] {
        wait_metric(lp, "wsloop_redis_connected", 1);
        assert!(gauge(lp, "wsloop_redis_reconnects_total") >= 1);
    }
    wait_subscribers(&redis, "f", 2);
    let end = BEFORE + FLOOD + AFTER;
    for i in BEFORE + FLOOD..end {
        publisher.send(Message::text(i.to_string())).unwrap();
    }
    for i in BEFORE + FLOOD..end {
        assert_eq!(next_text(&mut ra), i.to_string());
    }
    // rb: what got through before the kill, then everything after the return.
    let mut got = Vec::new();
    while got.last() != Some(&(end - 1)) {
        got.push(next_text(&mut rb).parse::<usize>().unwrap());
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    let flooded = got.iter().filter(|&&i| i < BEFORE + FLOOD).count();
    assert!(
        flooded < FLOOD,
        "messages published while Redis was away are lost"
    );
    assert!(got.ends_with(&(BEFORE + FLOOD..end).collect::<Vec<_>>()));
}

/// Messages on a subscribed channel that are not ours to take are dropped and
/// counted; well-formed ones from any publisher are delivered, and the rest of the
/// traffic flows as before.
#[test]
fn malformed_and_oversized_messages_are_dropped() {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, 1024), serve(&redis, 1 << 20));
    let mut ra = join(&a, "topic=m");
    let mut pb = join(&b, "topic=m&listen=0");
    wait_subscribers(&redis, "m", 1);
    let bad: [&[u8]; 5] = [
        b"hello, not an envelope",
        b"wsl1",
        &envelope(b'x', b"unknown kind"),
        &envelope(b't', &[0xff, 0xfe, 0xfd]),
        &envelope(b't', &[b'a'; 2000]),
    ];
    for payload in bad {
        assert_eq!(redis.publish("m", payload), 1);
    }
    redis.publish("m", &envelope(b't', b"from elsewhere"));
    redis.publish("m", &envelope(b'b', &[1, 2, 3]));
    pb.send(Message::text("after")).unwrap();

    assert_eq!(next(&mut ra), Message::text("from elsewhere"));
    assert_eq!(next(&mut ra), Message::binary(vec![1u8, 2, 3]));
    assert_eq!(next(&mut ra), Message::text("after"));
    assert_eq!(gauge(&a, "wsloop_redis_dropped_total"), bad.len() as u64);
    assert_eq!(gauge(&a, "wsloop_redis_connected"), 1);
    ra.send(Message::text("still open")).unwrap();
    assert_eq!(next(&mut ra), Message::text("still open"));
}

/// The binary takes `--redis`, connects, and refuses a URL it cannot use.
#[test]
fn binary_flag() {
    let redis = Redis::start();
    let server = common::Server::start(&["--redis", &redis.url()]);
    assert_eq!(server.setting("redis"), Some(redis.url()));
    assert!(wait_until(WITHIN, || server
        .logged("redis subscriber connected")
        && server.logged("redis publisher connected")));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--redis", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid configuration: redis URL"), "{err}");
}

/// A Redis that refuses our commands (it wants a password we do not give): the
/// bridge keeps retrying with backoff and reports itself disconnected, publishes to
/// Redis are dropped and counted, and local delivery goes on untouched.
#[test]
fn redis_answering_errors() {
    let redis = Redis::start_with(&["--requirepass", "secret"]);
    let lp = serve(&redis, 1 << 20);
    let mut publisher = join(&lp, "topic=e&listen=0");
    let mut sub = join(&lp, "topic=e");
    for i in 0..50 {
        publisher.send(Message::text(i.to_string())).unwrap();
    }
    for i in 0..50 {
        assert_eq!(next_text(&mut sub), i.to_string());
    }
    wait_until(WITHIN, || gauge(&lp, "wsloop_redis_dropped_total") > 0);
    assert!(
        gauge(&lp, "wsloop_redis_dropped_total") > 0,
        "nothing dropped"
    );
    assert_eq!(gauge(&lp, "wsloop_redis_connected"), 0);
    // With the password, a second server gets through.
    let cfg = Config {
        redis: Some(format!("redis://:secret@127.0.0.1:{}", redis.port)),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let authed = Loop::start(cfg, Relay::default());
    wait_metric(&authed, "wsloop_redis_connected", 1);
    assert!(!lp.ended());
}
