//! The `wsloop` binary's body (feature `cli`): parse flags, set up logging, serve echo
//! until SIGINT/SIGTERM. It lives in the library so that the option parsing it shares
//! with `Config` stays private.

use crate::config::default_compression;
use crate::{Compression, Config, DeflateConfig, Echo, ListenAddr, OriginPolicy, Server};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A single-threaded WebSocket echo server (mio + tungstenite).
#[derive(Parser, Debug)]
#[command(version, about, args_override_self = true)]
struct Cli {
    /// Address to listen on: IP:PORT (127.0.0.1 unless told otherwise) or unix:PATH.
    /// Ignored when systemd passes a socket (LISTEN_FDS=1, LISTEN_PID; see contrib/wsloop.socket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: ListenAddr,
    /// Share the port with other wsloop processes (SO_REUSEPORT): run one per core.
    #[arg(long)]
    reuse_port: bool,
    /// Serve a browser console (connect, send, see echoes and close codes) at GET /.
    #[arg(long)]
    console: bool,
    /// Serve Prometheus metrics at GET /metrics, and the probes GET /healthz (alive) and
    /// GET /readyz (accepting: 503 once draining, when full or out of fds), on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Connections from this address or range (a proxy; repeatable) must start with a PROXY
    /// protocol header (v1 or v2); its client address is then the one limits and logs see [default: none].
    #[arg(long = "proxy-from", value_name = "CIDR")]
    proxy_from: Vec<crate::config::Cidr>,
    /// Also answer GET /healthz and GET /readyz on the WebSocket port.
    #[arg(long)]
    ws_probes: bool,
    /// On SIGTERM, spread the closes over this period (clients reconnect gradually); then exit.
    /// SIGINT, or a second SIGTERM, closes the rest at once.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_period: Duration,
    /// Close code sent on SIGTERM: 1001 (going away) or 1012 (service restart: come back).
    #[arg(long, value_name = "CODE", default_value_t = 1001)]
    drain_code: u16,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key); SIGHUP reloads both.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Request path that upgrades; other paths get 404.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Incomplete-frame buffer kept per busy connection; larger ones are freed when it goes idle (gorilla ReadBufferSize).
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    read_buffer: usize,
    /// Output batched before a forced write (gorilla WriteBufferSize).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    write_buffer: usize,
    /// Unsent output above which reading from that client pauses (backpressure).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    max_pending_output: usize,
    /// Largest message after reassembly; larger closes with 1009 (gorilla SetReadLimit).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_message: usize,
    /// Largest frame payload; larger closes with 1009. At most --max-message [default: the --max-message value].
    #[arg(long, value_parser = parse_size)]
    max_frame: Option<usize>,
    /// Largest upgrade request head; larger gets 431.
    #[arg(long, default_value = "8KiB", value_parser = parse_size)]
    max_request: usize,
    /// Connections served at once; more get 503 [default: open-file limit less a reserve].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections from one IP address; more get 503 [default: no limit].
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Ping a client that sent nothing for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Read deadline: close (1001) a client that sent nothing, not even a pong, for this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Write deadline: drop a client that takes none of its pending output for this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Drop a socket that has not completed the upgrade in this long (gorilla HandshakeTimeout).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// After sending Close, wait this long for the client's Close.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Allowed Origin (repeatable), or '*' for any [default: same origin as Host].
    #[arg(long = "allow-origin", value_name = "URL")]
    allow_origin: Vec<String>,
    /// Subprotocol the server speaks (repeatable, in order of preference).
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,
    /// permessage-deflate: off, shared (no context takeover: no memory per connection) or
    /// window=BITS (context takeover, 2 x 2^BITS bytes per connection; BITS 9..=15)
    /// (gorilla EnableCompression).
    #[arg(long, value_name = "MODE", default_value_t = default_compression())]
    compression: Compression,
    /// Messages shorter than this go out uncompressed [default: 128B shared, 32B window].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    compression_threshold: Option<usize>,
    /// zlib compression level, 1 (fastest) to 9 (smallest).
    #[arg(long, value_name = "N", default_value_t = 6)]
    compression_level: u8,
    /// Bridge topics to other wsloop processes through Redis pub/sub at this URL
    /// (redis://HOST:PORT; needs the redis feature) [default: off].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

impl Cli {
    fn config(self) -> Config {
        let origins = if self.allow_origin.iter().any(|o| o == "*") {
            OriginPolicy::Any
        } else if self.allow_origin.is_empty() {
            OriginPolicy::SameOrigin
        } else {
            OriginPolicy::List(self.allow_origin)
        };
        let defaults = Config::default();
        Config {
            path: self.path,
            read_buffer: self.read_buffer,
            write_buffer: self.write_buffer,
            max_pending_output: self.max_pending_output,
            max_message: self.max_message,
            max_frame: self.max_frame,
            max_request: self.max_request,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_ip: self.max_connections_per_ip,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            origins,
            subprotocols: self.subprotocols,
            reuse_port: self.reuse_port,
            console: self.console,
            metrics_listen: self.metrics_listen,
            proxy_from: self.proxy_from,
            ws_probes: self.ws_probes,
            drain_period: self.drain_period,
            drain_code: self.drain_code,
            compression: {
                let mut c = DeflateConfig::new(self.compression);
                c.threshold = self.compression_threshold.unwrap_or(c.threshold);
                c.level = self.compression_level;
                c
            },
            max_topic_len: defaults.max_topic_len,
            max_subscriptions: defaults.max_subscriptions,
            sender_queue: defaults.sender_queue,
            redis: self.redis,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_files: None,
        }
    }
}

