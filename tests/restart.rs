//! A restart that refuses no one. The test plays systemd: it holds the listening
//! socket, starts the old wsloop with it (socket activation: fd 3, `LISTEN_FDS=1`,
//! `LISTEN_PID`), loads it with echoing clients and a stream of new connections,
//! SIGTERMs it and starts the new one on the same socket. Every old client must get
//! the drain's close code and reconnect, no connect may fail, and no echo may go
//! wrong. The closes' spread over the drain period is printed as a histogram
//! (`cargo test --test restart -- --nocapture`), not asserted beyond "not all at once".

mod common;
use common::systemd::{activated, listen_socket};
use common::*;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Clients connected to the old process, shared among `WORKERS` threads.
const CLIENTS: usize = 300;
const WORKERS: usize = 6;
const DRAIN_SECS: u64 = 3;

#[derive(Default)]
struct Tally {
    /// Set when the old process is sent SIGTERM.
    sigterm: OnceLock<Instant>,
    /// Old clients' close codes and when they were read, after SIGTERM.
    closes: Mutex<Vec<(u16, Duration)>>,
    connected: AtomicUsize,
    /// Old clients that reconnected and echoed on the new connection.
    reconnected: AtomicUsize,
    echoes: AtomicU64,
    /// Connects that failed: refused, reset, or an upgrade that did not complete.
    failed_connects: Mutex<Vec<String>>,
    /// Anything else that went wrong on an established connection.
    errors: Mutex<Vec<String>>,
    /// Connections of the stream of new clients that connected and echoed.
    new_ok: AtomicU64,
    stop: AtomicBool,
}

fn try_connect(addr: SocketAddr, tally: &Tally) -> Option<Client> {
    match tungstenite::connect(format!("ws://{addr}/ws")) {
        Ok((ws, _)) => {
            set_client_timeout(&ws, Duration::from_secs(15));
            Some(ws)
        }
        Err(e) => {
            tally.failed_connects.lock().unwrap().push(e.to_string());
            None
        }
    }
}

/// What one echo on a connection came to.
enum Echo {
    Ok,
    /// The server closed the connection with this code (the close handshake done).
    Closed(u16),
    Failed(String),
}

fn echo(ws: &mut Client, text: String) -> Echo {
    if let Err(e) = ws.send(Message::text(text.clone())) {
        return Echo::Failed(format!("send: {e}"));
    }
    for _ in 0..1000 {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == text => return Echo::Ok,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(f)) => {
                let code = f.map_or(1005, |f| u16::from(f.code));
                // tungstenite answers the Close; the server then ends the connection.
                while ws.read().is_ok() {}
                return Echo::Closed(code);
            }
            Ok(m) => return Echo::Failed(format!("unexpected {m:?}")),
            Err(e) => return Echo::Failed(format!("read: {e}")),
        }
    }
    Echo::Failed("no echo among 1000 messages".into())
}

/// One worker: its share of the clients echo in turn until told to stop; a client
/// the old process closes records its code and reconnects.
fn worker(w: usize, addr: SocketAddr, tally: Arc<Tally>) {
    let mut conns: Vec<(Client, bool)> = (0..CLIENTS / WORKERS)
        .filter_map(|_| try_connect(addr, &tally).map(|ws| (ws, false)))
        .collect();
    tally.connected.fetch_add(conns.len(), Ordering::SeqCst);
    let mut n = 0u64;
    while !tally.stop.load(Ordering::SeqCst) {
        for (i, (ws, reconnected)) in conns.iter_mut().enumerate() {
            n += 1;
            match echo(ws, format!("worker {w} client {i} message {n}")) {
                Echo::Ok => {
                    tally.echoes.fetch_add(1, Ordering::Relaxed);
                }
                Echo::Closed(code) => {
                    let at = tally.sigterm.get().map_or(Duration::ZERO, |t| t.elapsed());
                    if *reconnected {
                        tally.errors.lock().unwrap().push(format!(
                            "worker {w} client {i}: the new process closed it ({code})"
                        ));
                    }
                    tally.closes.lock().unwrap().push((code, at));
                    let Some(mut fresh) = try_connect(addr, &tally) else {
                        return;
                    };
                    match echo(&mut fresh, format!("worker {w} client {i} is back")) {
                        Echo::Ok => {
                            tally.reconnected.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => tally
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("worker {w} client {i}: no echo after reconnecting")),
                    }
                    *ws = fresh;
                    *reconnected = true;
                }
                Echo::Failed(e) => {
                    tally
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("worker {w} client {i}: {e}"));
                    return;
                }
            }
        }
    }
    for (mut ws, _) in conns {
        let _ = ws.close(None);
        while ws.read().is_ok() {}
    }
}

