//! Entry points for the fuzzers and their regression tests: they drive the same
//! connection code the server runs, through an in-memory stream instead of a socket.

use crate::config::Config;
use crate::conn::{Conn, Env, Pool};
use crate::handler::{ConnId, Ctx, Echo};
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// A stream that yields the input in chunks and accepts output in bursts, returning
/// WouldBlock in between, as a non-blocking socket does.
struct MemStream<'a> {
    input: &'a [u8],
    /// Chunk sizes to read, cycled; 0-free.
    chunks: &'a [u8],
    read_calls: usize,
    blocked: bool,
    written: usize,
    write_budget: usize,
}

impl Read for MemStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocked || self.input.is_empty() {
            self.blocked = false;
            return Err(ErrorKind::WouldBlock.into());
        }
        let chunk = self.chunks[self.read_calls % self.chunks.len()] as usize;
        self.read_calls += 1;
        // A chunk size of 255 stands for "everything", the rest for short reads.
        let n = if chunk == 255 {
            self.input.len()
        } else {
            chunk.max(1)
        };
        let n = n.min(buf.len()).min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        self.blocked = chunk.is_multiple_of(3);
        Ok(n)
    }
}

impl crate::transport::Transport for MemStream<'_> {}

impl Write for MemStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.write_budget == 0 {
            self.write_budget = 4096;
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.write_budget);
        self.write_budget -= n;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Small limits so the fuzzer reaches the limit paths quickly.
fn fuzz_config() -> Config {
    Config {
        max_message: 64 << 10,
        max_frame: 32 << 10,
        max_request: 2048,
        max_pending_output: 16 << 10,
        read_buffer: 512,
        write_buffer: 1024,
        max_connections: 16,
        ..Config::default()
    }
}

/// Runs one connection over `input` (read in chunk sizes taken from `chunks`) until
/// the input is used up or the connection ends, firing timers along the way.
fn drive(input: &[u8], chunks: &[u8], cfg: &Config) {
    let chunks: &[u8] = if chunks.is_empty() { &[255] } else { chunks };
    let stream = MemStream {
        input,
        chunks,
        read_calls: 0,
        blocked: false,
        written: 0,
        write_budget: 4096,
    };
    let start = Instant::now();
    let peer = ([127, 0, 0, 1], 9).into();
    let mut conn = Conn::new(stream, peer, start, start, false);
    let mut pool = Pool::new(4);
    let mut handler = Echo;
    let mut ctx = Ctx::default();
    let mut deferred = Vec::new();
    let mut scratch = vec![0u8; 8192];
    let mut stats = crate::metrics::Stats::default();
    for turn in 0..10_000u32 {
        let mut env = Env {
            cfg,
            pool: &mut pool,
            handler: &mut handler,
            ctx: &mut ctx,
            deferred: &mut deferred,
            now: start + Duration::from_millis(u64::from(turn)),
            epoch: start,
            id: ConnId(0),
            stats: &mut stats,
        };
        conn.on_writable(&mut env);
        conn.on_readable(&mut scratch, &mut env, turn % 2 == 0);
        if turn % 64 == 63 {
            env.now = start + Duration::from_secs(u64::from(turn));
            conn.on_timer(&mut env);
        }
        conn.release_if_idle(cfg, &mut pool);
        // Backpressure must hold whatever the input: reading pauses above the cap, so
        // pending output can exceed it by at most one read's worth of echoes.
        let bound = cfg.max_pending_output + scratch.len() + cfg.max_message + 1024;
        assert!(
            conn.pending_output() <= bound,
            "pending output {} over {bound}",
            conn.pending_output()
        );
        deferred.clear();
        if conn.is_dead() || (conn.stream.input.is_empty() && conn.pending_output() == 0) {
            break;
        }
    }
}

/// Fuzz target: arbitrary bytes as the upgrade request (and whatever follows it).
pub fn handshake(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % 8);
    let (chunks, input) = data.split_at(split.min(data.len()));
    drive(input, chunks, &fuzz_config());
}

/// Fuzz target: arbitrary bytes as client frames after a valid upgrade.
pub fn frames(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % 8);
    let (chunks, frames) = data.split_at(split.min(data.len()));
    let mut input = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    input.extend_from_slice(frames);
    drive(&input, chunks, &fuzz_config());
}
