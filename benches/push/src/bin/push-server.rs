//! push-server: pushes 64-byte stamped binary messages to connected clients, round
//! robin, once a client sends the text `go`; echoes any other text (the echo client's
//! round trips). Modes:
//!   thread  --producers P threads send through wsloop `Sender`s (on `Full`: sleep
//!           50 µs and retry, counted)
//!   loop    an application timer (every 1 ms, so each 10 ms wheel tick) sends the
//!           batch due through `Ctx::send`
//!   tokio   tokio-tungstenite on a current_thread runtime, a bounded mpsc (256, as
//!           gorilla's hub) per client; P producer threads `try_send` (on `Full`:
//!           sleep 50 µs and retry, counted)
//! Load: --messages M in all, at --rate R messages/s in all (0: as fast as accepted).
//! Prints `listening on` when ready and `PRODUCED ...` once all M are handed over.
//!
//! Usage: push-server --mode thread|loop|tokio --listen 127.0.0.1:PORT
//!        [--messages 1000000] [--rate 0] [--producers 1] [--batch 16384]

use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use wsloop::{Config, ConnId, Ctx, Handler, Message, Request, SendError, Server, Timer};
use wsloop_bench_kit::{Args, die, raise_nofile};
use wsloop_push_bench::payload;

/// In-loop producer with no rate: the most it sends per timer (--batch), by default
/// as many as a `Sender`'s queue holds (the default `sender_queue`). The loop takes
/// at most 4096 `Sender` requests a turn: `--batch 4096` gives the in-loop producer
/// the same batches, to tell batching from the queue's own cost.
const LOOP_BATCH: u64 = 16_384;
/// In-loop producer with no rate: it stops a batch at a connection with this much
/// output waiting, as the thread producer is stopped by a full queue.
const LOOP_HIGH_WATER: usize = 16 << 10;
/// How long a producer sleeps when the queue (or a client's channel) is full.
const BACKOFF: Duration = Duration::from_micros(50);

#[derive(Clone, Copy)]
struct Load {
    messages: u64,
    rate: u64,
    producers: u64,
    /// loop mode without a rate: messages per timer
    batch: u64,
}

/// Counters the producers share, printed as `PRODUCED` when the last one ends.
#[derive(Default)]
struct Tally {
    full: AtomicU64,
    dropped: AtomicU64,
    running: AtomicUsize,
}

impl Tally {
    fn producer_done(&self, load: Load, started: Instant) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            produced(
                load.messages,
                self.full.load(Ordering::Relaxed),
                self.dropped.load(Ordering::Relaxed),
                started,
            );
        }
    }
}

fn produced(messages: u64, full: u64, dropped: u64, started: Instant) {
    eprintln!(
        "PRODUCED messages={messages} full={full} dropped={dropped} secs={:.3}",
        started.elapsed().as_secs_f64()
    );
}

/// Messages producer `k` of `load.producers` sends, and the `share` of the rate.
fn share(load: Load, k: u64) -> u64 {
    load.messages / load.producers + u64::from(k < load.messages % load.producers)
}

/// The messages due `elapsed` into a run at `rate` per second (all of `n` with no rate).
fn due(rate: u64, n: u64, elapsed: Duration) -> u64 {
    if rate == 0 {
        n
    } else {
        n.min((elapsed.as_secs_f64() * rate as f64) as u64)
    }
}

