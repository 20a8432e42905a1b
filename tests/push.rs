//! Acting from outside callbacks (issue 10): `Sender`s on other threads and
//! `Server::ctx` on the loop's, against a real server in this process
//! (`common::inproc`) and real clients on loopback. Delivery and order under a flood,
//! the documented errors (`Full`, `ServerGone`, `Closed`, `Unsupported`,
//! `ControlTooLong`), ids that went stale while their slot was reused, a graceful
//! shutdown spread over a drain period, and `Sender::shutdown` ending `Server::run`.

mod common;
use common::inproc::Loop;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wsloop::{
    Bytes, Close, Config, ConnId, Ctx, Handler, Message, Request, SendError, Server, Shutdown,
};

/// What the hub saw: ids as they opened, and closes with their code and reason.
#[derive(Clone, Default)]
struct Book {
    opened: Arc<Mutex<Vec<ConnId>>>,
    closed: Arc<Mutex<Vec<(ConnId, u16, String)>>>,
}

impl Book {
    /// The id whose Display form a client learned from its hello.
    fn id(&self, shown: &str) -> ConnId {
        *self
            .opened
            .lock()
            .unwrap()
            .iter()
            .find(|id| id.to_string() == shown)
            .unwrap_or_else(|| panic!("no connection {shown} opened"))
    }

    fn closed_ids(&self) -> Vec<ConnId> {
        self.closed.lock().unwrap().iter().map(|c| c.0).collect()
    }

    fn is_closed(&self, id: ConnId) -> bool {
        self.closed_ids().contains(&id)
    }
}

/// Greets each client with its id (`hello KEY.GEN`), echoes, and on `close-me [CODE
/// REASON]` sends a Close message to the sender itself, then one more text (which
/// must never go out).
struct Hub(Book);

impl Handler for Hub {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        ctx.send(conn, Message::text(format!("hello {conn}")))
            .expect("hello to the connection being opened");
        self.0.opened.lock().unwrap().push(conn);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        if let Message::Text(t) = &msg
            && let Some(rest) = t.strip_prefix("close-me")
        {
            let frame = rest.split_once(' ').and_then(|(_, args)| {
                let (code, reason) = args.split_once(' ')?;
                Some(CloseFrame {
                    code: code.parse::<u16>().ok()?.into(),
                    reason: reason.into(),
                })
            });
            ctx.send(conn, Message::Close(frame)).expect("close self");
            // Accepted for now (the connection is open while its callback runs), then
            // dropped by the loop: the close went first.
            let _ = ctx.send(conn, Message::text("after close"));
            return;
        }
        let _ = ctx.send(conn, msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx, conn: ConnId, close: &Close) {
        self.0
            .closed
            .lock()
            .unwrap()
            .push((conn, close.code, close.reason.clone()));
    }
}

fn hub() -> (Book, Hub) {
    let book = Book::default();
    (book.clone(), Hub(book))
}

fn loopback0() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

/// The next text message (pings and pongs skipped).
fn next_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads the hub's greeting; returns the id's Display form.
fn hello(ws: &mut Client) -> String {
    let t = next_text(ws);
    t.strip_prefix("hello ")
        .unwrap_or_else(|| panic!("expected a hello, got {t:?}"))
        .to_string()
}

/// A client that has read its hello: the socket and its id's Display form.
fn join(url: &str) -> (Client, String) {
    let mut ws = connect(url);
    let me = hello(&mut ws);
    (ws, me)
}

/// Reads until the server's Close (answered by tungstenite) and the end of the
/// connection; returns the code and reason. Data before the Close fails.
fn expect_closed(ws: &mut Client) -> (u16, String) {
    let mut close = None;
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => {
                close = Some(f.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }))
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => panic!("{m:?} before the close"),
            Err(tungstenite::Error::ConnectionClosed) => {
                return close.expect("connection closed without a Close");
            }
            Err(e) => panic!("read failed before the close handshake ended: {e}"),
        }
    }
}

/// Scrapes the loop's metrics endpoint for one series.
fn scraped<H: Handler + Send + 'static>(lp: &Loop<H>, series: &str) -> u64 {
    let addr = lp.with(|s, _| s.metrics_addr().expect("metrics endpoint"));
    let (status, text) = scrape(addr, "/metrics");
    assert_eq!(status, 200);
    metric(&text, series)
}

