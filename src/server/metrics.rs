//! Counters the loop keeps, and the HTTP endpoint (`--metrics-listen`) that serves them
//! as Prometheus text, with the health and readiness probes, from the same loop on a
//! port of its own.

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use crate::conn::compress::CompressionStats;

/// What happened on the server since it started. Cheap to update: plain integers,
/// touched a few times per message.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Completed upgrades.
    pub handshakes_ok: u64,
    /// Refused upgrades by HTTP status.
    pub handshakes_failed: BTreeMap<u16, u64>,
    /// Text and binary messages received, and their payload bytes.
    pub messages_in: u64,
    /// See `messages_in`.
    pub bytes_in: u64,
    /// Text and binary messages sent, and their payload bytes.
    pub messages_out: u64,
    /// See `messages_out`.
    pub bytes_out: u64,
    /// Ended WebSocket connections by close code (1006: no close frame).
    pub closes: BTreeMap<u16, u64>,
    /// Pings sent to silent clients.
    pub pings_sent: u64,
    /// Connections dropped at a deadline, by kind.
    pub deadline_closes: DeadlineCloses,
    /// Largest pending output any connection had.
    pub pending_output_high_water: u64,
    /// Sends and closes for connections that were no longer open when the loop came
    /// to them (they closed after the request was made).
    pub commands_dropped: u64,
    /// Messages published to topics (each delivery counts in `messages_out`).
    pub published: u64,
    /// Subscriptions refused: the connection had `max_subscriptions` already.
    pub subscriptions_refused: u64,
    /// Connections failed (1008) because their unsent output passed
    /// `max_pending_output` while others kept sending to them.
    pub slow_consumers_dropped: u64,
}

/// What the loop reports alongside the counters, read when a scraper asks.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) open_connections: usize,
    pub(crate) pooled: usize,
    pub(crate) sender_queued: usize,
    pub(crate) sender_rejected: u64,
    pub(crate) app_timers: usize,
    pub(crate) topics: usize,
    pub(crate) subscriptions: usize,
    pub(crate) compression: CompressionStats,
    pub(crate) compression_windows: usize,
    /// The Redis bridge, when there is one.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<BridgeGauges>,
}

/// What the Redis bridge reports.
#[cfg(feature = "redis")]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BridgeGauges {
    pub(crate) connected: bool,
    pub(crate) reconnects: u64,
    pub(crate) dropped: u64,
}

/// Deadline closes by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadlineCloses {
    /// Upgrade not done in time.
    pub handshake: u64,
    /// Nothing received for the idle timeout.
    pub idle: u64,
    /// Output not drained for the write timeout.
    pub write: u64,
    /// No answer to our Close.
    pub close: u64,
}

