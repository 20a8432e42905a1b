//! The handler's hooks beyond messages (issue 10), on a real server in this process:
//! `on_upgrade` refusing with a status or accepting with headers before the 101;
//! `on_ping` and `on_pong` with tungstenite's client and Python's `websockets`
//! (automatic Pong kept or skipped, pings sent with a payload by the handler);
//! per-connection heartbeats (`set_heartbeat`); and `on_drain` pacing a producer by
//! `ctx.buffered`.

mod common;
use common::inproc::Loop;
use common::python::{check_report, python_venv, run_script};
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use wsloop::{AutoPong, Bytes, Close, Config, ConnId, Ctx, Handler, Message, Request, Upgrade};

/// What the handler saw.
#[derive(Clone, Default)]
struct Seen {
    upgrades: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    opens: Arc<AtomicUsize>,
    pings: Arc<Mutex<Vec<Vec<u8>>>>,
    pongs: Arc<Mutex<Vec<Vec<u8>>>>,
    closes: Arc<Mutex<Vec<(ConnId, u16)>>>,
}

impl Seen {
    fn pings(&self) -> Vec<Vec<u8>> {
        self.pings.lock().unwrap().clone()
    }

    fn pongs(&self) -> Vec<Vec<u8>> {
        self.pongs.lock().unwrap().clone()
    }
}

const REALM: &str = "Bearer realm=\"wsloop\"";
const COOKIE: &str = "session=s3cr3t; Path=/; HttpOnly";
/// `set_heartbeat` for connections that ask for `?heartbeat=short`.
const SHORT_PING: Duration = Duration::from_millis(200);
const SHORT_IDLE: Duration = Duration::from_millis(500);

/// Requests for `/ws?auth...` must carry a bearer token (the tokens below choose
/// what the handler answers); `?heartbeat=short` gets a short heartbeat of its own.
/// Echoes; `ping-me X` is answered with a Ping of payload X, each Pong with
/// `pong-seen X`; Pings whose payload starts with `skip` get no automatic Pong.
struct Hooks(Seen);

