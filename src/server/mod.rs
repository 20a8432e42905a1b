//! The loop's owner: the listener and its accept policy, the metrics endpoint, the
//! token layout, and signals for `run`. Connections are the [`Driver`]'s.

mod driver;
pub mod metrics;
pub(crate) mod timer;

pub(crate) use driver::Driver;

use crate::app::handler::Handler;
use crate::config::Config;
use crate::io::stream::{ListenAddr, Listener, Stream};
use log::{debug, info, warn};
use metrics::{Endpoint, Progress, Stats};
use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use timer::{Owner, TimerKey};

/// Sockets accepted beyond `max_connections` only to be told 503.
pub const REJECT_SLACK: usize = 64;
/// A metrics scraper that has not finished its exchange by then is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long accepting pauses when the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server's tokens, as offsets from its base.
mod token {
    pub(super) const LISTENER: usize = 0;
    pub(super) const METRICS: usize = 1;
    /// Reserved for the waker of the push API.
    pub(super) const RESERVED: usize = 2;
    pub(super) const FIRST_SCRAPER: usize = 3;
    pub(super) const FIRST_CONN: usize = FIRST_SCRAPER + super::metrics::MAX_SCRAPERS;
}

/// Whose event it is.
enum Target {
    Listener,
    Metrics,
    Scraper(usize),
    Conn(usize),
}

/// Why the server is not accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptPause {
    /// Every connection slot is taken: resume when one frees.
    Full,
    /// Out of descriptors or kernel memory: retry at this instant.
    Until(Instant),
}