/// New clients, one after another: connect, echo once, close. Bounded in count.
fn newcomers(addr: SocketAddr, tally: Arc<Tally>) {
    for i in 0..5000 {
        if tally.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(mut ws) = try_connect(addr, &tally) else {
            continue;
        };
        match echo(&mut ws, format!("newcomer {i}")) {
            Echo::Ok => {
                tally.new_ok.fetch_add(1, Ordering::SeqCst);
            }
            // The old process's drain may reach a newcomer it had just accepted.
            Echo::Closed(_) => continue,
            Echo::Failed(e) => {
                tally
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("newcomer {i}: {e}"));
                continue;
            }
        }
        let _ = ws.close(None);
        while ws.read().is_ok() {}
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn restart_with_an_inherited_socket_refuses_no_one() {
    let listener = listen_socket();
    let fd = listener.as_raw_fd();
    let drain = format!("{DRAIN_SECS}s");
    let args = [
        "--log-level",
        "info",
        "--drain-period",
        &drain,
        "--drain-code",
        "1012",
    ];
    let mut old = Server::start_with(activated(fd, "1", 0), &args);
    let addr = old.addr;
    assert_eq!(addr, listener.local_addr().unwrap());

    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tally = tally.clone();
            std::thread::spawn(move || worker(w, addr, tally))
        })
        .collect();
    let all_in = wait_until(Duration::from_secs(60), || {
        tally.connected.load(Ordering::SeqCst) == CLIENTS
    });
    assert!(
        all_in,
        "{} clients connected",
        tally.connected.load(Ordering::SeqCst)
    );
    let stream = {
        let tally = tally.clone();
        std::thread::spawn(move || newcomers(addr, tally))
    };
    std::thread::sleep(Duration::from_millis(500));
    let echoes_before = tally.echoes.load(Ordering::SeqCst);

    tally.sigterm.set(Instant::now()).unwrap();
    sigterm(old.pid());
    // Half a second with no process accepting: connections wait in the backlog.
    std::thread::sleep(Duration::from_millis(500));
    let new = Server::start_with(activated(fd, "1", 0), &args);
    let status = wait_exit(&mut old.child, Duration::from_secs(DRAIN_SECS + 30))
        .expect("the old process did not exit after its drain");
    assert_eq!(status.code(), Some(0), "old process: {status:?}");
    let old_exit = tally.sigterm.get().unwrap().elapsed();

    let everyone_back = wait_until(Duration::from_secs(60), || {
        tally.reconnected.load(Ordering::SeqCst) == CLIENTS
            || !tally.errors.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    tally.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    stream.join().unwrap();
    let mut new = new;
    let status = new
        .terminate(Duration::from_secs(30))
        .expect("new process exit");
    assert_eq!(status.code(), Some(0));

    let closes = tally.closes.lock().unwrap().clone();
    let failed = tally.failed_connects.lock().unwrap().clone();
    let errors = tally.errors.lock().unwrap().clone();
    // The histogram of closes over the drain, in quarter seconds.
    let mut buckets = vec![0usize; (DRAIN_SECS as usize + 2) * 4];
    for (_, at) in &closes {
        let b = ((at.as_millis() / 250) as usize).min(buckets.len() - 1);
        buckets[b] += 1;
    }
    eprintln!(
        "restart: {CLIENTS} clients, drain {DRAIN_SECS}s, old process exited {:.2}s after SIGTERM; \
         closes {}, reconnected {}, failed connects {}, errors {}, echoes {} ({} before SIGTERM), newcomers ok {}",
        old_exit.as_secs_f64(),
        closes.len(),
        tally.reconnected.load(Ordering::SeqCst),
        failed.len(),
        errors.len(),
        tally.echoes.load(Ordering::SeqCst),
        echoes_before,
        tally.new_ok.load(Ordering::SeqCst),
    );
    for (i, n) in buckets.iter().enumerate() {
        eprintln!(
            "restart: closes {:>5.2}s..{:>5.2}s {n:>4} {}",
            i as f64 / 4.0,
            (i + 1) as f64 / 4.0,
            "#".repeat(n / 2)
        );
    }
    assert!(failed.is_empty(), "failed connects: {failed:?}");
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert!(everyone_back, "not every old client reconnected");
    assert_eq!(closes.len(), CLIENTS, "closes: {closes:?}");
    assert!(closes.iter().all(|(code, _)| *code == 1012), "{closes:?}");
    assert!(
        tally.new_ok.load(Ordering::SeqCst) > 0,
        "no newcomer got through"
    );
    // Spread, not a burst: the closes fall in several quarter seconds.
    assert!(
        buckets.iter().filter(|&&n| n > 0).count() >= 4,
        "closes not spread: {buckets:?}"
    );
    assert!(old.logged("spread over 3s"));
}