fn commands_dropped<H: Handler + Send + 'static>(lp: &Loop<H>) -> u64 {
    lp.with(|s, _| s.stats().commands_dropped)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn eight_producers_flood_a_hundred_clients_in_order_while_echo_goes_on() {
    const CLIENTS: usize = 100;
    const PRODUCERS: usize = 8;
    const PER_PRODUCER: usize = 10_000;
    const PER_CLIENT: usize = PRODUCERS * PER_PRODUCER / CLIENTS;
    // A queue far smaller than the flood: producers meet Full and must retry.
    const QUEUE: usize = 1024;
    let (book, hub) = hub();
    let cfg = Config {
        sender_queue: QUEUE,
        metrics_listen: loopback0(),
        ..Config::default()
    };
    let lp = Loop::start(cfg, hub);

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(join(&lp.url));
    }
    let names: Arc<Vec<String>> = Arc::new(clients.iter().map(|c| c.1.clone()).collect());
    let ids: Arc<Vec<ConnId>> = Arc::new(names.iter().map(|n| book.id(n)).collect());
    let (mut echo, _) = join(&lp.url);

    // Each client checks every message: addressed to it, and from each producer the
    // next one that producer meant for it (no gap, no duplicate, no reordering).
    let flooded = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (mut ws, me))| {
            let flooded = flooded.clone();
            thread::spawn(move || -> Result<(), String> {
                set_client_timeout(&ws, Duration::from_secs(30));
                let mut next = [i; PRODUCERS];
                let mut got = 0;
                while got < PER_CLIENT {
                    let text = match ws.read() {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                        Ok(m) => return Err(format!("client {me}: unexpected {m:?}")),
                        Err(e) => return Err(format!("client {me}: {e} after {got} messages")),
                    };
                    let f: Vec<&str> = text.split(' ').collect();
                    let [_, p, k, to] = f[..] else {
                        return Err(format!("client {me}: malformed {text:?}"));
                    };
                    if to != me {
                        return Err(format!("client {me} got a message for {to}"));
                    }
                    let (p, k): (usize, usize) = (p.parse().unwrap(), k.parse().unwrap());
                    if k != next[p] {
                        return Err(format!(
                            "client {me}: from producer {p} expected #{} next, got #{k}",
                            next[p]
                        ));
                    }
                    next[p] += CLIENTS;
                    got += 1;
                }
                // Every request has been applied: a duplicate would come before this.
                if !wait_until(Duration::from_secs(60), || flooded.load(Ordering::Acquire)) {
                    return Err("the flood did not end".into());
                }
                ws.send(Message::text("end")).map_err(|e| e.to_string())?;
                match ws.read() {
                    Ok(Message::Text(t)) if t == "end" => Ok(()),
                    other => Err(format!("client {me}: expected the end echo, got {other:?}")),
                }
            })
        })
        .collect();

    // Round trips on a client of its own, all through the flood.
    let stop = Arc::new(AtomicBool::new(false));
    let echoer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut rtts = Vec::new();
            let started = Instant::now();
            while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(60) {
                let t = Instant::now();
                let probe = format!("probe {}", rtts.len());
                echo.send(Message::text(probe.clone())).expect("echo send");
                assert_eq!(next_text(&mut echo), probe, "echo out of order");
                rtts.push((t, t.elapsed()));
            }
            rtts
        })
    };

    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (sender, ids, names) = (lp.sender.clone(), ids.clone(), names.clone());
            thread::spawn(move || -> Result<u64, String> {
                let mut fulls = 0;
                for k in 0..PER_PRODUCER {
                    let c = k % CLIENTS;
                    let msg = Message::text(format!("m {p} {k} {}", names[c]));
                    let mut tries = 0;
                    loop {
                        match sender.send(ids[c], msg.clone()) {
                            Ok(()) => break,
                            Err(SendError::Full) if tries < 100_000 => {
                                fulls += 1;
                                tries += 1;
                                thread::sleep(Duration::from_micros(200));
                            }
                            Err(e) => return Err(format!("producer {p}, #{k}: {e}")),
                        }
                    }
                }
                Ok(fulls)
            })
        })
        .collect();
    let mut fulls = 0;
    for p in producers {
        fulls += p.join().unwrap().unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || lp.sender.queued() == 0),
        "the loop did not take the queue"
    );
    flooded.store(true, Ordering::Release);
    for (i, r) in readers.into_iter().enumerate() {
        r.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("reader {i}: {e}"));
    }
    let flood_took = started.elapsed();
    stop.store(true, Ordering::Release);
    let rtts = echoer.join().unwrap();
    let mut during: Vec<Duration> = rtts
        .iter()
        .filter(|(t, _)| *t >= started && *t < started + flood_took)
        .map(|r| r.1)
        .collect();
    during.sort();
    assert!(
        !during.is_empty(),
        "no round trip completed during the flood"
    );
    println!(
        "flood: {} messages from {PRODUCERS} producers to {CLIENTS} clients in {flood_took:?}; \
         SendError::Full {fulls} times (sender_queue {QUEUE}); echo round trip during the \
         flood: p50 {:?}, p99 {:?}, max {:?} over {} round trips",
        PRODUCERS * PER_PRODUCER,
        percentile(&during, 50),
        percentile(&during, 99),
        during.last().unwrap(),
        during.len()
    );

    // The loop's own counts agree: every refusal was a Full a producer saw, nothing
    // was dropped, and exactly what was meant went out.
    assert_eq!(scraped(&lp, "wsloop_sender_rejected_total"), fulls);
    assert_eq!(scraped(&lp, "wsloop_commands_dropped_total"), 0);
    let hellos = CLIENTS + 1;
    let out = (PRODUCERS * PER_PRODUCER + hellos + rtts.len() + CLIENTS) as u64;
    assert_eq!(scraped(&lp, "wsloop_messages_out_total"), out);
}

