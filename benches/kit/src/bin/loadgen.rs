//! loadgen: single-threaded mio WebSocket load generator for the wsloop
//! benchmarks. Hand-rolled client side of RFC 6455: fixed upgrade request,
//! minimal 101 parsing (status line and Sec-WebSocket-Accept), masked binary
//! (or, with `echo --text`, text) frames with a fixed mask key, and a
//! streaming frame parser that accepts
//! frames with or without the mask bit (so it also works against `rawecho`,
//! which echoes the client's masked frames verbatim).
//!
//! Modes (all take --url ws://127.0.0.1:PORT/PATH and stop by themselves):
//!   idle    --connections N --hold DUR [--sources A,B,..] [--echo-first BYTES]
//!           [--max-connecting 512] [--setup-timeout 120s]
//!   echo    --connections C --inflight W --size S --duration DUR [--warmup DUR]
//!           [--text]
//!   connect --concurrency K --duration DUR [--warmup DUR] [--sources ...]
//!           [--session-timeout 5s] [--max-sessions 5000000]
//! Common: [--server-pid PID] (server CPU from /proc/PID/stat over the
//! measured window), [--quiet].
//!
//! Payload pattern: message number `seq` of a connection carries seq as
//! 8 little-endian bytes, followed by bytes of a fixed pseudo-random pattern
//! starting at an offset that depends on seq. Every echoed byte is compared,
//! so corruption, truncation, reordering and cross-message mix-ups are caught.
//! With `--text` the messages are text frames (opcode 1) and every payload
//! byte is printable ASCII, so the payload is valid UTF-8 however a server
//! splits it: seq is written as 8 characters of 6 bits each ('0' + bits,
//! i.e. '0'..='o', least significant first; 48 bits, far more messages than
//! any bounded run sends on one connection) and the pattern bytes are mapped
//! into '!'..='~'. Verification stays exact: the expected bytes are
//! generated the same way and compared byte for byte, and an echo with the
//! other opcode counts as a verification failure.
//!
//! The last line on stdout is `RESULT mode=... key=value ...`.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use wsloop_bench_kit::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const OFF_PRIME: u64 = 1021;
const RBUF: usize = 256 * 1024;
const SCRATCH: usize = 64 * 1024;
const SMALL_FRAME: usize = 16 * 1024;
/// Frames larger than SMALL_FRAME are written with writev straight from the
/// pattern, at most this many per call and (beyond the first) this many bytes.
const WRITEV_FRAMES: usize = 16;
const WRITEV_BYTES: usize = 256 * 1024;

// ---------------------------------------------------------------- payload generator

struct Gen {
    size: usize,
    /// text frames (opcode 1, printable ASCII payload) instead of binary
    text: bool,
    hdr: Vec<u8>,
    flen: usize,
    /// plain pattern (what the server must echo back)
    pat: Vec<u8>,
    /// pattern XOR mask key, index-aligned (offsets are multiples of 4)
    mpat: Vec<u8>,
}

impl Gen {
    fn new(size: usize, text: bool) -> Gen {
        let mut hdr = vec![0x80 | Self::opcode_for(text)]; // FIN | opcode
        if size < 126 {
            hdr.push(0x80 | size as u8);
        } else if size <= 0xffff {
            hdr.push(0x80 | 126);
            hdr.extend_from_slice(&(size as u16).to_be_bytes());
        } else {
            hdr.push(0x80 | 127);
            hdr.extend_from_slice(&(size as u64).to_be_bytes());
        }
        hdr.extend_from_slice(&MASK);
        let plen = size + 4 * OFF_PRIME as usize + 8;
        let mut pat = vec![0u8; plen];
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for b in pat.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 24) as u8;
            // text: 94 printable ASCII characters '!'..='~' (never part of a
            // multi-byte UTF-8 sequence, so any split of the payload is valid)
            *b = if text { b'!' + r % 94 } else { r };
        }
        let mpat: Vec<u8> = pat
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        let flen = hdr.len() + size;
        Gen {
            size,
            text,
            hdr,
            flen,
            pat,
            mpat,
        }
    }

    fn opcode_for(text: bool) -> u8 {
        if text { 0x1 } else { 0x2 }
    }

    /// The data opcode the echo must carry.
    #[inline]
    fn opcode(&self) -> u8 {
        Self::opcode_for(self.text)
    }

    /// The 8 bytes that carry `seq` at the start of a message (only the
    /// first `prefix_len()` of them are sent): little-endian for binary,
    /// 6 bits per printable character for text.
    #[inline]
    fn prefix(&self, seq: u64) -> [u8; 8] {
        if !self.text {
            return seq.to_le_bytes();
        }
        let mut p = [0u8; 8];
        for (i, b) in p.iter_mut().enumerate() {
            *b = b'0' + ((seq >> (6 * i)) & 63) as u8;
        }
        p
    }

    #[inline]
    fn off(seq: u64) -> usize {
        4 * (seq % OFF_PRIME) as usize
    }

    #[inline]
    fn prefix_len(&self) -> usize {
        self.size.min(8)
    }

    /// The three pieces of the masked frame for `seq`: header, masked seq
    /// prefix, masked pattern.
    #[inline]
    fn pieces<'a>(&'a self, seq: u64, pre: &'a mut [u8; 8]) -> [&'a [u8]; 3] {
        let p = self.prefix_len();
        let sb = self.prefix(seq);
        for i in 0..p {
            pre[i] = sb[i] ^ MASK[i % 4];
        }
        let o = Self::off(seq);
        [&self.hdr[..], &pre[..p], &self.mpat[o + p..o + self.size]]
    }

    /// Append frame bytes of `seq` from position `from` to `dst` (up to the
    /// end of the frame).
    fn append(&self, seq: u64, from: usize, dst: &mut Vec<u8>) {
        let mut pre = [0u8; 8];
        let mut pos = 0;
        for piece in self.pieces(seq, &mut pre) {
            let end = pos + piece.len();
            if from < end {
                dst.extend_from_slice(&piece[from.saturating_sub(pos)..]);
            }
            pos = end;
        }
    }

    /// Check received (unmasked) message bytes at message offset `moff`.
    #[inline]
    fn verify(&self, seq: u64, moff: usize, chunk: &[u8]) -> bool {
        if moff + chunk.len() > self.size {
            return false;
        }
        let p = self.prefix_len();
        let mut i = 0;
        if moff < p {
            let sb = self.prefix(seq);
            while i < chunk.len() && moff + i < p {
                if chunk[i] != sb[moff + i] {
                    return false;
                }
                i += 1;
            }
        }
        if i == chunk.len() {
            return true;
        }
        let o = Self::off(seq) + moff + i;
        chunk[i..] == self.pat[o..o + chunk.len() - i]
    }
}

