//! The `wsloop` binary: parse flags, set up logging, serve echo until SIGINT/SIGTERM.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wsloop::config::{parse_duration, parse_size};
use wsloop::{Config, Echo, ListenAddr, OriginPolicy, Server};

/// A single-threaded WebSocket echo server (mio + tungstenite).
#[derive(Parser, Debug)]
#[command(version, about, args_override_self = true)]
struct Cli {
    /// Address to listen on: IP:PORT (127.0.0.1 unless told otherwise) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: ListenAddr,
    /// Share the port with other wsloop processes (SO_REUSEPORT): run one per core.
    #[arg(long)]
    reuse_port: bool,
    /// Serve a browser console (connect, send, see echoes and close codes) at GET /.
    #[arg(long)]
    console: bool,
    /// Serve Prometheus metrics at GET /metrics on this address [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Request path that upgrades; other paths get 404.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Read buffer per busy connection (gorilla ReadBufferSize).
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
    /// Largest frame payload; larger closes with 1009.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_frame: usize,
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
    /// Write deadline: drop a client whose pending output has not drained for this long.
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
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

fn main() -> ExitCode {
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
        match wsloop::tls::load_server_config(&cert, &key) {
            Ok(tls) => cfg.tls = Some(tls),
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
    let server = match Server::bind(listen.clone(), cfg, Echo) {
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
