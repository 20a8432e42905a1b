//! Every tunable of the server, its default and its validation, and how sizes and
//! durations are shown (`4KiB`, `500ms`).

use crate::protocol::extensions::{Compression, DeflateConfig};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// Who may open a WebSocket from a browser page (gorilla's `CheckOrigin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// An `Origin` header, when present, must name the same host as `Host`.
    SameOrigin,
    /// Any origin may connect.
    Any,
    /// Only these origins (`scheme://host[:port]`, compared case-insensitively) may connect.
    List(Vec<String>),
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4 address in its IPv6-mapped form too).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip.to_canonical() {
            IpAddr::V4(a) => (u128::from(a.to_bits()) << 96, false),
            IpAddr::V6(a) => (a.to_bits(), true),
        };
        let ((want, v6), (got, got_v6)) = (bits(self.addr), bits(ip));
        // Both kinds sit in the top bits, so the prefix counts from there.
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0);
        v6 == got_v6 && (want & mask) == (got & mask)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid address range {s:?}: expected e.g. 10.0.0.0/8 or 127.0.0.1");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Server configuration. `Config::default()` is what `wsloop` runs with when given no flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// The request path that upgrades; any other path gets 404.
    pub path: String,
    /// A busy connection's buffer for incomplete frames is kept for reuse up to this
    /// size; a larger one is freed when the connection goes idle.
    pub read_buffer: usize,
    /// Output collected before a write is forced in the middle of a batch.
    pub write_buffer: usize,
    /// Pending (unsent) output above which the server stops reading from that connection.
    pub max_pending_output: usize,
    /// Largest message, after reassembly of fragments (close 1009 above it).
    pub max_message: usize,
    /// Largest single frame payload (close 1009 above it). `None` (the default) means the
    /// same as `max_message`, so lowering `max_message` lowers both; `Some(n)` may only
    /// lower it further: `n` above `max_message` fails [`Config::validate`]. The limit in
    /// force is [`Config::frame_limit`].
    pub max_frame: Option<usize>,
    /// Largest HTTP upgrade request (request line and headers) in bytes (431 above it).
    pub max_request: usize,
    /// Open connections (including handshakes) above which new sockets get 503.
    pub max_connections: usize,
    /// Connections from one IP address above which new sockets get 503; `None` is no limit.
    pub max_connections_per_ip: Option<usize>,
    /// A connection that received nothing for this long is sent a Ping.
    pub ping_interval: Duration,
    /// Read deadline: a connection that received nothing (not even a Pong) for this long is closed with 1001.
    pub idle_timeout: Duration,
    /// Output that stays unsent for this long closes the connection (slow consumer).
    pub write_timeout: Duration,
    /// The upgrade must complete within this long after accept.
    pub handshake_timeout: Duration,
    /// After the server sends Close, the peer has this long to answer before the socket is dropped.
    pub close_timeout: Duration,
    /// The origin check.
    pub origins: OriginPolicy,
    /// Subprotocols the server speaks, in order of preference.
    pub subprotocols: Vec<String>,
    /// Set SO_REUSEPORT so several processes can share the port (one per core), and
    /// the metrics port, so that a new process can start beside the old one.
    pub reuse_port: bool,
    /// Serve the browser console page at `GET /`.
    pub console: bool,
    /// Serve Prometheus metrics at `GET /metrics`, and the probes `GET /healthz` (the
    /// loop is alive) and `GET /readyz` (accepting), on this address.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Connections from these addresses (proxies) must start with a PROXY protocol
    /// header (v1 or v2), and the client it names is the peer for per-IP limits and
    /// logs; one without a valid header is dropped. Empty (the default): no PROXY
    /// protocol.
    pub proxy_from: Vec<Cidr>,
    /// Answer `GET /healthz` and `GET /readyz` on the WebSocket port too (for a load
    /// balancer that probes the port it balances). Off: that port stays minimal.
    pub ws_probes: bool,
    /// On SIGTERM ([`Server::run`](crate::Server::run)), the closes are spread evenly
    /// over this period so that clients do not all reconnect in the same second.
    /// Default 10s: 10,000 clients come back at 1,000 a second, and the period plus
    /// `close_timeout` (15s) fits in Kubernetes' default 30s grace period.
    pub drain_period: Duration,
    /// The close code of that drain: 1001 (going away), or 1012 (service restart) for
    /// a process that is being restarted.
    pub drain_code: u16,
    /// Longest topic name, in bytes.
    pub max_topic_len: usize,
    /// Topics one connection may be subscribed to at once.
    pub max_subscriptions: usize,
    /// permessage-deflate (RFC 7692): what to negotiate, and from what size a message
    /// is compressed.
    pub compression: DeflateConfig,
    /// Requests a [`Sender`](crate::Sender) may queue for the loop; more are refused
    /// with [`SendError::Full`](crate::SendError::Full).
    pub sender_queue: usize,
    /// Bridge topics to every process connected to this Redis (`redis://HOST:PORT`,
    /// needs the `redis` feature): a topic is a Redis pub/sub channel of the same
    /// name, delivered at most once. `None` (the default): topics stay in this
    /// process.
    pub redis: Option<String>,
    /// Serve wss:// with this rustls configuration (see `wsloop::tls::load_server_config`).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The PEM certificate chain and key `tls` came from: [`Server::run`](crate::Server::run)
    /// loads them again on SIGHUP for new connections (a renewed certificate). `None`:
    /// SIGHUP changes nothing.
    #[cfg(feature = "tls")]
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// File descriptors kept back from `max_connections`: the listener, the poll, logging,
/// signals, and the sockets accepted only to be told 503 (`REJECT_SLACK`).
#[doc(hidden)]
pub const FD_RESERVE: usize = 100;