#[inline]
fn unmask(buf: &mut [u8], mask: [u8; 4], off: usize) {
    let mut k = [0u8; 8];
    for (i, b) in k.iter_mut().enumerate() {
        *b = mask[(off + i) % 4];
    }
    let kw = u64::from_ne_bytes(k);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ kw;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i];
    }
}

fn control_frame(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | op);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&MASK);
    for (i, b) in payload.iter().enumerate() {
        out.push(b ^ MASK[i % 4]);
    }
}

// ---------------------------------------------------------------- connection

#[derive(Clone, Copy, PartialEq, Debug)]
enum St {
    Connecting,
    Handshake,
    Open,
}

struct Conn {
    sock: TcpStream,
    st: St,
    born: u64,
    /// set once the connection counts as established (idle mode)
    ready: bool,
    // ---- output: control bytes (request, pong, close) and generated frames
    out: Vec<u8>,
    out_off: usize,
    seq_enq: u64,
    seq_sent: u64,
    frame_pos: usize,
    ts: Vec<u64>,
    // ---- input
    hs: Vec<u8>,
    seq_recv: u64,
    hdr: [u8; 14],
    hdr_n: usize,
    in_payload: bool,
    f_rem: u64,
    f_op: u8,
    f_fin: bool,
    f_masked: bool,
    f_mask: [u8; 4],
    f_moff: usize,
    in_msg: bool,
    m_off: usize,
    ctl: Vec<u8>,
    sent_close: bool,
    got_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fail {
    Connect,
    Handshake,
    Protocol,
    Verify,
    Io,
    Timeout,
}

enum Outcome {
    Keep,
    /// peer closed (EOF or Close frame handled and EOF seen)
    Eof,
    Failed(Fail),
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Idle,
    Echo,
    Connect,
}

#[derive(Default)]
struct Stats {
    fail_connect: u64,
    fail_handshake: u64,
    fail_protocol: u64,
    fail_verify: u64,
    fail_io: u64,
    fail_timeout: u64,
    closed_by_server: u64,
    pings: u64,
    msgs_total: u64,
    win_msgs: u64,
    sessions_total: u64,
    win_sessions: u64,
    established: u64,
    reported_verify: u64,
}

impl Stats {
    fn failed(&self) -> u64 {
        self.fail_connect
            + self.fail_handshake
            + self.fail_protocol
            + self.fail_verify
            + self.fail_io
            + self.fail_timeout
    }
    fn count(&mut self, f: Fail) {
        match f {
            Fail::Connect => self.fail_connect += 1,
            Fail::Handshake => self.fail_handshake += 1,
            Fail::Protocol => self.fail_protocol += 1,
            Fail::Verify => self.fail_verify += 1,
            Fail::Io => self.fail_io += 1,
            Fail::Timeout => self.fail_timeout += 1,
        }
    }
}

struct Shared {
    mode: Mode,
    pgen: Gen,
    inflight: usize,
    rbuf: Vec<u8>,
    scratch: Vec<u8>,
    request: Vec<u8>,
    hist: Hist,
    now: u64,
    measuring: bool,
    sending: bool,
    stats: Stats,
    quiet: bool,
    /// connections that finished setup since the last look (idle mode)
    newly_ready: usize,
}

impl Shared {
    fn new(mode: Mode, pgen: Gen, inflight: usize, request: String, quiet: bool) -> Shared {
        Shared {
            mode,
            pgen,
            inflight,
            rbuf: vec![0; RBUF],
            scratch: Vec::with_capacity(SCRATCH + SMALL_FRAME),
            request: request.into_bytes(),
            hist: Hist::new(),
            now: 0,
            measuring: false,
            sending: true,
            stats: Stats::default(),
            quiet,
            newly_ready: 0,
        }
    }

