//! The loop's owner: the listener, the slab of connections, the timer wheel and the
//! pool of busy-state boxes; it turns mio events and expired timers into calls on
//! connections and keeps interest and deadlines in step with their state.

use crate::config::Config;
use crate::conn::{Conn, Env, Pool};
use crate::handler::{Command, ConnId, Ctx, Handler};
use crate::metrics::{self, Endpoint, Progress, Stats};
use crate::timer::TimerWheel;
use crate::transport::{ListenAddr, Listener, Stream, Transport};
use log::{debug, info, warn};
use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Sockets accepted beyond `max_connections` only to be told 503.
pub const REJECT_SLACK: usize = 64;
/// Busy-state boxes kept for reuse; each holds a read buffer of `read_buffer` bytes.
const POOL_MAX: usize = 64;
/// Size of the loop's one receive buffer: large reads for large messages, shared by all.
const SCRATCH: usize = 128 << 10;
/// A metrics scraper that has not finished its exchange by then is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long accepting pauses when the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Timer wheel resolution and size: 10 ms × 4096 slots covers 40 s in one revolution.
const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 4096;

/// A WebSocket server that runs inside a mio poll loop.
pub struct Server<H> {
    listener: Option<Listener>,
    local_addr: ListenAddr,
    cfg: Config,
    conns: Slab<Conn<Stream>>,
    wheel: TimerWheel,
    pool: Pool,
    scratch: Box<[u8]>,
    handler: H,
    ctx: Ctx,
    deferred: Vec<(ConnId, Command)>,
    token_base: usize,
    /// Connections that stopped reading before WouldBlock and must be read again.
    revisit: Vec<usize>,
    /// Accepting stopped: the slab is full (None) or descriptors ran out (retry time).
    accept_paused: Option<Option<Instant>>,
    warned_fd_limit: bool,
    shutting_down: bool,
    per_ip: HashMap<IpAddr, usize>,
    expired: Vec<usize>,
    stats: Stats,
    metrics: Option<Endpoint>,
    /// Connection timestamps count from here.
    epoch: Instant,
}

