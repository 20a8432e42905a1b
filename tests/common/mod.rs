//! Shared test support: start the real `wsloop` binary on a free loopback port and
//! talk to it with tungstenite's client or raw sockets. Every helper that more than
//! one test file needs lives here (or in a submodule), once:
//!
//! - processes: `Server` (with `start_with_fd_limit`, `setting`, `alive`, `terminate`), `Guard`, `sigterm`,
//!   `wait_exit`; examples: `example::Example`, `example::example_exe`;
//! - clients: `connect`, `set_client_timeout`, `assert_echo`; beside abuse (health.rs):
//!   `echo_ok`, `run_table`, `Healthy`;
//! - raw sockets: `raw`, `connect_tuned`, `peer_gone`, `keep_sending`;
//! - HTTP: `upgrade_request`, `read_head`, `status_of`, `http`; the upgrade helpers
//!   `upgraded`, `request_upgrade`, `try_upgrade`, `upgrade_within`; refusals `Reply`,
//!   `parse_reply`, `check_refusal`, `refused`, `assert_refused`;
//! - frames: `frame`, `read_frame`, `next_frame`, `expect_frame`, `close_payload`,
//!   `close_frame`, `close_code` (1005 when there is none), `read_close_code`,
//!   `expect_close`;
//! - the end of a connection: `read_to_eof`, `expect_eof` (within `ANSWER_WITHIN`
//!   where the server answers at once), and `wait_until` for anything else;
//! - metrics: `Server::metrics_addr`, `scrape`, `metric`;
//! - a server in the test process with a handler of the test's own (inproc.rs):
//!   `inproc::Loop` (`with`, `stall`, `stop`, `wait_ended`); Python's `websockets`
//!   (python.rs): `python::python_venv`, `run_script`, `check_report`; a real
//!   `redis-server` (redis.rs, feature `redis`): `redis::Redis`;
//! - socket activation (systemd.rs): `systemd::listen_socket`, `systemd::activated`;
//!   the metrics and probe endpoint: `Server::metrics_addr`.
#![allow(dead_code)]

pub mod example;
pub mod health;
pub mod inproc;
pub mod python;
#[cfg(feature = "redis")]
pub mod redis;
pub mod systemd;

#[allow(unused_imports)]
pub use health::{Healthy, echo_ok, run_table};

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A running `wsloop` process; killed (by its PID) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub path: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with `--listen 127.0.0.1:0 --log-level debug` plus `args`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_wsloop")), args)
    }

    /// Like `start`, from a prepared command (e.g. wrapped in a shell for `ulimit`).
    pub fn start_with(mut cmd: Command, args: &[&str]) -> Server {
        cmd.args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wsloop");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let rest = line
                    .split("listening on ws://")
                    .nth(1)
                    .or_else(|| line.split("listening on wss://").nth(1));
                let url = rest.map(|r| r.split_whitespace().next().unwrap_or("").to_string());
                // Logged before the start is reported, so `logged` sees the line.
                sink.lock().unwrap().push(line);
                if let Some(url) = url
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("wsloop did not report its listening address");
        let slash = url.find('/').expect("path in url");
        let addr = url[..slash].parse().expect("address");
        Server {
            child,
            addr,
            path: url[slash..].to_string(),
            logs,
        }
    }

    /// The binary under `ulimit -n limit` (soft and hard), with `args`.
    pub fn start_with_fd_limit(limit: usize, args: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -n {limit}; exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_wsloop"),
        ]);
        let server = Server::start_with(cmd, args);
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
        let nofile = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        assert!(nofile.contains(&format!(" {limit} ")), "{nofile}");
        server
    }

    /// The metrics and probe endpoint's address (`--metrics-listen`), from the log.
    pub fn metrics_addr(&self) -> SocketAddr {
        let mut addr = None;
        let found = wait_until(Duration::from_secs(5), || {
            addr = self.logs.lock().unwrap().iter().find_map(|l| {
                l.split("metrics on http://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
            addr.is_some()
        });
        assert!(found, "no metrics address in the server's log");
        addr.unwrap()
    }

    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether any log line so far contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Whether a log line contains `needle`, waiting up to 5 s for it: the log is read
    /// from the server's stderr by a thread of its own, a little after the fact.
    pub fn wait_logged(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(5), || self.logged(needle))
    }

    /// The value of `key=` in the start-up line (`max_connections=19900`, say).
    pub fn setting(&self, key: &str) -> Option<String> {
        // The log thread reports the address before it stores the line.
        wait_until(Duration::from_secs(2), || self.logged("listening on ws"));
        let logs = self.logs.lock().unwrap();
        let line = logs.iter().find(|l| l.contains("listening on ws"))?;
        // Each setting follows a space, the first one the opening parenthesis.
        let rest = line
            .split(&format!(" {key}="))
            .nth(1)
            .or_else(|| line.split(&format!("({key}=")).nth(1))?;
        Some(rest.split([' ', ')']).next()?.to_string())
    }

    /// Whether the process is still running (it has not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        sigterm(self.child.id());
        wait_exit(&mut self.child, within)
    }

    /// Resident set size of the server process in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:") * 1024
    }

    /// CPU ticks (utime + stime) the server has used so far.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs wsloop as `cmd` with `--listen 127.0.0.1:0` and then `args` (the bad flag