impl Stats {
    /// The Prometheus text exposition of these counters and the loop's gauges.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut o = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(
                o,
                "# HELP wsloop_{name} {help}\n# TYPE wsloop_{name} {kind}"
            );
            for (labels, v) in rows {
                let _ = writeln!(o, "wsloop_{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        let by = |label: &str, m: &BTreeMap<u16, u64>| -> Vec<(String, u64)> {
            m.iter()
                .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v))
                .collect()
        };
        metric(
            "open_connections",
            "gauge",
            "Connections held, handshakes included.",
            &one(gauges.open_connections as u64),
        );
        metric(
            "pooled_contexts",
            "gauge",
            "Busy states and contexts kept for reuse.",
            &one(gauges.pooled as u64),
        );
        metric(
            "handshakes_ok_total",
            "counter",
            "Completed WebSocket upgrades.",
            &one(self.handshakes_ok),
        );
        metric(
            "handshakes_failed_total",
            "counter",
            "Refused upgrades by HTTP status.",
            &by("status", &self.handshakes_failed),
        );
        metric(
            "messages_in_total",
            "counter",
            "Text and binary messages received.",
            &one(self.messages_in),
        );
        metric(
            "bytes_in_total",
            "counter",
            "Payload bytes of messages received.",
            &one(self.bytes_in),
        );
        metric(
            "messages_out_total",
            "counter",
            "Text and binary messages sent.",
            &one(self.messages_out),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Payload bytes of messages sent.",
            &one(self.bytes_out),
        );
        metric(
            "closes_total",
            "counter",
            "Ended WebSocket connections by close code.",
            &by("code", &self.closes),
        );
        metric(
            "pings_sent_total",
            "counter",
            "Pings sent to silent clients.",
            &one(self.pings_sent),
        );
        let d = self.deadline_closes;
        let kinds = [
            ("handshake", d.handshake),
            ("idle", d.idle),
            ("write", d.write),
            ("close", d.close),
        ];
        let rows: Vec<(String, u64)> = kinds
            .iter()
            .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), *v))
            .collect();
        metric(
            "deadline_closes_total",
            "counter",
            "Connections dropped at a deadline, by kind.",
            &rows,
        );
        metric(
            "commands_dropped_total",
            "counter",
            "Sends and closes for connections already closed when the loop came to them.",
            &one(self.commands_dropped),
        );
        metric(
            "published_total",
            "counter",
            "Messages published to topics.",
            &one(self.published),
        );
        metric(
            "subscriptions_refused_total",
            "counter",
            "Subscriptions refused: the connection had max_subscriptions already.",
            &one(self.subscriptions_refused),
        );
        metric(
            "slow_consumers_dropped_total",
            "counter",
            "Connections failed with 1008: output over max_pending_output while others sent to them.",
            &one(self.slow_consumers_dropped),
        );
        metric(
            "topics",
            "gauge",
            "Topics with at least one subscriber in this process.",
            &one(gauges.topics as u64),
        );
        metric(
            "subscriptions",
            "gauge",
            "Subscriptions in this process.",
            &one(gauges.subscriptions as u64),
        );
        metric(
            "sender_queue_depth",
            "gauge",
            "Requests from Senders waiting for the loop.",
            &one(gauges.sender_queued as u64),
        );
        metric(
            "sender_rejected_total",
            "counter",
            "Sender requests refused because the queue was full.",
            &one(gauges.sender_rejected),
        );
        metric(
            "app_timers",
            "gauge",
            "Application timers armed.",
            &one(gauges.app_timers as u64),
        );
        let c = &gauges.compression;
        let rows = |compressed: u64, plain: u64| {
            vec![
                ("{form=\"compressed\"}".to_string(), compressed),
                ("{form=\"plain\"}".to_string(), plain),
            ]
        };
        metric(
            "deflate_in_bytes_total",
            "counter",
            "Compressed message payloads received: bytes on the wire and once inflated.",
            &rows(c.in_compressed, c.in_plain),
        );
        metric(
            "deflate_out_bytes_total",
            "counter",
            "Compressed message payloads sent: bytes on the wire and before compression.",
            &rows(c.out_compressed, c.out_plain),
        );
        metric(
            "deflate_windows",
            "gauge",
            "Connections keeping compression context (window mode).",
            &one(gauges.compression_windows as u64),
        );
        metric(
            "pending_output_high_water_bytes",
            "gauge",
            "Largest unsent output any connection had.",
            &one(self.pending_output_high_water),
        );
        #[cfg(feature = "redis")]
        if let Some(r) = gauges.redis {
            metric(
                "redis_connected",
                "gauge",
                "1 while both Redis bridge connections (publish, subscribe) are up.",
                &one(u64::from(r.connected)),
            );
            metric(
                "redis_reconnects_total",
                "counter",
                "Redis bridge connections made again after a failure.",
                &one(r.reconnects),
            );
            metric(
                "redis_dropped_total",
                "counter",
                "Bridged messages dropped: Redis away, queue full, malformed or oversized.",
                &one(r.dropped),
            );
        }
        o
    }
}

/// What a request asks for.
enum Route {
    Partial,
    Path(String),
    Refuse(u16, &'static str),
}

/// Parses a request head: the path it asks for (query left out), or why not.
fn route(request: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_REQUEST => {}
        Ok(_) if request.len() > MAX_REQUEST => {
            return Route::Refuse(431, "request header fields too large");
        }
        Ok(httparse::Status::Partial) => return Route::Partial,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Route::Refuse(431, "request header fields too large");
        }
        Err(_) => return Route::Refuse(400, "malformed HTTP request"),
    }
    if req.method != Some("GET") {
        return Route::Refuse(405, "only GET is served here");
    }
    let target = req.path.unwrap_or("");
    Route::Path(target.split('?').next().unwrap_or("").to_string())
}

/// The reason phrases this endpoint uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Scrapers served at once; more are refused until one finishes.
pub(crate) const MAX_SCRAPERS: usize = 16;
/// A scraper's request may be this large.
const MAX_REQUEST: usize = 4096;

struct Scraper {
    stream: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    written: usize,
}

/// The HTTP endpoint: a listener and the few scrapers being answered.
pub(crate) struct Endpoint {
    listener: TcpListener,
    scrapers: Slab<Scraper>,
    /// A descriptor held back so that a probe is answered (503) even when the process
    /// has no other: given up for the probe's socket, taken again once it is done.
    reserve: Option<std::fs::File>,
}

/// What became of a scraper after an event.
pub(crate) enum Progress {
    Waiting { writable: bool },
    Done,
}

