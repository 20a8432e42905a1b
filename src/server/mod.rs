//! The loop's owner: the listener and its accept policy, the metrics endpoint, the
//! way in for other threads, the token layout, and signals for `run`. Connections are
//! the [`Driver`]'s.

mod app_timers;
mod drain;
mod driver;
pub mod metrics;
mod proxy;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod timer;
pub(crate) mod topics;

pub(crate) use driver::Driver;

use crate::app::ctx::Ctx;
use crate::app::handler::Handler;
use crate::app::sender::{self, Sender};
use crate::config::Config;
use crate::io::stream::{ListenAddr, Listener, Stream, ToListenAddr};
use log::{debug, info, warn};
use metrics::{Endpoint, Gauges, Progress, Stats};
use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token};
use proxy::ProxyGate;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer::{Owner, TimerKey};

/// Sockets accepted beyond `max_connections` only to be told 503.
#[doc(hidden)]
pub const REJECT_SLACK: usize = 64;
/// A metrics scraper that has not finished its exchange by then is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long accepting pauses when the process runs out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The server's tokens, as offsets from its base.
mod token {
    pub(super) const LISTENER: usize = 0;
    pub(super) const METRICS: usize = 1;
    /// The waker `Sender`s use, unless the application brought its own.
    pub(super) const WAKER: usize = 2;
    pub(super) const FIRST_SCRAPER: usize = 3;
    /// Sockets from proxies waiting for their PROXY header.
    pub(super) const FIRST_PROXIED: usize = FIRST_SCRAPER + super::metrics::MAX_SCRAPERS;
    pub(super) const FIRST_CONN: usize = FIRST_PROXIED + super::proxy::MAX_PENDING;
}

/// Whose event it is.
enum Target {
    Listener,
    Metrics,
    Waker,
    Scraper(usize),
    Proxied(usize),
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

/// How a graceful shutdown closes the connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    /// The close code: 1001 (going away) by default; 1012 (service restart) tells
    /// clients to come back.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// The closes are spread evenly over this period, so that clients do not all
    /// reconnect in the same second; zero closes all at once.
    pub drain: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            code: 1001,
            reason: "server shutting down".into(),
            drain: Duration::ZERO,
        }
    }
}

/// A WebSocket server that runs inside a mio poll loop.
///
/// The application acts on connections from callbacks through their [`Ctx`], from
/// the thread that owns the loop through [`Server::ctx`], and from any thread through
/// a [`Sender`]. All three queue commands that the loop applies on its own thread.
///
/// ```no_run
/// use std::time::Instant;
/// use mio::{Events, Poll, Token};
/// use wsloop::{Config, Echo, Message, Server};
///
/// let mut poll = Poll::new()?;
/// let mut ws = Server::bind("127.0.0.1:0", Config::default(), Echo)?;
/// ws.register(poll.registry(), Token(1_000))?;
/// let sender = ws.sender(); // Clone + Send: give it to other threads
/// std::thread::spawn(move || { let _ = sender.queued(); });
/// let mut events = Events::with_capacity(256);
/// loop {
///     poll.poll(&mut events, ws.next_timeout(Instant::now()))?;
///     let now = Instant::now();
///     for ev in events.iter() {
///         if ws.owns(ev.token()) {
///             ws.handle_event(poll.registry(), ev, now);
///         }
///     }
///     ws.handle_timers(poll.registry(), now);
/// #   break;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Server<H> {
    listener: Option<Listener>,
    local_addr: ListenAddr,
    driver: Driver<Stream, H>,
    token_base: usize,
    paused: Option<AcceptPause>,
    warned_fd_limit: bool,
    shutting_down: bool,
    metrics: Option<Endpoint>,
    /// PROXY protocol headers from `proxy_from` addresses, and the sockets awaiting one.
    proxy: ProxyGate,
    /// Expired timers of owners other than connections (kept to reuse the allocation).
    other_timers: Vec<TimerKey>,
    /// The queue `Sender`s fill.
    inbox: Arc<sender::Shared>,
    /// The waker the application brought, if any.
    app_waker: Option<Arc<mio::Waker>>,
    /// Topics to and from other processes (`Config::redis`).
    #[cfg(feature = "redis")]
    bridge: Option<redis::Bridge>,
}

