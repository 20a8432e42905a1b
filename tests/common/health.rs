//! Healthy clients beside the abuse: a tungstenite client that must still get its echo
//! after a bad case (`echo_ok`, `run_table`), or one that keeps echoing on its own
//! thread while a test abuses the server (`Healthy`).

use super::{Client, Server, assert_echo, connect};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Echo check that reports instead of panicking, so a table can go on.
pub fn echo_ok(ws: &mut Client, tag: &str) -> Result<(), String> {
    let msg = Message::text(format!("still alive after {tag}"));
    ws.send(msg.clone())
        .map_err(|e| format!("healthy client: send failed: {e}"))?;
    // Bounded: pings and pongs are skipped, a few hundred at the most.
    for _ in 0..1000 {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(got) if got == msg => return Ok(()),
            Ok(got) => return Err(format!("healthy client: wrong echo {got:?}")),
            Err(e) => return Err(format!("healthy client: read failed: {e}")),
        }
    }
    Err("healthy client: only pings and pongs, no echo".into())
}

/// Runs each case with a healthy client connected before it, which must still echo
/// after it; panics with every failure at the end, so one run shows every case that is
/// wrong.
pub fn run_table<C>(
    server: &Server,
    cases: &[C],
    name: impl Fn(&C) -> String,
    run: impl Fn(&C) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for case in cases {
        let tag = name(case);
        let mut ok = connect(server.url());
        if let Err(e) = run(case) {
            failures.push(format!("{tag}: {e}"));
        }
        if let Err(e) = echo_ok(&mut ok, &tag) {
            failures.push(format!("{tag}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

/// A healthy tungstenite client that keeps echoing on its own thread while a test
/// abuses the server, recording every failure and the slowest round trip.
pub struct Healthy {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<HealthReport>,
}

#[derive(Debug)]
pub struct HealthReport {
    pub echoes: u32,
    pub worst: Duration,
    pub errors: Vec<String>,
}

impl Healthy {
    /// Connects, checks one echo, then echoes one message every `every` until finished.
    pub fn start(server: &Server, every: Duration) -> Healthy {
        let mut ws = connect(server.url());
        assert_echo(&mut ws, Message::text("first"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut report = HealthReport {
                echoes: 0,
                worst: Duration::ZERO,
                errors: Vec::new(),
            };
            // Bounded: at most one echo per `every`, for at most 10 minutes.
            let give_up = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < give_up {
                // Vary the size so that some echoes are more than one small write.
                let msg = if report.echoes.is_multiple_of(2) {
                    Message::text(format!("healthy {}", report.echoes))
                } else {
                    Message::binary(format!("healthy message {}", report.echoes).repeat(50))
                };
                let t0 = Instant::now();
                if let Err(e) = ws.send(msg.clone()) {
                    report.errors.push(format!("send: {e}"));
                    break;
                }
                let got = loop {
                    match ws.read() {
                        Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                        other => break other,
                    }
                };
                match got {
                    Ok(m) if m == msg => report.echoes += 1,
                    Ok(m) => report.errors.push(format!("wrong echo {m:?}")),
                    Err(e) => {
                        report.errors.push(format!("read: {e}"));
                        break;
                    }
                }
                report.worst = report.worst.max(t0.elapsed());
                std::thread::sleep(every);
            }
            let _ = ws.close(None);
            report
        });
        Healthy { stop, handle }
    }

    /// Stops the loop and asserts that every echo arrived, each within `max_latency`.
    pub fn finish(self, max_latency: Duration) -> HealthReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.handle.join().expect("healthy client thread");
        assert!(
            report.errors.is_empty() && report.echoes > 0,
            "healthy client was disturbed: {report:?}"
        );
        assert!(
            report.worst <= max_latency,
            "healthy client: slowest echo took {:?} (> {max_latency:?}) over {} echoes",
            report.worst,
            report.echoes
        );
        report
    }
}
