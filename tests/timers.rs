//! Application timers (issue 10) on a real server in this process: the order they
//! fire in, never early; cancelling and moving; timers tied to a connection die with
//! it (no `on_timer` after its `on_close`); and a loop with no timer armed does not
//! wake up at all (the loop thread's voluntary context switches over 10 s).

mod common;
use common::inproc::Loop;
use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wsloop::{Close, Config, ConnId, Ctx, Handler, Message, Request, Timer};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Opened(ConnId),
    Fired(Timer, Instant),
    Closed(ConnId),
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Ev>>>);

impl Log {
    fn push(&self, ev: Ev) {
        self.0.lock().unwrap().push(ev);
    }

    fn all(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }

    fn fired(&self) -> Vec<(Timer, Instant)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Fired(t, at) => Some((t, at)),
                _ => None,
            })
            .collect()
    }

    fn opened(&self) -> Vec<ConnId> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Opened(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// Logs what happens. Optionally arms a timer tied to each connection as it opens;
/// re-arms the timer with key `REPEAT` (not tied to a connection) `repeats` times;
/// closes a connection that sends `close-me`.
struct Clock {
    log: Log,
    conn_timer: Option<Duration>,
    repeats: u32,
}

const CONN_KEY: u64 = 1;
const REPEAT: u64 = 9;
const PERIOD: Duration = Duration::from_millis(20);

impl Handler for Clock {
    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        self.log.push(Ev::Opened(conn));
        if let Some(after) = self.conn_timer {
            ctx.set_timer(Timer::on(conn, CONN_KEY), after)
                .expect("a timer on the connection being opened");
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        if msg == Message::text("close-me") {
            ctx.close(conn, 4000, "bye").unwrap();
        } else {
            let _ = ctx.send(conn, msg);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        self.log.push(Ev::Fired(timer, Instant::now()));
        if timer.key == REPEAT && self.repeats > 0 {
            self.repeats -= 1;
            ctx.set_timer(timer, PERIOD).unwrap();
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx, conn: ConnId, _close: &Close) {
        self.log.push(Ev::Closed(conn));
    }
}

fn clock(conn_timer: Option<Duration>, repeats: u32) -> (Log, Clock) {
    let log = Log::default();
    let clock = Clock {
        log: log.clone(),
        conn_timer,
        repeats,
    };
    (log, clock)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn timers_fire_in_order_never_early_and_can_be_cancelled_or_moved() {
    let (log, clock) = clock(None, 0);
    let lp = Loop::start(Config::default(), clock);
    let t = Timer::new;
    let set_at = lp.with(move |s, _| {
        let set_at = Instant::now();
        let mut ctx = s.ctx();
        ctx.set_timer(t(3), ms(300)).unwrap();
        ctx.set_timer(t(1), ms(100)).unwrap();
        ctx.set_timer(t(2), ms(200)).unwrap();
        // Cancelled before it is due.
        ctx.set_timer(t(4), ms(150)).unwrap();
        ctx.cancel_timer(t(4));
        // Moved later, and moved earlier: each fires once, at its last time.
        ctx.set_timer(t(5), ms(50)).unwrap();
        ctx.set_timer(t(5), ms(400)).unwrap();
        ctx.set_timer(t(6), ms(5_000)).unwrap();
        ctx.set_timer(t(6), ms(250)).unwrap();
        // Cancelling what is not armed is harmless.
        ctx.cancel_timer(t(7));
        set_at
    });
    assert!(
        wait_until(Duration::from_secs(10), || log.fired().len() >= 5),
        "fired: {:?}",
        log.fired()
    );
    // Time for a cancelled or moved timer to fire wrongly: past 5's first time,
    // 4's time and a few ticks after the last.
    std::thread::sleep(ms(200));
    let fired = log.fired();
    let keys: Vec<u64> = fired.iter().map(|(t, _)| t.key).collect();
    assert_eq!(keys, [1, 2, 6, 3, 5], "fire order");
    let after = |k: u64| {
        ms(match k {
            1 => 100,
            2 => 200,
            3 => 300,
            5 => 400,
            6 => 250,
            _ => unreachable!(),
        })
    };
    for (timer, at) in &fired {
        assert_eq!(timer.conn, None);
        let waited = *at - set_at;
        assert!(
            waited >= after(timer.key),
            "timer {} fired after {waited:?}, set for {:?}",
            timer.key,
            after(timer.key)
        );
    }
}

#[test]
fn a_timer_can_rearm_itself_from_on_timer() {
    let (log, clock) = clock(None, 4);
    let lp = Loop::start(Config::default(), clock);
    let set_at = lp.with(|s, _| {
        s.ctx().set_timer(Timer::new(REPEAT), PERIOD).unwrap();
        Instant::now()
    });
    assert!(wait_until(Duration::from_secs(10), || log.fired().len() >= 5));
    std::thread::sleep(PERIOD * 5);
    let fired = log.fired();
    assert_eq!(fired.len(), 5, "armed once, re-armed 4 times: {fired:?}");
    // Each firing comes a period or more after the one before it.
    let mut prev = set_at;
    for (_, at) in fired {
        assert!(at - prev >= PERIOD, "{:?} after the previous", at - prev);
        prev = at;
    }
}

#[test]
fn timers_tied_to_a_connection_vanish_when_it_closes() {
    const AFTER: Duration = Duration::from_secs(1);
    let (log, clock) = clock(Some(AFTER), 0);
    let cfg = Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let lp = Loop::start(cfg, clock);
    let opened = |n: usize| {
        assert!(wait_until(Duration::from_secs(5), || log.opened().len() == n));
        log.opened()[n - 1]
    };

    // a closes itself: the close handshake ends and the connection is gone.
    let mut a = connect(&lp.url);
    let a_id = opened(1);
    a.close(None).unwrap();
    while a.read().is_ok() {}
    // b is closed by the server and never answers: it stays, closing, for the
    // close timeout (5 s), with its on_close done.
    let mut b = upgraded(lp.addr, "/ws");
    let b_id = opened(2);
    b.write_all(&frame(0x81, b"close-me")).unwrap();
    assert_eq!(read_close_code(&mut b), Some(4000));
    // c stays open: its timer fires (the timers work at all).
    let _c = connect(&lp.url);
    let c_id = opened(3);
    assert!(wait_until(Duration::from_secs(5), || {
        log.all().contains(&Ev::Closed(a_id)) && log.all().contains(&Ev::Closed(b_id))
    }));
    assert_eq!(
        lp.with(move |s, _| s.ctx().set_timer(Timer::on(b_id, 2), ms(1))),
        Err(wsloop::SendError::Closed),
        "a timer on a closed connection"
    );

    assert!(
        wait_until(Duration::from_secs(10), || !log.fired().is_empty()),
        "c's timer did not fire"
    );
    // a's and b's were due before c's: had they survived, they would have fired by now.
    std::thread::sleep(ms(300));
    let events = log.all();
    let fired: Vec<Option<ConnId>> = log.fired().iter().map(|(t, _)| t.conn).collect();
    assert_eq!(fired, [Some(c_id)], "events: {events:?}");
    let closed_at = |id| events.iter().position(|e| *e == Ev::Closed(id)).unwrap();
    let fired_at = events
        .iter()
        .position(|e| matches!(e, Ev::Fired(..)))
        .unwrap();
    assert!(
        closed_at(a_id) < fired_at && closed_at(b_id) < fired_at,
        "the closes came after the timers were due: the test proves nothing ({events:?})"
    );
    let (status, text) = scrape(lp.with(|s, _| s.metrics_addr().unwrap()), "/metrics");
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "wsloop_app_timers"), 0, "timers left armed");
    drop(b);
}

/// A thread's context switches so far: (voluntary, involuntary).
fn context_switches(tid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .expect("the loop thread's /proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

#[test]
fn the_loop_does_not_wake_up_in_10_s_with_no_timer_armed() {
    const WINDOW: Duration = Duration::from_secs(10);
    const REPEATS: u32 = 24;
    let (log, clock) = clock(None, REPEATS);
    // The default heartbeat (ping after 30 s): the connections' deadlines lie within
    // one revolution of the timer wheel (40.96 s), so the loop wakes for them only
    // when they are due, well after the window. (One farther away, such as a 1 h ping
    // interval, costs one wake-up per revolution.)
    let lp = Loop::start(Config::default(), clock);
    let mut idle: Vec<Client> = (0..3).map(|_| connect(&lp.url)).collect();
    assert!(wait_until(Duration::from_secs(5), || log.opened().len() == 3));
    let first = log.opened()[0];

    // The measure can see wake-ups: a timer re-armed every 20 ms wakes the loop
    // each time.
    let before = context_switches(lp.tid);
    lp.with(|s, _| s.ctx().set_timer(Timer::new(REPEAT), PERIOD).unwrap());
    assert!(wait_until(Duration::from_secs(10), || {
        log.fired().len() == REPEATS as usize + 1
    }));
    let ticking = context_switches(lp.tid).0 - before.0;
    assert!(
        ticking >= REPEATS as u64,
        "{ticking} voluntary switches for {} timer wake-ups: the measure does not work",
        REPEATS + 1
    );
    // Timers armed and cancelled, one tied to a connection, and a push through the
    // Sender (the waker): none of it may leave anything behind.
    lp.with(move |s, _| {
        let mut ctx = s.ctx();
        ctx.set_timer(Timer::new(10), Duration::from_secs(3600))
            .unwrap();
        ctx.cancel_timer(Timer::new(10));
        ctx.set_timer(Timer::on(first, 11), ms(50)).unwrap();
        ctx.cancel_timer(Timer::on(first, 11));
    });
    lp.sender.send(first, Message::text("pushed")).unwrap();
    assert_eq!(idle[0].read().unwrap(), Message::text("pushed"));
    std::thread::sleep(ms(200));

    let start = context_switches(lp.tid);
    std::thread::sleep(WINDOW);
    let end = context_switches(lp.tid);
    println!(
        "loop thread over {WINDOW:?} with 3 idle clients and no timer armed: {} voluntary, \
         {} involuntary context switches (a timer every 20 ms: {ticking} in {} firings)",
        end.0 - start.0,
        end.1 - start.1,
        REPEATS + 1
    );
    assert_eq!(end.0 - start.0, 0, "the loop woke up with nothing to do");
    assert_eq!(log.fired().len(), REPEATS as usize + 1);
    // Still serving.
    assert_echo(&mut idle[1], Message::text("awake"));
}