impl<H: Handler> Server<H> {
    /// Binds the listening socket (TCP, or `ListenAddr::Unix`); nothing is accepted
    /// until [`register`](Self::register) or [`run`](Self::run).
    pub fn bind(addr: impl ToListenAddr, cfg: Config, handler: H) -> io::Result<Self> {
        cfg.validate()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let listener = Listener::bind(&addr.to_listen_addr()?, cfg.reuse_port)?;
        Self::with_listener(listener, cfg, handler)
    }

    /// Serves on a TCP listening socket the caller already has — inherited from systemd
    /// (`LISTEN_FDS`) or held across a restart — instead of binding one; `reuse_port`
    /// is then the socket's own business. Connections waiting in its backlog are
    /// accepted as if they had come to this server.
    pub fn from_listener(
        listener: std::net::TcpListener,
        cfg: Config,
        handler: H,
    ) -> io::Result<Self> {
        cfg.validate()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        listener.set_nonblocking(true)?;
        let listener = Listener::Tcp(mio::net::TcpListener::from_std(listener));
        Self::with_listener(listener, cfg, handler)
    }

    fn with_listener(listener: Listener, cfg: Config, handler: H) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let metrics = cfg
            .metrics_listen
            .map(|a| Endpoint::bind(a, cfg.reuse_port))
            .transpose()?;
        let inbox = sender::Shared::new(cfg.sender_queue, cfg.max_topic_len);
        #[cfg(feature = "redis")]
        let bridge = (cfg.redis.as_deref())
            .map(|url| redis::Bridge::start(url, inbox.sender(), cfg.max_message))
            .transpose()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        Ok(Server {
            listener: Some(listener),
            local_addr,
            inbox,
            proxy: ProxyGate::new(cfg.proxy_from.clone()),
            app_waker: None,
            #[cfg(feature = "redis")]
            bridge,
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

    /// The handler, to change its state between events.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.driver.handler
    }

    /// Acts on connections outside callbacks — from an event of the application's
    /// own, say — exactly as a callback's `Ctx` does. Commands take effect at the end
    /// of the loop turn ([`handle_timers`](Self::handle_timers)).
    pub fn ctx(&mut self) -> Ctx<'_> {
        self.driver.ctx_outside()
    }

    /// A handle for other threads to send and close through (see [`Sender`]).
    pub fn sender(&self) -> Sender {
        self.inbox.sender()
    }

