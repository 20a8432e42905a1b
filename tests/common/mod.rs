//! Shared test support: start the real `wsloop` binary on a free loopback port and
//! talk to it with tungstenite's client or raw sockets.
#![allow(dead_code)]

pub mod example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
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

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
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

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
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

/// A tungstenite client with a 10 s read timeout.
pub fn connect(url: &str) -> Client {
    let (ws, _) = tungstenite::connect(url).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// Sends a message and expects the same one back.
pub fn assert_echo(ws: &mut Client, msg: Message) {
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

/// Reads frames until a Close arrives and returns its code (None: no close frame).
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (b0, payload) = read_frame(s).ok()?;
        if b0 & 0x0f == 0x8 {
            return if payload.len() >= 2 {
                Some(u16::from_be_bytes([payload[0], payload[1]]))
            } else {
                Some(1005)
            };
        }
    }
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