/// last, so that no good one of the same name masks it); it must exit on its own
/// within 10 s. Returns its exit code, stdout and stderr.
pub fn run_to_exit(mut cmd: Command, args: &[&str]) -> (Option<i32>, String, String) {
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Guard(cmd.spawn().expect("spawn wsloop"));
    let Some(status) = wait_exit(&mut child.0, Duration::from_secs(10)) else {
        panic!("wsloop {args:?} kept running instead of exiting");
    };
    let (mut out, mut err) = (String::new(), String::new());
    let child = &mut child.0;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

/// A child process this test started: killed (by its PID) and reaped when dropped,
/// unless it already exited.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to a process this test started.
pub fn sigterm(pid: u32) {
    // SAFETY: kill(2) with a PID of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Waits (bounded) for `child` to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A tungstenite client with a 10 s read timeout (`url` may be a prepared request).
pub fn connect(url: impl tungstenite::client::IntoClientRequest) -> Client {
    let (ws, _) = tungstenite::connect(url).expect("connect");
    set_client_timeout(&ws, Duration::from_secs(10));
    ws
}

/// Sets the read timeout of a plain (not TLS) tungstenite client's socket.
pub fn set_client_timeout(ws: &Client, t: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(t)).unwrap();
    }
}

/// Sends a message and expects the same one back (over any stream: TCP, TLS, Unix).
pub fn assert_echo<S: Read + Write>(ws: &mut WebSocket<S>, msg: Message) {
    ws.send(msg.clone()).expect("send");
    loop {
        match ws.read().expect("read echo") {
            Message::Ping(_) | Message::Pong(_) => continue,
            got => {
                assert_eq!(got, msg);
                return;
            }
        }
    }
}

/// A raw TCP connection with a read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A TCP connection to `to`, optionally from a chosen local address (bound before
/// connecting) and with a receive buffer set before connecting (so the window stays
/// small and autotuning is off); with the read timeout and nodelay of `raw`.
pub fn connect_tuned(
    to: SocketAddr,
    from: Option<Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = rcvbuf {
        sock.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = from {
        sock.bind(&SocketAddr::from((ip, 0)).into())?;
    }
    sock.connect(&to.into())?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Whether the peer has ended the connection (FIN or reset), seen without reading:
/// our end of `s` has left ESTABLISHED (TCP_INFO).
pub fn peer_gone(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    const TCP_ESTABLISHED: u8 = 1;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let state = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_state
    };
    state != TCP_ESTABLISHED
}

/// How long the server may take to answer bad input, or to end a connection it has
/// finished with (it does both at once; this bounds a loaded machine).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Reads until the peer ends the connection (EOF or reset) within `within`; returns
/// what arrived before that. Err if the connection is still open then, or a read fails
/// otherwise.
pub fn read_to_eof(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {within:?} (got {} bytes: {:?})",
                all.len(),
                String::from_utf8_lossy(&all[..all.len().min(200)])
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(all),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// The peer ends the connection (EOF or reset) within `within`, sending nothing more.
pub fn expect_eof(s: &mut TcpStream, within: Duration) -> Result<(), String> {
    let rest = read_to_eof(s, within)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} unexpected bytes before EOF: {:x?}",
            rest.len(),
            &rest[..rest.len().min(64)]
        ))
    }
}

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid upgrade request for `path` with extra header lines (each ending in \r\n).
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
}

