//! fanout: the client side and the raw limit of the fan-out benchmark
//! (benches/fanout/run.sh). One thread per process, mio, no async runtime.
//!
//! Modes (every one stops by itself; loopback only):
//!   sub --url ws://127.0.0.1:P/ws?topic=T --connections N --stats FILE
//!       [--sources A,B,..] [--hold 600s] [--max-connecting 512]
//!       [--setup-timeout 120s]
//!     Opens N subscriber connections, prints `READY established=N failed=F`
//!     once all are set up, then reads. Every text message is
//!     `STEP SEQ SENT_NS ` padded to its size; its latency (now - SENT_NS,
//!     CLOCK_MONOTONIC, one clock for all processes) goes into the step's
//!     histogram. Pings are answered. Every 200 ms the counts, the latest
//!     arrival time, the histograms and this process's CPU are written to
//!     FILE (atomically, by rename) for the publisher to read. Exits 3 s after the message `END`, or after --hold.
//!   pub --url ws://127.0.0.1:P/ws?publish=T --subs N --stats F1,F2,..
//!       --rates 10,20,50 [--step 5s] [--size 64] [--drain-max 10s]
//!       [--server-pid PID] [--p99-limit 500ms] [--min-delivered 0.9]
//!       [--stop-after-fails 2]
//!     The publisher and judge: for each rate, sends text messages of --size
//!     bytes at that fixed rate for --step, waits until the subscribers have
//!     them all (or nothing more came for 1 s, or --drain-max), and prints a
//!     `STEP` line: deliveries, % delivered, deliveries/s, server CPU per
//!     delivery (/proc/PID/stat over the step and its drain), the
//!     subscribers' CPU, p50/p99/max latency. A step fails when its p99
//!     exceeds --p99-limit or it delivers less than --min-delivered; the run
//!     stops after --stop-after-fails failed steps in a row, sends `END` and
//!     prints `RESULT`: `sustained_rate`, the last rate before the first
//!     failure, and `highest_passed`, the highest rate that passed at all
//!     (they differ when a server fails in the step where it starts to batch
//!     and then passes higher rates).
//!   raw --listen 127.0.0.1:P [--cork | --cork-iov]
//!     The physical limit: a real upgrade (101 with the accept key), then each
//!     message from a publisher (a connection without `topic=` in its request
//!     line) is framed once and the same bytes written to every subscriber,
//!     one write() each; only what a socket does not take is buffered. With
//!     --cork, the frames of all messages read in one loop turn are joined
//!     and go to each subscriber in one write (what a corking server can
//!     reach: one write per socket per turn, however many messages). With
//!     --cork-iov, the same but one writev per socket with each frame's
//!     header and payload as iovecs of their own (the layout of a queue of
//!     shared frames), to tell what gathering many small pieces costs.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use wsloop_bench_kit::*;

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const RBUF: usize = 256 * 1024;
const MAX_HEAD: usize = 8192;
/// Steps a run may have (each has its own histogram).
const MAX_STEPS: usize = 32;

fn main() {
    let args = Args::from_env();
    let mode = args.positional.first().cloned().unwrap_or_default();
    raise_nofile();
    match mode.as_str() {
        "sub" => run_sub(&args),
        "pub" => run_pub(&args),
        "raw" => run_raw(&args),
        _ => die("usage: fanout sub|pub|raw [options] (see the source's header)"),
    }
}

fn upgrade_request(url: &WsUrl) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path, url.host_header
    )
}

/// Checks a 101 response head (up to and without the blank line).
fn check_101(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 101")
        && header(head, "sec-websocket-accept").as_deref() == Some(ws_accept(WS_KEY).as_str())
}

/// A masked client frame (FIN set) with opcode `op`.
fn client_frame(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// A complete frame at the start of a buffer.
struct Frame {
    op: u8,
    /// where the payload starts; it ends where the frame does
    start: usize,
    end: usize,
    mask: Option<[u8; 4]>,
}

/// The complete frame at the start of `buf`, or None when more bytes are needed.
fn parse_frame(buf: &[u8]) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(m)
    } else {
        None
    };
    let end = pos.checked_add(len)?;
    if buf.len() < end {
        return None;
    }
    Some(Frame {
        op,
        start: pos,
        end,
        mask,
    })
}

