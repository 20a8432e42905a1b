//! Entry points for the fuzzers and their regression tests: they drive a connection
//! through the server's own driver, over an in-memory stream instead of a socket.

use crate::app::handler::Echo;
use crate::config::Config;
use crate::io::transport::Transport;
use crate::server::Driver;
use mio::event::Source;
use mio::{Interest, Poll, Registry, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// A stream that yields the input in chunks and accepts output in bursts, returning
/// WouldBlock in between, as a non-blocking socket does.
struct MemStream {
    input: Vec<u8>,
    /// Chunk sizes to read, cycled; 0-free.
    chunks: Vec<u8>,
    read_calls: usize,
    blocked: bool,
    write_budget: usize,
}

impl Read for MemStream {
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
        self.input.drain(..n);
        self.blocked = chunk.is_multiple_of(3);
        Ok(n)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.write_budget == 0 {
            self.write_budget = 4096;
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.write_budget);
        self.write_budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MemStream {
    fn has_pending(&self) -> bool {
        false
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    fn shutdown_write(&mut self) {}

    fn close(&mut self) {}

    fn short_read_drains(&self) -> bool {
        true
    }

    /// Through `read`, into zeroed room: the fuzzers need no speed here.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + max, 0);
        let read = self.read(&mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }
}

/// Nothing to register: the driver's interest changes land here.
impl Source for MemStream {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

/// Small limits so the fuzzer reaches the limit paths quickly.
fn fuzz_config() -> Config {
    Config {
        max_message: 64 << 10,
        max_frame: Some(32 << 10),
        max_request: 2048,
        max_pending_output: 16 << 10,
        read_buffer: 512,
        write_buffer: 1024,
        max_connections: 16,
        ..Config::default()
    }
}

/// Runs one connection over `input` (read in chunk sizes taken from `chunks`) until
/// the input is used up or the connection ends: each turn is a readiness event and a
/// turn's end, as the server's loop makes them, with timers firing along the way.
fn drive(input: &[u8], chunks: &[u8], cfg: &Config) {
    let Ok(poll) = Poll::new() else {
        return;
    };
    let registry = poll.registry();
    let stream = MemStream {
        input: input.to_vec(),
        chunks: if chunks.is_empty() {
            vec![255]
        } else {
            chunks.to_vec()
        },
        read_calls: 0,
        blocked: false,
        write_budget: 4096,
    };
    let start = Instant::now();
    let mut driver = Driver::new(cfg.clone(), Echo, start);
    let peer = ([127, 0, 0, 1], 9).into();
    let Some(key) = driver.insert(registry, stream, peer, start) else {
        return;
    };
    // Backpressure must hold whatever the input: reading pauses above the cap, so
    // pending output can exceed it by at most one read's worth of echoes.
    let bound = cfg.max_pending_output + (128 << 10) + cfg.max_message + 1024;
    for turn in 0..10_000u64 {
        let mut now = start + Duration::from_millis(turn);
        let hangup = turn % 7 == 6;
        driver.on_event(registry, key, true, true, hangup, now);
        if turn % 64 == 63 {
            // Far enough ahead for every deadline to pass.
            now = start + Duration::from_secs(turn);
        }
        driver.expire(registry, now, &mut Vec::new());
        driver.end_turn(registry, now);
        let (Some(pending), Some(stream)) = (driver.pending_output(key), driver.stream(key)) else {
            return;
        };
        assert!(pending <= bound, "pending output {pending} over {bound}");
        if stream.input.is_empty() && pending == 0 {
            return;
        }
    }
}

/// Fuzz target: arbitrary bytes as the upgrade request (and whatever follows it).
pub fn handshake(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % 8);
    let (chunks, input) = data.split_at(split.min(data.len()));
    drive(input, chunks, &fuzz_config());
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Fuzz target: arbitrary bytes as client frames after a valid upgrade.
pub fn frames(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize % 8);
    let (chunks, frames) = data.split_at(split.min(data.len()));
    let mut input = UPGRADE.to_vec();
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(frames);
    drive(&input, chunks, &fuzz_config());
}

/// Fuzz target: arbitrary bytes as client frames after an upgrade that negotiated
/// permessage-deflate; the first byte also picks the mode (shared, or a window of 9 to
/// 15 bits), so compressed frames meet the inflater, its bounds and the histories.
#[cfg(feature = "deflate")]
pub fn compressed_frames(data: &[u8]) {
    use crate::protocol::extensions::{Compression, DeflateConfig};
    let first = data.first().copied().unwrap_or(0);
    let (chunks, frames) = data.split_at((first as usize % 8).min(data.len()));
    let mode = match (first >> 3) % 8 {
        0 => Compression::Shared,
        bits => Compression::Window(8 + bits),
    };
    let mut cfg = fuzz_config();
    cfg.compression = DeflateConfig::new(mode);
    let mut input = UPGRADE.to_vec();
    input.extend_from_slice(
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    input.extend_from_slice(frames);
    drive(&input, chunks, &cfg);
}
