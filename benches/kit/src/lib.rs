//! Shared helpers for the wsloop benchmark kit: argument parsing, durations,
//! SHA-1/base64 for the WebSocket accept key, a log-linear latency histogram,
//! process CPU/rlimit helpers, and the socket and HTTP bits the client and
//! server binaries share. Kept dependency-free apart from libc and socket2.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

// ---------------------------------------------------------------- arguments

/// Minimal `--key value` / `--flag` parser. Unknown keys are rejected by
/// `finish()` so typos do not silently fall back to defaults.
pub struct Args {
    pub positional: Vec<String>,
    map: HashMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    pub fn from_env() -> Args {
        Self::parse(std::env::args().skip(1).collect())
    }

    pub fn parse(v: Vec<String>) -> Args {
        let mut positional = Vec::new();
        let mut map = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let a = &v[i];
            if let Some(k) = a.strip_prefix("--") {
                if let Some((k, val)) = k.split_once('=') {
                    map.insert(k.to_string(), val.to_string());
                } else if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                    map.insert(k.to_string(), v[i + 1].clone());
                    i += 1;
                } else {
                    map.insert(k.to_string(), String::new());
                }
            } else {
                positional.push(a.clone());
            }
            i += 1;
        }
        Args {
            positional,
            map,
            used: Default::default(),
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.used.borrow_mut().push(k.to_string());
        self.map.get(k).map(|s| s.as_str())
    }

    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        match self.get(k) {
            None => default,
            Some(s) => s
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| die(&format!("bad value for --{k}: {s}"))),
        }
    }

    pub fn dur(&self, k: &str, default: Duration) -> Duration {
        match self.get(k) {
            None => default,
            Some(s) => parse_dur(s).unwrap_or_else(|| die(&format!("bad duration for --{k}: {s}"))),
        }
    }

    /// Rejects options that were given but never asked for.
    pub fn finish(&self) {
        let used = self.used.borrow();
        for k in self.map.keys() {
            if !used.iter().any(|u| u == k) {
                die(&format!("unknown option --{k}"));
            }
        }
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

/// "5", "5s", "500ms", "2m", "1.5s" -> Duration. A bare number is seconds.
pub fn parse_dur(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    if v.is_nan() || v < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * mul))
}

/// Parsed `ws://host:port/path` URL. Only loopback targets are accepted.
pub struct WsUrl {
    pub addr: SocketAddr,
    pub host_header: String,
    pub path: String,
}

pub fn parse_ws_url(url: &str) -> WsUrl {
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| die("--url must start with ws://"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .unwrap_or_else(|| die(&format!("cannot resolve {hostport} (give host:port)")));
    if !is_loopback(addr.ip()) {
        die("refusing non-loopback target: load is only ever sent to 127.0.0.0/8 or ::1");
    }
    WsUrl {
        addr,
        host_header: hostport.to_string(),
        path: path.to_string(),
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.octets()[0] == 127,
        IpAddr::V6(v) => v.is_loopback(),
    }
}

// ---------------------------------------------------------------- sha1/base64

pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bitlen = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bitlen.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
    }
    let mut out = [0u8; 20];
    for i in 0..5 {
        out[4 * i..4 * i + 4].copy_from_slice(&h[i].to_be_bytes());
    }
    out
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2).
pub fn ws_accept(key: &str) -> String {
    let mut v = key.trim().as_bytes().to_vec();
    v.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&v))
}

// ---------------------------------------------------------------- histogram