fn parse_sources(args: &Args) -> Vec<IpAddr> {
    let Some(s) = args.get("sources") else {
        return Vec::new();
    };
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| {
            let ip: IpAddr = a
                .parse()
                .unwrap_or_else(|_| die(&format!("bad source address {a}")));
            if !is_loopback(ip) {
                die("source addresses must be loopback");
            }
            ip
        })
        .collect()
}

// ---------------------------------------------------------------- sub

struct Sub {
    sock: TcpStream,
    open: bool,
    sent_request: bool,
    /// response head until the upgrade, then an incomplete frame (rare)
    carry: Vec<u8>,
    got_end: bool,
}

#[derive(Default)]
struct StepStats {
    recv: u64,
    /// when the step's latest message arrived (mono_ns)
    last: u64,
    hist: Option<Hist>,
}

struct SubState {
    steps: Vec<StepStats>,
    bad: u64,
    ends: usize,
    pongs: Vec<u8>,
}

impl SubState {
    fn on_text(&mut self, payload: &[u8], now: u64, c_end: &mut bool) {
        if payload == b"END" {
            *c_end = true;
            self.ends += 1;
            return;
        }
        let mut it = payload.split(|&b| b == b' ');
        let num = |x: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(x?).ok()?.parse().ok() };
        let (Some(step), Some(_seq), Some(sent)) = (num(it.next()), num(it.next()), num(it.next()))
        else {
            self.bad += 1;
            return;
        };
        let Some(st) = self.steps.get_mut(step as usize) else {
            self.bad += 1;
            return;
        };
        st.recv += 1;
        st.last = st.last.max(now);
        st.hist
            .get_or_insert_with(Hist::new)
            .record(now.saturating_sub(sent));
    }
}

/// Handles readiness of one subscriber; false when it is finished.
fn drive_sub(c: &mut Sub, req: &[u8], buf: &mut [u8], st: &mut SubState) -> bool {
    if !c.sent_request {
        match c.sock.write(req) {
            Ok(n) if n == req.len() => c.sent_request = true,
            Ok(_) => return false, // a 200-byte request into an empty socket: never partial
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOTCONN) =>
            {
                return true;
            }
            Err(_) => return false,
        }
    }
    loop {
        let n = match c.sock.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let now = mono_ns();
        let mut data: &[u8] = &buf[..n];
        let mut joined;
        if !c.open {
            c.carry.extend_from_slice(data);
            let Some(end) = find(&c.carry, b"\r\n\r\n") else {
                if c.carry.len() > MAX_HEAD {
                    return false;
                }
                continue;
            };
            if !check_101(&c.carry[..end]) {
                eprintln!(
                    "fanout sub: upgrade refused: {}",
                    String::from_utf8_lossy(&c.carry[..end.min(200)])
                );
                return false;
            }
            c.open = true;
            joined = c.carry.split_off(end + 4);
            c.carry.clear();
            data = &joined;
        } else if !c.carry.is_empty() {
            joined = std::mem::take(&mut c.carry);
            joined.extend_from_slice(data);
            data = &joined;
        } else {
            joined = Vec::new();
        }
        let mut off = 0;
        while let Some(Frame {
            op,
            start,
            end,
            mask,
        }) = parse_frame(&data[off..])
        {
            let payload = &data[off + start..off + end];
            let unmasked;
            let payload = match mask {
                Some(m) => {
                    unmasked = payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ m[i % 4])
                        .collect::<Vec<u8>>();
                    &unmasked[..]
                }
                None => payload,
            };
            match op {
                1 | 2 => st.on_text(payload, now, &mut c.got_end),
                9 => {
                    st.pongs.clear();
                    client_frame(10, payload, &mut st.pongs);
                    // a pong into an almost empty send buffer; if it does not go,
                    // the server's idle timeout says so
                    let _ = c.sock.write(&st.pongs);
                }
                8 => return false,
                _ => {}
            }
            off += end;
        }
        c.carry.extend_from_slice(&data[off..]);
        drop(joined);
        if n < buf.len() {
            return true;
        }
    }
}