impl Handler for Hooks {
    fn on_upgrade(&mut self, request: &Request) -> Upgrade {
        self.0
            .upgrades
            .lock()
            .unwrap()
            .push((request.path.clone(), request.peer));
        if !request.path.contains("auth") {
            return Upgrade::accept();
        }
        match request.header("Authorization") {
            Some("Bearer good") => Upgrade::accept().header("Set-Cookie", COOKIE),
            // Each of these is impossible to send: the server answers 500 instead.
            Some("Bearer bad-name") => Upgrade::accept().header("Bad Name", "x"),
            Some("Bearer bad-value") => {
                Upgrade::reject(403, "no").header("X-Evil", "a\r\nInjected: yes")
            }
            Some("Bearer bad-status") => Upgrade::reject(200, "fine?"),
            _ => Upgrade::reject(401, "token required").header("WWW-Authenticate", REALM),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx, conn: ConnId, request: &Request) {
        self.0.opens.fetch_add(1, Ordering::SeqCst);
        if request.path.contains("heartbeat=short") {
            ctx.set_heartbeat(conn, Some(SHORT_PING), Some(SHORT_IDLE))
                .unwrap();
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        if let Message::Text(t) = &msg
            && let Some(payload) = t.strip_prefix("ping-me ")
        {
            let ping = Message::Ping(Bytes::copy_from_slice(payload.as_bytes()));
            ctx.send(conn, ping).unwrap();
            return;
        }
        let _ = ctx.send(conn, msg);
    }

    fn on_ping(&mut self, _ctx: &mut Ctx, _conn: ConnId, payload: &[u8]) -> AutoPong {
        self.0.pings.lock().unwrap().push(payload.to_vec());
        if payload.starts_with(b"skip") {
            AutoPong::Skip
        } else {
            AutoPong::Send
        }
    }

    fn on_pong(&mut self, ctx: &mut Ctx, conn: ConnId, payload: &[u8]) {
        self.0.pongs.lock().unwrap().push(payload.to_vec());
        let seen = format!("pong-seen {}", String::from_utf8_lossy(payload));
        ctx.send(conn, Message::text(seen)).unwrap();
    }

    fn on_close(&mut self, _ctx: &mut Ctx, conn: ConnId, close: &Close) {
        self.0.closes.lock().unwrap().push((conn, close.code));
    }
}

fn hooks() -> (Seen, Loop<Hooks>) {
    let seen = Seen::default();
    let lp = Loop::start(Config::default(), Hooks(seen.clone()));
    (seen, lp)
}

#[test]
fn on_upgrade_refuses_with_a_status_or_accepts_with_headers() {
    let (seen, lp) = hooks();
    let addr = lp.addr;
    let request = |token: &str| {
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        upgrade_request(addr, "/ws?auth=1", &auth)
    };

    // No token: 401 with the challenge header and the handler's one-line body.
    let r = refused(
        addr,
        request("").as_bytes(),
        401,
        &[("WWW-Authenticate", REALM)],
    )
    .unwrap();
    assert_eq!(r.body, "token required\n");
    assert!(
        r.head.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{}",
        r.head
    );
    let r = refused(
        addr,
        request("wrong").as_bytes(),
        401,
        &[("WWW-Authenticate", REALM)],
    )
    .unwrap();
    assert_eq!(r.body, "token required\n");

    // The right token: 101 with the cookie, then a working connection.
    let mut s = raw(addr);
    s.write_all(request("good").as_bytes()).unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    let reply = Reply {
        status,
        head: head.trim_end().to_string(),
        body: String::new(),
    };
    assert_eq!(reply.header("Set-Cookie"), Some(COOKIE), "{head}");
    assert!(reply.header("Sec-WebSocket-Accept").is_some(), "{head}");
    s.write_all(&frame(0x81, b"in")).unwrap();
    expect_frame(&mut s, 0x81, b"in").unwrap();

    // A verdict that cannot be sent as HTTP is a 500, and nothing of it leaks out.
    for token in ["bad-name", "bad-value", "bad-status"] {
        let r = refused(addr, request(token).as_bytes(), 500, &[])
            .unwrap_or_else(|e| panic!("{token}: {e}"));
        assert!(
            !r.head.contains("Injected") && !r.head.contains("Bad Name"),
            "{token}: {}",
            r.head
        );
    }
    // Requests the server refuses itself never reach on_upgrade.
    let before = seen.upgrades.lock().unwrap().len();
    let (status, _) = http(addr, upgrade_request(addr, "/nope", "").as_bytes());
    assert_eq!(status, 404);
    assert_eq!(seen.upgrades.lock().unwrap().len(), before);

    // The server stays healthy: a tungstenite client with the token connects.
    let mut req = format!("ws://{addr}/ws?auth=1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", HeaderValue::from_static("Bearer good"));
    let (mut ws, response) = tungstenite::connect(req).expect("connect with the token");
    assert_eq!(
        response.headers().get("Set-Cookie").map(|v| v.as_bytes()),
        Some(COOKIE.as_bytes())
    );
    assert_echo(&mut ws, Message::text("healthy"));

    // on_upgrade saw every request that passed the server's checks, with its query
    // and peer; on_open only the two it accepted.
    let upgrades = seen.upgrades.lock().unwrap().clone();
    assert_eq!(upgrades.len(), 7, "{upgrades:?}");
    assert!(
        upgrades
            .iter()
            .all(|(path, peer)| path == "/ws?auth=1" && peer.ip().is_loopback())
    );
    assert_eq!(seen.opens.load(Ordering::SeqCst), 2);
}

#[test]
fn on_ping_and_on_pong_with_a_tungstenite_client() {
    let (seen, lp) = hooks();
    let mut ws = connect(&lp.url);

    // on_ping sees the payload; the automatic Pong still goes out.
    ws.send(Message::Ping(Bytes::from_static(b"hello-ping")))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(Bytes::from_static(b"hello-ping"))
    );
    // AutoPong::Skip: no Pong; the echo of a text sent right after comes first.
    ws.send(Message::Ping(Bytes::from_static(b"skip-this")))
        .unwrap();
    ws.send(Message::text("after skip")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after skip"));
    assert_eq!(
        seen.pings(),
        [b"hello-ping".to_vec(), b"skip-this".to_vec()]
    );

    // A Ping the handler sends with a payload: tungstenite answers it (on its next
    // read) and on_pong sees the same payload.
    ws.send(Message::text("ping-me ts-42")).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Ping(Bytes::from_static(b"ts-42"))
    );
    assert_eq!(ws.read().unwrap(), Message::text("pong-seen ts-42"));
    // An unsolicited Pong reaches on_pong too.
    ws.send(Message::Pong(Bytes::from_static(b"unasked")))
        .unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("pong-seen unasked"));
    assert_eq!(seen.pongs(), [b"ts-42".to_vec(), b"unasked".to_vec()]);
}

#[test]
fn on_ping_and_on_pong_with_python_websockets() {
    let python = python_venv();
    let (seen, lp) = hooks();
    let out = run_script(&python, "hooks.py", &[&lp.url], Duration::from_secs(120));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    check_report(
        &out,
        "python-hooks",
        &["auto-pong", "server-ping", "skip"],
        &String::new,
    );
    assert_eq!(seen.pings(), [b"py-ping".to_vec(), b"skip-py".to_vec()]);
    assert_eq!(seen.pongs(), [b"py-ts-7".to_vec()]);
}