    fn enqueue(&self, c: &mut Conn) {
        let w = c.ts.len();
        let seq = c.seq_enq;
        c.ts[(seq % w as u64) as usize] = self.now;
        c.seq_enq += 1;
    }
}

fn new_conn(sock: TcpStream, sh: &Shared) -> Conn {
    Conn {
        sock,
        st: St::Connecting,
        born: sh.now,
        ready: false,
        out: Vec::new(),
        out_off: 0,
        seq_enq: 0,
        seq_sent: 0,
        frame_pos: 0,
        ts: vec![
            0;
            if sh.mode == Mode::Echo {
                sh.inflight
            } else {
                1
            }
        ],
        hs: Vec::new(),
        seq_recv: 0,
        hdr: [0; 14],
        hdr_n: 0,
        in_payload: false,
        f_rem: 0,
        f_op: 0,
        f_fin: false,
        f_masked: false,
        f_mask: [0; 4],
        f_moff: 0,
        in_msg: false,
        m_off: 0,
        ctl: Vec::new(),
        sent_close: false,
        got_close: false,
    }
}

fn hdr_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// Called when the 101 response is complete.
fn on_open(c: &mut Conn, sh: &mut Shared) {
    c.st = St::Open;
    match sh.mode {
        Mode::Echo => {
            sh.stats.established += 1;
            if sh.sending {
                for _ in 0..sh.inflight {
                    sh.enqueue(c);
                }
            }
        }
        Mode::Idle => {
            if sh.pgen.size == 0 {
                c.ready = true;
                sh.newly_ready += 1;
                sh.stats.established += 1;
            } else {
                sh.enqueue(c);
            }
        }
        Mode::Connect => sh.enqueue(c),
    }
}

/// Called when message `c.seq_recv - 1` has been received and verified.
fn on_message(c: &mut Conn, sh: &mut Shared) {
    let seq = c.seq_recv - 1;
    sh.stats.msgs_total += 1;
    match sh.mode {
        Mode::Echo => {
            if sh.measuring {
                let t0 = c.ts[(seq % c.ts.len() as u64) as usize];
                sh.hist.record(sh.now.saturating_sub(t0));
                sh.stats.win_msgs += 1;
            }
            if sh.sending {
                sh.enqueue(c);
            }
        }
        Mode::Idle => {
            c.ready = true;
            sh.newly_ready += 1;
            sh.stats.established += 1;
        }
        Mode::Connect => {
            control_frame(0x8, &1000u16.to_be_bytes(), &mut c.out);
            c.sent_close = true;
        }
    }
}

fn parse_header(c: &mut Conn, h: &[u8], sh: &mut Shared) -> Result<(), Fail> {
    let b0 = h[0];
    let b1 = h[1];
    if b0 & 0x70 != 0 {
        return Err(Fail::Protocol); // RSV bits without extensions
    }
    let op = b0 & 0x0f;
    let fin = b0 & 0x80 != 0;
    let mut len = (b1 & 0x7f) as u64;
    let mut i = 2;
    if len == 126 {
        len = u16::from_be_bytes([h[2], h[3]]) as u64;
        i = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(h[2..10].try_into().unwrap());
        i = 10;
    }
    c.f_masked = b1 & 0x80 != 0;
    if c.f_masked {
        c.f_mask.copy_from_slice(&h[i..i + 4]);
    }
    c.f_op = op;
    c.f_fin = fin;
    c.f_rem = len;
    c.f_moff = 0;
    c.in_payload = true;
    match op {
        0x8..=0xA => {
            if !fin || len > 125 {
                return Err(Fail::Protocol);
            }
            c.ctl.clear();
        }
        0x0 => {
            if !c.in_msg {
                return Err(Fail::Protocol);
            }
        }
        0x1 | 0x2 => {
            if c.in_msg {
                return Err(Fail::Protocol);
            }
            if op != sh.pgen.opcode() || c.seq_recv >= c.seq_enq || c.got_close {
                // text instead of binary (or the reverse), or a message we
                // never sent
                report_verify(
                    sh,
                    c,
                    "unexpected data message (wrong opcode or unsolicited)",
                );
                return Err(Fail::Verify);
            }
            c.in_msg = true;
            c.m_off = 0;
        }
        _ => return Err(Fail::Protocol),
    }
    if len == 0 {
        end_frame(c, sh)?;
    }
    Ok(())
}

fn report_verify(sh: &mut Shared, c: &Conn, what: &str) {
    if sh.stats.reported_verify < 5 {
        sh.stats.reported_verify += 1;
        eprintln!(
            "loadgen: VERIFY ERROR: {what} (message seq {} at offset {}, frame opcode {})",
            c.seq_recv, c.m_off, c.f_op
        );
    }
}

fn end_frame(c: &mut Conn, sh: &mut Shared) -> Result<(), Fail> {
    c.in_payload = false;
    match c.f_op {
        0x9 => {
            sh.stats.pings += 1;
            if !c.sent_close {
                let p = std::mem::take(&mut c.ctl);
                control_frame(0xA, &p, &mut c.out);
                c.ctl = p;
            }
        }
        0xA => {}
        0x8 => {
            c.got_close = true;
            if !c.sent_close {
                // echo the status code back, as RFC 6455 5.5.1 suggests
                let code = if c.ctl.len() >= 2 {
                    [c.ctl[0], c.ctl[1]]
                } else {
                    1000u16.to_be_bytes()
                };
                control_frame(0x8, &code, &mut c.out);
                c.sent_close = true;
            }
        }
        _ => {
            if c.f_fin {
                if c.m_off != sh.pgen.size {
                    report_verify(sh, c, "message too short");
                    return Err(Fail::Verify);
                }
                c.in_msg = false;
                c.seq_recv += 1;
                on_message(c, sh);
            }
        }
    }
    Ok(())
}

/// Feed received bytes through the handshake/frame parser.
fn process(c: &mut Conn, data: &mut [u8], sh: &mut Shared) -> Result<(), Fail> {
    let mut p = 0;
    if c.st == St::Handshake {
        c.hs.extend_from_slice(data);
        let Some(end) = c.hs.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if c.hs.len() > 8192 {
                Err(Fail::Handshake)
            } else {
                Ok(())
            };
        };
        let head = String::from_utf8_lossy(&c.hs[..end]).to_ascii_lowercase();
        let ok_status = head.starts_with("http/1.1 101");
        let ok_accept = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .any(|(k, v)| {
                k.trim() == "sec-websocket-accept" && v.trim() == WS_ACCEPT.to_ascii_lowercase()
            });
        if !ok_status || !ok_accept {
            if !sh.quiet && sh.stats.fail_handshake < 3 {
                eprintln!(
                    "loadgen: bad handshake response: {:?}",
                    String::from_utf8_lossy(&c.hs[..end])
                );
            }
            return Err(Fail::Handshake);
        }
        let mut rest = c.hs.split_off(end + 4);
        c.hs = Vec::new();
        on_open(c, sh);
        if rest.is_empty() {
            return Ok(());
        }
        return process(c, &mut rest, sh);
    }
    let len = data.len();
    while p < len {
        if !c.in_payload {
            // fast path: a whole header in the buffer
            if c.hdr_n == 0 && len - p >= 2 {
                let need = hdr_len(data[p + 1]);
                if len - p >= need {
                    let mut h = [0u8; 14];
                    h[..need].copy_from_slice(&data[p..p + need]);
                    p += need;
                    parse_header(c, &h[..need], sh)?;
                    continue;
                }
            }
            while c.hdr_n < 2 && p < len {
                c.hdr[c.hdr_n] = data[p];
                c.hdr_n += 1;
                p += 1;
            }
            if c.hdr_n < 2 {
                break;
            }
            let need = hdr_len(c.hdr[1]);
            while c.hdr_n < need && p < len {
                c.hdr[c.hdr_n] = data[p];
                c.hdr_n += 1;
                p += 1;
            }
            if c.hdr_n < need {
                break;
            }
            let h = c.hdr;
            c.hdr_n = 0;
            parse_header(c, &h[..need], sh)?;
            continue;
        }
        let n = (c.f_rem.min((len - p) as u64)) as usize;
        let chunk = &mut data[p..p + n];
        if c.f_masked {
            unmask(chunk, c.f_mask, c.f_moff);
        }
        if c.f_op >= 0x8 {
            c.ctl.extend_from_slice(chunk);
        } else {
            if !sh.pgen.verify(c.seq_recv, c.m_off, chunk) {
                report_verify(sh, c, "payload mismatch");
                return Err(Fail::Verify);
            }
            c.m_off += n;
        }
        c.f_rem -= n as u64;
        c.f_moff += n;
        p += n;
        if c.f_rem == 0 {
            end_frame(c, sh)?;
        }
    }
    Ok(())
}