impl Default for Config {
    fn default() -> Self {
        Config {
            path: "/ws".into(),
            read_buffer: 4 << 10,
            write_buffer: 64 << 10,
            max_pending_output: 1 << 20,
            max_message: 16 << 20,
            max_frame: None,
            max_request: 8 << 10,
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            origins: OriginPolicy::SameOrigin,
            subprotocols: Vec::new(),
            reuse_port: false,
            console: false,
            metrics_listen: None,
            proxy_from: Vec::new(),
            ws_probes: false,
            drain_period: Duration::from_secs(10),
            drain_code: 1001,
            max_topic_len: 256,
            max_subscriptions: 1024,
            compression: DeflateConfig::new(default_compression()),
            sender_queue: 16_384,
            redis: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_files: None,
        }
    }
}

/// Shared compression where the codec is built in: every browser offers deflate, and
/// shared mode costs an idle connection nothing.
pub(crate) fn default_compression() -> Compression {
    if cfg!(feature = "deflate") {
        Compression::Shared
    } else {
        Compression::Off
    }
}

/// What the open-file limit allows, less [`FD_RESERVE`]; at least 1.
pub fn default_max_connections() -> usize {
    crate::io::sys::nofile_limit()
        .saturating_sub(FD_RESERVE as u64)
        .clamp(1, 1 << 24) as usize
}