#[test]
fn a_full_queue_refuses_with_full_and_counts_it() {
    let (book, hub) = hub();
    let cfg = Config {
        sender_queue: 4,
        metrics_listen: loopback0(),
        ..Config::default()
    };
    let lp = Loop::start(cfg, hub);
    let (mut ws, me) = join(&lp.url);
    let id = book.id(&me);
    let other = lp.sender.clone();

    let stall = lp.stall();
    for i in 0..4 {
        lp.sender
            .send(id, Message::text(format!("queued {i}")))
            .unwrap();
    }
    assert_eq!(lp.sender.queued(), 4);
    assert_eq!(
        lp.sender.send(id, Message::text("one too many")),
        Err(SendError::Full)
    );
    // The bound is the queue's, whichever clone asks, and for closes too.
    assert_eq!(other.close(id, 1000, "no room"), Err(SendError::Full));
    assert_eq!(lp.sender.queued(), 4);
    stall.release();

    for i in 0..4 {
        assert_eq!(next_text(&mut ws), format!("queued {i}"));
    }
    assert!(wait_until(Duration::from_secs(5), || lp.sender.queued() == 0));
    lp.sender.send(id, Message::text("room again")).unwrap();
    assert_eq!(next_text(&mut ws), "room again");
    assert_eq!(scraped(&lp, "wsloop_sender_rejected_total"), 2);
    assert_eq!(scraped(&lp, "wsloop_sender_queue_depth"), 0);
}