fn advance(c: &mut Conn, mut n: usize, flen: usize) {
    while n > 0 {
        let rem = flen - c.frame_pos;
        if n >= rem {
            n -= rem;
            c.frame_pos = 0;
            c.seq_sent += 1;
        } else {
            c.frame_pos += n;
            n = 0;
        }
    }
}

/// Write as much pending output as the socket takes.
fn flush(c: &mut Conn, sh: &mut Shared) -> Result<(), Fail> {
    loop {
        if c.out_off < c.out.len() && c.frame_pos == 0 {
            match c.sock.write(&c.out[c.out_off..]) {
                Ok(n) => {
                    c.out_off += n;
                    if c.out_off == c.out.len() {
                        c.out.clear();
                        c.out_off = 0;
                        if c.out.capacity() > 4096 {
                            c.out = Vec::new();
                        }
                    } else {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Fail::Io),
            }
            continue;
        }
        if c.seq_sent == c.seq_enq {
            return Ok(());
        }
        let flen = sh.pgen.flen;
        let (res, want) = if flen <= SMALL_FRAME {
            sh.scratch.clear();
            let mut seq = c.seq_sent;
            let mut from = c.frame_pos;
            while seq < c.seq_enq && sh.scratch.len() + flen <= SCRATCH.max(flen) {
                sh.pgen.append(seq, from, &mut sh.scratch);
                from = 0;
                seq += 1;
            }
            (c.sock.write(&sh.scratch), sh.scratch.len())
        } else {
            // Several frames per writev, up to WRITEV_BYTES (always at least
            // one): with TCP_NODELAY each call leaves as its own segment, and
            // one 16 KiB frame per call made the client pay the loopback's
            // per-packet work (its own send path and the server's receive
            // softirq, both charged to the sender) four times per 64 KiB.
            // 1 MiB frames (the large scenario) still go one per call, as
            // before.
            let mut pres = [[0u8; 8]; WRITEV_FRAMES];
            let mut iov = [IoSlice::new(&[]); 3 * WRITEV_FRAMES];
            let mut k = 0;
            let mut want = 0;
            let mut from = c.frame_pos;
            for (seq, pre) in (c.seq_sent..).zip(pres.iter_mut()) {
                if seq == c.seq_enq || (want > 0 && want + flen > WRITEV_BYTES) {
                    break;
                }
                let mut pos = 0;
                for piece in sh.pgen.pieces(seq, pre) {
                    let end = pos + piece.len();
                    if from < end {
                        let s = &piece[from.saturating_sub(pos)..];
                        want += s.len();
                        iov[k] = IoSlice::new(s);
                        k += 1;
                    }
                    pos = end;
                }
                from = 0;
            }
            (c.sock.write_vectored(&iov[..k]), want)
        };
        match res {
            Ok(n) => {
                advance(c, n, flen);
                if n < want {
                    return Ok(()); // socket buffer full; wait for writable
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Fail::Io),
        }
    }
}

fn drive(c: &mut Conn, sh: &mut Shared, ev_err: bool) -> Outcome {
    if c.st == St::Connecting {
        match c.sock.take_error() {
            Ok(Some(_)) | Err(_) => return Outcome::Failed(Fail::Connect),
            Ok(None) => {}
        }
        match c.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected && !ev_err => return Outcome::Keep,
            Err(_) => return Outcome::Failed(Fail::Connect),
        }
        c.st = St::Handshake;
        c.out.extend_from_slice(&sh.request);
    }
    // read everything available
    let mut rbuf = std::mem::take(&mut sh.rbuf);
    let mut outcome = Outcome::Keep;
    loop {
        match c.sock.read(&mut rbuf) {
            Ok(0) => {
                outcome = Outcome::Eof;
                break;
            }
            Ok(n) => {
                if let Err(f) = process(c, &mut rbuf[..n], sh) {
                    outcome = Outcome::Failed(f);
                    break;
                }
                if n < rbuf.len() {
                    break; // drained (edge-triggered: new data re-arms)
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                outcome = Outcome::Failed(Fail::Io);
                break;
            }
        }
    }
    sh.rbuf = rbuf;
    match outcome {
        Outcome::Keep => {}
        Outcome::Eof => {
            let _ = flush(c, sh);
            return if c.st == St::Open {
                Outcome::Eof
            } else {
                Outcome::Failed(Fail::Handshake)
            };
        }
        f => return f,
    }
    if let Err(f) = flush(c, sh) {
        return Outcome::Failed(f);
    }
    if sh.mode == Mode::Connect && c.got_close {
        // RFC 6455 7.1.1: the client MAY close once it has sent and received
        // a Close frame; we do not wait for the server's FIN (rawecho, which
        // only echoes our Close back, never sends one)
        return Outcome::Eof;
    }
    Outcome::Keep
}

// ---------------------------------------------------------------- connecting

struct Client {
    poll: Poll,
    conns: Slab<Conn>,
    sh: Shared,
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next_src: usize,
    /// connections started whose setup is not finished (idle mode)
    setting_up: usize,
    started: u64,
    start: Instant,
}

impl Client {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn connect_one(&mut self) -> bool {
        let src = if self.sources.is_empty() {
            None
        } else {
            let s = self.sources[self.next_src % self.sources.len()];
            self.next_src += 1;
            Some(s)
        };
        self.started += 1;
        match open_socket(self.target, src) {
            Ok(sock) => {
                let mut sock = TcpStream::from_std(sock);
                let e = self.conns.vacant_entry();
                let tok = Token(e.key());
                if self
                    .poll
                    .registry()
                    .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    self.sh.stats.count(Fail::Connect);
                    return false;
                }
                e.insert(new_conn(sock, &self.sh));
                true
            }
            Err(e) => {
                if !self.sh.quiet && self.sh.stats.fail_connect < 3 {
                    eprintln!("loadgen: connect: {e}");
                }
                self.sh.stats.count(Fail::Connect);
                false
            }
        }
    }

    /// Take a connection out of the slab. No explicit deregister: closing
    /// the socket (when the Conn is dropped) removes it from the epoll set,
    /// which saves one epoll_ctl per session in the connect scenario.
    fn remove(&mut self, key: usize) -> Conn {
        self.conns.remove(key)
    }

    /// Poll once (timeout capped) and dispatch events. Returns finished
    /// connections with their outcome to the mode's handler.
    fn turn(&mut self, events: &mut Events, timeout: Duration, done: &mut Vec<(Conn, Outcome)>) {
        if let Err(e) = self.poll.poll(events, Some(timeout))
            && e.kind() != ErrorKind::Interrupted
        {
            die(&format!("poll: {e}"));
        }
        self.sh.now = self.now_ns();
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            let o = drive(c, &mut self.sh, ev.is_error());
            if !matches!(o, Outcome::Keep) {
                let c = self.remove(key);
                done.push((c, o));
            }
        }
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let args = Args::from_env();
    let mode = match args.positional.first().map(|s| s.as_str()) {
        Some("idle") => Mode::Idle,
        Some("echo") => Mode::Echo,
        Some("connect") => Mode::Connect,
        _ => die(
            "usage: loadgen idle|echo|connect --url ws://127.0.0.1:PORT/ws [options] (see source header)",
        ),
    };
    let url = parse_ws_url(args.get("url").unwrap_or_else(|| die("--url is required")));
    let quiet = args.has("quiet");
    let server_pid: Option<u32> = args
        .get("server-pid")
        .map(|s| s.parse().unwrap_or_else(|_| die("bad --server-pid")));
    let sources: Vec<IpAddr> = match args.get("sources") {
        None | Some("") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|a| {
                let ip: IpAddr = a
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| die(&format!("bad source address {a}")));
                if !is_loopback(ip) {
                    die("source addresses must be loopback");
                }
                ip
            })
            .collect(),
    };
    let nofile = raise_nofile();

    // --text only in echo mode: the other modes reject it as an unknown option
    let (size, inflight, text) = match mode {
        Mode::Echo => (
            args.num("size", 32usize),
            args.num("inflight", 1usize).max(1),
            args.has("text"),
        ),
        Mode::Idle => (args.num("echo-first", 0usize), 1, false),
        Mode::Connect => (32, 1, false),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path, url.host_header
    );
    let sh = Shared::new(mode, Gen::new(size, text), inflight, request, quiet);
    let mut cl = Client {
        poll: Poll::new().unwrap(),
        conns: Slab::new(),
        sh,
        target: url.addr,
        sources,
        next_src: 0,
        setting_up: 0,
        started: 0,
        start: Instant::now(),
    };
    match mode {
        Mode::Echo => run_echo(&mut cl, &args, server_pid),
        Mode::Idle => run_idle(&mut cl, &args, nofile),
        Mode::Connect => run_connect(&mut cl, &args, server_pid),
    }
}