#[test]
fn a_connection_with_a_short_heartbeat_of_its_own_is_closed_1001_the_others_stay() {
    let (seen, lp) = hooks();
    // Raw clients: neither answers a Ping.
    let mut short = upgraded(lp.addr, "/ws?heartbeat=short");
    let opened = Instant::now();
    let mut plain = upgraded(lp.addr, "/ws");

    short
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (b0, payload) = read_frame(&mut short).expect("the heartbeat Ping");
    assert_eq!((b0, payload.as_slice()), (0x89, &b""[..]));
    let pinged = opened.elapsed();
    let (b0, payload) = read_frame(&mut short).expect("the idle Close");
    assert_eq!(b0, 0x88);
    assert_eq!(close_code(&payload), 1001);
    let closed = opened.elapsed();
    expect_eof(&mut short, ANSWER_WITHIN).unwrap();
    // Never early (from the open, which was before `opened`).
    assert!(pinged >= SHORT_PING, "pinged after {pinged:?}");
    assert!(closed >= SHORT_IDLE, "closed after {closed:?}");
    assert!(wait_until(Duration::from_secs(5), || {
        seen.closes.lock().unwrap().iter().any(|c| c.1 == 1001)
    }));

    // The other one has the server's heartbeat (a ping after 30 s): still open.
    plain.write_all(&frame(0x81, b"still here")).unwrap();
    expect_frame(&mut plain, 0x81, b"still here").unwrap();
    assert_eq!(seen.closes.lock().unwrap().len(), 1);
}

/// Pumps numbered binary chunks to a connection that said `go`, stopping whenever
/// `ctx.buffered` reaches the mark and resuming in `on_drain`.
struct Pump {
    state: Arc<Mutex<PumpState>>,
}

#[derive(Default)]
struct PumpState {
    mark: usize,
    total: usize,
    sent: usize,
    /// Chunks queued by each call of `pump`, and what `ctx.buffered` said after.
    calls: Vec<(usize, usize)>,
    drains: Vec<usize>,
}

const CHUNK: usize = 16 << 10;

impl Pump {
    fn pump(&self, ctx: &mut Ctx, conn: ConnId) {
        let mut st = self.state.lock().unwrap();
        let mut queued = 0;
        // Bounded: the whole stream at most.
        while st.sent < st.total && queued <= st.total {
            let Some(buffered) = ctx.buffered(conn) else {
                return;
            };
            if buffered >= st.mark {
                break;
            }
            let mut chunk = vec![(st.sent % 251) as u8; CHUNK];
            chunk[..8].copy_from_slice(&(st.sent as u64).to_be_bytes());
            ctx.send(conn, Message::binary(chunk)).unwrap();
            st.sent += 1;
            queued += 1;
        }
        let after = ctx.buffered(conn).unwrap_or(0);
        st.calls.push((queued, after));
    }
}

impl Handler for Pump {
    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        if msg == Message::text("go") {
            self.pump(ctx, conn);
        }
    }

    fn on_drain(&mut self, ctx: &mut Ctx, conn: ConnId, buffered: usize) {
        self.state.lock().unwrap().drains.push(buffered);
        self.pump(ctx, conn);
    }
}

/// The most a loopback connection's kernel buffers can take on the sending side
/// (tcp_wmem's maximum: the send buffer autotunes up to it).
fn kernel_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[test]
fn on_drain_resumes_a_producer_that_stopped_at_its_mark() {
    // A mark above what the kernel can take, so that output waits in the server
    // whenever the producer stops, whatever the socket buffers autotune to.
    let mark = kernel_send_buffer_max() + (1 << 20);
    let total = 3 * mark / CHUNK;
    let state = Arc::new(Mutex::new(PumpState {
        mark,
        total,
        ..PumpState::default()
    }));
    let lp = Loop::start(
        Config::default(),
        Pump {
            state: state.clone(),
        },
    );
    // A client with a small receive window that asks, then does not read for a while.
    let mut s = connect_tuned(lp.addr, None, Some(16 << 10)).unwrap();
    s.write_all(upgrade_request(lp.addr, "/ws", "").as_bytes())
        .unwrap();
    assert_eq!(read_head(&mut s).0, 101);
    s.write_all(&frame(0x81, b"go")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        !state.lock().unwrap().calls.is_empty()
    }));
    std::thread::sleep(Duration::from_millis(300));
    {
        let st = state.lock().unwrap();
        let (first, after) = st.calls[0];
        assert!(
            first * CHUNK <= mark + CHUNK && after >= mark,
            "the producer did not stop at its mark: {first} chunks ({} bytes) queued in one \
             call for a mark of {mark}; ctx.buffered said {after} after them",
            first * CHUNK
        );
        assert!(
            st.sent < total,
            "everything was queued before the client read"
        );
    }

    // Now read it all: every chunk, in order, whole.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for i in 0..total {
        let (b0, payload) = read_frame(&mut s).unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        assert_eq!(b0, 0x82, "chunk {i}");
        assert_eq!(payload.len(), CHUNK, "chunk {i}");
        assert_eq!(
            u64::from_be_bytes(payload[..8].try_into().unwrap()),
            i as u64,
            "chunk order"
        );
        assert!(
            payload[8..].iter().all(|&b| b == (i % 251) as u8),
            "chunk {i}"
        );
    }
    let st = state.lock().unwrap();
    assert_eq!(st.sent, total);
    assert!(!st.drains.is_empty(), "on_drain was never called");
    let over = st
        .calls
        .iter()
        .filter(|(_, after)| *after > mark + CHUNK + 14);
    assert_eq!(
        over.count(),
        0,
        "buffered went past the mark: {:?}",
        st.calls
    );
    println!(
        "on_drain: {total} chunks of {CHUNK} B with a mark of {mark} B: {} pump calls, {} \
         drains",
        st.calls.len(),
        st.drains.len()
    );
}