#[test]
fn once_the_server_is_gone_senders_fail_with_server_gone_and_never_hang() {
    let (book, hub) = hub();
    let lp = Loop::start(Config::default(), hub);
    let (mut ws, me) = join(&lp.url);
    let id = book.id(&me);

    // A server that never ran: its queue fills, then it is dropped. What was queued
    // is discarded and Full turns into ServerGone.
    let idle = Server::bind(
        "127.0.0.1:0",
        Config {
            sender_queue: 2,
            ..Config::default()
        },
        wsloop::Echo,
    )
    .unwrap();
    let s = idle.sender();
    s.send(id, Message::text("a")).unwrap();
    s.send(id, Message::text("b")).unwrap();
    assert_eq!(s.send(id, Message::text("c")), Err(SendError::Full));
    drop(idle);
    assert_eq!(s.queued(), 0);
    assert_eq!(s.send(id, Message::text("d")), Err(SendError::ServerGone));

    // A running one, stopped while a producer thread keeps sending: every call
    // returns, and they fail with ServerGone from then on.
    let sender = lp.sender.clone();
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let producing = producing.clone();
        thread::spawn(move || {
            let mut last = Ok(());
            for i in 0..1_000_000u32 {
                last = sender.send(id, Message::text(format!("n {i}")));
                if last == Err(SendError::ServerGone) {
                    break;
                }
                if last == Err(SendError::Full) {
                    thread::sleep(Duration::from_millis(1));
                }
                if i == 100 {
                    producing.store(false, Ordering::Release);
                }
            }
            (last, sender)
        })
    };
    assert!(wait_until(Duration::from_secs(10), || !producing
        .load(Ordering::Acquire)));
    lp.stop();
    let started = Instant::now();
    while !producer.is_finished() && started.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        producer.is_finished(),
        "a send hung after the server was dropped"
    );
    let (last, sender) = producer.join().unwrap();
    assert_eq!(last, Err(SendError::ServerGone));
    assert_eq!(sender.close(id, 1000, ""), Err(SendError::ServerGone));
    assert_eq!(
        sender.shutdown(Shutdown::default()),
        Err(SendError::ServerGone)
    );
    assert_eq!(sender.queued(), 0);
    // The dropped server let go of its client's socket.
    set_client_timeout(&ws, Duration::from_secs(5));
    loop {
        match ws.read() {
            Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => panic!("unexpected {m:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the client's connection outlived the server")
            }
            Err(_) => break,
        }
    }
}

#[test]
fn a_send_for_a_connection_that_closed_meanwhile_is_dropped_and_counted() {
    let (book, hub) = hub();
    let cfg = Config {
        metrics_listen: loopback0(),
        ..Config::default()
    };
    let lp = Loop::start(cfg, hub);
    let (mut a, a_name) = join(&lp.url);
    let (mut b, b_name) = join(&lp.url);
    let (a_id, b_id) = (book.id(&a_name), book.id(&b_name));

    // Requests made while a is open; before the loop takes them, the application
    // closes a on the loop's thread.
    let stall = lp.stall();
    lp.sender
        .send(a_id, Message::text("for a, too late"))
        .unwrap();
    lp.sender.send(b_id, Message::text("for b")).unwrap();
    let closed = lp.post(move |s, _| s.ctx().close(a_id, 4000, "closed meanwhile"));
    stall.release();
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(())
    );
    assert_eq!(expect_closed(&mut a), (4000, "closed meanwhile".into()));
    assert_eq!(next_text(&mut b), "for b");
    assert_eq!(commands_dropped(&lp), 1);

    // The client closes first; a send made afterwards is accepted by the Sender (it
    // cannot know) and dropped by the loop.
    let (mut c, c_name) = join(&lp.url);
    let c_id = book.id(&c_name);
    c.close(None).unwrap();
    while c.read().is_ok() {}
    assert!(wait_until(Duration::from_secs(5), || book.is_closed(c_id)));
    lp.sender.send(c_id, Message::text("for c, gone")).unwrap();
    lp.sender.send(b_id, Message::text("for b again")).unwrap();
    assert_eq!(next_text(&mut b), "for b again");
    assert_eq!(commands_dropped(&lp), 2);
    assert_eq!(scraped(&lp, "wsloop_commands_dropped_total"), 2);

    // Nothing else was affected.
    assert_echo(&mut b, Message::text("b still echoes"));
    assert!(
        lp.with(move |s, _| s.ctx().is_open(b_id)),
        "b is still open"
    );
}

/// Parses a ConnId's Display form, `KEY.GENERATION`.
fn key_and_generation(shown: &str) -> (u32, u32) {
    let (k, g) = shown.split_once('.').expect("KEY.GENERATION");
    (k.parse().unwrap(), g.parse().unwrap())
}

