//! A real `redis-server` for the bridge's tests: Debian's package, installed with
//! apt-get when it is not on PATH, run on a free loopback port without persistence,
//! killed (by its PID) when dropped. `restart` brings it back on the same port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `redis-server`'s path, installing Debian's package first if need be (once per
/// test binary).
pub fn redis_server_exe() -> PathBuf {
    static EXE: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut exe = EXE.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = exe.as_ref() {
        return p.clone();
    }
    let found = on_path("redis-server").unwrap_or_else(|| {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "redis-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A fresh machine may not have the package lists yet.
        let ok = install()
            || Command::new("apt-get")
                .arg("update")
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && install();
        assert!(
            ok,
            "redis-server is not on PATH and `apt-get install -y redis-server` failed: \
             install Debian's redis-server package (as root) to run these tests"
        );
        on_path("redis-server").expect("redis-server installed but not on PATH")
    });
    *exe = Some(found.clone());
    found
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A `redis-server` of the test's own.
pub struct Redis {
    pub port: u16,
    /// More `redis-server` options (e.g. `--requirepass`).
    args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free loopback port.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Like `start`, with more `redis-server` options.
    pub fn start_with(args: &[&str]) -> Redis {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis {
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, by PID): clients see their connections reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(redis_server_exe())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        // Any answer to PING will do (-NOAUTH too): the server is serving.
        let up = super::wait_until(Duration::from_secs(10), || {
            let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
                return false;
            };
            let mut answer = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
                && s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut answer).is_ok()
                && matches!(&answer, b"+" | b"-")
        });
        assert!(up, "redis-server did not answer on port {}", self.port);
    }

    /// A client connection of the test's own.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let c =
            redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    }

    /// How many connections Redis has subscribed to `channel` (PUBSUB NUMSUB).
    pub fn subscribers(&self, channel: &str) -> u64 {
        let mut c = self.connection().expect("connect to redis");
        let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut c)
            .expect("PUBSUB NUMSUB");
        counts.first().map_or(0, |(_, n)| *n)
    }

    /// The channels anybody is subscribed to (PUBSUB CHANNELS), sorted.
    pub fn channels(&self) -> Vec<String> {
        let mut c = self.connection().expect("connect to redis");
        let mut all: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query(&mut c)
            .expect("PUBSUB CHANNELS");
        all.sort();
        all
    }

    /// PUBLISHes raw bytes to `channel`; returns the receivers Redis counted.
    pub fn publish(&self, channel: &str, payload: &[u8]) -> u64 {
        let mut c = self.connection().expect("connect to redis");
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(&mut c)
            .expect("PUBLISH")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