/// One producer thread: waits for the targets, then sends its share round robin,
/// paced to its share of the rate, through `send` (which says whether it was full).
fn produce<T>(
    k: u64,
    load: Load,
    tally: Arc<Tally>,
    go: mpsc::Receiver<Arc<Vec<T>>>,
    send: impl Fn(&T, Vec<u8>) -> Result<(), Push>,
) {
    let Ok(targets) = go.recv() else { return };
    if targets.is_empty() {
        return;
    }
    let started = Instant::now();
    let n = share(load, k);
    let rate = load.rate / load.producers;
    let mut sent = 0u64;
    while sent < n {
        let until = due(rate, n, started.elapsed());
        if sent >= until {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < until {
            // spread the producers over the clients
            let i = (sent + k * targets.len() as u64 / load.producers) as usize % targets.len();
            let body = payload(sent * load.producers + k);
            loop {
                match send(&targets[i], body.clone()) {
                    Ok(()) => break,
                    Err(Push::Full) => {
                        tally.full.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(BACKOFF);
                    }
                    Err(Push::Gone) => {
                        tally.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            sent += 1;
        }
    }
    tally.producer_done(load, started);
}

enum Push {
    Full,
    Gone,
}

/// Starts `load.producers` threads; returns the channels that start them.
fn spawn_producers<T: Send + Sync + 'static>(
    load: Load,
    send: impl Fn(&T, Vec<u8>) -> Result<(), Push> + Clone + Send + 'static,
) -> Vec<mpsc::Sender<Arc<Vec<T>>>> {
    let tally = Arc::new(Tally::default());
    tally
        .running
        .store(load.producers as usize, Ordering::Relaxed);
    (0..load.producers)
        .map(|k| {
            let (tx, rx) = mpsc::channel();
            let (tally, send) = (tally.clone(), send.clone());
            thread::spawn(move || produce(k, load, tally, rx, send));
            tx
        })
        .collect()
}

/// The in-loop producer's state once `go` came.
struct InLoop {
    targets: Vec<ConnId>,
    sent: u64,
    dropped: u64,
    started: Instant,
}

struct Hub {
    load: Load,
    open: Vec<ConnId>,
    /// thread mode: the producers' start signals (taken at `go`)
    go: Vec<mpsc::Sender<Arc<Vec<ConnId>>>>,
    /// loop mode: set at `go`
    in_loop: Option<InLoop>,
    threaded: bool,
}

const PRODUCE: Timer = Timer { key: 1, conn: None };

impl Hub {
    fn start(&mut self, ctx: &mut Ctx) {
        let targets = self.open.clone();
        if targets.is_empty() {
            return;
        }
        eprintln!("go: {} targets", targets.len());
        if self.threaded {
            let targets = Arc::new(targets);
            for tx in self.go.drain(..) {
                let _ = tx.send(targets.clone());
            }
        } else if self.in_loop.is_none() {
            self.in_loop = Some(InLoop {
                targets,
                sent: 0,
                dropped: 0,
                started: Instant::now(),
            });
            let _ = ctx.set_timer(PRODUCE, Duration::ZERO);
        }
    }
}

impl Handler for Hub {
    fn on_open(&mut self, _ctx: &mut Ctx, conn: ConnId, _request: &Request) {
        self.open.push(conn);
    }

    fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
        match msg {
            Message::Text(t) if t.as_str() == "go" => self.start(ctx),
            Message::Text(_) => {
                let _ = ctx.send(conn, msg);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx, _timer: Timer) {
        let load = self.load;
        let Some(p) = self.in_loop.as_mut() else {
            return;
        };
        let until = if load.rate == 0 {
            load.messages.min(p.sent + load.batch)
        } else {
            due(load.rate, load.messages, p.started.elapsed())
        };
        while p.sent < until {
            let conn = p.targets[p.sent as usize % p.targets.len()];
            if load.rate == 0 && ctx.buffered(conn).unwrap_or(0) > LOOP_HIGH_WATER {
                break;
            }
            if ctx.send(conn, Message::binary(payload(p.sent))).is_err() {
                p.dropped += 1;
            }
            p.sent += 1;
        }
        if p.sent < load.messages {
            // the next wheel tick (10 ms)
            let _ = ctx.set_timer(PRODUCE, Duration::from_millis(1));
        } else {
            produced(load.messages, 0, p.dropped, p.started);
        }
    }
}

fn run_wsloop(listen: &str, load: Load, threaded: bool) {
    let cfg = Config {
        max_connections: 4_000,
        ..Config::default()
    };
    let hub = Hub {
        load,
        open: Vec::new(),
        go: Vec::new(),
        in_loop: None,
        threaded,
    };
    let mut server = Server::bind(listen, cfg, hub).unwrap_or_else(|e| die(&format!("bind: {e}")));
    if threaded {
        let sender = server.sender();
        let go = spawn_producers(load, move |conn: &ConnId, body| {
            match sender.send(*conn, Message::binary(body)) {
                Ok(()) => Ok(()),
                Err(SendError::Full) => Err(Push::Full),
                Err(_) => Err(Push::Gone),
            }
        });
        server.handler_mut().go = go;
    }
    eprintln!("push-server (wsloop) listening on {}", server.local_addr());
    if let Err(e) = server.run() {
        die(&format!("run: {e}"));
    }
}

type Outbox = tokio::sync::mpsc::Sender<Message>;

/// The tokio server's shared state: every client's channel, and the producers'
/// start signals.
struct TokioHub {
    clients: Mutex<Vec<Outbox>>,
    go: Mutex<Vec<mpsc::Sender<Arc<Vec<Outbox>>>>>,
}

async fn tokio_client(stream: tokio::net::TcpStream, hub: Arc<TokioHub>) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut write, mut read) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(256);
    if let Ok(mut c) = hub.clients.lock() {
        c.push(tx);
    }
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                // write what is waiting, then flush once
                if write.feed(m).await.is_err() {
                    break;
                }
                while let Ok(m) = rx.try_recv() {
                    if write.feed(m).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    break;
                }
            }
            r = read.next() => match r {
                Some(Ok(Message::Text(t))) if t.as_str() == "go" => {
                    let targets = Arc::new(hub.clients.lock().map(|c| c.clone()).unwrap_or_default());
                    eprintln!("go: {} targets", targets.len());
                    for tx in hub.go.lock().map(|mut g| std::mem::take(&mut *g)).unwrap_or_default() {
                        let _ = tx.send(targets.clone());
                    }
                }
                Some(Ok(m @ Message::Text(_))) => {
                    if write.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
}

fn run_tokio(listen: &str, load: Load) {
    let go = spawn_producers(load, |tx: &Outbox, body| {
        use tokio::sync::mpsc::error::TrySendError;
        match tx.try_send(Message::binary(body)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Push::Full),
            Err(TrySendError::Closed(_)) => Err(Push::Gone),
        }
    });
    let hub = Arc::new(TokioHub {
        clients: Mutex::new(Vec::new()),
        go: Mutex::new(go),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| die(&format!("bind: {e}")));
        eprintln!("push-server (tokio) listening on {listen}");
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(tokio_client(s, hub.clone()));
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
    });
}

fn main() {
    let args = Args::from_env();
    let mode = args.get("mode").unwrap_or("thread").to_string();
    let listen = args.get("listen").unwrap_or("127.0.0.1:19300").to_string();
    let load = Load {
        messages: args.num("messages", 1_000_000u64),
        rate: args.num("rate", 0u64),
        producers: args.num("producers", 1u64).max(1),
        batch: args.num("batch", LOOP_BATCH).max(1),
    };
    args.finish();
    raise_nofile();
    match mode.as_str() {
        "thread" => run_wsloop(&listen, load, true),
        "loop" => run_wsloop(&listen, load, false),
        "tokio" => run_tokio(&listen, load),
        _ => die("--mode must be thread, loop or tokio"),
    }
}