impl<H: Handler> Server<H> {
    /// Binds the listening socket (TCP, or `ListenAddr::Unix`); nothing is accepted
    /// until [`register`](Self::register) or [`run`](Self::run).
    pub fn bind(addr: impl Into<ListenAddr>, cfg: Config, handler: H) -> io::Result<Self> {
        cfg.validate()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let listener = Listener::bind(&addr.into(), cfg.reuse_port)?;
        let local_addr = listener.local_addr()?;
        let metrics = cfg.metrics_listen.map(Endpoint::bind).transpose()?;
        Ok(Server {
            listener: Some(listener),
            local_addr,
            conns: Slab::new(),
            wheel: TimerWheel::new(Instant::now(), TICK, SLOTS),
            pool: Pool::new(POOL_MAX),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            handler,
            ctx: Ctx::default(),
            deferred: Vec::new(),
            token_base: 0,
            revisit: Vec::new(),
            accept_paused: None,
            warned_fd_limit: false,
            shutting_down: false,
            per_ip: HashMap::new(),
            expired: Vec::new(),
            stats: Stats::default(),
            metrics,
            epoch: Instant::now(),
            cfg,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The handler, e.g. to read state it gathered.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Open connections, handshakes included.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The counters behind `--metrics-listen`.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// How many tokens the server uses from its base: the two listeners, every
    /// connection slot and the metrics scrapers.
    pub fn token_span(&self) -> usize {
        2 + self.conn_capacity() + metrics::MAX_SCRAPERS
    }

    /// Connection slots: `max_connections` plus the sockets kept only to be told 503.
    fn conn_capacity(&self) -> usize {
        self.cfg.max_connections + REJECT_SLACK
    }

    /// Registers the listeners with `registry`. The server uses the tokens
    /// `base .. base + token_span()`.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        self.token_base = base.0;
        if base.0.checked_add(self.token_span()).is_none() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "token base too large",
            ));
        }
        if let Some(l) = self.listener.as_mut() {
            registry.register(l, base, Interest::READABLE)?;
        }
        if let Some(m) = self.metrics.as_mut() {
            m.register(registry, Token(base.0 + 1))?;
        }
        Ok(())
    }

    /// Whether `token` belongs to this server.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 - self.token_base < self.token_span()
    }

    /// Handles one event whose token this server [`owns`](Self::owns).
    pub fn handle_event(&mut self, registry: &Registry, event: &Event) {
        let now = Instant::now();
        let Some(slot) = event.token().0.checked_sub(self.token_base) else {
            return;
        };
        if slot == 0 {
            self.accept(registry, now);
            return;
        }
        if slot == 1 {
            self.accept_scrapers(registry, now);
            return;
        }
        let key = slot - 2;
        if key >= self.conn_capacity() {
            self.serve_scraper(registry, key - self.conn_capacity());
            return;
        }
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let to_end = event.is_read_closed() || event.is_error();
        self.with_conn(key, now, |conn, scratch, env| {
            if writable {
                conn.on_writable(env);
            }
            if readable {
                conn.on_readable(scratch, env, to_end);
            }
        });
        self.settle(registry, key);
        self.run_deferred(registry, now);
    }

    /// How long the poll may sleep: until the next timer, or zero when work is waiting;
    /// `None` when nothing is scheduled at all.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.revisit.is_empty() {
            return Some(Duration::ZERO);
        }
        let retry = self.accept_paused.flatten();
        let next = match (self.wheel.next_deadline(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|t| t.saturating_duration_since(now))
    }

    /// Runs due timers and deferred work; call once per loop turn, after the events.
    pub fn handle_timers(&mut self, registry: &Registry, now: Instant) {
        // The lists are taken and given back so their allocations are reused every turn.
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for &key in &expired {
            let capacity = self.conn_capacity();
            if key >= capacity {
                if let Some(m) = self.metrics.as_mut() {
                    m.drop_scraper(key - capacity);
                }
                continue;
            }
            self.with_conn(key, now, |conn, _, env| conn.on_timer(env));
            self.settle(registry, key);
        }
        expired.clear();
        self.expired = expired;
        let mut revisit = std::mem::take(&mut self.revisit);
        for &key in &revisit {
            self.with_conn(key, now, |conn, scratch, env| {
                conn.on_readable(scratch, env, true)
            });
            self.settle(registry, key);
        }
        if self.revisit.is_empty() {
            revisit.clear();
            self.revisit = revisit;
        }
        self.run_deferred(registry, now);
        if self.accept_paused.flatten().is_some_and(|t| t <= now) {
            self.accept_paused = None;
            self.accept(registry, now);
        }
    }

    /// Stops accepting and closes every connection with 1001; the server is
    /// [`finished`](Self::is_finished) once their close handshakes end (or time out).
    pub fn shutdown(&mut self, registry: &Registry) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.with_conn(key, now, |conn, _, env| conn.shutdown(env));
            self.settle(registry, key);
        }
        self.run_deferred(registry, now);
    }

    /// True after [`shutdown`](Self::shutdown) once no connection is left.
    pub fn is_finished(&self) -> bool {
        self.shutting_down && self.conns.is_empty()
    }

    /// Serves on a poll of its own until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn run(mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        const SIGNALS: Token = Token(usize::MAX);
        let mut poll = Poll::new()?;
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.register(poll.registry(), Token(0))?;
        // Logged only now that signals are handled: whoever waits for this line may
        // send SIGTERM at once and must get a graceful exit.
        let scheme = if self.cfg.tls_enabled() { "wss" } else { "ws" };
        info!(
            "wsloop {} listening on {scheme}://{}{} ({})",
            env!("CARGO_PKG_VERSION"),
            self.local_addr,
            self.cfg.path,
            self.cfg
        );
        if let Some(a) = self.metrics_addr() {
            info!("metrics on http://{a}/metrics");
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                if event.token() == SIGNALS {
                    for sig in signals.pending() {
                        info!(
                            "signal {sig}: closing {} connections, then exiting",
                            self.conns.len()
                        );
                        self.shutdown(poll.registry());
                    }
                } else if self.owns(event.token()) {
                    self.handle_event(poll.registry(), event);
                }
            }
            self.handle_timers(poll.registry(), Instant::now());
            if self.is_finished() {
                info!("shutdown complete");
                return Ok(());
            }
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        if self.accept_paused.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            if self.conns.len() >= self.cfg.max_connections + REJECT_SLACK {
                self.accept_paused = Some(None);
                return;
            }
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // Out of descriptors or kernel memory: retrying at once would spin.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    if !self.warned_fd_limit {
                        warn!(
                            "out of file descriptors or kernel memory with {} connections ({e}): accepting paused, retrying every {:?}",
                            self.conns.len(),
                            ACCEPT_BACKOFF
                        );
                        self.warned_fd_limit = true;
                    }
                    self.accept_paused = Some(Some(now + ACCEPT_BACKOFF));
                    return;
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            };
            let Some(mut stream) = self.secure(stream, peer) else {
                continue;
            };
            let mut over_limit = self.conns.len() >= self.cfg.max_connections;
            if let Some(limit) = self.cfg.max_connections_per_ip {
                let n = self.per_ip.entry(peer.ip()).or_insert(0);
                over_limit |= *n >= limit;
                *n += 1;
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let token = Token(self.token_base + 2 + key);
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                debug!("{peer}: register failed: {e}");
                self.forget_ip(peer.ip());
                continue;
            }
            let conn = entry.insert(Conn::new(stream, peer, now, self.epoch, over_limit));
            conn.rearm = false;
            if let Some(d) = conn.deadline(&self.cfg, now, self.epoch) {
                self.wheel.schedule(key, d);
            }
        }
    }

    /// Wraps a TCP stream in TLS when the server serves wss://.
    #[cfg(feature = "tls")]
    fn secure(&self, stream: Stream, peer: SocketAddr) -> Option<Stream> {
        match (&self.cfg.tls, stream) {
            (Some(tls), Stream::Tcp(tcp)) => match crate::tls::TlsStream::new(tcp, tls.clone()) {
                Ok(t) => Some(Stream::Tls(Box::new(t))),
                Err(e) => {
                    debug!("{peer}: TLS session not created: {e}");
                    None
                }
            },
            (_, s) => Some(s),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn secure(&self, stream: Stream, _peer: SocketAddr) -> Option<Stream> {
        Some(stream)
    }

    fn accept_scrapers(&mut self, registry: &Registry, now: Instant) {
        let base = self.token_base + 2 + self.conn_capacity();
        let capacity = self.conn_capacity();
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        for key in m.accept(registry, |k| Token(base + k)) {
            self.wheel.schedule(capacity + key, now + SCRAPE_TIMEOUT);
        }
    }

    fn serve_scraper(&mut self, registry: &Registry, key: usize) {
        let capacity = self.conn_capacity();
        let token = Token(self.token_base + 2 + capacity + key);
        let (open, pooled) = (self.conns.len(), self.pool.len());
        let stats = &self.stats;
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        match m.serve(key, || stats.render(open, pooled)) {
            Progress::Waiting { writable: true } => m.reregister(registry, key, token),
            Progress::Waiting { writable: false } => {}
            Progress::Done => self.wheel.cancel(capacity + key),
        }
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        if self.cfg.max_connections_per_ip.is_some()
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn with_conn(
        &mut self,
        key: usize,
        now: Instant,
        f: impl FnOnce(&mut Conn<Stream>, &mut [u8], &mut Env<H>),
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut env = Env {
            cfg: &self.cfg,
            pool: &mut self.pool,
            stats: &mut self.stats,
            handler: &mut self.handler,
            ctx: &mut self.ctx,
            deferred: &mut self.deferred,
            now,
            epoch: self.epoch,
            id: ConnId(key),
        };
        f(conn, &mut self.scratch, &mut env);
    }

    /// Brings interest, timer and pooling in line with the connection's new state.
    fn settle(&mut self, registry: &Registry, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.is_dead() {
            let mut conn = self.conns.remove(key);
            conn.stream.close();
            self.wheel.cancel(key);
            self.forget_ip(conn.peer.ip());
            drop(conn);
            if self.accept_paused == Some(None) {
                self.accept_paused = None;
                self.accept(registry, Instant::now());
            }
            return;
        }
        conn.release_if_idle(&self.cfg, &mut self.pool);
        let pending = conn.pending_output() as u64;
        if pending > self.stats.pending_output_high_water {
            self.stats.pending_output_high_water = pending;
        }
        let want_write = conn.wants_write();
        if want_write != conn.writable_interest {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(self.token_base + 2 + key);
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_ok()
            {
                conn.writable_interest = want_write;
            }
        }
        if conn.rearm {
            conn.rearm = false;
            match conn.deadline(&self.cfg, Instant::now(), self.epoch) {
                Some(d) => self.wheel.schedule(key, d),
                None => self.wheel.cancel(key),
            }
        }
        if conn.more_input {
            self.revisit.push(key);
        }
    }

    /// Applies handler commands aimed at connections other than the one being served.
    fn run_deferred(&mut self, registry: &Registry, now: Instant) {
        while !self.deferred.is_empty() {
            for (id, cmd) in std::mem::take(&mut self.deferred) {
                self.with_conn(id.0, now, |conn, _, env| conn.deliver(cmd, env));
                self.settle(registry, id.0);
            }
        }
    }
}