/// A WebSocket server that runs inside a mio poll loop.
pub struct Server<H> {
    listener: Option<Listener>,
    local_addr: ListenAddr,
    driver: Driver<Stream, H>,
    token_base: usize,
    paused: Option<AcceptPause>,
    warned_fd_limit: bool,
    shutting_down: bool,
    metrics: Option<Endpoint>,
    /// Expired timers of owners other than connections (kept to reuse the allocation).
    other_timers: Vec<TimerKey>,
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
            driver: Driver::new(cfg, handler, Instant::now()),
            token_base: 0,
            paused: None,
            warned_fd_limit: false,
            shutting_down: false,
            metrics,
            other_timers: Vec::new(),
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.driver.cfg
    }

    /// The handler, e.g. to read state it gathered.
    pub fn handler(&self) -> &H {
        &self.driver.handler
    }

    /// Open connections, handshakes included.
    pub fn connections(&self) -> usize {
        self.driver.len()
    }

    /// The counters behind `--metrics-listen`.
    pub fn stats(&self) -> &Stats {
        &self.driver.stats
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// How many tokens the server uses from its base: listeners, scrapers and every
    /// connection slot.
    pub fn token_span(&self) -> usize {
        token::FIRST_CONN + self.conn_capacity()
    }

    /// Connection slots: `max_connections` plus the sockets kept only to be told 503.
    fn conn_capacity(&self) -> usize {
        self.driver.cfg.max_connections + REJECT_SLACK
    }

    /// Registers the listeners with `registry`. The server uses the tokens
    /// `base .. base + token_span()`.
    pub fn register(&mut self, registry: &Registry, base: Token) -> io::Result<()> {
        if base.0.checked_add(self.token_span()).is_none() {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "token base too large",
            ));
        }
        self.token_base = base.0;
        self.driver.set_first_token(base.0 + token::FIRST_CONN);
        if let Some(l) = self.listener.as_mut() {
            registry.register(l, Token(base.0 + token::LISTENER), Interest::READABLE)?;
        }
        if let Some(m) = self.metrics.as_mut() {
            m.register(registry, Token(base.0 + token::METRICS))?;
        }
        Ok(())
    }

    /// Whether `token` belongs to this server.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 - self.token_base < self.token_span()
    }

    fn target(&self, token: Token) -> Option<Target> {
        let offset = token.0.checked_sub(self.token_base)?;
        Some(match offset {
            token::LISTENER => Target::Listener,
            token::METRICS => Target::Metrics,
            token::RESERVED => return None,
            o if o < token::FIRST_CONN => Target::Scraper(o - token::FIRST_SCRAPER),
            o => Target::Conn(o - token::FIRST_CONN),
        })
    }

    /// Handles one event whose token this server [`owns`](Self::owns); `now` is the
    /// time of this loop turn.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        match self.target(event.token()) {
            Some(Target::Listener) => self.accept(registry, now),
            Some(Target::Metrics) => self.accept_scrapers(registry, now),
            Some(Target::Scraper(key)) => self.serve_scraper(registry, key),
            Some(Target::Conn(key)) => {
                let hangup = event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                let readable = event.is_readable() || hangup;
                self.driver
                    .on_event(registry, key, readable, writable, hangup, now);
                self.resume_if_room(registry, now);
            }
            None => {}
        }
    }

    /// How long the poll may sleep: until the next timer, or zero when work is waiting;
    /// `None` when nothing is scheduled at all.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.driver.has_work() {
            return Some(Duration::ZERO);
        }
        let retry = match self.paused {
            Some(AcceptPause::Until(t)) => Some(t),
            _ => None,
        };
        let next = match (self.driver.wheel.next_deadline(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|t| t.saturating_duration_since(now))
    }

    /// Ends a loop turn: runs due timers, input left from earlier turns and the output
    /// queued for other connections. Call once per turn, after the events.
    pub fn handle_timers(&mut self, registry: &Registry, now: Instant) {
        let mut others = std::mem::take(&mut self.other_timers);
        self.driver.expire(registry, now, &mut others);
        for key in others.drain(..) {
            if key.owner() == Owner::Scraper
                && let Some(m) = self.metrics.as_mut()
            {
                m.drop_scraper(key.index());
            }
        }
        self.other_timers = others;
        self.driver.end_turn(registry, now);
        if self
            .paused
            .is_some_and(|p| matches!(p, AcceptPause::Until(t) if t <= now))
        {
            self.paused = None;
            self.accept(registry, now);
        }
        self.resume_if_room(registry, now);
    }

    /// Stops accepting and closes every connection with 1001; the server is
    /// [`finished`](Self::is_finished) once their close handshakes end (or time out).
    pub fn shutdown(&mut self, registry: &Registry, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        self.driver.shutdown(registry, now);
    }

    /// True after [`shutdown`](Self::shutdown) once no connection is left.
    pub fn is_finished(&self) -> bool {
        self.shutting_down && self.driver.len() == 0
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
        let cfg = &self.driver.cfg;
        let scheme = if cfg.tls_enabled() { "wss" } else { "ws" };
        info!(
            "wsloop {} listening on {scheme}://{}{} ({cfg})",
            env!("CARGO_PKG_VERSION"),
            self.local_addr,
            cfg.path,
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
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == SIGNALS {
                    for sig in signals.pending() {
                        info!(
                            "signal {sig}: closing {} connections, then exiting",
                            self.driver.len()
                        );
                        self.shutdown(poll.registry(), now);
                    }
                } else if self.owns(event.token()) {
                    self.handle_event(poll.registry(), event, now);
                }
            }
            self.handle_timers(poll.registry(), now);
            if self.is_finished() {
                info!("shutdown complete");
                return Ok(());
            }
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        if self.paused.is_some() {
            return;
        }
        while let Some(listener) = self.listener.as_ref() {
            if self.driver.len() >= self.conn_capacity() {
                self.paused = Some(AcceptPause::Full);
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
                            self.driver.len(),
                            ACCEPT_BACKOFF
                        );
                        self.warned_fd_limit = true;
                    }
                    self.paused = Some(AcceptPause::Until(now + ACCEPT_BACKOFF));
                    return;
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            };
            if let Some(stream) = self.secure(stream, peer) {
                self.driver.insert(registry, stream, peer, now);
            }
        }
    }

    /// A connection slot freed while every one was taken: accept again.
    fn resume_if_room(&mut self, registry: &Registry, now: Instant) {
        if self.paused == Some(AcceptPause::Full) && self.driver.len() < self.conn_capacity() {
            self.paused = None;
            self.accept(registry, now);
        }
    }

    /// Wraps a TCP stream in TLS when the server serves wss://.
    #[cfg(feature = "tls")]
    fn secure(&self, stream: Stream, peer: SocketAddr) -> Option<Stream> {
        match (&self.driver.cfg.tls, stream) {
            (Some(tls), Stream::Tcp(tcp)) => {
                match crate::io::tls::TlsStream::new(tcp, tls.clone()) {
                    Ok(t) => Some(Stream::Tls(Box::new(t))),
                    Err(e) => {
                        debug!("{peer}: TLS session not created: {e}");
                        None
                    }
                }
            }
            (_, s) => Some(s),
        }
    }

    #[cfg(not(feature = "tls"))]
    fn secure(&self, stream: Stream, _peer: SocketAddr) -> Option<Stream> {
        Some(stream)
    }

    fn scraper_token(&self, key: usize) -> Token {
        Token(self.token_base + token::FIRST_SCRAPER + key)
    }

    fn accept_scrapers(&mut self, registry: &Registry, now: Instant) {
        let first = self.scraper_token(0).0;
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        for key in m.accept(registry, |k| Token(first + k)) {
            if let Some(timer) = TimerKey::new(Owner::Scraper, key) {
                self.driver.wheel.schedule(timer, now + SCRAPE_TIMEOUT);
            }
        }
    }

    fn serve_scraper(&mut self, registry: &Registry, key: usize) {
        let token = self.scraper_token(key);
        let (open, pooled) = (self.driver.len(), self.driver.pooled());
        let stats = &self.driver.stats;
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        match m.serve(key, || stats.render(open, pooled)) {
            Progress::Waiting { writable: true } => m.reregister(registry, key, token),
            Progress::Waiting { writable: false } => {}
            Progress::Done => {
                if let Some(timer) = TimerKey::new(Owner::Scraper, key) {
                    self.driver.wheel.cancel(timer);
                }
            }
        }
    }
}