/// Runs the binary: parses the command line, serves, and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli.log_level;
    let listen = cli.listen.clone();
    let tls_files = cli.tls_cert.clone().zip(cli.tls_key.clone());
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut cfg = cli.config();
    if let Err(e) = cfg.validate() {
        eprintln!("wsloop: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_utc_timestamps()
        .with_module_level("tungstenite", log::LevelFilter::Warn)
        .init()
    {
        eprintln!("wsloop: cannot start logging: {e}");
    }
    if let Some((cert, key)) = tls_files {
        #[cfg(feature = "tls")]
        match crate::io::tls::load_server_config(&cert, &key) {
            Ok(tls) => {
                cfg.tls = Some(tls);
                cfg.tls_files = Some((cert, key));
            }
            Err(e) => {
                eprintln!("wsloop: {e}");
                return ExitCode::from(2);
            }
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (cert, key);
            eprintln!("wsloop: built without the tls feature; --tls-cert is not available");
            return ExitCode::from(2);
        }
    }
    let inherited = match inherited_listener() {
        Ok(l) => l,
        Err(e) => {
            log::error!("socket activation: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match inherited {
        Some(l) => {
            log::info!("serving the listening socket systemd passed (fd 3); --listen is ignored");
            Server::from_listener(l, cfg, Echo)
        }
        None => Server::bind(listen.clone(), cfg, Echo),
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("poll loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The listening socket systemd passed by socket activation (`sd_listen_fds(3)`): fd 3
/// when `LISTEN_FDS=1` and `LISTEN_PID` is this process. No `LISTEN_FDS`: `None`, and
/// wsloop binds `--listen`. Anything else is a configuration error: serving a port
/// other than the one systemd holds would refuse the clients it queues.
fn inherited_listener() -> Result<Option<std::net::TcpListener>, String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(fds) = std::env::var_os("LISTEN_FDS") else {
        return Ok(None);
    };
    let fds = fds.to_string_lossy();
    let pid = std::env::var("LISTEN_PID").unwrap_or_default();
    let me = std::process::id();
    if pid.trim().parse::<u32>() != Ok(me) {
        return Err(format!(
            "LISTEN_FDS={fds} but LISTEN_PID={pid:?} is not this process ({me}): \
             the sockets were meant for another process"
        ));
    }
    if fds.trim() != "1" {
        return Err(format!(
            "LISTEN_FDS={fds}: wsloop serves exactly one listening socket (one ListenStream= in the .socket unit)"
        ));
    }
    const FD: i32 = 3;
    // SAFETY: fstat only fills `st`, whatever fd 3 is.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(FD, &mut st) } != 0 {
        return Err(format!(
            "LISTEN_FDS=1 but fd 3 is not open: {}",
            std::io::Error::last_os_error()
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err("LISTEN_FDS=1 but fd 3 is not a socket".into());
    }
    // SAFETY: fd 3 is open, a socket, and handed to this process alone (LISTEN_PID);
    // nothing else in wsloop owns it.
    let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(FD) });
    let _ = socket.set_cloexec(true);
    let tcp = matches!(socket.domain(), Ok(d) if d == socket2::Domain::IPV4 || d == socket2::Domain::IPV6);
    if !tcp || !matches!(socket.r#type(), Ok(t) if t == socket2::Type::STREAM) {
        return Err("fd 3 is not a TCP socket (ListenStream= must be a port or IP:PORT)".into());
    }
    if !socket.is_listener().unwrap_or(false) {
        return Err("fd 3 is a TCP socket that is not listening".into());
    }
    Ok(Some(socket.into()))
}

/// Parses `4096`, `4KiB`, `4kb`, `16MiB`, `1GiB` (binary multiples; `k`/`KB` mean KiB too).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 4KiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a bare number means seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms or 30s"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{show_duration, show_size};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kb"), Ok(4096));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(show_size(16 << 20), "16MiB");
        assert_eq!(show_size(1000), "1000B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    /// One rule for defaults: `Config::default()` is the truth, and the flags' own
    /// defaults (shown by `--help`) must say the same.
    #[test]
    fn flag_defaults_are_config_defaults() {
        let cli = Cli::try_parse_from(["wsloop"]).unwrap();
        assert_eq!(
            format!("{:?}", cli.config()),
            format!("{:?}", Config::default())
        );
    }
}