struct Window {
    t0: Instant,
    cpu0: Duration,
    srv0: Option<u64>,
    mach0: Option<u64>,
}

/// Measured-window figures: seconds, client CPU %, server CPU seconds, and
/// the CPU % (of one core) used by everything else on the machine.
struct WinResult {
    secs: f64,
    client_pct: f64,
    server_cpu: Option<f64>,
    other_pct: Option<f64>,
}

impl Window {
    fn open(server_pid: Option<u32>) -> Window {
        Window {
            t0: Instant::now(),
            cpu0: self_cpu(),
            srv0: server_pid.and_then(proc_cpu_ticks),
            mach0: machine_busy_ticks(),
        }
    }
    fn close(&self, server_pid: Option<u32>) -> WinResult {
        let secs = self.t0.elapsed().as_secs_f64();
        let cpu = (self_cpu() - self.cpu0).as_secs_f64();
        let tck = clk_tck() as f64;
        let server_cpu = match (self.srv0, server_pid.and_then(proc_cpu_ticks)) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / tck),
            _ => None,
        };
        let other_pct = match (self.mach0, machine_busy_ticks()) {
            (Some(a), Some(b)) => {
                let mach = b.saturating_sub(a) as f64 / tck;
                Some((100.0 * (mach - cpu - server_cpu.unwrap_or(0.0)) / secs).max(0.0))
            }
            _ => None,
        };
        WinResult {
            secs,
            client_pct: 100.0 * cpu / secs,
            server_cpu,
            other_pct,
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "na".into())
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn fail_kv(s: &Stats) -> String {
    format!(
        "failed={} fail_connect={} fail_handshake={} fail_protocol={} fail_verify={} fail_io={} fail_timeout={}",
        s.failed(),
        s.fail_connect,
        s.fail_handshake,
        s.fail_protocol,
        s.fail_verify,
        s.fail_io,
        s.fail_timeout
    )
}