/// A configuration that cannot work, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Rejects contradictory or useless settings with a message naming the option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !self.path.starts_with('/') {
            return err(format!("path {:?} must start with '/'", self.path));
        }
        if self.read_buffer < 256 {
            return err("read buffer must be at least 256 bytes".into());
        }
        if self.write_buffer == 0 {
            return err("write buffer must be at least 1 byte".into());
        }
        if self.max_frame == Some(0) || self.max_message == 0 {
            return err("max message and max frame must be at least 1 byte".into());
        }
        if let Some(frame) = self.max_frame
            && frame > self.max_message
        {
            return err(format!(
                "max frame ({}) is above max message ({}): a frame cannot carry more than a whole message; \
                 lower max frame or leave it unset (it follows max message), or raise max message",
                show_size(frame),
                show_size(self.max_message)
            ));
        }
        if self.max_request < 512 {
            return err("max request must be at least 512 bytes".into());
        }
        if self.max_connections == 0 {
            return err("max connections must be at least 1".into());
        }
        if let Err(e) = self.compression.validate() {
            return err(e);
        }
        if self.compression.mode != Compression::Off && !cfg!(feature = "deflate") {
            return err(format!(
                "compression {} needs the deflate feature, which this build leaves out",
                self.compression.mode
            ));
        }
        if self.sender_queue == 0 {
            return err("sender queue must hold at least 1 request".into());
        }
        if let Some(url) = &self.redis {
            check_redis_url(url).map_err(ConfigError)?;
        }
        if self.max_connections_per_ip == Some(0) {
            return err("max connections per ip must be at least 1".into());
        }
        if !matches!(
            self.drain_code,
            1000 | 1001 | 1011 | 1012 | 1013 | 3000..=4999
        ) {
            return err(format!(
                "drain code {} cannot be sent in a close frame: use 1001 (going away) or 1012 (service restart)",
                self.drain_code
            ));
        }
        if self.ws_probes && matches!(self.path.as_str(), "/healthz" | "/readyz") {
            return err(format!(
                "path {} is taken by the probes on the WebSocket port",
                self.path
            ));
        }
        let zero = Duration::ZERO;
        for (name, d) in [
            ("ping interval", self.ping_interval),
            ("idle timeout", self.idle_timeout),
            ("write timeout", self.write_timeout),
            ("handshake timeout", self.handshake_timeout),
            ("close timeout", self.close_timeout),
        ] {
            if d == zero {
                return err(format!("{name} must be longer than 0"));
            }
        }
        if self.idle_timeout <= self.ping_interval {
            return err(format!(
                "idle timeout ({}) must be longer than ping interval ({}): a client would be dropped before it is pinged",
                show_duration(self.idle_timeout),
                show_duration(self.ping_interval)
            ));
        }
        for p in &self.subprotocols {
            if p.is_empty() || !p.bytes().all(is_token_byte) {
                return err(format!("subprotocol {p:?} is not an HTTP token"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The frame limit in force: `max_frame`, or `max_message` when that is unset.
    pub fn frame_limit(&self) -> usize {
        self.max_frame.unwrap_or(self.max_message)
    }

    /// Whether connections are served over TLS.
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// Whether the Redis bridge can use `url`.
fn check_redis_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "redis")]
    return redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("redis URL {:?}: {e}", redact(url)));
    #[cfg(not(feature = "redis"))]
    Err(format!(
        "redis {} needs the redis feature, which this build leaves out",
        redact(url)
    ))
}