    /// Makes `Sender`s wake the loop with the application's own waker (mio allows
    /// one per `Poll`) instead of one wsloop makes in its token range. Call before
    /// [`register`](Self::register). The application handles that waker's event as
    /// it likes; wsloop takes the queued requests in `handle_timers`, as every turn.
    pub fn use_waker(&mut self, waker: Arc<mio::Waker>) {
        self.app_waker = Some(waker);
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
        let waker = match &self.app_waker {
            Some(w) => w.clone(),
            None => Arc::new(mio::Waker::new(registry, Token(base.0 + token::WAKER))?),
        };
        self.inbox.set_waker(waker);
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
            token::WAKER => Target::Waker,
            o if o < token::FIRST_PROXIED => Target::Scraper(o - token::FIRST_SCRAPER),
            o if o < token::FIRST_CONN => Target::Proxied(o - token::FIRST_PROXIED),
            o => Target::Conn(o - token::FIRST_CONN),
        })
    }

    /// Handles one event whose token this server [`owns`](Self::owns); `now` is the
    /// time of this loop turn.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        match self.target(event.token()) {
            Some(Target::Listener) => self.accept(registry, now),
            Some(Target::Metrics) => self.accept_scrapers(registry, now),
            // Requests are taken at the end of the turn.
            Some(Target::Waker) => {}
            Some(Target::Scraper(key)) => self.serve_scraper(registry, key),
            Some(Target::Proxied(key)) => {
                if let Some((stream, client)) = self.proxy.on_readable(registry, key) {
                    self.admit(registry, stream, client, now);
                }
            }
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
        if self.driver.has_work() || self.inbox.has_requests() {
            return Some(Duration::ZERO);
        }
        let retry = match self.paused {
            Some(AcceptPause::Until(t)) => Some(t),
            _ => None,
        };
        [
            self.driver.wheel.next_deadline(),
            retry,
            self.driver.next_drain_close(),
            self.proxy.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Ends a loop turn: runs due timers, input left from earlier turns and the output
    /// queued for other connections. Call once per turn, after the events.
    pub fn handle_timers(&mut self, registry: &Registry, now: Instant) {
        self.take_requests();
        self.proxy.expire(now);
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
        self.forward_to_bridge();
        if let Some(how) = self.driver.shutdown_request.take() {
            self.shutdown(registry, now, how);
        }
        if self
            .paused
            .is_some_and(|p| matches!(p, AcceptPause::Until(t) if t <= now))
        {
            self.paused = None;
            self.accept(registry, now);
        }
        self.resume_if_room(registry, now);
    }

    /// Stops accepting, drops connections still in their handshake and closes the
    /// others as `how` says; the server is [`finished`](Self::is_finished) once their
    /// close handshakes end (or time out). A second call with a zero `drain` closes
    /// the connections the first one had not come to yet, at once; any other second
    /// call is ignored.
    pub fn shutdown(&mut self, registry: &Registry, now: Instant, how: Shutdown) {
        if self.shutting_down {
            if how.drain.is_zero() {
                self.driver.hurry_drain(registry, now);
            }
            return;
        }
        self.shutting_down = true;
        if let Some(mut l) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
        self.proxy.clear();
        self.driver
            .shutdown(registry, now, how.code, &how.reason, how.drain);
    }

    /// Hands the turn's local publishes and topic changes to the Redis bridge, if
    /// any (it never blocks); without one the changes are not needed.
    fn forward_to_bridge(&mut self) {
        #[cfg(feature = "redis")]
        if let (Some(bridge), Some(out)) = (&self.bridge, self.driver.bridged.as_mut()) {
            bridge.forward(out, &mut self.driver.topic_changes);
        }
        self.driver.topic_changes.clear();
    }

    /// Moves what `Sender`s queued into the loop: at most one queue's worth
    /// (`sender_queue`) per turn, so a flood from other threads never stops the loop
    /// from serving its sockets. A smaller share per turn (4,096) made a flood's
    /// writes 4× smaller and cost 2× the CPU per delivery (BENCHMARKS.md, push).
    fn take_requests(&mut self) {
        let most = self.config().sender_queue;
        self.inbox.drain(most, &mut self.driver.deferred);
    }

    /// Whether the server takes new connections (what `GET /readyz` answers): not once
    /// a shutdown has begun, nor while accepting is paused for lack of file descriptors
    /// or every one of `max_connections` is taken.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutting_down || self.listener.is_none() {
            Err("draining")
        } else if matches!(self.paused, Some(AcceptPause::Until(_))) {
            Err("out of file descriptors")
        } else if self.driver.len() >= self.driver.cfg.max_connections {
            Err("at max_connections")
        } else {
            Ok(())
        }
    }

    /// True after [`shutdown`](Self::shutdown) once no connection is left.
    pub fn is_finished(&self) -> bool {
        self.shutting_down && self.driver.len() == 0
    }

    /// Serves on a poll of its own until a [`Sender::shutdown`] — or, with the
    /// `signals` feature (on by default), SIGTERM (closes spread over
    /// `Config::drain_period`) or SIGINT (at once) — then shuts down gracefully.
    /// SIGHUP loads `Config::tls_files` again for new connections.
    pub fn run(mut self) -> io::Result<()> {
        const SIGNALS: Token = Token(usize::MAX);
        let mut poll = Poll::new()?;
        #[cfg(feature = "signals")]
        let mut signals = {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            signals
        };
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
            info!("metrics on http://{a}/metrics, probes on /healthz and /readyz");
        }
        // systemd's Type=notify: the service counts as started only now that it accepts.
        #[cfg(feature = "systemd")]
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!("cannot tell systemd that wsloop is ready: {e}");
        }
        #[cfg(feature = "systemd")]
        let mut told_stopping = false;
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
                    #[cfg(feature = "signals")]
                    for sig in signals.pending() {
                        if sig == signal_hook::consts::SIGHUP {
                            self.reload();
                            continue;
                        }
                        let how = self.on_signal(sig);
                        self.shutdown(poll.registry(), now, how);
                    }
                } else if self.owns(event.token()) {
                    self.handle_event(poll.registry(), event, now);
                }
            }
            self.handle_timers(poll.registry(), now);
            #[cfg(feature = "systemd")]
            if self.shutting_down && !told_stopping {
                told_stopping = true;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            }
            if self.is_finished() {
                info!("shutdown complete");
                return Ok(());
            }
        }
    }

    /// Serves new connections over TLS with `tls` (a renewed certificate, say); open
    /// connections keep the configuration they started with.
    #[cfg(feature = "tls")]
    pub fn set_tls(&mut self, tls: Arc<rustls::ServerConfig>) {
        self.driver.cfg.tls = Some(tls);
    }

    /// SIGHUP in [`run`](Self::run): loads `tls_files` again for new connections; a
    /// file that does not load is logged and the certificate in use stays.
    #[cfg(feature = "signals")]
    fn reload(&mut self) {
        #[cfg(feature = "tls")]
        if let Some((cert, key)) = self.driver.cfg.tls_files.clone() {
            match crate::io::tls::load_server_config(&cert, &key) {
                Ok(tls) => {
                    self.set_tls(tls);
                    info!(
                        "SIGHUP: new connections get the certificate in {}",
                        cert.display()
                    );
                }
                Err(e) => warn!("SIGHUP: the certificate in use stays: {e}"),
            }
            return;
        }
        info!("SIGHUP: no certificate files to reload");
    }

    /// How [`run`](Self::run) shuts down on a signal: SIGTERM drains over the
    /// configured period; SIGINT, or a second signal during a drain, closes the
    /// connections left at once.
    #[cfg(feature = "signals")]
    fn on_signal(&self, sig: i32) -> Shutdown {
        let cfg = &self.driver.cfg;
        let reason = if cfg.drain_code == 1012 {
            "server restarting"
        } else {
            "server shutting down"
        };
        let at_once = self.shutting_down || sig != signal_hook::consts::SIGTERM;
        let drain = if at_once {
            Duration::ZERO
        } else {
            cfg.drain_period
        };
        let n = self.driver.len();
        if self.shutting_down {
            info!("signal {sig} during the drain: closing the {n} connections left at once");
        } else if at_once || n < 2 {
            info!(
                "signal {sig}: closing {n} connections with {}, then exiting",
                cfg.drain_code
            );
        } else {
            info!(
                "signal {sig}: closing {n} connections with {} spread over {}, then exiting \
                 (SIGINT or another SIGTERM closes the rest at once)",
                cfg.drain_code,
                crate::config::show_duration(drain)
            );
        }
        Shutdown {
            code: cfg.drain_code,
            reason: reason.into(),
            drain,
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
            if !self.proxy.expects_header(&peer) {
                self.admit(registry, stream, peer, now);
                continue;
            }
            let mut stream = stream;
            match ProxyGate::take_header(&mut stream, peer) {
                proxy::Header::Read(client) => self.admit(registry, stream, client, now),
                proxy::Header::Wait => {
                    let base = self.token_base + token::FIRST_PROXIED;
                    let deadline = now + self.driver.cfg.handshake_timeout;
                    self.proxy
                        .wait(registry, stream, peer, deadline, |k| Token(base + k));
                }
                proxy::Header::Bad => {}
            }
        }
    }

    /// Hands an accepted stream (its PROXY header read, if it had to have one) to the
    /// connections, over TLS when the server serves wss://.
    fn admit(&mut self, registry: &Registry, stream: Stream, peer: SocketAddr, now: Instant) {
        if let Some(stream) = self.secure(stream, peer) {
            self.driver.insert(registry, stream, peer, now);
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
        let (sender_queued, sender_rejected) = self.inbox.depth_and_rejected();
        let (topics, subscriptions) = self.driver.topic_counts();
        let (compression, compression_windows) = self.driver.compression();
        let gauges = Gauges {
            compression,
            compression_windows,
            topics,
            subscriptions,
            open_connections: self.driver.len(),
            pooled: self.driver.pooled(),
            sender_queued,
            sender_rejected,
            app_timers: self.driver.app_timers(),
            #[cfg(feature = "redis")]
            redis: self.bridge.as_ref().map(|b| b.status().snapshot()),
        };
        let ready = self.readiness();
        let stats = &self.driver.stats;
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        let answer = |path: &str| match path {
            "/metrics" => (200, stats.render(&gauges)),
            "/healthz" => (200, "alive\n".to_string()),
            "/readyz" => match ready {
                Ok(()) => (200, "ready\n".to_string()),
                Err(why) => (503, format!("not ready: {why}\n")),
            },
            _ => (
                404,
                "not found: try /metrics, /healthz or /readyz\n".to_string(),
            ),
        };
        match m.serve(key, answer) {
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

impl<H> Drop for Server<H> {
    /// Senders fail from now on instead of queuing for a loop that is gone.
    fn drop(&mut self) {
        self.inbox.close();
    }
}