fn write_stats(path: &str, st: &SubState, open: usize, closed: u64) {
    let mut s = format!(
        "cpu_us {}\nopen {open}\nclosed {closed}\nbad {}\n",
        self_cpu().as_micros(),
        st.bad
    );
    for (i, step) in st.steps.iter().enumerate().filter(|(_, s)| s.recv > 0) {
        let h = step.hist.as_ref().map(Hist::sparse).unwrap_or_default();
        s.push_str(&format!("step {i} {} {} {h}\n", step.recv, step.last));
    }
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, s).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn run_sub(args: &Args) {
    let url = parse_ws_url(args.get("url").unwrap_or_else(|| die("--url needed")));
    let n: usize = args.num("connections", 1000);
    let stats = args
        .get("stats")
        .unwrap_or_else(|| die("--stats FILE needed"))
        .to_string();
    let hold = args.dur("hold", Duration::from_secs(600));
    let max_connecting: usize = args.num("max-connecting", 512);
    let setup_timeout = args.dur("setup-timeout", Duration::from_secs(120));
    let sources = parse_sources(args);
    args.finish();

    let req = upgrade_request(&url).into_bytes();
    let mut poll = Poll::new().unwrap_or_else(|e| die(&format!("poll: {e}")));
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Sub> = Slab::with_capacity(n);
    let mut buf = vec![0u8; RBUF];
    let mut st = SubState {
        steps: (0..MAX_STEPS).map(|_| StepStats::default()).collect(),
        bad: 0,
        ends: 0,
        pongs: Vec::new(),
    };
    let (mut started, mut established, mut failed, mut closed) = (0usize, 0usize, 0usize, 0u64);
    let start = Instant::now();
    let mut ready = false;
    let mut ready_at = start;
    let mut end_at: Option<Instant> = None;
    let mut last_write = start;
    loop {
        // keep at most max_connecting setups in flight
        while !ready && started < n && started - established - failed < max_connecting {
            let src = (!sources.is_empty()).then(|| sources[started % sources.len()]);
            started += 1;
            match open_socket(url.addr, src) {
                Ok(s) => {
                    let mut sock = TcpStream::from_std(s);
                    let e = conns.vacant_entry();
                    if poll
                        .registry()
                        .register(
                            &mut sock,
                            Token(e.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        failed += 1;
                        continue;
                    }
                    e.insert(Sub {
                        sock,
                        open: false,
                        sent_request: false,
                        carry: Vec::new(),
                        got_end: false,
                    });
                }
                Err(e) => {
                    if failed < 3 {
                        eprintln!("fanout sub: connect: {e}");
                    }
                    failed += 1;
                }
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50)))
            && e.kind() != ErrorKind::Interrupted
        {
            die(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let was_open = c.open;
            let keep = drive_sub(c, &req, &mut buf, &mut st);
            if !was_open && c.open {
                established += 1;
            }
            if !keep {
                let c = conns.remove(key);
                if c.open {
                    closed += 1;
                } else {
                    failed += 1;
                }
            }
        }
        let now = Instant::now();
        if !ready && established + failed >= n {
            ready = true;
            ready_at = now;
            println!(
                "READY established={established} failed={failed} setup_s={:.2}",
                start.elapsed().as_secs_f64()
            );
        }
        if !ready && now - start > setup_timeout {
            println!("READY established={established} failed={failed} setup_timeout=1");
            ready = true;
            ready_at = now;
        }
        if now - last_write >= Duration::from_millis(200) {
            last_write = now;
            write_stats(&stats, &st, conns.len(), closed);
        }
        if st.ends > 0 && end_at.is_none() {
            end_at = Some(now);
        }
        let all_ended = st.ends >= conns.len();
        let end_waited = end_at.is_some_and(|t| now - t > Duration::from_secs(3));
        if ready && (all_ended || end_waited || now - ready_at > hold) {
            break;
        }
    }
    write_stats(&stats, &st, conns.len(), closed);
    let recv: u64 = st.steps.iter().map(|s| s.recv).sum();
    println!(
        "RESULT mode=sub established={established} failed={failed} closed_by_server={closed} \
         received={recv} bad={} cpu_s={:.2}",
        st.bad,
        self_cpu().as_secs_f64()
    );
}

// ---------------------------------------------------------------- pub

/// What the subscribers' stats files say, summed.
#[derive(Default)]
struct Merged {
    cpu_us: u64,
    open: u64,
    closed: u64,
    bad: u64,
    recv: Vec<u64>,
    last: Vec<u64>,
    hist: Vec<Hist>,
    missing: usize,
}

fn read_stats(files: &[String], step: usize) -> Merged {
    let mut m = Merged {
        recv: vec![0; MAX_STEPS],
        last: vec![0; MAX_STEPS],
        ..Default::default()
    };
    let mut h = Hist::new();
    for f in files {
        let Ok(s) = std::fs::read_to_string(f) else {
            m.missing += 1;
            continue;
        };
        for line in s.lines() {
            let mut w = line.split(' ');
            let key = w.next().unwrap_or("");
            let val = |w: &mut std::str::Split<'_, char>| -> u64 {
                w.next().and_then(|v| v.parse().ok()).unwrap_or(0)
            };
            match key {
                "cpu_us" => m.cpu_us += val(&mut w),
                "open" => m.open += val(&mut w),
                "closed" => m.closed += val(&mut w),
                "bad" => m.bad += val(&mut w),
                "step" => {
                    let i = val(&mut w) as usize;
                    let r = val(&mut w);
                    let last = val(&mut w);
                    if i < MAX_STEPS {
                        m.recv[i] += r;
                        m.last[i] = m.last[i].max(last);
                        if i == step {
                            h.merge_sparse(w.next().unwrap_or(""));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    m.hist = vec![h];
    m
}

/// The publisher's one connection: blocking, with a write timeout so a wedged
/// server cannot hold the run forever.
fn connect_publisher(url: &WsUrl) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect_timeout(&url.addr, Duration::from_secs(10))
        .unwrap_or_else(|e| die(&format!("publisher connect: {e}")));
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(upgrade_request(url).as_bytes())
        .unwrap_or_else(|e| die(&format!("publisher upgrade: {e}")));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    // byte by byte, so nothing after the head is consumed (the server sends nothing)
    while find(&head, b"\r\n\r\n").is_none() {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => die("publisher: no upgrade response"),
        }
        if head.len() > MAX_HEAD {
            die("publisher: response head too long");
        }
    }
    if !check_101(&head[..head.len() - 4]) {
        die(&format!(
            "publisher: upgrade refused: {}",
            String::from_utf8_lossy(&head)
        ));
    }
    s
}

/// Drops whatever the server sent the publisher (pings), without blocking.
fn discard_input(s: &mut std::net::TcpStream) {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 4096];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
    }
    let _ = s.set_nonblocking(false);
}

fn run_pub(args: &Args) {
    let url = parse_ws_url(args.get("url").unwrap_or_else(|| die("--url needed")));
    let subs: u64 = args.num("subs", 0);
    let files: Vec<String> = args
        .get("stats")
        .unwrap_or_else(|| die("--stats F1,F2,.. needed"))
        .split(',')
        .map(str::to_string)
        .collect();
    let rates: Vec<u64> = args
        .get("rates")
        .unwrap_or("10,20,50,100,200,400")
        .split(',')
        .map(|r| r.parse().unwrap_or_else(|_| die(&format!("bad rate {r}"))))
        .collect();
    let step_len = args.dur("step", Duration::from_secs(5));
    let size: usize = args.num("size", 64);
    let drain_max = args.dur("drain-max", Duration::from_secs(10));
    let server_pid: Option<u32> = args.get("server-pid").and_then(|p| p.parse().ok());
    let p99_limit = args.dur("p99-limit", Duration::from_millis(500));
    let min_delivered: f64 = args.num("min-delivered", 0.9);
    let stop_after: u32 = args.num("stop-after-fails", 2);
    args.finish();
    if subs == 0 || rates.is_empty() || rates.len() >= MAX_STEPS || rates.contains(&0) {
        die("need --subs > 0 and 1..31 non-zero --rates");
    }
    let tck = clk_tck() as f64;
    let mut sock = connect_publisher(&url);
    let mut frame = Vec::with_capacity(size + 16);
    let mut payload = Vec::with_capacity(size);
    let mut sustained = 0u64;
    let mut highest = 0u64;
    let mut failed_before = false;
    let mut fails_in_a_row = 0u32;
    let mut best_dps = 0.0f64;
    for (i, &rate) in rates.iter().enumerate() {
        let step = i + 1; // step 0 is never used: a stray zero parses as step 0
        let count = (rate as f64 * step_len.as_secs_f64()).round().max(1.0) as u64;
        let before = read_stats(&files, step);
        let cpu0 = server_pid.and_then(proc_cpu_ticks);
        let busy0 = machine_busy_ticks();
        let t0 = Instant::now();
        let t0_ns = mono_ns();
        let mut sent = 0u64;
        let mut late = 0u64;
        for seq in 0..count {
            let due = t0 + Duration::from_secs_f64(seq as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(10) {
                late += 1;
            }
            payload.clear();
            payload.extend_from_slice(format!("{step} {seq} {} ", mono_ns()).as_bytes());
            payload.resize(size.max(payload.len()), b'x');
            frame.clear();
            client_frame(1, &payload, &mut frame);
            if let Err(e) = sock.write_all(&frame) {
                eprintln!("fanout pub: write: {e}");
                break;
            }
            sent += 1;
        }
        let send_s = t0.elapsed().as_secs_f64();
        // drain: until everything arrived, nothing came for 1 s, or drain-max
        let expected = sent * subs;
        let mut last = before.recv[step];
        let mut last_change = Instant::now();
        let drain0 = Instant::now();
        let mut now_stats;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            discard_input(&mut sock);
            now_stats = read_stats(&files, step);
            let r = now_stats.recv[step];
            if r != last {
                last = r;
                last_change = Instant::now();
            }
            if r >= expected
                || last_change.elapsed() > Duration::from_secs(1)
                || drain0.elapsed() > drain_max
            {
                break;
            }
        }
        let cpu1 = server_pid.and_then(proc_cpu_ticks);
        let busy1 = machine_busy_ticks();
        let wall = t0.elapsed().as_secs_f64();
        // the busy part of the step: from the first send to the last arrival
        let last_ns = now_stats.last[step];
        let active = (last_ns.saturating_sub(t0_ns) as f64 / 1e9)
            .max(send_s)
            .max(1e-3);
        let delivered = now_stats.recv[step];
        let pct = 100.0 * delivered as f64 / expected.max(1) as f64;
        let h = &now_stats.hist[0];
        let (p50, p99, max) = (h.quantile(0.5), h.quantile(0.99), h.max);
        let dps = delivered as f64 / active;
        let server_cpu_s = match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a) as f64 / tck),
            _ => None,
        };
        let cpu_per = server_cpu_s.map(|s| s * 1e6 / delivered.max(1) as f64);
        let client_cpu_s = now_stats.cpu_us.saturating_sub(before.cpu_us) as f64 / 1e6;
        let machine_busy = match (busy0, busy1) {
            (Some(a), Some(b)) => Some(100.0 * (b - a) as f64 / tck / wall),
            _ => None,
        };
        let ok = p99 as u128 <= p99_limit.as_nanos() && pct >= 100.0 * min_delivered;
        println!(
            "STEP step={step} rate={rate} sent={sent} late_sends={late} subs={subs} expected={expected} \
             delivered={delivered} delivered_pct={pct:.2} deliveries_per_s={dps:.0} active_s={active:.2} \
             server_cpu_s={} server_cpu_pct={} cpu_us_per_delivery={} client_cpu_s={client_cpu_s:.2} \
             client_cpu_pct={:.1} machine_busy_pct={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
             subs_open={} closed_by_server={} bad={} ok={}",
            server_cpu_s.map_or("na".into(), |v| format!("{v:.2}")),
            server_cpu_s.map_or("na".into(), |v| format!("{:.1}", 100.0 * v / wall)),
            cpu_per.map_or("na".into(), |v| format!("{v:.3}")),
            100.0 * client_cpu_s / wall,
            machine_busy.map_or("na".into(), |v| format!("{v:.0}")),
            p50 as f64 / 1e6,
            p99 as f64 / 1e6,
            max as f64 / 1e6,
            now_stats.open,
            now_stats.closed,
            now_stats.bad,
            ok as u8,
        );
        if !ok {
            failed_before = true;
            fails_in_a_row += 1;
            if fails_in_a_row >= stop_after.max(1) {
                break;
            }
            continue;
        }
        fails_in_a_row = 0;
        if !failed_before {
            sustained = rate;
        }
        highest = rate;
        best_dps = best_dps.max(dps);
    }
    frame.clear();
    client_frame(1, b"END", &mut frame);
    let _ = sock.write_all(&frame);
    println!(
        "RESULT mode=pub sustained_rate={sustained} highest_passed={highest} \
         best_deliveries_per_s={best_dps:.0}"
    );
}