#[test]
fn a_stale_id_whose_slot_was_reused_fails_and_never_reaches_the_new_tenant() {
    let (book, hub) = hub();
    let lp = Loop::start(Config::default(), hub);
    let (mut first, first_name) = join(&lp.url);
    let old = book.id(&first_name);
    first.close(None).unwrap();
    while first.read().is_ok() {}
    assert!(wait_until(Duration::from_secs(5), || {
        lp.with(|s, _| s.connections()) == 0
    }));

    let (mut tenant, tenant_name) = join(&lp.url);
    let new = book.id(&tenant_name);
    let (k_old, g_old) = key_and_generation(&first_name);
    let (k_new, g_new) = key_and_generation(&tenant_name);
    assert_eq!(
        k_old, k_new,
        "the slot was not reused: the test proves nothing"
    );
    assert_ne!(g_old, g_new);
    assert_ne!(old, new);

    // Server::ctx (as a callback's Ctx): refused at once, with Closed.
    let answers = lp.with(move |s, _| {
        let mut ctx = s.ctx();
        (
            ctx.is_open(old),
            ctx.buffered(old),
            ctx.send(old, Message::text("stale via ctx")),
            ctx.close(old, 1000, "stale"),
            ctx.set_timer(wsloop::Timer::on(old, 1), Duration::from_millis(1)),
            ctx.set_heartbeat(old, None, Some(Duration::from_millis(50))),
            ctx.is_open(new),
        )
    });
    let closed = Err(SendError::Closed);
    assert_eq!(
        answers,
        (false, None, closed, closed, closed, closed, true),
        "(is_open, buffered, send, close, set_timer, set_heartbeat, is_open(new))"
    );
    // A Sender cannot know: it accepts, the loop drops and counts.
    lp.sender
        .send(old, Message::text("stale via sender"))
        .unwrap();
    lp.sender.close(old, 4000, "stale close").unwrap();
    lp.sender
        .send(new, Message::text("for the tenant"))
        .unwrap();
    assert_eq!(next_text(&mut tenant), "for the tenant");
    assert_eq!(commands_dropped(&lp), 2);
    assert_echo(&mut tenant, Message::text("still open"));
}