fn run_echo(cl: &mut Client, args: &Args, server_pid: Option<u32>) {
    let conns: usize = args.num("connections", 64);
    let duration = args.dur("duration", Duration::from_secs(5));
    let warmup = args.dur("warmup", Duration::from_secs(1));
    let setup_timeout = args.dur("setup-timeout", Duration::from_secs(10));
    args.finish();
    let size = cl.sh.pgen.size;
    let mut events = Events::with_capacity(1024);
    let mut done = Vec::new();
    for _ in 0..conns {
        cl.connect_one();
    }
    // setup: wait until every connection is open (or failed)
    let t_setup = Instant::now();
    loop {
        let open = cl.conns.iter().filter(|(_, c)| c.st == St::Open).count();
        if open == cl.conns.len() || t_setup.elapsed() > setup_timeout {
            break;
        }
        cl.turn(&mut events, Duration::from_millis(50), &mut done);
        for (_, o) in done.drain(..) {
            if let Outcome::Failed(f) = o {
                cl.sh.stats.count(f);
            } else {
                cl.sh.stats.closed_by_server += 1;
            }
        }
    }
    let established = cl.sh.stats.established;
    if !cl.sh.quiet {
        eprintln!("loadgen echo: {established}/{conns} connections open, warming up {warmup:?}");
    }
    let mut win = None;
    let t_run = Instant::now();
    let mut result = None;
    let mut drain_start = None;
    loop {
        let el = t_run.elapsed();
        if win.is_none() && el >= warmup {
            cl.sh.measuring = true;
            cl.sh.hist.clear();
            win = Some(Window::open(server_pid));
        }
        if result.is_none() && el >= warmup + duration {
            result = Some(
                win.get_or_insert_with(|| Window::open(server_pid))
                    .close(server_pid),
            );
            cl.sh.measuring = false;
            cl.sh.sending = false;
            drain_start = Some(Instant::now());
        }
        if let Some(d) = drain_start {
            let outstanding: u64 = cl.conns.iter().map(|(_, c)| c.seq_enq - c.seq_recv).sum();
            if outstanding == 0 || d.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        if cl.conns.is_empty() && result.is_some() {
            break;
        }
        cl.turn(&mut events, Duration::from_millis(20), &mut done);
        for (_, o) in done.drain(..) {
            match o {
                Outcome::Failed(f) => cl.sh.stats.count(f),
                _ => cl.sh.stats.closed_by_server += 1,
            }
        }
    }
    let lost: u64 = cl.conns.iter().map(|(_, c)| c.seq_enq - c.seq_recv).sum();
    let wr = result.unwrap_or(WinResult {
        secs: 0.0,
        client_pct: 0.0,
        server_cpu: None,
        other_pct: None,
    });
    let (secs, ccpu, scpu) = (wr.secs, wr.client_pct, wr.server_cpu);
    let other = fmt_opt(wr.other_pct);
    let s = &cl.sh.stats;
    let msgs = s.win_msgs;
    let rate = msgs as f64 / secs.max(1e-9);
    let mib = rate * size as f64 / (1024.0 * 1024.0);
    let h = &cl.sh.hist;
    let (srv_pct, srv_us) = match scpu {
        Some(c) => (
            format!("{:.1}", 100.0 * c / secs),
            format!("{:.3}", if msgs > 0 { c * 1e6 / msgs as f64 } else { 0.0 }),
        ),
        None => ("na".into(), "na".into()),
    };
    if !cl.sh.quiet {
        eprintln!(
            "loadgen echo: {msgs} msgs in {secs:.2}s = {rate:.0} msgs/s, {mib:.1} MiB/s each way; latency p50 {} us p99 {} us p99.9 {} us max {} us; client CPU {ccpu:.0}%; server CPU {srv_pct}% ({srv_us} us/msg); {}",
            fmt_us(h.quantile(0.5)),
            fmt_us(h.quantile(0.99)),
            fmt_us(h.quantile(0.999)),
            fmt_us(h.max),
            fail_kv(s)
        );
    }
    println!(
        "RESULT mode=echo connections={conns} established={established} inflight={} size={size} payload={} secs={secs:.3} msgs={msgs} msgs_per_s={rate:.0} mib_per_s={mib:.2} p50_us={} p99_us={} p999_us={} max_us={} mean_us={} client_cpu_pct={ccpu:.1} server_cpu_pct={srv_pct} server_cpu_us_per_msg={srv_us} other_cpu_pct={other} closed_by_server={} undelivered={lost} {}",
        cl.sh.inflight,
        if cl.sh.pgen.text { "text" } else { "binary" },
        fmt_us(h.quantile(0.5)),
        fmt_us(h.quantile(0.99)),
        fmt_us(h.quantile(0.999)),
        fmt_us(h.max),
        fmt_us(h.mean()),
        s.closed_by_server,
        fail_kv(s)
    );
    let bad = s.failed() > 0 || established < conns as u64 || lost > 0;
    std::process::exit(if bad { 1 } else { 0 });
}

fn run_idle(cl: &mut Client, args: &Args, nofile: u64) {
    let n: u64 = args.num("connections", 1000);
    let hold = args.dur("hold", Duration::from_secs(10));
    let max_connecting: usize = args.num("max-connecting", 512);
    let setup_timeout = args.dur("setup-timeout", Duration::from_secs(120));
    args.finish();
    if n + 16 > nofile {
        die(&format!(
            "--connections {n} needs more file descriptors than RLIMIT_NOFILE {nofile}; use several processes"
        ));
    }
    let mut events = Events::with_capacity(1024);
    let mut done = Vec::new();
    let t0 = Instant::now();
    let mut ready_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut hold_cpu = None;
    loop {
        // keep up to max_connecting setups in flight
        if ready_at.is_none() {
            while cl.setting_up < max_connecting && cl.started < n {
                if cl.connect_one() {
                    cl.setting_up += 1;
                }
            }
        }
        cl.turn(&mut events, Duration::from_millis(100), &mut done);
        // connections that became ready during this turn
        cl.setting_up -= cl.sh.newly_ready;
        cl.sh.newly_ready = 0;
        for (c, o) in done.drain(..) {
            let was_ready = c.ready;
            if !was_ready {
                cl.setting_up -= 1;
            }
            match o {
                Outcome::Failed(f) if !was_ready => cl.sh.stats.count(f),
                _ if was_ready => cl.sh.stats.closed_by_server += 1,
                Outcome::Eof => cl.sh.stats.count(Fail::Handshake),
                Outcome::Failed(f) => cl.sh.stats.count(f),
                Outcome::Keep => {}
            }
        }
        if ready_at.is_none() {
            let accounted = cl.sh.stats.established + cl.sh.stats.failed();
            let timed_out = t0.elapsed() > setup_timeout;
            if !cl.sh.quiet && last_progress.elapsed() > Duration::from_secs(2) {
                last_progress = Instant::now();
                eprintln!(
                    "loadgen idle: {} established, {} failed of {n}",
                    cl.sh.stats.established,
                    cl.sh.stats.failed()
                );
            }
            if (accounted >= n && cl.setting_up == 0) || timed_out {
                if timed_out {
                    // give up on the stragglers
                    let keys: Vec<usize> = cl
                        .conns
                        .iter()
                        .filter(|(_, c)| !c.ready)
                        .map(|(k, _)| k)
                        .collect();
                    for k in keys {
                        cl.remove(k);
                        cl.sh.stats.count(Fail::Timeout);
                    }
                }
                ready_at = Some(Instant::now());
                hold_cpu = Some(self_cpu());
                println!(
                    "READY established={} failed={} setup_secs={:.2}",
                    cl.sh.stats.established,
                    cl.sh.stats.failed(),
                    t0.elapsed().as_secs_f64()
                );
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
        } else if ready_at.is_some_and(|r| r.elapsed() >= hold) {
            break;
        }
    }
    let setup_secs = ready_at.map(|r| (r - t0).as_secs_f64()).unwrap_or(0.0);
    let hold_cpu = hold_cpu
        .map(|c| (self_cpu() - c).as_secs_f64())
        .unwrap_or(0.0);
    let s = &cl.sh.stats;
    println!(
        "RESULT mode=idle connections={n} established={} closed_by_server={} still_open={} pings={} setup_secs={setup_secs:.2} hold_secs={:.1} client_hold_cpu_s={hold_cpu:.3} {}",
        s.established,
        s.closed_by_server,
        cl.conns.len(),
        s.pings,
        hold.as_secs_f64(),
        fail_kv(s)
    );
    // dropping the sockets closes them (FIN)
    let bad = s.failed() > 0 || s.closed_by_server > 0;
    std::process::exit(if bad { 1 } else { 0 });
}

fn run_connect(cl: &mut Client, args: &Args, server_pid: Option<u32>) {
    let k: usize = args.num("concurrency", 64);
    let duration = args.dur("duration", Duration::from_secs(5));
    let warmup = args.dur("warmup", Duration::from_secs(0));
    let session_timeout = args.dur("session-timeout", Duration::from_secs(5));
    let max_sessions: u64 = args.num("max-sessions", 5_000_000);
    args.finish();
    let mut events = Events::with_capacity(1024);
    let mut done = Vec::new();
    let t_run = Instant::now();
    let mut win: Option<Window> = None;
    let mut result = None;
    let mut drain_start: Option<Instant> = None;
    let mut last_timeout_scan = Instant::now();
    loop {
        let el = t_run.elapsed();
        if win.is_none() && el >= warmup {
            cl.sh.measuring = true;
            cl.sh.hist.clear();
            win = Some(Window::open(server_pid));
        }
        if result.is_none() && (el >= warmup + duration || cl.started >= max_sessions) {
            result = Some(
                win.get_or_insert_with(|| Window::open(server_pid))
                    .close(server_pid),
            );
            cl.sh.measuring = false;
            cl.sh.sending = false;
            drain_start = Some(Instant::now());
        }
        if let Some(d) = drain_start {
            if cl.conns.is_empty() || d.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            while cl.conns.len() < k {
                cl.connect_one();
            }
        }
        cl.turn(&mut events, Duration::from_millis(20), &mut done);
        for (c, o) in done.drain(..) {
            match o {
                Outcome::Eof if c.sent_close && c.seq_recv == 1 => {
                    cl.sh.stats.sessions_total += 1;
                    if cl.sh.measuring {
                        cl.sh.stats.win_sessions += 1;
                        cl.sh.hist.record(cl.sh.now.saturating_sub(c.born));
                    }
                }
                Outcome::Eof => cl.sh.stats.count(Fail::Protocol),
                Outcome::Failed(f) => cl.sh.stats.count(f),
                Outcome::Keep => {}
            }
        }
        if last_timeout_scan.elapsed() > Duration::from_millis(100) {
            last_timeout_scan = Instant::now();
            let now = cl.now_ns();
            let lim = session_timeout.as_nanos() as u64;
            let stale: Vec<usize> = cl
                .conns
                .iter()
                .filter(|(_, c)| now - c.born > lim)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                cl.remove(key);
                cl.sh.stats.count(Fail::Timeout);
            }
        }
    }
    let unfinished = cl.conns.len();
    let wr = result.unwrap_or(WinResult {
        secs: 0.0,
        client_pct: 0.0,
        server_cpu: None,
        other_pct: None,
    });
    let (secs, ccpu, scpu) = (wr.secs, wr.client_pct, wr.server_cpu);
    let other = fmt_opt(wr.other_pct);
    let s = &cl.sh.stats;
    let rate = s.win_sessions as f64 / secs.max(1e-9);
    let h = &cl.sh.hist;
    let (srv_pct, srv_us) = match scpu {
        Some(c) => (
            format!("{:.1}", 100.0 * c / secs),
            format!(
                "{:.2}",
                if s.win_sessions > 0 {
                    c * 1e6 / s.win_sessions as f64
                } else {
                    0.0
                }
            ),
        ),
        None => ("na".into(), "na".into()),
    };
    if !cl.sh.quiet {
        eprintln!(
            "loadgen connect: {} sessions in {secs:.2}s = {rate:.0} sessions/s; session p50 {} us p99 {} us; client CPU {ccpu:.0}%; server CPU {srv_pct}% ({srv_us} us/session); {}",
            s.win_sessions,
            fmt_us(h.quantile(0.5)),
            fmt_us(h.quantile(0.99)),
            fail_kv(s)
        );
    }
    println!(
        "RESULT mode=connect concurrency={k} secs={secs:.3} sessions={} sessions_per_s={rate:.0} p50_us={} p99_us={} p999_us={} client_cpu_pct={ccpu:.1} server_cpu_pct={srv_pct} server_cpu_us_per_session={srv_us} other_cpu_pct={other} unfinished={unfinished} {}",
        s.win_sessions,
        fmt_us(h.quantile(0.5)),
        fmt_us(h.quantile(0.99)),
        fmt_us(h.quantile(0.999)),
        fail_kv(s)
    );
    std::process::exit(if s.failed() > 0 { 1 } else { 0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_frames_verify() {
        for text in [false, true] {
            for size in [0usize, 1, 5, 8, 9, 125, 126, 200, 65535, 65536, 70000] {
                let g = Gen::new(size, text);
                for seq in [0u64, 1, 7, 63, 64, 1020, 1021, 123456] {
                    let mut f = Vec::new();
                    g.append(seq, 0, &mut f);
                    assert_eq!(f.len(), g.flen);
                    assert_eq!(f[0], 0x80 | if text { 0x1 } else { 0x2 });
                    // partial append matches the tail
                    let mut t = Vec::new();
                    g.append(seq, g.flen / 2, &mut t);
                    assert_eq!(&f[g.flen / 2..], &t[..]);
                    let h = hdr_len(f[1]);
                    let mut payload = f[h..].to_vec();
                    unmask(&mut payload, MASK, 0);
                    assert!(g.verify(seq, 0, &payload), "size {size} seq {seq}");
                    if size > 0 {
                        assert!(!g.verify(seq + 1, 0, &payload), "size {size}");
                        let mut bad = payload.clone();
                        bad[size - 1] ^= 1;
                        assert!(!g.verify(seq, 0, &bad));
                    }
                    if text {
                        // printable ASCII only: valid UTF-8 however it is split
                        assert!(payload.iter().all(|&b| (0x21..=0x7e).contains(&b)));
                        assert!(std::str::from_utf8(&payload).is_ok());
                    }
                    // chunked verification with odd offsets and odd unmask offsets
                    let mut masked = f[h..].to_vec();
                    let mut off = 0;
                    while off < masked.len() {
                        let end = (off + 7).min(masked.len());
                        unmask(&mut masked[off..end], MASK, off);
                        assert!(g.verify(seq, off, &masked[off..end]));
                        off = end;
                    }
                }
            }
        }
    }

    #[test]
    fn text_prefix_carries_seq() {
        let g = Gen::new(32, true);
        assert_eq!(&g.prefix(0), b"00000000");
        assert_eq!(&g.prefix(1), b"10000000");
        assert_eq!(&g.prefix(63), b"o0000000");
        assert_eq!(&g.prefix(64), b"01000000");
        // every seq below 2^48 has its own prefix: check neighbours and a
        // change in the highest 6-bit digit
        for seq in [0u64, 5, 4095, 4096, (1 << 42) - 1, (1 << 48) - 2] {
            assert_ne!(g.prefix(seq), g.prefix(seq + 1), "seq {seq}");
        }
        assert_ne!(g.prefix(0), g.prefix(1 << 42));
        // the binary prefix is unchanged: 8 little-endian bytes
        assert_eq!(Gen::new(32, false).prefix(0x0102), [2, 1, 0, 0, 0, 0, 0, 0]);
    }

    /// An unmasked frame as a server sends it.
    fn server_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | op];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else if payload.len() <= 0xffff {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            f.push(127);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    /// The plain payload of message `seq`.
    fn payload(g: &Gen, seq: u64) -> Vec<u8> {
        let mut f = Vec::new();
        g.append(seq, 0, &mut f);
        let mut p = f[hdr_len(f[1])..].to_vec();
        unmask(&mut p, MASK, 0);
        p
    }

    /// An open echo-mode connection with `outstanding` messages in flight
    /// (the socket is a real loopback one but is never read or written here).
    fn open_conn(
        size: usize,
        text: bool,
        outstanding: u64,
    ) -> (Conn, Shared, std::net::TcpListener) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut sh = Shared::new(Mode::Echo, Gen::new(size, text), 4, String::new(), true);
        sh.sending = false;
        let mut c = new_conn(TcpStream::from_std(s), &sh);
        c.st = St::Open;
        c.seq_enq = outstanding;
        (c, sh, l)
    }

    /// Feed `data` in chunks of `step` bytes; the first error wins.
    fn feed(c: &mut Conn, sh: &mut Shared, data: &[u8], step: usize) -> Result<(), Fail> {
        for chunk in data.chunks(step) {
            process(c, &mut chunk.to_vec(), sh)?;
        }
        Ok(())
    }

    #[test]
    fn text_echo_is_verified_exactly() {
        for size in [5usize, 32, 16384, 65536] {
            // the server's unmasked echo, split anywhere, and fragmented
            let (mut c, mut sh, _l) = open_conn(size, true, 3);
            let (p0, p1, p2) = (
                payload(&sh.pgen, 0),
                payload(&sh.pgen, 1),
                payload(&sh.pgen, 2),
            );
            let mut wire = server_frame(0x1, true, &p0);
            wire.extend(server_frame(0x1, true, &p1));
            let half = size / 2;
            wire.extend(server_frame(0x1, false, &p2[..half]));
            wire.extend(server_frame(0x0, true, &p2[half..]));
            for step in [1, 3, 4096] {
                let (mut c2, mut sh2, _l2) = open_conn(size, true, 3);
                assert_eq!(feed(&mut c2, &mut sh2, &wire, step), Ok(()), "size {size}");
                assert_eq!((c2.seq_recv, sh2.stats.msgs_total), (3, 3));
            }
            // rawecho: the client's own masked frames come back verbatim
            let mut own = Vec::new();
            sh.pgen.append(0, 0, &mut own);
            sh.pgen.append(1, 0, &mut own);
            assert_eq!(feed(&mut c, &mut sh, &own, 7), Ok(()));
            assert_eq!(c.seq_recv, 2);
        }
    }

    #[test]
    fn wrong_opcode_order_or_byte_fails_verification() {
        let size = 32;
        // binary echo of a text message, and text echo of a binary one
        for text in [true, false] {
            let (mut c, mut sh, _l) = open_conn(size, text, 1);
            let p = payload(&sh.pgen, 0);
            let op = if text { 0x2 } else { 0x1 };
            assert_eq!(
                feed(&mut c, &mut sh, &server_frame(op, true, &p), 64),
                Err(Fail::Verify)
            );
        }
        // messages echoed out of order
        let (mut c, mut sh, _l) = open_conn(size, true, 2);
        let p1 = payload(&sh.pgen, 1);
        assert_eq!(
            feed(&mut c, &mut sh, &server_frame(0x1, true, &p1), 64),
            Err(Fail::Verify)
        );
        // one changed character, and a message cut short
        let (mut c, mut sh, _l) = open_conn(size, true, 1);
        let mut p = payload(&sh.pgen, 0);
        p[20] = if p[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            feed(&mut c, &mut sh, &server_frame(0x1, true, &p), 64),
            Err(Fail::Verify)
        );
        let (mut c, mut sh, _l) = open_conn(size, true, 1);
        let p = payload(&sh.pgen, 0);
        assert_eq!(
            feed(&mut c, &mut sh, &server_frame(0x1, true, &p[..31]), 64),
            Err(Fail::Verify)
        );
        // a message that was never sent
        let (mut c, mut sh, _l) = open_conn(size, true, 1);
        let p0 = payload(&sh.pgen, 0);
        let mut wire = server_frame(0x1, true, &p0);
        wire.extend(server_frame(0x1, true, &p0));
        assert_eq!(feed(&mut c, &mut sh, &wire, 64), Err(Fail::Verify));
    }

    #[test]
    fn batched_writes_carry_the_exact_frames() {
        // small (copied into scratch), writev-batched, and one-per-call sizes;
        // the first frame starts half-sent, as after a short write
        for size in [32usize, 16384, 65536, 300_000] {
            let n = 20u64;
            let (mut c, mut sh, l) = open_conn(size, true, n);
            let half = sh.pgen.flen / 2;
            c.frame_pos = half;
            let mut want = Vec::new();
            sh.pgen.append(0, half, &mut want);
            for seq in 1..n {
                sh.pgen.append(seq, 0, &mut want);
            }
            let (mut peer, _) = l.accept().unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let len = want.len();
            let reader = std::thread::spawn(move || {
                let mut got = vec![0u8; len];
                peer.read_exact(&mut got).map(|_| got)
            });
            let t0 = Instant::now();
            while c.seq_sent < n && t0.elapsed() < Duration::from_secs(10) {
                flush(&mut c, &mut sh).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(c.seq_sent, n, "size {size}");
            assert_eq!(c.frame_pos, 0);
            let got = reader.join().unwrap().unwrap();
            assert!(got == want, "size {size}: bytes differ");
        }
    }
}