// ---------------------------------------------------------------- raw

enum Role {
    Handshake(Vec<u8>),
    Sub,
    Pub(Vec<u8>),
}

struct RawConn {
    sock: TcpStream,
    role: Role,
    /// output the socket did not take
    pending: Vec<u8>,
}

const LISTENER: Token = Token(usize::MAX);

fn flush_raw(c: &mut RawConn) -> bool {
    while !c.pending.is_empty() {
        match c.sock.write(&c.pending) {
            Ok(0) => return false,
            Ok(n) => {
                c.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes `frame` to a subscriber: one write when nothing waits, else queued.
fn send_raw(c: &mut RawConn, frame: &[u8]) -> bool {
    if !c.pending.is_empty() {
        c.pending.extend_from_slice(frame);
        return true;
    }
    match c.sock.write(frame) {
        Ok(n) => c.pending.extend_from_slice(&frame[n..]),
        Err(e) if e.kind() == ErrorKind::WouldBlock => c.pending.extend_from_slice(frame),
        Err(_) => return false,
    }
    true
}

/// Writes `iov` to a subscriber in one writev when nothing waits, else queues it.
fn send_raw_iov(c: &mut RawConn, iov: &[std::io::IoSlice<'_>]) -> bool {
    let mut skip = 0;
    if c.pending.is_empty() {
        match c.sock.write_vectored(iov) {
            Ok(n) => skip = n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    for s in iov {
        let take = skip.min(s.len());
        c.pending.extend_from_slice(&s[take..]);
        skip -= take;
    }
    true
}

fn run_raw(args: &Args) {
    let listen = args.get("listen").unwrap_or("127.0.0.1:9001").to_string();
    let cork = args.has("cork");
    let cork_iov = args.has("cork-iov");
    args.finish();
    let addr = listen
        .parse()
        .unwrap_or_else(|_| die(&format!("bad --listen {listen}")));
    let mut listener = TcpListener::bind(addr).unwrap_or_else(|e| die(&format!("bind: {e}")));
    let mut poll = Poll::new().unwrap_or_else(|e| die(&format!("poll: {e}")));
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .unwrap_or_else(|e| die(&format!("register: {e}")));
    eprintln!("fanout raw listening on ws://{addr}/ws");
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<RawConn> = Slab::new();
    let mut subs: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; RBUF];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != ErrorKind::Interrupted
        {
            die(&format!("poll: {e}"));
        }
        let mut dead: Vec<usize> = Vec::new();
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut sock, _)) = listener.accept() {
                    let _ = sock.set_nodelay(true);
                    let e = conns.vacant_entry();
                    if poll
                        .registry()
                        .register(
                            &mut sock,
                            Token(e.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        e.insert(RawConn {
                            sock,
                            role: Role::Handshake(Vec::new()),
                            pending: Vec::new(),
                        });
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if !flush_raw(c) {
                dead.push(key);
                continue;
            }
            // read everything there is
            loop {
                let n = match c.sock.read(&mut buf) {
                    Ok(0) => {
                        dead.push(key);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        dead.push(key);
                        break;
                    }
                };
                match &mut c.role {
                    Role::Sub => {} // pongs and the like: nothing to do
                    Role::Handshake(req) => {
                        req.extend_from_slice(&buf[..n]);
                        let Some(end) = find(req, b"\r\n\r\n") else {
                            if req.len() > MAX_HEAD {
                                dead.push(key);
                                break;
                            }
                            continue;
                        };
                        let Some(k) = header(&req[..end], "sec-websocket-key") else {
                            dead.push(key);
                            break;
                        };
                        let line_end = find(req, b"\r\n").unwrap_or(end);
                        let is_sub = find(&req[..line_end], b"topic=").is_some();
                        let rest = req.split_off(end + 4);
                        c.pending.extend_from_slice(
                            format!(
                                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                                ws_accept(&k)
                            )
                            .as_bytes(),
                        );
                        if is_sub {
                            c.role = Role::Sub;
                            subs.push(key);
                        } else {
                            c.role = Role::Pub(rest);
                        }
                        if !flush_raw(c) {
                            dead.push(key);
                            break;
                        }
                    }
                    Role::Pub(inb) => {
                        inb.extend_from_slice(&buf[..n]);
                        let mut off = 0;
                        while let Some(Frame {
                            op,
                            start,
                            end,
                            mask,
                        }) = parse_frame(&inb[off..])
                        {
                            if op == 1 || op == 2 {
                                // the server frame: unmasked, same opcode, built once
                                let m = mask.unwrap_or([0; 4]);
                                let payload = &inb[off + start..off + end];
                                let mut f = Vec::with_capacity(payload.len() + 10);
                                f.push(0x80 | op);
                                let len = payload.len();
                                if len < 126 {
                                    f.push(len as u8);
                                } else if len <= 0xffff {
                                    f.push(126);
                                    f.extend_from_slice(&(len as u16).to_be_bytes());
                                } else {
                                    f.push(127);
                                    f.extend_from_slice(&(len as u64).to_be_bytes());
                                }
                                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
                                frames.push(f);
                            }
                            off += end;
                        }
                        inb.drain(..off);
                    }
                }
            }
            if cork_iov && !frames.is_empty() {
                let mut iov = Vec::with_capacity(2 * frames.len());
                for f in &frames {
                    // header and payload apart (2-byte headers: small frames only)
                    let h = 2.min(f.len());
                    iov.push(std::io::IoSlice::new(&f[..h]));
                    iov.push(std::io::IoSlice::new(&f[h..]));
                }
                for &s in &subs {
                    if let Some(sc) = conns.get_mut(s)
                        && !send_raw_iov(sc, &iov)
                    {
                        dead.push(s);
                    }
                }
                frames.clear();
            }
            if cork && frames.len() > 1 {
                let joined = frames.concat();
                frames.clear();
                frames.push(joined);
            }
            // fan out what the publisher sent, message by message (or corked)
            for f in frames.drain(..) {
                for &s in &subs {
                    if let Some(sc) = conns.get_mut(s)
                        && !send_raw(sc, &f)
                    {
                        dead.push(s);
                    }
                }
            }
        }
        if !dead.is_empty() {
            dead.sort_unstable();
            dead.dedup();
            for k in dead {
                if let Some(mut c) = conns.try_remove(k) {
                    let _ = poll.registry().deregister(&mut c.sock);
                }
            }
            subs.retain(|k| conns.contains(*k));
        }
    }
}