impl Endpoint {
    /// Listens on `addr`; with `reuse_port` (the server's `--reuse-port`) beside other
    /// processes on the same address, so that a new process can start before the old
    /// one has left.
    pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(Endpoint {
            listener: TcpListener::from_std(socket.into()),
            scrapers: Slab::new(),
            reserve: std::fs::File::open("/dev/null").ok(),
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    /// Accepts scrapers; returns the keys of the new ones (to register and time out).
    pub(crate) fn accept(
        &mut self,
        registry: &Registry,
        token_of: impl Fn(usize) -> Token,
    ) -> Vec<usize> {
        let mut new = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.scrapers.len() >= MAX_SCRAPERS {
                        debug!("{peer}: metrics scraper refused, {MAX_SCRAPERS} busy");
                        continue;
                    }
                    let entry = self.scrapers.vacant_entry();
                    if registry
                        .register(&mut stream, token_of(entry.key()), Interest::READABLE)
                        .is_ok()
                    {
                        new.push(entry.key());
                        entry.insert(Scraper {
                            stream,
                            request: Vec::new(),
                            reply: Vec::new(),
                            written: 0,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return new,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        && self.reserve.take().is_some() =>
                {
                    debug!("metrics: out of file descriptors, answering with the reserve");
                }
                Err(e) => {
                    debug!("metrics accept failed: {e}");
                    return new;
                }
            }
        }
    }

    /// Reads the request and answers it with what `answer(path)` gives (status, body):
    /// 400 for a malformed request, 431 for one over `MAX_REQUEST`, 405 for a method
    /// other than GET. Writes what the socket takes.
    pub(crate) fn serve(
        &mut self,
        key: usize,
        answer: impl FnOnce(&str) -> (u16, String),
    ) -> Progress {
        let Some(s) = self.scrapers.get_mut(key) else {
            return Progress::Done;
        };
        if s.reply.is_empty() {
            let mut buf = [0u8; 1024];
            // Reads stop at the limit: what is past it is never looked at.
            while s.request.len() <= MAX_REQUEST {
                match s.stream.read(&mut buf) {
                    Ok(0) => return self.drop_scraper(key),
                    Ok(n) => s.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return self.drop_scraper(key),
                }
            }
            let (status, content) = match route(&s.request) {
                Route::Partial => return Progress::Waiting { writable: false },
                Route::Path(path) => answer(&path),
                Route::Refuse(status, why) => (status, format!("{why}\n")),
            };
            s.reply = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
                reason(status),
                content.len()
            )
            .into_bytes();
        }
        while s.written < s.reply.len() {
            match s.stream.write(&s.reply[s.written..]) {
                Ok(0) => return self.drop_scraper(key),
                Ok(n) => s.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Progress::Waiting { writable: true };
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.drop_scraper(key),
            }
        }
        self.drop_scraper(key)
    }

    pub(crate) fn reregister(&mut self, registry: &Registry, key: usize, token: Token) {
        if let Some(s) = self.scrapers.get_mut(key) {
            let _ = registry.reregister(
                &mut s.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            );
        }
    }

    pub(crate) fn drop_scraper(&mut self, key: usize) -> Progress {
        self.scrapers.try_remove(key);
        if self.reserve.is_none() {
            self.reserve = std::fs::File::open("/dev/null").ok();
        }
        Progress::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut s = Stats {
            messages_in: 3,
            ..Stats::default()
        };
        s.closes.insert(1000, 2);
        s.handshakes_failed.insert(404, 1);
        let gauges = Gauges {
            open_connections: 5,
            pooled: 1,
            ..Gauges::default()
        };
        let text = s.render(&gauges);
        assert!(
            text.contains("# TYPE wsloop_messages_in_total counter\nwsloop_messages_in_total 3\n")
        );
        assert!(text.contains("wsloop_closes_total{code=\"1000\"} 2\n"));
        assert!(text.contains("wsloop_handshakes_failed_total{status=\"404\"} 1\n"));
        assert!(text.contains("wsloop_open_connections 5\n"));
        assert!(text.contains("wsloop_deadline_closes_total{kind=\"idle\"} 0\n"));
    }

    #[test]
    fn routes_probe_requests() {
        let path = |r: &[u8]| match route(r) {
            Route::Path(p) => Some(p),
            _ => None,
        };
        let status = |r: &[u8]| match route(r) {
            Route::Refuse(s, _) => Some(s),
            _ => None,
        };
        assert_eq!(
            path(b"GET /readyz HTTP/1.1\r\n\r\n").as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            path(b"GET /healthz?x=1 HTTP/1.0\r\nHost: a\r\n\r\n").as_deref(),
            Some("/healthz")
        );
        assert!(matches!(route(b"GET /readyz HTTP/1.1\r\n"), Route::Partial));
        assert_eq!(status(b"GET /readyz HTTP/1.1\r\n\x01\r\n\r\n"), Some(400));
        assert_eq!(status(b"POST /readyz HTTP/1.1\r\n\r\n"), Some(405));
        let mut huge = b"GET /readyz HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST + 1, b'a');
        assert_eq!(status(&huge), Some(431));
    }
}