/// Reads an HTTP response head; returns the status and the head text.
pub fn read_head(s: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    (status_of(&text), text)
}

/// The status code of an HTTP response's text (0 when there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A raw socket that completed the upgrade.
pub fn upgraded(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(upgrade_request(addr, path, "").as_bytes())
        .unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "{head}");
    s
}

/// Sends a valid upgrade request on `s` and returns the answer's status (0: none).
pub fn request_upgrade(s: &mut TcpStream, addr: SocketAddr, path: &str) -> u16 {
    if s.write_all(upgrade_request(addr, path, "").as_bytes())
        .is_err()
    {
        return 0;
    }
    read_head(s).0
}

/// A fresh connection's answer to a valid upgrade request (0: no answer, or no
/// connection), and the socket when it was upgraded.
pub fn try_upgrade(addr: SocketAddr, path: &str) -> (u16, Option<TcpStream>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, None);
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    match request_upgrade(&mut s, addr, path) {
        101 => (101, Some(s)),
        status => (status, None),
    }
}

/// A socket upgraded within `within`, retrying while the answer is 503 (a slot that
/// is being freed); any other answer fails the test.
pub fn upgrade_within(addr: SocketAddr, path: &str, within: Duration) -> Option<TcpStream> {
    let mut got = None;
    wait_until(within, || {
        let (status, s) = try_upgrade(addr, path);
        assert!(
            status == 101 || status == 503,
            "only 503 is expected while a slot frees up, got {status}"
        );
        got = s;
        got.is_some()
    });
    got
}

/// Sends `request` as is and returns the status and the whole response (until EOF).
pub fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = raw(addr);
    s.write_all(request).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all).into_owned();
    (status_of(&text), text)
}

/// A client frame, masked with a fixed key.
pub fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![first_byte];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one server frame: (first byte, payload).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b)?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0; len as usize];
    s.read_exact(&mut payload)?;
    Ok((h[0], payload))
}

/// The payload of a Close frame: `code` then `reason` (bytes: tests send invalid ones).
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A masked client Close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    frame(0x88, &close_payload(code, reason))
}

/// The code of a Close frame's payload; 1005 (no status) when it has none.
pub fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

/// Reads frames until a Close arrives and returns its code (None: no close frame).
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    // Bounded: a server that streams frames for ever fails the test instead.
    for _ in 0..10_000 {
        let (b0, payload) = read_frame(s).ok()?;
        if b0 & 0x0f == 0x8 {
            return Some(close_code(&payload));
        }
    }
    None
}

/// One frame from the server within `ANSWER_WITHIN`.
pub fn next_frame(s: &mut TcpStream) -> Result<(u8, Vec<u8>), String> {
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    read_frame(s).map_err(|e| format!("no frame from server: {e}"))
}

/// Expects the next server frame to be exactly `b0` with `payload`.
pub fn expect_frame(s: &mut TcpStream, b0: u8, payload: &[u8]) -> Result<(), String> {
    let (g0, got) = next_frame(s)?;
    if g0 != b0 || got != payload {
        return Err(format!(
            "expected frame {b0:#04x} with {} bytes, got {g0:#04x} with {} bytes {:?}",
            payload.len(),
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(60)])
        ));
    }
    Ok(())
}