#[test]
fn reconnects_reusing_slots_never_receive_messages_for_old_ids() {
    const THREADS: usize = 4;
    const CYCLES: usize = 40;
    let (book, hub) = hub();
    let lp = Loop::start(Config::default(), hub);
    let done = Arc::new(AtomicBool::new(false));

    // Sends to every id ever opened, old and new, round after round.
    let pusher = {
        let (sender, book, done) = (lp.sender.clone(), book.clone(), done.clone());
        thread::spawn(move || {
            let (mut sent, mut fulls) = (0u64, 0u64);
            for _ in 0..100_000 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                let ids = book.opened.lock().unwrap().clone();
                for id in ids {
                    match sender.send(id, Message::text(format!("to {id}"))) {
                        Ok(()) => sent += 1,
                        Err(SendError::Full) => fulls += 1,
                        Err(e) => panic!("send: {e}"),
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
            (sent, fulls)
        })
    };
    // Clients come and go (closing properly or vanishing), each checking that
    // whatever it receives is addressed to it.
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let url = lp.url.clone();
            thread::spawn(move || -> Result<(u64, Vec<String>), String> {
                let (mut received, mut names) = (0, Vec::new());
                for cycle in 0..CYCLES {
                    let (mut ws, me) = join(&url);
                    set_client_timeout(&ws, Duration::from_millis(15));
                    let want = format!("to {me}");
                    for _ in 0..4 {
                        match ws.read() {
                            Ok(Message::Text(t)) if t == want.as_str() => received += 1,
                            Ok(Message::Text(other)) => {
                                return Err(format!("client {me} (thread {t}) got {other:?}"));
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    if (cycle + t) % 2 == 0 {
                        let _ = ws.close(None);
                        set_client_timeout(&ws, Duration::from_secs(5));
                        while ws.read().is_ok() {}
                    }
                    names.push(me);
                }
                Ok((received, names))
            })
        })
        .collect();
    // Meanwhile, on the loop's thread: every id whose on_close ran is refused.
    let mut checks = 0;
    let mut violations = Vec::new();
    while !clients.iter().all(|c| c.is_finished()) && checks < 10_000 {
        let closed = book.closed_ids();
        let bad = lp.with(move |s, _| {
            let mut ctx = s.ctx();
            closed
                .into_iter()
                .filter(|&id| {
                    ctx.is_open(id)
                        || ctx.send(id, Message::text("stale")) != Err(SendError::Closed)
                })
                .collect::<Vec<_>>()
        });
        violations.extend(bad);
        checks += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let mut received = 0;
    let mut names = Vec::new();
    for c in clients {
        let (r, n) = c.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        received += r;
        names.extend(n);
    }
    done.store(true, Ordering::Release);
    let (sent, fulls) = pusher.join().unwrap();
    assert!(violations.is_empty(), "closed ids accepted: {violations:?}");

    // The test proves something only if slots were reused, messages reached their
    // clients, and messages for old ids were made and dropped.
    let mut generations: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for n in &names {
        let (k, g) = key_and_generation(n);
        generations.entry(k).or_default().push(g);
    }
    let reused = generations.values().filter(|g| g.len() > 1).count();
    let dropped = commands_dropped(&lp);
    println!(
        "reconnects: {} connections over {} slots; {sent} sends ({fulls} Full), {received} \
         delivered and checked, {dropped} dropped for stale ids; {checks} rounds of Ctx checks",
        names.len(),
        generations.len()
    );
    assert!(reused > 0, "no slot was reused");
    assert!(
        generations.values().all(|g| {
            let mut s = g.clone();
            s.sort();
            s.dedup();
            s.len() == g.len()
        }),
        "an id was handed out twice: {generations:?}"
    );
    assert!(received > 0, "no message reached its client");
    assert!(dropped > 0, "no send for a stale id was made");
    assert!(checks > 0);
}

#[test]
fn shutdown_closes_everyone_with_1012_spread_over_the_drain_period() {
    const N: usize = 10;
    const DRAIN: Duration = Duration::from_secs(2);
    let (book, hub) = hub();
    let mut lp = Loop::start(Config::default(), hub);
    let clients: Vec<_> = (0..N)
        .map(|_| {
            let (mut ws, _) = join(&lp.url);
            thread::spawn(move || {
                let mut close = None;
                loop {
                    match ws.read() {
                        Ok(Message::Close(f)) => {
                            let f = f.expect("a close code");
                            close = Some((Instant::now(), u16::from(f.code), f.reason.to_string()));
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::ConnectionClosed) => return close,
                        Err(e) => panic!("before the close handshake ended: {e}"),
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || {
        book.opened.lock().unwrap().len() == N
    }));
    let addr = lp.addr;
    let start = lp.with(|s, registry| {
        let now = Instant::now();
        let how = Shutdown {
            code: 1012,
            reason: "restarting".into(),
            drain: DRAIN,
        };
        s.shutdown(registry, now, how);
        now
    });
    // No new connections during the drain.
    assert!(std::net::TcpStream::connect(addr).is_err());

    let mut times: Vec<Duration> = clients
        .into_iter()
        .map(|c| {
            let (at, code, reason) = c.join().unwrap().expect("no close frame");
            assert_eq!((code, reason.as_str()), (1012, "restarting"));
            at - start
        })
        .collect();
    times.sort();
    println!("shutdown with a {DRAIN:?} drain: closes arrived at {times:?}");
    // The i-th close is not due before i/N of the period: never early.
    for (i, t) in times.iter().enumerate() {
        let due = DRAIN * i as u32 / N as u32;
        assert!(*t >= due, "close #{i} at {t:?}, due at {due:?}");
    }
    let spread = times[N - 1] - times[0];
    assert!(
        spread >= Duration::from_secs(1),
        "closes spread over {spread:?} only"
    );
    let slack = Duration::from_millis(1500);
    assert!(
        times[N - 1] <= DRAIN + slack,
        "the last close came at {:?}",
        times[N - 1]
    );
    assert!(
        lp.wait_ended(Duration::from_secs(10)),
        "the server did not finish once every client had answered"
    );
    assert_eq!(book.closed.lock().unwrap().len(), N);
}

#[test]
fn sender_shutdown_from_another_thread_ends_run() {
    let (book, hub) = hub();
    let server = Server::bind("127.0.0.1:0", Config::default(), hub).unwrap();
    let addr = server.local_addr().tcp().unwrap();
    let sender = server.sender();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(server.run().map_err(|e| e.to_string()));
    });
    let (mut ws, me) = join(&format!("ws://{addr}/ws"));
    let id = book.id(&me);
    // Through run()'s own waker.
    sender.send(id, Message::text("pushed")).unwrap();
    assert_eq!(next_text(&mut ws), "pushed");

    let other = sender.clone();
    thread::spawn(move || other.shutdown(Shutdown::default()))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(
        expect_closed(&mut ws),
        (1001, "server shutting down".into())
    );
    let ended = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("run() did not return after Sender::shutdown");
    assert_eq!(ended, Ok(()));
    // run() consumed the server: the Sender is of no use now.
    assert_eq!(
        sender.send(id, Message::text("too late")),
        Err(SendError::ServerGone)
    );
}

#[test]
fn raw_frames_and_long_control_payloads_are_refused_from_everywhere() {
    let (book, hub) = hub();
    let lp = Loop::start(Config::default(), hub);
    let (mut ws, me) = join(&lp.url);
    let id = book.id(&me);
    let raw_frame = || {
        Message::Frame(Frame::message(
            Bytes::from_static(b"raw"),
            OpCode::Data(Data::Text),
            true,
        ))
    };
    let ping = |n: usize| Message::Ping(Bytes::from(vec![b'p'; n]));
    let pong = |n: usize| Message::Pong(Bytes::from(vec![b'q'; n]));

    assert_eq!(lp.sender.send(id, raw_frame()), Err(SendError::Unsupported));
    assert_eq!(
        lp.sender.send(id, ping(200)),
        Err(SendError::ControlTooLong)
    );
    assert_eq!(
        lp.sender.send(id, pong(126)),
        Err(SendError::ControlTooLong)
    );
    assert_eq!(lp.sender.queued(), 0, "a refused request was queued");
    let answers = lp.with(move |s, _| {
        let mut ctx = s.ctx();
        (
            ctx.send(id, raw_frame()),
            ctx.send(id, ping(200)),
            ctx.send(id, pong(126)),
            ctx.send(id, ping(125)),
        )
    });
    assert_eq!(
        answers,
        (
            Err(SendError::Unsupported),
            Err(SendError::ControlTooLong),
            Err(SendError::ControlTooLong),
            Ok(())
        )
    );
    match ws.read().unwrap() {
        Message::Ping(p) => assert_eq!(p.as_ref(), &[b'p'; 125][..]),
        m => panic!("expected the 125-byte ping, got {m:?}"),
    }
    // Nothing refused went out: the next message is this echo.
    assert_echo(&mut ws, Message::text("after the refusals"));
    assert_eq!(commands_dropped(&lp), 0);
}

#[test]
fn a_close_message_sent_to_oneself_goes_through_the_close_handshake() {
    let (book, hub) = hub();
    let lp = Loop::start(Config::default(), hub);

    // A raw client, to see every frame and answer the Close itself.
    let mut s = upgraded(lp.addr, "/ws");
    let (b0, hello) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0x81);
    let me = String::from_utf8(hello).unwrap()["hello ".len()..].to_string();
    let id = book.id(&me);
    s.write_all(&frame(0x81, b"close-me 4001 self")).unwrap();
    let (b0, payload) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0x88, "expected the Close, got {payload:?}");
    assert_eq!(payload, close_payload(4001, b"self"));
    // The server waits for our answer (the handshake), then ends the connection,
    // without the text the handler queued after its Close.
    s.write_all(&close_frame(4001, b"")).unwrap();
    expect_eof(&mut s, ANSWER_WITHIN).unwrap();
    assert!(
        book.closed
            .lock()
            .unwrap()
            .contains(&(id, 4001, "self".into())),
        "on_close did not run with the handler's code"
    );
    assert_eq!(commands_dropped(&lp), 1, "the text after the close");
    assert_eq!(
        lp.with(move |s, _| s.ctx().send(id, Message::text("x"))),
        Err(SendError::Closed)
    );

    // Close without a frame: 1000, with a tungstenite client.
    let (mut ws, me) = join(&lp.url);
    ws.send(Message::text("close-me")).unwrap();
    assert_eq!(expect_closed(&mut ws), (1000, String::new()));
    let id = book.id(&me);
    assert!(wait_until(Duration::from_secs(5), || book.is_closed(id)));
}
