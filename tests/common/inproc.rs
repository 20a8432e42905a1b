//! A real server inside the test process: `wsloop::Server` with a handler of the
//! test's own, on a loop thread in the embedder's shape — the test owns the `Poll`,
//! calls `register`, `handle_event` and `handle_timers`, and brings its own waker
//! (`use_waker`), which `Sender`s then share. Clients connect over loopback as to the
//! binary.
//!
//! The test reaches into the loop with `Loop::with` or `post` (code run on the loop
//! thread between events: `Server::ctx`, `stats`, `shutdown`), holds it still with
//! `Loop::stall`, and ends it with `Loop::stop` (the server is dropped, so `Sender`s
//! fail with `ServerGone`); after a `shutdown` the loop ends by itself once the
//! server `is_finished`.

use mio::{Events, Poll, Registry, Token, Waker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wsloop::{Config, Handler, Server};

/// The test's own waker, which `Sender`s use too (mio allows one per `Poll`).
const WAKER: Token = Token(0);
/// wsloop's token range starts here.
const BASE: Token = Token(16);
/// How long `with` waits for the loop to run a job before failing the test.
const JOB_WITHIN: Duration = Duration::from_secs(10);

type Job<H> = Box<dyn FnOnce(&mut Server<H>, &Registry) + Send>;

enum Msg<H> {
    Job(Job<H>),
    Stop,
}

/// A server running on a thread of the test.
pub struct Loop<H: Handler + Send + 'static> {
    pub addr: SocketAddr,
    /// `ws://ADDR/ws`
    pub url: String,
    pub sender: wsloop::Sender,
    /// The loop thread's kernel id (for /proc/self/task/TID/status).
    pub tid: i32,
    jobs: mpsc::Sender<Msg<H>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl<H: Handler + Send + 'static> Loop<H> {
    /// Binds `127.0.0.1:0` with `cfg` and serves with `handler` on a new thread.
    pub fn start(cfg: Config, handler: H) -> Loop<H> {
        let (jobs, inbox) = mpsc::channel::<Msg<H>>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wsloop".into())
            .spawn(move || {
                // SAFETY: gettid takes no arguments and cannot fail.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
                let mut poll = Poll::new().expect("poll");
                let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
                let mut server =
                    Server::bind("127.0.0.1:0", cfg, handler).expect("bind 127.0.0.1:0");
                server.use_waker(waker.clone());
                server.register(poll.registry(), BASE).expect("register");
                let addr = server.local_addr().tcp().expect("a TCP address");
                let path = server.config().path.clone();
                let _ = ready_tx.send((addr, path, server.sender(), waker, tid));
                serve(&mut poll, &mut server, &inbox);
            })
            .expect("spawn loop thread");
        let (addr, path, sender, waker, tid) = ready_rx
            .recv_timeout(JOB_WITHIN)
            .expect("the loop thread did not start");
        Loop {
            addr,
            url: format!("ws://{addr}{path}"),
            sender,
            tid,
            jobs,
            waker,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the loop thread between events and returns its result. Commands
    /// made through `server.ctx()` take effect at the end of that loop turn.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Server<H>, &Registry) -> R + Send + 'static,
    ) -> R {
        self.post(f)
            .recv_timeout(JOB_WITHIN)
            .expect("the loop did not run the job (it ended, panicked or is stuck)")
    }

    /// Queues `f` for the loop thread without waiting; its result comes on the
    /// returned channel. Jobs run in the order they were posted, after any stall.
    pub fn post<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Server<H>, &Registry) -> R + Send + 'static,
    ) -> mpsc::Receiver<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job<H> = Box::new(move |s, r| {
            let _ = tx.send(f(s, r));
        });
        self.jobs
            .send(Msg::Job(job))
            .expect("the loop thread is gone");
        self.waker.wake().expect("wake");
        rx
    }

    /// Holds the loop thread still (inside a job) until the returned guard is
    /// released or dropped: requests from `Sender`s pile up meanwhile.
    pub fn stall(&self) -> Stall {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel();
        let job: Job<H> = Box::new(move |_, _| {
            let _ = held_tx.send(());
            // Bounded: a test that forgets to release does not hang the loop for ever.
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        });
        self.jobs
            .send(Msg::Job(job))
            .expect("the loop thread is gone");
        self.waker.wake().expect("wake");
        held_rx
            .recv_timeout(JOB_WITHIN)
            .expect("the loop did not stall");
        Stall(Some(release_tx))
    }

    /// Whether the loop thread has ended (after a shutdown that finished, or `stop`).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits (bounded) for the loop to end by itself; true if it did.
    pub fn wait_ended(&mut self, within: Duration) -> bool {
        let ended = super::wait_until(within, || self.ended());
        if ended && let Some(t) = self.thread.take() {
            t.join().expect("the loop thread panicked");
        }
        ended
    }

    /// Ends the loop and drops the server (bounded: a stuck loop fails the test).
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.jobs.send(Msg::Stop);
        let _ = self.waker.wake();
        if super::wait_until(Duration::from_secs(10), || thread.is_finished()) {
            if let Err(e) = thread.join()
                && !std::thread::panicking()
            {
                std::panic::resume_unwind(e);
            }
        } else if !std::thread::panicking() {
            panic!("the loop thread did not stop within 10 s");
        }
    }
}

impl<H: Handler + Send + 'static> Drop for Loop<H> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Holds the loop still while it lives (see `Loop::stall`).
pub struct Stall(Option<mpsc::Sender<()>>);

impl Stall {
    pub fn release(mut self) {
        self.0.take();
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The loop: events, then the test's jobs, then the end of the turn. Ends on `Stop`,
/// when the test is gone, or once a shutdown has finished.
fn serve<H: Handler>(poll: &mut Poll, server: &mut Server<H>, inbox: &mpsc::Receiver<Msg<H>>) {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, server.next_timeout(Instant::now())) {
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        let now = Instant::now();
        for ev in events.iter() {
            if ev.token() != WAKER && server.owns(ev.token()) {
                server.handle_event(poll.registry(), ev, now);
            }
        }
        loop {
            match inbox.try_recv() {
                Ok(Msg::Job(job)) => job(server, poll.registry()),
                Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        // A job may have held the loop: the turn ends at the time it really ends.
        server.handle_timers(poll.registry(), Instant::now());
        if server.is_finished() {
            return;
        }
    }
}