/// Log-linear histogram of nanosecond values: exact below 64, then 32
/// sub-buckets per power of two (about 3% resolution). Fixed size, so
/// recording never allocates.
pub struct Hist {
    counts: Vec<u64>,
    pub total: u64,
    pub max: u64,
    pub sum: u128,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const NBUCKETS: usize = (2 * SUB + 64 * SUB) as usize;

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; NBUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            v as usize
        } else {
            let e = 63 - v.leading_zeros(); // >= SUB_BITS + 1
            let mant = (v >> (e - SUB_BITS)) - SUB;
            (2 * SUB + (e as u64 - SUB_BITS as u64 - 1) * SUB + mant) as usize
        }
    }

    /// Upper bound of a bucket's value range (conservative for percentiles).
    fn upper(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < 2 * SUB {
            idx
        } else {
            let e = (idx - 2 * SUB) / SUB + SUB_BITS as u64 + 1;
            let mant = (idx - 2 * SUB) % SUB;
            let lo = (SUB + mant) << (e - SUB_BITS as u64);
            lo + (1u64 << (e - SUB_BITS as u64)) - 1
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = Self::index(v).min(NBUCKETS - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.sum += v as u128;
        if v > self.max {
            self.max = v;
        }
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
        self.sum = 0;
    }

    /// Value at quantile q (0..=1), nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / self.total as u128) as u64
        }
    }

    /// The non-empty buckets as `index:count,...`, so that processes can hand
    /// their histograms to one that merges them (see `merge_sparse`).
    pub fn sparse(&self) -> String {
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(&format!("{i}:{c}"));
        }
        s
    }

    /// Adds the buckets of a `sparse()` string; sum and max are taken from the
    /// buckets' upper bounds (within the ~3 % of the buckets). Returns false on
    /// a malformed string.
    pub fn merge_sparse(&mut self, s: &str) -> bool {
        for kv in s.split(',').filter(|kv| !kv.is_empty()) {
            let Some((i, c)) = kv.split_once(':') else {
                return false;
            };
            let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>()) else {
                return false;
            };
            if i >= NBUCKETS {
                return false;
            }
            self.counts[i] += c;
            self.total += c;
            self.sum += Self::upper(i) as u128 * c as u128;
            self.max = self.max.max(Self::upper(i));
        }
        true
    }
}

// ---------------------------------------------------------------- sockets and HTTP

/// A non-blocking TCP connect to `target` (TCP_NODELAY), from source address
/// `src` if given. Returns while the connect is still in progress.
pub fn open_socket(
    target: SocketAddr,
    src: Option<IpAddr>,
) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        // IP_BIND_ADDRESS_NO_PORT: pick the port at connect() time so the
        // (src, dst) 4-tuple, not the source port alone, has to be unique
        unsafe {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (any case) in an HTTP request or response head.
pub fn header(head: &[u8], name: &str) -> Option<String> {
    let s = std::str::from_utf8(head).ok()?;
    for line in s.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case(name)
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine,
/// so a timestamp written by one process can be compared in another.
pub fn mono_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------- process helpers

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            if r.rlim_cur < r.rlim_max {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
            return r.rlim_cur as u64;
        }
    }
    0
}

/// CPU time (user + system) of this process so far.
pub fn self_cpu() -> Duration {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
    }
}

/// utime + stime of a process in clock ticks, from /proc/PID/stat.
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the comm field: state(3) ... utime is field 14, stime field 15 (1-based)
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(ut + st)
}

/// Busy ticks of the whole machine (all CPUs; total minus idle and iowait),
/// from the first line of /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user)
    let total: u64 = v.iter().take(8).sum();
    Some(total - v[3] - v[4])
}

pub fn clk_tck() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc_example() {
        assert_eq!(
            ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn hist_quantiles() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.quantile(1.0), 100_000_000);
        for v in 0..200u64 {
            assert!(Hist::upper(Hist::index(v)) >= v);
        }
        for v in [1u64 << 20, (1 << 20) + 12345, u32::MAX as u64] {
            let i = Hist::index(v);
            assert!(Hist::upper(i) >= v && Hist::upper(i) < v + v / 16, "{v}");
        }
    }

    #[test]
    fn sparse_round_trip() {
        let mut a = Hist::new();
        for v in [5u64, 5, 1000, 1 << 30] {
            a.record(v);
        }
        let mut b = Hist::new();
        assert!(b.merge_sparse(&a.sparse()));
        assert!(b.merge_sparse(&a.sparse()));
        assert_eq!(b.total, 8);
        assert_eq!(b.quantile(0.25), 5);
        assert_eq!(b.quantile(0.5), a.quantile(0.5));
        assert!(b.quantile(1.0) >= 1 << 30);
        assert!(!b.merge_sparse("x:1"));
        assert!(!b.merge_sparse("999999:1"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_dur("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_dur("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_dur("2m"), Some(Duration::from_secs(120)));
    }
}