/// Expects the next server frame to be a Close with `code` (nothing before it), then
/// the end of the TCP connection with nothing more, within `ANSWER_WITHIN` each.
pub fn expect_close(s: &mut TcpStream, code: u16) -> Result<(), String> {
    let (b0, payload) = next_frame(s)?;
    if b0 != 0x88 {
        return Err(format!(
            "expected Close {code}, got frame {b0:#04x} with {} bytes {:?}",
            payload.len(),
            String::from_utf8_lossy(&payload[..payload.len().min(60)])
        ));
    }
    let got = close_code(&payload);
    if got != code {
        return Err(format!(
            "expected close code {code}, got {got} ({:?})",
            String::from_utf8_lossy(&payload[2.min(payload.len())..])
        ));
    }
    expect_eof(s, ANSWER_WITHIN).map_err(|e| format!("after Close {code}: {e}"))
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `bytes` on a clone of `s` from a thread, in 16 KiB writes, while the caller
/// reads: a client that keeps sending behind a bad request or frame. Write errors
/// end the sending quietly (the server may reset us); a write blocked for 5 s too.
/// Returns how many bytes were written.
pub fn keep_sending(s: &TcpStream, bytes: Vec<u8>) -> std::thread::JoinHandle<usize> {
    let mut w = s.try_clone().expect("clone socket");
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::spawn(move || {
        let mut sent = 0;
        for chunk in bytes.chunks(16 << 10) {
            if w.write_all(chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    })
}

/// A parsed HTTP reply: status, head (status line and headers) and body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (case-insensitive name, trimmed value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Parses a whole HTTP reply (head and body) as received until EOF.
pub fn parse_reply(all: &[u8]) -> Result<Reply, String> {
    let text = String::from_utf8_lossy(all).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {:?}", &text[..text.len().min(300)]))?;
    Ok(Reply {
        status: status_of(head),
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// Checks a refusal: `status`, an `HTTP/1.1` status line, the `headers` with exactly
/// these values, a one-line text body whose length Content-Length gives, and no
/// Sec-WebSocket-Accept.
pub fn check_refusal(r: &Reply, status: u16, headers: &[(&str, &str)]) -> Result<(), String> {
    if r.status != status {
        return Err(format!("expected {status}, got {}: {:?}", r.status, r.head));
    }
    if !r.head.starts_with("HTTP/1.1 ") {
        return Err(format!("not an HTTP/1.1 status line: {:?}", r.head));
    }
    for (name, value) in headers {
        if r.header(name) != Some(value) {
            return Err(format!("expected {name}: {value} in {:?}", r.head));
        }
    }
    if r.body.is_empty() || !r.body.ends_with('\n') || r.body.matches('\n').count() != 1 {
        return Err(format!("body must be one line of text: {:?}", r.body));
    }
    match r.header("Content-Length").map(str::parse::<usize>) {
        Some(Ok(len)) if len == r.body.len() => {}
        other => {
            return Err(format!(
                "Content-Length {other:?} but a body of {} bytes",
                r.body.len()
            ));
        }
    }
    if r.header("Sec-WebSocket-Accept").is_some() {
        return Err(format!("a refusal must not accept: {:?}", r.head));
    }
    Ok(())
}

/// Sends `request` (ignoring write errors: a server that answers early may reset the
/// rest of a big one) and expects a refusal with `status` and `headers` (see
/// `check_refusal`), after which the server ends the connection within
/// `ANSWER_WITHIN`.
pub fn refused(
    addr: SocketAddr,
    request: &[u8],
    status: u16,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut s = raw(addr);
    let _ = s.write_all(request);
    let all = read_to_eof(&mut s, ANSWER_WITHIN)?;
    let r = parse_reply(&all)?;
    check_refusal(&r, status, headers)?;
    Ok(r)
}

/// `refused`, panicking with the request on failure.
pub fn assert_refused(addr: SocketAddr, request: &str, status: u16) -> Reply {
    refused(addr, request.as_bytes(), status, &[])
        .unwrap_or_else(|e| panic!("request:\n{request}\n{e}"))
}

/// GETs `path` from a metrics endpoint: the status and the whole response.
pub fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (status_of(&body), body)
}

/// The value of `series` (name and labels, as rendered) in Prometheus text.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}