/// `url` without a password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Formats a duration the way `parse_duration` reads it.
pub(crate) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats a size the way `parse_size` reads it.
pub(crate) fn show_size(n: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_ip = match self.max_connections_per_ip {
            Some(n) => n.to_string(),
            None => "off".into(),
        };
        let origins = match &self.origins {
            OriginPolicy::SameOrigin => "same-origin".to_string(),
            OriginPolicy::Any => "*".to_string(),
            OriginPolicy::List(l) => l.join(","),
        };
        write!(
            f,
            "path={} read_buffer={} write_buffer={} max_pending_output={} max_message={} max_frame={} \
             max_request={} max_connections={} max_connections_per_ip={} ping_interval={} idle_timeout={} \
             write_timeout={} handshake_timeout={} close_timeout={} origins={} subprotocols=[{}] reuse_port={} console={} metrics={} tls={} \
             ws_probes={} drain_period={} drain_code={} proxy_from=[{}] compression={} compression_threshold={} compression_level={} redis={}",
            self.path,
            show_size(self.read_buffer),
            show_size(self.write_buffer),
            show_size(self.max_pending_output),
            show_size(self.max_message),
            show_size(self.frame_limit()),
            show_size(self.max_request),
            self.max_connections,
            per_ip,
            show_duration(self.ping_interval),
            show_duration(self.idle_timeout),
            show_duration(self.write_timeout),
            show_duration(self.handshake_timeout),
            show_duration(self.close_timeout),
            origins,
            self.subprotocols.join(","),
            self.reuse_port,
            self.console,
            self.metrics_listen
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            if self.tls_enabled() { "on" } else { "off" },
            self.ws_probes,
            show_duration(self.drain_period),
            self.drain_code,
            self.proxy_from
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.compression.mode,
            show_size(self.compression.threshold),
            self.compression.level,
            self.redis.as_deref().map_or_else(|| "off".into(), redact),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            idle_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("idle timeout"));
        let c = Config {
            subprotocols: vec!["a b".into()],
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn redis_url() {
        let with = |url: &str| Config {
            redis: Some(url.into()),
            ..Config::default()
        };
        let good = with("redis://127.0.0.1:6379");
        assert_eq!(good.validate().is_ok(), cfg!(feature = "redis"));
        assert!(with("http://127.0.0.1:6379").validate().is_err());
        assert!(with("not a url").validate().is_err());
        let secret = with("redis://user:hunter2@127.0.0.1:6379");
        assert!(format!("{secret}").contains(" redis=redis://***@127.0.0.1:6379"));
        assert!(
            !secret
                .validate()
                .map_err(|e| e.0)
                .err()
                .unwrap_or_default()
                .contains("hunter2")
        );
        assert!(format!("{}", Config::default()).ends_with(" redis=off"));
    }

    #[test]
    fn address_ranges() {
        let r = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!r("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(r("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!r("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(r("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(r("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!r("0.0.0.0/0").contains(ip("::1")));
        assert!(r("fd00::/8").contains(ip("fd12::1")));
        assert!(!r("fd00::/8").contains(ip("fe80::1")));
        assert!(r("::/0").contains(ip("2001:db8::1")));
        assert_eq!(r("10.1.2.3/8").to_string(), "10.1.2.3/8");
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    /// The frame limit follows the message limit unless set, and may only be lower.
    #[test]
    fn frame_limit_rule() {
        let d = Config::default();
        assert_eq!(d.max_frame, None);
        assert_eq!(d.frame_limit(), d.max_message);
        // Lowering the message limit alone lowers both.
        let c = Config {
            max_message: 64 << 10,
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.frame_limit(), 64 << 10);
        // The frame limit alone may go lower...
        let c = Config {
            max_frame: Some(1 << 10),
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.frame_limit(), c.max_message), (1 << 10, 16 << 20));
        // ...or equal, but not above the message limit, default or explicit.
        let equal = Config {
            max_frame: Some(16 << 20),
            ..Config::default()
        };
        assert_eq!(equal.validate(), Ok(()));
        let above_default = Config {
            max_frame: Some(32 << 20),
            ..Config::default()
        };
        let e = above_default.validate().unwrap_err().0;
        assert!(
            e.contains("max frame (32MiB) is above max message (16MiB)"),
            "{e}"
        );
        let contradictory = Config {
            max_frame: Some(2 << 20),
            max_message: 1 << 20,
            ..Config::default()
        };
        let e = contradictory.validate().unwrap_err().0;
        assert!(
            e.contains("max frame (2MiB) is above max message (1MiB)"),
            "{e}"
        );
        let zero = Config {
            max_frame: Some(0),
            ..Config::default()
        };
        assert!(zero.validate().is_err());
        assert!(
            format!(
                "{c}",
                c = Config {
                    max_message: 1 << 20,
                    ..Config::default()
                }
            )
            .contains(" max_frame=1MiB ")
        );
    }
}
