//! permessage-deflate codec (RFC 7692 §7.2), I/O-free.
//!
//! Three pieces, none of which touches a socket:
//! - [`Deflater`]: one per loop. Compresses a whole message into a payload without the
//!   trailing `00 00 ff ff` (§7.2.1); keeps one zlib compressor per window size in use,
//!   reset before every message.
//! - [`Inflater`]: one per loop (see "Fragments" below for when a second is needed).
//!   Inflates one message, fed fragment by fragment, in bounded steps: it stops with
//!   [`InflateError::TooLarge`] the moment the output would pass the limit, so a bomb
//!   costs at most `limit` bytes of output and CPU in proportion.
//! - [`ContextWindows`]: per connection, window mode only. The last `2^BITS` bytes of
//!   plaintext each way, fed to the shared (de)compressor as a preset dictionary before
//!   each message: context takeover (§7.1.1) for the price of the windows themselves
//!   (gws's technique), instead of a dedicated zlib stream per connection.
//!
//! # What the caller does
//! Handshake: [`crate::protocol::extensions::negotiate`]; keep the [`Agreement`]; when
//! `agreement.takeover()`, keep a [`ContextWindows::new`] with the connection (it
//! allocates nothing until the first compressed message).
//!
//! Receiving (RFC 7692 §6, §7.2.2):
//! - RSV1 set on the first frame of a text or binary message: the message is
//!   compressed. RSV1 without a negotiated agreement, on a control frame or on a
//!   continuation frame: close 1002. RSV2/RSV3 stay errors.
//! - At the first frame: [`Inflater::begin`] with `windows.inbound()` (or `&[]`) and the
//!   limit (`--max-message`); for each frame's (unmasked) payload [`Inflater::feed`]; at
//!   FIN [`Inflater::finish`]. The scanner's running UTF-8 check does not apply to the
//!   compressed bytes: validate text after `finish` (invalid UTF-8 → 1007 as today).
//! - Then `windows.record_inbound(&message)`. Only compressed messages enter the
//!   window: a message that arrived with RSV1 clear never went through the client's
//!   compressor, so it is not in its window either.
//! - Errors: [`InflateError::TooLarge`] → close 1009; [`InflateError::Invalid`] → close
//!   1007. RFC 7692 names no close code for a corrupt stream; RFC 6455 §7.4.1 gives 1007
//!   to "data within a message that was not consistent with the type of the message",
//!   which a payload that is not the DEFLATE data RSV1 declared is; Node `ws` answers 1007,
//!   Python `websockets` 1002. Autobahn 12.x/13.x never send a corrupt stream (they only
//!   check that compressed echoes come back intact and that the close is a clean 1000),
//!   so either code passes them; 1007 also matches what a client sees when the inflated
//!   text is bad UTF-8.
//! - Metrics: compressed bytes in are the payload lengths fed, bytes out the `out`
//!   growth.
//!
//! Sending:
//! - `config.should_compress(len)` false (below the threshold) → send as today, RSV1
//!   clear, and do **not** record it in the window (the client's inflater never sees it).
//! - Otherwise [`Deflater::compress`] with the window bits and the connection's outbound
//!   history as a dictionary (the caller records the message in it); send the payload as
//!   one frame with RSV1 set. On `Err` (cannot happen with zlib-rs short of a bug) send
//!   the message uncompressed instead, which is always allowed.
//!
//! Fragments: an [`Inflater`] holds the state of one message between `begin` and
//! `finish`. A message in one frame (the common case, and every message that arrives
//! whole in one read) can use the loop's one inflater. A compressed message spread over
//! several reads either keeps an inflater of its own until FIN (take one from a small
//! per-loop pool, like the busy boxes), or has its compressed fragments buffered
//! (bounded by the message limit) and inflated at FIN with the shared one.
//!
//! # Window bits 8
//! zlib (and zlib-rs, and so flate2, which asserts 9..=15) cannot make a raw deflate
//! stream with a 256-byte window: zlib ≥ 1.2.9 refuses `windowBits = -8` (Python's
//! `zlib.compressobj(wbits=-8)` raises "Invalid initialization option"). Python
//! `websockets` 17 answers an offered `server_max_window_bits=8` with 8 and then calls
//! exactly that, so it cannot honour 8 either; the Autobahn suite pinned here
//! (autobahntestsuite 25.10.1 with autobahn 0.10.9) no longer offers 8: its 13.3.x and
//! 13.5.x offer `server_max_window_bits=9`, which is why `websockets` passes them.
//! We honour 8 anyway, because zlib's matcher never emits a distance larger than
//! `MAX_DIST = 2^windowBits − MIN_LOOKAHEAD = 2^windowBits − 262`: with windowBits 9
//! that is 250 bytes, inside a 256-byte window. So on `server_max_window_bits=8` we
//! answer 8 and compress with a 9-bit zlib stream fed at most 256 bytes of history; the
//! tests check the output against a strict 256-byte inflater across many messages.
//! (zlib-rs keeps the bound in every strategy: `max_dist()` in quick, fast, medium and
//! slow.) `client_max_window_bits=8` needs nothing: our inflater has a 32 KiB window,
//! and a client compressing with a smaller window than allowed is always fine; in
//! window mode the inbound history is then 256 bytes.
//!
//! # Memory and CPU
//! Measured by the ignored test `figures` (`cargo test --release --lib figures --
//! --ignored --nocapture --test-threads=1`): chat-like JSON, level 6, thread CPU time
//! (the minimum of 7 interleaved runs, so other processes on the machine do not count),
//! glibc's heap counters. One 2-core machine shared with other builds:
//!
//! | per connection, idle | window=12, after one 4 KiB echo |
//! |---|---|
//! | dictionary technique ([`ContextWindows`]) | 8,232 B: 8,192 of windows + 16 malloc + 24 struct (target ≤ 8,292) |
//! | a dedicated zlib-rs stream each way | 313,837 B (301,560 at window 9, 428,496 at 15) |
//!
//! A dedicated stream cannot be made small with zlib-rs: its compressor has a fixed
//! 128 KiB hash table whatever the window, and its inflater always a 32 KiB window.
//! The loop's own [`Inflater`] is 47,752 B, and a [`Deflater`] ≈ 265 KB per window
//! size in use (380 KB at 15).
//!
//! | µs per message | deflate: dictionary / dedicated / shared | inflate: dictionary / dedicated / shared | payload ÷ plain: window=12 / shared |
//! |---|---|---|---|
//! | 256 B | 9.0 / 5.1 / 8.0 | 0.52 / 0.34 / 1.50 | 0.255 / 0.526 |
//! | 1 KiB | 14.0 / 10.3 / 12.2 | 1.88 / 1.69 / 2.34 | 0.206 / 0.324 |
//! | 4 KiB | 31.8 / 27.6 / 28.9 | 4.41 / 4.26 / 4.60 | 0.184 / 0.228 |
//! | 16 KiB | 100 / 95.5 / 112 | 11.8 / 11.7 / 11.3 | 0.177 / 0.186 |
//!
//! So the dictionary technique costs ≈ 3.5–4 µs more per compressed message than a
//! dedicated stream (the reset clears zlib-rs's 128 KiB hash table, ≈ 2.5 µs, then the
//! 4 KiB history is hashed) and ≈ 0.1–0.2 µs per inflated one, for 1/38 of the memory.
//! Shared mode pays the same reset; its 15-bit window makes 16 KiB messages dearer.

use crate::protocol::extensions::Agreement;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::fmt;

/// The four bytes that end a sync flush (an empty stored block's LEN/NLEN): removed by
/// the sender (§7.2.1), appended again by the receiver (§7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty final block (fixed Huffman, end-of-block only). Inflated after [`TAIL`], it
/// ends the stream only if the message ended at a block boundary, which tells a
/// complete message from a truncated one.
const END: [u8; 2] = [0x03, 0x00];

/// The payload of a compressed empty message (§7.2.3.6: an empty stored block's header).
const EMPTY: u8 = 0x00;

/// Inflating into a full `out` first goes through a stack buffer of this size.
const STACK_STEP: usize = 2048;

/// Smallest growth of `out` while inflating.
const MIN_STEP: usize = 4096;

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates to more than the limit → close 1009.
    TooLarge,
    /// Not a valid DEFLATE stream (corrupt, truncated, or referring further back than
    /// the window) → close 1007. The text is a short reason for logs and the close frame.
    Invalid(&'static str),
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooLarge => f.write_str("compressed message too large"),
            InflateError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for InflateError {}

/// The compressor failed (a zlib-rs bug, not bad input): send the message uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateError(pub &'static str);

impl fmt::Display for DeflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DeflateError {}

/// Inflates one message at a time, in bounded steps. Keeps a 32 KiB window (the largest
/// a client may use), so one inflater serves every agreement.
pub struct Inflater {
    z: Decompress,
    limit: usize,
    produced: usize,
    /// Compressed bytes fed since `begin`; 0 at `finish` means an empty payload.
    fed: usize,
    /// The stream reached a final block; the rest of the message is ignored.
    ended: bool,
    /// The dictionary was refused (cannot happen for raw streams); fail the message.
    broken: bool,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("limit", &self.limit)
            .field("produced", &self.produced)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// A raw inflater with a 32 KiB window (about 47 KB with zlib-rs's state).
    pub fn new() -> Self {
        Inflater {
            // 15 is the default window: flate2 resets it in place, while other sizes
            // are rebuilt (a fresh allocation) on every reset with zlib-rs.
            z: Decompress::new(false),
            limit: 0,
            produced: 0,
            fed: 0,
            ended: false,
            broken: false,
        }
    }

    /// Starts a message: resets the stream and primes its window with `dictionary` (the
    /// connection's inbound history with context takeover, else empty). The message may
    /// inflate to at most `limit` bytes.
    pub fn begin(&mut self, dictionary: &[u8], limit: usize) {
        self.z.reset(false);
        self.limit = limit;
        self.produced = 0;
        self.fed = 0;
        self.ended = false;
        // A raw inflater takes a dictionary at any time before data (zlib's
        // inflateSetDictionary with wrap == 0), so this only fails on a bug.
        self.broken = !dictionary.is_empty() && self.z.set_dictionary(dictionary).is_err();
    }

    /// Inflates the next fragment's payload, appending to `out`. `out` grows in steps
    /// that never take the message past the limit.
    pub fn feed(&mut self, fragment: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        if self.broken {
            return Err(InflateError::Invalid("inflater refused the window"));
        }
        self.fed += fragment.len();
        if self.ended {
            // §7.2.3.4: after a final block the sender may still add bytes (the RFC's
            // own example ends with an empty stored block's header); they carry nothing.
            return Ok(());
        }
        self.run(fragment, out)
    }

    /// Ends the message (appends the removed tail, §7.2.2) and checks that the stream
    /// ended at a block boundary, i.e. that nothing was cut off.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        if self.broken {
            return Err(InflateError::Invalid("inflater refused the window"));
        }
        // An empty payload is not DEFLATE data at all, but every zlib-based peer reads
        // it as an empty message, and it cannot mean anything else.
        if self.ended || self.fed == 0 {
            return Ok(());
        }
        self.run(&TAIL, out)?;
        if self.ended {
            return Err(InflateError::Invalid("truncated deflate stream"));
        }
        self.run(&END, out)?;
        if !self.ended {
            return Err(InflateError::Invalid("truncated deflate stream"));
        }
        Ok(())
    }

    /// `begin`, `feed` the whole payload, `finish`.
    pub fn inflate(
        &mut self,
        dictionary: &[u8],
        payload: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.begin(dictionary, limit);
        self.feed(payload, out)?;
        self.finish(out)
    }

    /// Feeds `input` until it is consumed or the stream ends. `out` never grows past
    /// the limit: its capacity stays within `len at begin + limit`.
    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        loop {
            let room = self.limit - self.produced;
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let spare = out.capacity() - out.len();
            let (status, filled) = if room == 0 {
                // At the limit: one more byte of output, if there is one, is too much.
                let mut probe = [0u8; 1];
                let status = self.z.decompress(input, &mut probe, FlushDecompress::None);
                if self.z.total_out() != out0 {
                    return Err(InflateError::TooLarge);
                }
                (status, false)
            } else if spare > 0 && spare <= room {
                // Straight into `out`'s spare capacity, which is within the limit.
                let status = self.z.decompress_vec(input, out, FlushDecompress::None);
                (status, out.len() == out.capacity())
            } else {
                // No room in `out` (or more than the limit allows): inflate a little on
                // the stack first, so a tail or a small fragment that yields nothing
                // does not make `out` reallocate, then grow it by what came out.
                let mut buf = [0u8; STACK_STEP];
                let n = STACK_STEP.min(room);
                let status = self
                    .z
                    .decompress(input, &mut buf[..n], FlushDecompress::None);
                let got = (self.z.total_out() - out0) as usize;
                if got > out.capacity() - out.len() {
                    // Geometric growth, from the input's likely yield, capped by the limit.
                    let want = got.max(out.len()).max(input.len().saturating_mul(4));
                    out.reserve_exact(want.max(MIN_STEP).min(room));
                }
                out.extend_from_slice(&buf[..got]);
                (status, got == n)
            };
            self.produced += (self.z.total_out() - out0) as usize;
            let used = (self.z.total_in() - in0) as usize;
            input = &input[used..];
            match status {
                Ok(Status::StreamEnd) => {
                    self.ended = true;
                    return Ok(());
                }
                Ok(_) if filled => {}
                // Output space left over: zlib stopped because the input ran out.
                Ok(_) if input.is_empty() => return Ok(()),
                Ok(_) if used == 0 => {
                    return Err(InflateError::Invalid("deflate stream stalled"));
                }
                Ok(_) => {}
                Err(_) => return Err(InflateError::Invalid("invalid deflate data")),
            }
        }
    }
}

/// Compresses whole messages. One per loop: a zlib compressor per window size in use
/// (created on first use, about 265–380 KB each with zlib-rs), reset before every
/// message, so no connection owns one.
pub struct Deflater {
    level: Compression,
    /// Indexed by zlib window bits − 9 (9..=15).
    by_bits: [Option<Compress>; 7],
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level.level())
            .field(
                "window_bits",
                &(9..=15)
                    .filter(|b| self.by_bits[b - 9].is_some())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Deflater {
    /// Compression at `level` (1..=9; out-of-range values are clamped).
    pub fn new(level: u8) -> Self {
        Deflater {
            level: Compression::new(u32::from(level.clamp(1, 9))),
            by_bits: Default::default(),
        }
    }

    #[cfg(test)]
    /// Compresses `msg` for a connection with this agreement, appending the payload
    /// (RSV1 set, no tail) to `out`; with context takeover the outbound history in
    /// `windows` primes the compressor and then takes in `msg`.
    pub fn compress_message(
        &mut self,
        agreement: &Agreement,
        windows: Option<&mut ContextWindows>,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeflateError> {
        let bits = agreement.outbound_window_bits();
        match windows {
            Some(w) if !agreement.server_no_context_takeover => {
                self.compress(bits, w.outbound(), msg, out)?;
                w.record_outbound(msg);
                Ok(())
            }
            _ => self.compress(bits, &[], msg, out),
        }
    }

    /// Compresses `msg` as one message that refers back at most `2^window_bits` bytes
    /// (8..=15), into `dictionary` (the last bytes of the previous messages, at most
    /// `2^window_bits` of them) and itself; appends the payload without the tail.
    pub fn compress(
        &mut self,
        window_bits: u8,
        dictionary: &[u8],
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeflateError> {
        if msg.is_empty() {
            // §7.2.3.6; and it leaves the peer's window as it was.
            out.push(EMPTY);
            return Ok(());
        }
        // 8 → 9: zlib's 9-bit matcher reaches back at most 250 bytes (module docs).
        let zbits = window_bits.clamp(9, 15);
        let level = self.level;
        let z = self.by_bits[usize::from(zbits - 9)]
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, zbits));
        z.reset();
        let cap = 1usize << window_bits.clamp(8, 15);
        let dictionary = &dictionary[dictionary.len().saturating_sub(cap)..];
        if !dictionary.is_empty() {
            z.set_dictionary(dictionary)
                .map_err(|_| DeflateError("compressor refused the window"))?;
        }
        let start = out.len();
        // JSON and text shrink to a fraction; incompressible data grows a few bytes.
        out.reserve(msg.len() / 2 + 64);
        let mut input = msg;
        loop {
            let (in0, out0) = (z.total_in(), z.total_out());
            z.compress_vec(input, out, FlushCompress::Sync)
                .map_err(|_| DeflateError("compressor failed"))?;
            let used = (z.total_in() - in0) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                // zlib returns with output space left only once the flush is complete.
                break;
            }
            if used == 0 && z.total_out() == out0 && out.len() < out.capacity() {
                return Err(DeflateError("compressor stalled"));
            }
            out.reserve(out.capacity().max(256));
        }
        if !out[start..].ends_with(&TAIL) {
            out.truncate(start);
            return Err(DeflateError("sync flush without its tail"));
        }
        out.truncate(out.len() - TAIL.len());
        Ok(())
    }
}

/// Per-connection LZ77 history for context takeover (window mode): the last
/// `2^bits` bytes of plaintext received and sent, one allocation made at the first
/// compressed message, none before. 24 bytes plus the windows.
#[derive(Debug, Clone)]
pub struct ContextWindows {
    /// Inbound history, then outbound history; empty until first used.
    buf: Box<[u8]>,
    inbound_len: u16,
    outbound_len: u16,
    /// Window bits of each direction's history, 0 when that direction keeps none.
    inbound_bits: u8,
    outbound_bits: u8,
}

impl ContextWindows {
    /// The windows an agreement needs, or `None` when neither direction keeps context
    /// (shared mode, or a window-mode client that takes none either way).
    pub fn new(agreement: &Agreement) -> Option<Self> {
        if !agreement.takeover() {
            return None;
        }
        let bits = |no_takeover: bool, bits: u8| if no_takeover { 0 } else { bits };
        Some(ContextWindows {
            buf: Box::default(),
            inbound_len: 0,
            outbound_len: 0,
            inbound_bits: bits(
                agreement.client_no_context_takeover,
                agreement.inbound_window_bits(),
            ),
            outbound_bits: bits(
                agreement.server_no_context_takeover,
                agreement.outbound_window_bits(),
            ),
        })
    }

    fn cap(bits: u8) -> usize {
        if bits == 0 { 0 } else { 1 << bits }
    }

    fn caps(&self) -> (usize, usize) {
        (Self::cap(self.inbound_bits), Self::cap(self.outbound_bits))
    }

    /// The dictionary for the next inbound message (empty without inbound takeover).
    pub fn inbound(&self) -> &[u8] {
        self.buf
            .get(..usize::from(self.inbound_len))
            .unwrap_or_default()
    }

    /// The dictionary for the next outbound message (empty without outbound takeover).
    pub fn outbound(&self) -> &[u8] {
        let (in_cap, _) = self.caps();
        self.buf
            .get(in_cap..in_cap + usize::from(self.outbound_len))
            .unwrap_or_default()
    }

    /// Takes in a message that arrived compressed (after inflating it).
    pub fn record_inbound(&mut self, msg: &[u8]) {
        let (in_cap, _) = self.caps();
        if in_cap == 0 {
            return;
        }
        self.allocate();
        slide(&mut self.buf[..in_cap], &mut self.inbound_len, msg);
    }

    /// Takes in a message that went out compressed. [`Deflater::compress_message`]
    /// calls this itself.
    pub fn record_outbound(&mut self, msg: &[u8]) {
        let (in_cap, out_cap) = self.caps();
        if out_cap == 0 {
            return;
        }
        self.allocate();
        slide(
            &mut self.buf[in_cap..in_cap + out_cap],
            &mut self.outbound_len,
            msg,
        );
    }

    #[cfg(test)]
    /// Bytes held on the heap (0 until the first compressed message).
    pub fn heap_bytes(&self) -> usize {
        self.buf.len()
    }

    fn allocate(&mut self) {
        if self.buf.is_empty() {
            let (in_cap, out_cap) = self.caps();
            self.buf = vec![0; in_cap + out_cap].into_boxed_slice();
        }
    }
}

/// Appends `msg` to the history in `window[..len]`, keeping its last `window.len()` bytes.
fn slide(window: &mut [u8], len: &mut u16, msg: &[u8]) {
    let cap = window.len();
    let filled = usize::from(*len);
    let new_len = if msg.len() >= cap {
        window.copy_from_slice(&msg[msg.len() - cap..]);
        cap
    } else {
        let keep = filled.min(cap - msg.len());
        window.copy_within(filled - keep..filled, 0);
        window[keep..keep + msg.len()].copy_from_slice(msg);
        keep + msg.len()
    };
    // cap ≤ 2^15, so it fits.
    *len = new_len as u16;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::extensions::{Compression as Mode, DeflateConfig, negotiate};

    /// Deterministic xorshift, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const WORDS: &[&str] = &[
        "hello", "world", "weather", "today", "lobby", "message", "server", "client", "window",
        "compress", "fine", "thanks", "see", "you", "later", "again", "ok",
    ];

    /// Chat-like JSON of about `len` bytes: repeated keys, varying values (the
    /// realistic case the issue asks for).
    fn json(rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut s = String::from("[");
        while s.len() < len {
            if s.len() > 1 {
                s.push(',');
            }
            let text: Vec<&str> = (0..3 + rng.below(8))
                .map(|_| WORDS[rng.below(WORDS.len())])
                .collect();
            s.push_str(&format!(
                r#"{{"id":{},"type":"chat","user":"user{}","room":"room-{}","text":"{}","ts":{}}}"#,
                rng.below(1_000_000),
                rng.below(50),
                rng.below(5),
                text.join(" "),
                1_700_000_000_000u64 + rng.next() % 1_000_000
            ));
        }
        s.push(']');
        s.into_bytes()
    }

    fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.next() as u8).collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The reference compressor: flate2's own long-lived stream, sync-flushed per
    /// message, tail removed (what a context-takeover peer sends).
    struct RefDeflate(Compress);

    impl RefDeflate {
        fn new(bits: u8) -> Self {
            RefDeflate(Compress::new_with_window_bits(
                Compression::new(6),
                false,
                bits,
            ))
        }

        fn message(&mut self, msg: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(msg.len() + 64);
            let mut input = msg;
            loop {
                let before = self.0.total_in();
                self.0
                    .compress_vec(input, &mut out, FlushCompress::Sync)
                    .unwrap();
                input = &input[(self.0.total_in() - before) as usize..];
                if input.is_empty() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity());
            }
            assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - 4);
            out
        }
    }

    /// The reference inflater, written here from RFC 1951 and independent of zlib: a
    /// long-lived context-takeover decoder that fails any match reaching further back
    /// than `2^bits` bytes, across message boundaries. (zlib-rs cannot be this check: it
    /// always keeps a 32 KiB inflate window, whatever the window bits.)
    struct StrictInflate {
        history: Vec<u8>,
        window: usize,
    }

    /// Canonical Huffman code: symbols by code length, and counts per length.
    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Self {
            let mut counts = [0u16; 16];
            for &l in lengths {
                counts[usize::from(l)] += 1;
            }
            counts[0] = 0;
            let mut symbols = Vec::new();
            for len in 1..16 {
                for (sym, &l) in lengths.iter().enumerate() {
                    if usize::from(l) == len {
                        symbols.push(sym as u16);
                    }
                }
            }
            Huffman { counts, symbols }
        }
    }

    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Bits<'_> {
        fn bits(&mut self, n: u32) -> Result<u32, &'static str> {
            let mut v = 0;
            for i in 0..n {
                let byte = *self.data.get(self.pos / 8).ok_or("out of input")?;
                v |= u32::from((byte >> (self.pos % 8)) & 1) << i;
                self.pos += 1;
            }
            Ok(v)
        }

        fn decode(&mut self, h: &Huffman) -> Result<u16, &'static str> {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= self.bits(1)? as i32;
                let count = i32::from(h.counts[len]);
                if code - count < first {
                    return Ok(h.symbols[(index + code - first) as usize]);
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            Err("bad code")
        }
    }

    const LEN_BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEN_EXTRA: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u32; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    impl StrictInflate {
        fn new(bits: u8) -> Self {
            StrictInflate {
                history: Vec::new(),
                window: 1 << bits,
            }
        }

        /// Decodes one message's payload (tail appended), blocks until the input ends.
        fn message(&mut self, payload: &[u8]) -> Result<Vec<u8>, &'static str> {
            let mut data = payload.to_vec();
            data.extend_from_slice(&TAIL);
            let mut b = Bits {
                data: &data,
                pos: 0,
            };
            let start = self.history.len();
            while b.pos < data.len() * 8 {
                let last = b.bits(1)?;
                match b.bits(2)? {
                    0 => {
                        b.pos = b.pos.div_ceil(8) * 8;
                        let len = b.bits(16)?;
                        if b.bits(16)? != !len & 0xffff {
                            return Err("stored lengths");
                        }
                        for _ in 0..len {
                            let byte = b.bits(8)? as u8;
                            self.history.push(byte);
                        }
                    }
                    1 => {
                        let mut l = [8u8; 288];
                        l[144..256].fill(9);
                        l[256..280].fill(7);
                        self.codes(&mut b, &Huffman::new(&l), &Huffman::new(&[5; 30]))?;
                    }
                    2 => {
                        let nlen = b.bits(5)? as usize + 257;
                        let ndist = b.bits(5)? as usize + 1;
                        let ncode = b.bits(4)? as usize + 4;
                        const ORDER: [usize; 19] = [
                            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                        ];
                        let mut cl = [0u8; 19];
                        for &i in &ORDER[..ncode] {
                            cl[i] = b.bits(3)? as u8;
                        }
                        let clh = Huffman::new(&cl);
                        let mut lengths = Vec::new();
                        while lengths.len() < nlen + ndist {
                            let (value, repeat) = match b.decode(&clh)? {
                                s @ 0..=15 => (s as u8, 1),
                                16 => (*lengths.last().ok_or("repeat")?, 3 + b.bits(2)?),
                                17 => (0, 3 + b.bits(3)?),
                                _ => (0, 11 + b.bits(7)?),
                            };
                            lengths.extend(std::iter::repeat_n(value, repeat as usize));
                        }
                        let (lit, dist) = lengths.split_at(nlen);
                        self.codes(&mut b, &Huffman::new(lit), &Huffman::new(dist))?;
                    }
                    _ => return Err("block type 3"),
                }
                if last == 1 {
                    break;
                }
            }
            Ok(self.history[start..].to_vec())
        }

        fn codes(
            &mut self,
            b: &mut Bits,
            lit: &Huffman,
            dist: &Huffman,
        ) -> Result<(), &'static str> {
            loop {
                let sym = usize::from(b.decode(lit)?);
                if sym < 256 {
                    self.history.push(sym as u8);
                    continue;
                }
                if sym == 256 {
                    return Ok(());
                }
                let i = sym - 257;
                let len =
                    usize::from(*LEN_BASE.get(i).ok_or("length")?) + b.bits(LEN_EXTRA[i])? as usize;
                let d = usize::from(b.decode(dist)?);
                let d = usize::from(*DIST_BASE.get(d).ok_or("distance")?)
                    + b.bits(DIST_EXTRA[d])? as usize;
                if d > self.window {
                    return Err("distance past the window");
                }
                if d > self.history.len() {
                    return Err("distance before the start");
                }
                for _ in 0..len {
                    self.history.push(self.history[self.history.len() - d]);
                }
            }
        }
    }

    fn shared() -> Agreement {
        negotiate([&b"permessage-deflate"[..]], &DeflateConfig::default()).unwrap()
    }

    fn window_agreement(bits: u8, offer: &str) -> Agreement {
        let cfg = DeflateConfig {
            mode: Mode::Window(bits),
            ..DeflateConfig::default()
        };
        negotiate([offer.as_bytes()], &cfg).unwrap()
    }

    fn inflate(payload: &[u8], dictionary: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        Inflater::new().inflate(dictionary, payload, limit, &mut out)?;
        Ok(out)
    }

    #[test]
    fn rfc7692_examples() {
        // §7.2.3.1: "Hello" in one compressed block, whole and in two fragments.
        let hello = hex("f248cdc9c90700");
        assert_eq!(inflate(&hello, &[], 100).unwrap(), b"Hello");
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        inf.begin(&[], 100);
        inf.feed(&hello[..3], &mut out).unwrap();
        inf.feed(&hello[3..], &mut out).unwrap();
        inf.finish(&mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: the second "Hello" refers back into the first message.
        let second = hex("f200110000");
        assert_eq!(inflate(&second, b"Hello", 100).unwrap(), b"Hello");
        assert!(inflate(&second, &[], 100).is_err());
        // §7.2.3.3: a stored (uncompressed) block.
        assert_eq!(
            inflate(&hex("000500faff48656c6c6f00"), &[], 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.4: BFINAL set, then an empty stored block's header byte, which must be
        // accepted and ignored.
        assert_eq!(
            inflate(&hex("f348cdc9c9070000"), &[], 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.5: two blocks in one message.
        assert_eq!(
            inflate(&hex("f24805000000ffffcac9c90700"), &[], 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.6: a sync flush left in the first fragment, then a fragment of 0x00.
        let mut out = Vec::new();
        inf.begin(&[], 100);
        inf.feed(&hex("f248cdc9c907000000ffff"), &mut out).unwrap();
        inf.feed(&[0x00], &mut out).unwrap();
        inf.finish(&mut out).unwrap();
        assert_eq!(out, b"Hello");
        // And our compressor makes the same bytes for "Hello" as the RFC shows.
        let mut d = Deflater::new(6);
        let mut payload = Vec::new();
        d.compress(15, &[], b"Hello", &mut payload).unwrap();
        assert_eq!(payload, hello);
    }

    /// Messages compressed by C zlib 1.2.13 (Python's zlib): an implementation
    /// independent of zlib-rs. Generated with
    /// `c = zlib.compressobj(6, zlib.DEFLATED, -9)` and, per message,
    /// `(c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]` (context takeover), and with a
    /// fresh `compressobj(6, zlib.DEFLATED, -15)` per message (none).
    const C_ZLIB_MESSAGES: [&str; 4] = [
        r#"{"type":"chat","user":"alice","room":"lobby","text":"Hello, everyone! How is the weather today?","ts":1700000001}"#,
        r#"{"type":"chat","user":"bob","room":"lobby","text":"Hello alice, the weather is fine today.","ts":1700000002}"#,
        r#"{"type":"chat","user":"alice","room":"lobby","text":"Glad to hear the weather is fine, bob!","ts":1700000003}"#,
        r#"{"type":"presence","user":"carol","room":"lobby","status":"online","ts":1700000004}"#,
    ];
    const C_ZLIB_TAKEOVER_9: [&str; 4] = [
        "24cb3b0a80301084e1abac5b5b6825a4b1f51a510714a22bc9fa08e2dd5d719a9faf989b356f60c7c3e4954bde13a2c9877980318a2cc6207d9f8d8a4b8d1d4290927020665951502727cd8974029df096482aa3cfedf749eceaa6fa573f2f00",
        "aac66e61527e127eeb14c04ed241b10368655a665e2ac42e3d74bb8c6a0100",
        "c261177ecfb9e724a6004d54c8484d2cc2669b8e02d0ad8ae89619d70200",
        "825b5650945a9c9a07b6016a617262517e0ea685c5258925a5404394f2f3728006a31b69520b00",
    ];
    const C_ZLIB_FRESH_15: [&str; 4] = [
        "24cb3b0a80301084e1abac5b5b6825a4b1f51a510714a22bc9fa08e2dd5d719a9faf989b356f60c7c3e4954bde13a2c9877980318a2cc6207d9f8d8a4b8d1d4290927020665951502727cd8974029df096482aa3cfedf749eceaa6fa573f2f00",
        "24cb410a80300c44d1ab84ac8ba81ba127f01a6d8d58a846da8816f1ee469ccde72de646a93ba1c5b038418347a1acf2ec1599795524f6be2a852e518e9412834b31900159084e729a0cb1c01c3702e1c9d5e63b14b4ddd0feeb9f17",
        "24ca410a80300c44d1abc4ac5d282e845ec073a41a69a11a69232ae2dd8d389bcf83b951af8dd1e11848b1c6bd7036518a231bb3c8624ce2fd65543ed538249a40050253060d0c079325432c30c7956bf0e2abef5fd0b57df3af7b5e00",
        "aa562aa92c4855b2522a284a2d4ecd4b4e55d2512a2d4e2d028a242716e5e700b945f9f9b9406e4e7e525225905b5c9258525a0c14c8cfcbc9cc03a92f01f20ccd0d20c0a41600",
    ];

    #[test]
    fn c_zlib_messages_with_and_without_context_takeover() {
        let a = window_agreement(9, "permessage-deflate; client_max_window_bits=9");
        let mut w = ContextWindows::new(&a).unwrap();
        let mut inf = Inflater::new();
        for (payload, want) in C_ZLIB_TAKEOVER_9.iter().zip(C_ZLIB_MESSAGES) {
            let mut out = Vec::new();
            inf.inflate(w.inbound(), &hex(payload), 1 << 20, &mut out)
                .unwrap();
            assert_eq!(out, want.as_bytes());
            w.record_inbound(&out);
        }
        // The later ones really refer back: without the window they fail or differ.
        assert_ne!(
            inflate(&hex(C_ZLIB_TAKEOVER_9[1]), &[], 1 << 20).ok(),
            Some(C_ZLIB_MESSAGES[1].as_bytes().to_vec())
        );
        for (payload, want) in C_ZLIB_FRESH_15.iter().zip(C_ZLIB_MESSAGES) {
            assert_eq!(
                inflate(&hex(payload), &[], 1 << 20).unwrap(),
                want.as_bytes()
            );
        }
    }

    #[test]
    fn shared_mode_round_trips_at_every_level() {
        let mut rng = Rng(1);
        let mut msgs: Vec<Vec<u8>> = [1, 2, 17, 64, 300, 1000, 4096, 16384, 70000]
            .iter()
            .map(|&n| json(&mut rng, n))
            .collect();
        msgs.push(random_bytes(&mut rng, 50_000));
        msgs.push(vec![b'a'; 100_000]);
        let a = shared();
        assert!(ContextWindows::new(&a).is_none());
        let mut inf = Inflater::new();
        for level in 1..=9 {
            let mut d = Deflater::new(level);
            for m in &msgs {
                let mut payload = Vec::new();
                d.compress_message(&a, None, m, &mut payload).unwrap();
                // Independent check: a fresh flate2 stream per message, as a client
                // without context takeover decodes.
                let mut reference = Decompress::new(false);
                let mut back = Vec::with_capacity(m.len() + 16);
                payload.extend_from_slice(&TAIL);
                reference
                    .decompress_vec(&payload, &mut back, FlushDecompress::Sync)
                    .unwrap();
                assert_eq!(&back, m, "level {level}, {} bytes", m.len());
                payload.truncate(payload.len() - 4);
                let mut ours = Vec::new();
                inf.inflate(&[], &payload, m.len(), &mut ours).unwrap();
                assert_eq!(&ours, m);
            }
        }
        // And what a reference compressor sends, we inflate.
        for m in &msgs {
            let payload = RefDeflate::new(15).message(m);
            assert_eq!(&inflate(&payload, &[], 1 << 20).unwrap(), m);
        }
    }

    /// A stream of messages for the context-takeover tests: mostly JSON of mixed sizes
    /// (some larger than any window), some random, some repeats of earlier ones.
    fn conversation(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng(seed);
        let mut msgs: Vec<Vec<u8>> = Vec::new();
        for i in 0..n {
            let r = rng.below(1 << 20);
            let m = match i % 7 {
                3 => random_bytes(&mut rng, 1 + r % 700),
                5 if i > 5 => msgs[r % msgs.len()].clone(),
                6 => json(&mut rng, 20_000 + r % 30_000),
                _ => json(&mut rng, 1 + r % 3000),
            };
            msgs.push(m);
        }
        msgs
    }

    #[test]
    fn inbound_context_takeover_matches_a_long_lived_stream() {
        let msgs = conversation(7, 40);
        let mut inf = Inflater::new();
        for bits in 9..=15 {
            let a = window_agreement(bits, "permessage-deflate; client_max_window_bits");
            assert_eq!(a.client_max_window_bits, Some(bits));
            let mut w = ContextWindows::new(&a).unwrap();
            let mut client = RefDeflate::new(bits);
            let mut total_payload = 0;
            for (i, m) in msgs.iter().enumerate() {
                let payload = client.message(m);
                total_payload += payload.len();
                let mut out = Vec::new();
                inf.begin(w.inbound(), 1 << 20);
                // Fragmented like a client would: in pieces of up to 1000 bytes.
                for piece in payload.chunks(1000) {
                    inf.feed(piece, &mut out).unwrap();
                }
                inf.finish(&mut out).unwrap();
                assert_eq!(&out, m, "bits {bits}, message {i}");
                w.record_inbound(&out);
                assert!(w.inbound().len() <= 1 << bits);
            }
            // Context takeover paid: the same messages one by one compress worse.
            let fresh: usize = msgs
                .iter()
                .map(|m| RefDeflate::new(bits).message(m).len())
                .sum();
            assert!(
                total_payload < fresh,
                "bits {bits}: {total_payload} vs {fresh}"
            );
        }
    }

    #[test]
    fn outbound_context_takeover_decodes_with_a_strict_window() {
        let msgs = conversation(11, 30);
        for bits in 8..=15 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let a = window_agreement(15, &offer);
            assert_eq!(a.server_max_window_bits, Some(bits));
            let mut w = ContextWindows::new(&a).unwrap();
            let mut d = Deflater::new(6);
            let mut client = StrictInflate::new(bits);
            for (i, m) in msgs.iter().enumerate() {
                let mut payload = Vec::new();
                d.compress_message(&a, Some(&mut w), m, &mut payload)
                    .unwrap();
                let back = client
                    .message(&payload)
                    .unwrap_or_else(|e| panic!("bits {bits}, message {i}: {e}"));
                assert_eq!(&back, m, "bits {bits}, message {i}");
                assert!(w.outbound().len() <= 1 << bits);
            }
        }
    }

    #[test]
    fn window_bits_8_holds_at_every_level() {
        // Every zlib-rs strategy (quick, fast, medium, slow) keeps within 250 bytes.
        let msgs = conversation(13, 20);
        let a = window_agreement(12, "permessage-deflate; server_max_window_bits=8");
        for level in 1..=9 {
            let mut w = ContextWindows::new(&a).unwrap();
            let mut d = Deflater::new(level);
            let mut client = StrictInflate::new(8);
            for m in &msgs {
                let mut payload = Vec::new();
                d.compress_message(&a, Some(&mut w), m, &mut payload)
                    .unwrap();
                assert_eq!(&client.message(&payload).unwrap(), m, "level {level}");
            }
            assert_eq!(w.outbound().len(), 256);
        }
    }

    #[test]
    fn the_strict_reference_does_catch_references_past_its_window() {
        // Negative control for the two tests above: a 15-bit stream whose second
        // message repeats 2 KiB from the first fails on a 256- or 512-byte window.
        let mut rng = Rng(5);
        let first = random_bytes(&mut rng, 2048);
        for bits in [8, 9] {
            let mut wide = RefDeflate::new(15);
            let mut strict = StrictInflate::new(bits);
            assert_eq!(strict.message(&wide.message(&first)).unwrap(), first);
            assert!(
                strict.message(&wide.message(&first)).is_err(),
                "bits {bits}"
            );
        }
    }

    #[test]
    fn both_directions_over_many_messages() {
        // A whole window-mode conversation, as the server runs it: the client
        // compresses with context, we echo with context, each side checks.
        let a = window_agreement(12, "permessage-deflate; client_max_window_bits");
        let mut w = ContextWindows::new(&a).unwrap();
        let (mut inf, mut d) = (Inflater::new(), Deflater::new(6));
        let mut client_out = RefDeflate::new(12);
        let mut client_in = StrictInflate::new(12);
        for (i, m) in conversation(3, 200).iter().enumerate() {
            let mut msg = Vec::new();
            inf.inflate(w.inbound(), &client_out.message(m), 1 << 20, &mut msg)
                .unwrap();
            w.record_inbound(&msg);
            let mut payload = Vec::new();
            d.compress_message(&a, Some(&mut w), &msg, &mut payload)
                .unwrap();
            assert_eq!(&client_in.message(&payload).unwrap(), m, "message {i}");
        }
        assert_eq!(w.heap_bytes(), 2 << 12);
    }

    /// 1 MiB of zeros compressed and sync-flushed: ≈ 1 KiB that inflates 1000-fold,
    /// ending at a byte boundary, so copies of it concatenate into a bigger bomb.
    fn bomb_segment() -> Vec<u8> {
        let mut c = RefDeflate(Compress::new(Compression::new(9), false));
        let mut seg = c.message(&vec![0u8; 1 << 20]);
        seg.extend_from_slice(&TAIL);
        seg
    }

    #[test]
    fn a_bomb_costs_at_most_the_limit() {
        let seg = bomb_segment();
        assert!(seg.len() < 1100, "{}", seg.len());
        // ≈ 1 KiB that would inflate to 1 MiB, with a 64 KiB limit.
        let limit = 64 << 10;
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        assert_eq!(
            inf.inflate(&[], &seg, limit, &mut out),
            Err(InflateError::TooLarge)
        );
        assert_eq!(out.len(), limit);
        assert!(out.capacity() <= limit, "{}", out.capacity());
        // 1 MiB that would inflate to 1 GiB, arriving as 1 KiB fragments, limit 1 MiB:
        // it stops in the fragment that passes the limit, having inflated 1 MiB.
        let bomb: Vec<u8> = seg.repeat(1024);
        let limit = 1 << 20;
        let mut out = Vec::new();
        inf.begin(&[], limit);
        let mut fed = 0;
        let err = bomb
            .chunks(1024)
            .find_map(|piece| {
                fed += piece.len();
                inf.feed(piece, &mut out).err()
            })
            .unwrap();
        assert_eq!(err, InflateError::TooLarge);
        assert!(fed <= 2 * seg.len(), "fed {fed} bytes before stopping");
        assert!(out.len() <= limit && out.capacity() <= limit);
        // The same in one piece: stops after about limit / 1000 bytes of input.
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        assert_eq!(
            inf.inflate(&[], &bomb, limit, &mut out),
            Err(InflateError::TooLarge)
        );
        assert!(out.capacity() <= limit);
        // Generous even for a debug build: a full inflation would take seconds.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        // A caller's buffer with spare capacity beyond the limit is still bounded.
        let mut out = Vec::with_capacity(4 << 20);
        assert_eq!(
            inf.inflate(&[], &seg, 1000, &mut out),
            Err(InflateError::TooLarge)
        );
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn the_limit_is_exact() {
        let mut rng = Rng(9);
        let m = json(&mut rng, 5000);
        let mut payload = Vec::new();
        Deflater::new(6)
            .compress(15, &[], &m, &mut payload)
            .unwrap();
        assert_eq!(inflate(&payload, &[], m.len()).unwrap(), m);
        assert_eq!(
            inflate(&payload, &[], m.len() - 1),
            Err(InflateError::TooLarge)
        );
        // The limit counts this message only, not what `out` already held.
        let mut out = vec![1u8; 100];
        Inflater::new()
            .inflate(&[], &payload, m.len(), &mut out)
            .unwrap();
        assert_eq!(&out[100..], &m[..]);
        // Ending a message that exactly fills `out` does not grow it (the tail and the
        // end marker yield nothing).
        for limit in [m.len(), 1 << 20] {
            let mut out = Vec::with_capacity(m.len());
            Inflater::new()
                .inflate(&[], &payload, limit, &mut out)
                .unwrap();
            assert_eq!((out.len(), out.capacity()), (m.len(), m.len()));
        }
        // Fed byte by byte, the limit holds the same way.
        let mut inf = Inflater::new();
        for (limit, ok) in [(m.len(), true), (m.len() - 1, false)] {
            let mut out = Vec::new();
            inf.begin(&[], limit);
            let r = payload
                .iter()
                .try_for_each(|b| inf.feed(std::slice::from_ref(b), &mut out))
                .and_then(|()| inf.finish(&mut out));
            assert_eq!(r.is_ok(), ok);
            assert!(out.len() <= limit);
        }
    }

    #[test]
    fn truncated_streams_are_refused() {
        let mut rng = Rng(21);
        let m = json(&mut rng, 3000);
        let mut payload = Vec::new();
        Deflater::new(6)
            .compress(15, &[], &m, &mut payload)
            .unwrap();
        let mut refused = 0;
        for cut in 1..payload.len() {
            match inflate(&payload[..cut], &[], 1 << 20) {
                Err(InflateError::Invalid(_)) => refused += 1,
                Err(InflateError::TooLarge) => panic!("cut {cut}: too large"),
                Ok(out) => assert_ne!(out, m, "cut {cut} passed as the whole message"),
            }
        }
        // A stream cut anywhere does not end at a block boundary: all refused.
        assert_eq!(refused, payload.len() - 1);
        // Cut inside a stored block too.
        let mut stored = Vec::new();
        Deflater::new(1)
            .compress(15, &[], &random_bytes(&mut rng, 3000), &mut stored)
            .unwrap();
        for cut in [1, 5, 100, stored.len() - 2, stored.len() - 1] {
            assert!(
                matches!(
                    inflate(&stored[..cut], &[], 1 << 20),
                    Err(InflateError::Invalid(_))
                ),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn corrupted_streams_never_panic_or_overrun() {
        let mut rng = Rng(33);
        let m = json(&mut rng, 2000);
        let mut payload = Vec::new();
        Deflater::new(6)
            .compress(15, &[], &m, &mut payload)
            .unwrap();
        let mut inf = Inflater::new();
        let mut refused = 0;
        for i in 0..payload.len() * 8 {
            let mut bad = payload.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let mut out = Vec::new();
            match inf.inflate(&[], &bad, 4000, &mut out) {
                Err(_) => refused += 1,
                Ok(()) => assert!(out.len() <= 4000),
            }
            assert!(out.len() <= 4000);
        }
        assert!(refused > payload.len(), "{refused}");
        // Specific defects.
        for (bad, why) in [
            (&[0x06u8][..], "reserved block type 11"),
            (&[0x07, 0x00][..], "reserved block type 11, final"),
            (
                &[0x00, 0x05, 0x00, 0x00, 0x00, b'x'][..],
                "stored LEN/NLEN mismatch",
            ),
            // A fixed-Huffman block whose first symbol is a match: nothing to copy.
            (&hex("0201")[..], "distance too far back"),
        ] {
            assert!(
                matches!(inflate(bad, &[], 1000), Err(InflateError::Invalid(_))),
                "{why}"
            );
        }
        // After an error the same inflater serves the next message.
        let mut out = Vec::new();
        inf.inflate(&[], &payload, 1 << 20, &mut out).unwrap();
        assert_eq!(out, m);
    }

    #[test]
    fn a_client_that_exceeds_its_window_is_refused() {
        // It promised client_max_window_bits=9 (512 bytes) but refers 2 KiB back.
        let mut rng = Rng(8);
        let first = random_bytes(&mut rng, 2048);
        let a = window_agreement(9, "permessage-deflate; client_max_window_bits");
        let mut w = ContextWindows::new(&a).unwrap();
        let mut liar = RefDeflate::new(15);
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        inf.inflate(w.inbound(), &liar.message(&first), 1 << 20, &mut out)
            .unwrap();
        w.record_inbound(&out);
        let mut out = Vec::new();
        assert!(matches!(
            inf.inflate(w.inbound(), &liar.message(&first), 1 << 20, &mut out),
            Err(InflateError::Invalid(_))
        ));
    }

    #[test]
    fn any_fragmentation_gives_the_same_message() {
        let mut rng = Rng(44);
        let m = json(&mut rng, 1500);
        let mut payload = Vec::new();
        Deflater::new(6)
            .compress(15, &[], &m, &mut payload)
            .unwrap();
        let mut inf = Inflater::new();
        for split in 0..=payload.len() {
            let mut out = Vec::new();
            inf.begin(&[], 1 << 20);
            inf.feed(&payload[..split], &mut out).unwrap();
            inf.feed(&[], &mut out).unwrap();
            inf.feed(&payload[split..], &mut out).unwrap();
            inf.finish(&mut out).unwrap();
            assert_eq!(out, m, "split {split}");
        }
        let mut out = Vec::new();
        inf.begin(&[], 1 << 20);
        for b in &payload {
            inf.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        inf.finish(&mut out).unwrap();
        assert_eq!(out, m);
    }

    #[test]
    fn empty_messages() {
        let mut d = Deflater::new(6);
        let mut payload = Vec::new();
        d.compress(12, b"history", &[], &mut payload).unwrap();
        assert_eq!(payload, [0x00]);
        assert_eq!(inflate(&payload, &[], 0).unwrap(), b"");
        assert_eq!(inflate(&payload, b"history", 0).unwrap(), b"");
        // An empty payload (no bytes at all) is read as an empty message.
        assert_eq!(inflate(&[], &[], 0).unwrap(), b"");
        // A peer decodes our empty message, and the window is unchanged by it.
        let a = window_agreement(12, "permessage-deflate; client_max_window_bits");
        let mut w = ContextWindows::new(&a).unwrap();
        let mut client = StrictInflate::new(12);
        for m in [
            &b"first message, long enough"[..],
            b"",
            b"first message, again",
        ] {
            let mut p = Vec::new();
            d.compress_message(&a, Some(&mut w), m, &mut p).unwrap();
            assert_eq!(client.message(&p).unwrap(), m);
        }
        assert_eq!(
            w.outbound(),
            b"first message, long enoughfirst message, again"
        );
    }

    #[test]
    fn windows_keep_the_last_bytes() {
        let a = window_agreement(9, "permessage-deflate; client_max_window_bits");
        let mut w = ContextWindows::new(&a).unwrap();
        assert_eq!(
            (w.heap_bytes(), w.inbound(), w.outbound()),
            (0, &[][..], &[][..])
        );
        let mut all = Vec::new();
        for (i, n) in [10, 100, 400, 1, 511, 512, 513, 2000, 3].iter().enumerate() {
            let m: Vec<u8> = (0..*n).map(|j| (i * 7 + j) as u8).collect();
            w.record_inbound(&m);
            all.extend_from_slice(&m);
            let keep = all.len().min(512);
            assert_eq!(w.inbound(), &all[all.len() - keep..]);
            assert!(w.outbound().is_empty());
        }
        assert_eq!(w.heap_bytes(), 1024);
        w.record_outbound(b"abc");
        assert_eq!(w.outbound(), b"abc");
        assert_eq!(w.inbound(), &all[all.len() - 512..]);
        assert_eq!(std::mem::size_of::<ContextWindows>(), 24);
        // Only the directions that keep context get a window.
        let a = window_agreement(12, "permessage-deflate");
        assert!(a.client_no_context_takeover);
        let mut w = ContextWindows::new(&a).unwrap();
        w.record_inbound(b"ignored");
        w.record_outbound(b"kept");
        assert_eq!((w.inbound(), w.outbound()), (&[][..], &b"kept"[..]));
        assert_eq!(w.heap_bytes(), 4096);
    }

    #[test]
    fn the_dictionary_is_trimmed_to_the_window() {
        // A caller passing more history than the window must not make the compressor
        // reach past what the client keeps.
        let mut rng = Rng(17);
        let history = random_bytes(&mut rng, 8192);
        let m = history[..1000].to_vec();
        let mut payload = Vec::new();
        Deflater::new(6)
            .compress(9, &history, &m, &mut payload)
            .unwrap();
        let mut client = StrictInflate::new(9);
        // Prime the strict client with the same last 512 bytes the compressor kept.
        let mut prime = RefDeflate::new(9);
        assert_eq!(
            client
                .message(&prime.message(&history[8192 - 512..]))
                .unwrap(),
            &history[8192 - 512..]
        );
        assert_eq!(client.message(&payload).unwrap(), m);
    }

    /// Heap bytes in use (glibc's count, chunk headers included; large blocks are
    /// mmapped, and counted apart).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        m.uordblks + m.hblkhd
    }

    /// CPU time of this thread, in µs: other processes on a shared machine do not count.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn thread_cpu_us() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes the current thread's CPU clock into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
    }

    /// Figures for the report: per-connection memory and CPU of the dictionary
    /// technique against a dedicated zlib stream per connection, ratios per level and
    /// size, and the threshold. Run alone, in release:
    /// `cargo test --release --lib figures -- --ignored --nocapture --test-threads=1`.
    #[test]
    #[ignore]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn figures() {
        use std::hint::black_box;

        // Memory: 1,000 connections, each having echoed one 4 KiB JSON message.
        let n = 1000;
        let mut rng = Rng(99);
        let msg = json(&mut rng, 4096);
        let a = window_agreement(12, "permessage-deflate; client_max_window_bits");
        let mut d = Deflater::new(6);
        let mut inf = Inflater::new();
        let mut client = RefDeflate::new(12);
        let payload_in = client.message(&msg);
        let mut scratch = Vec::new();
        d.compress_message(&a, None, &msg, &mut scratch).unwrap();
        let mut conns: Vec<ContextWindows> = Vec::with_capacity(n);
        let base = heap_in_use();
        for _ in 0..n {
            let mut w = ContextWindows::new(&a).unwrap();
            let mut m = Vec::new();
            inf.inflate(w.inbound(), &payload_in, 1 << 20, &mut m)
                .unwrap();
            w.record_inbound(&m);
            let mut p = Vec::new();
            d.compress_message(&a, Some(&mut w), &m, &mut p).unwrap();
            conns.push(w);
        }
        let windows = (heap_in_use() - base) as f64 / n as f64;
        println!(
            "window=12, idle after one 4 KiB echo: {windows:.0} B heap + {} B struct = {:.0} B per connection (target ≤ 8,292)",
            std::mem::size_of::<ContextWindows>(),
            windows + std::mem::size_of::<ContextWindows>() as f64
        );
        drop(conns);
        for bits in [9u8, 12, 15] {
            let mut streams = Vec::with_capacity(50);
            let base = heap_in_use();
            for _ in 0..50 {
                let mut c = RefDeflate::new(bits);
                let p = c.message(&msg);
                let mut z = Decompress::new_with_window_bits(false, bits);
                let mut out = Vec::with_capacity(8192);
                let mut full = p.clone();
                full.extend_from_slice(&TAIL);
                z.decompress_vec(&full, &mut out, FlushDecompress::Sync)
                    .unwrap();
                streams.push((c, z));
            }
            let per = (heap_in_use() - base) / 50;
            println!(
                "dedicated zlib-rs streams, window {bits}: {per} B per connection (deflate + inflate state)"
            );
            drop(streams);
        }
        let base = heap_in_use();
        let z: Vec<Inflater> = (0..20).map(|_| Inflater::new()).collect();
        println!("one Inflater: {} B", (heap_in_use() - base) / 20);
        drop(z);

        // CPU: the minimum over interleaved repeats of each variant's thread CPU time.
        let bench = |variants: &mut [&mut dyn FnMut()], per_call: usize| -> Vec<f64> {
            let mut best = vec![f64::MAX; variants.len()];
            for _ in 0..7 {
                for (i, f) in variants.iter_mut().enumerate() {
                    let t = thread_cpu_us();
                    f();
                    best[i] = best[i].min((thread_cpu_us() - t) / per_call as f64);
                }
            }
            best
        };
        println!(
            "\nCPU µs per message (thread CPU, min of 7), window=12 and shared, level 6; payload/plain:"
        );
        println!(
            "  size | deflate: dict  dedicated  shared | inflate: dict  dedicated  shared | ratio: dict  shared"
        );
        for size in [256usize, 1024, 4096, 16384] {
            let mut rng = Rng(size as u64);
            let msgs: Vec<Vec<u8>> = (0..200).map(|_| json(&mut rng, size)).collect();
            let total: usize = msgs.iter().map(Vec::len).sum();
            let sa = shared();
            let (mut dict_bytes, mut shared_bytes) = (0, 0);
            let mut c = RefDeflate::new(12);
            let payloads: Vec<Vec<u8>> = msgs.iter().map(|m| c.message(m)).collect();
            let shared_payloads: Vec<Vec<u8>> = msgs
                .iter()
                .map(|m| {
                    let mut p = Vec::new();
                    d.compress(15, &[], m, &mut p).unwrap();
                    p
                })
                .collect();
            let mut out = Vec::with_capacity(size + 4096);
            let mut deflate_dict = || {
                let mut w = ContextWindows::new(&a).unwrap();
                dict_bytes = 0;
                for m in &msgs {
                    out.clear();
                    d.compress_message(&a, Some(&mut w), m, &mut out).unwrap();
                    dict_bytes += out.len();
                    black_box(&out);
                }
            };
            let mut deflate_dedicated = || {
                let mut c = RefDeflate::new(12);
                for m in &msgs {
                    black_box(c.message(m));
                }
            };
            let mut d2 = Deflater::new(6);
            let mut out2 = Vec::with_capacity(size + 4096);
            let mut deflate_shared = || {
                shared_bytes = 0;
                for m in &msgs {
                    out2.clear();
                    d2.compress_message(&sa, None, m, &mut out2).unwrap();
                    shared_bytes += out2.len();
                    black_box(&out2);
                }
            };
            let deflate = bench(
                &mut [
                    &mut deflate_dict,
                    &mut deflate_dedicated,
                    &mut deflate_shared,
                ],
                msgs.len(),
            );
            let mut inf2 = Inflater::new();
            let mut out3 = Vec::with_capacity(size + 4096);
            let mut inflate_dict = || {
                let mut w = ContextWindows::new(&a).unwrap();
                for p in &payloads {
                    out3.clear();
                    inf2.inflate(w.inbound(), p, 1 << 20, &mut out3).unwrap();
                    w.record_inbound(&out3);
                }
            };
            let mut full = Vec::with_capacity(size + 4096);
            let mut out4 = Vec::with_capacity(size + 4096);
            let mut inflate_dedicated = || {
                let mut z = Decompress::new_with_window_bits(false, 12);
                for p in &payloads {
                    full.clear();
                    full.extend_from_slice(p);
                    full.extend_from_slice(&TAIL);
                    out4.clear();
                    z.decompress_vec(&full, &mut out4, FlushDecompress::Sync)
                        .unwrap();
                    black_box(&out4);
                }
            };
            let mut inf3 = Inflater::new();
            let mut out5 = Vec::with_capacity(size + 4096);
            let mut inflate_shared = || {
                for p in &shared_payloads {
                    out5.clear();
                    inf3.inflate(&[], p, 1 << 20, &mut out5).unwrap();
                    black_box(&out5);
                }
            };
            let inflate = bench(
                &mut [
                    &mut inflate_dict,
                    &mut inflate_dedicated,
                    &mut inflate_shared,
                ],
                msgs.len(),
            );
            println!(
                "{size:>6} | {:>13.2} {:>10.2} {:>7.2} | {:>13.2} {:>10.2} {:>7.2} | {:>11.3} {:>7.3}",
                deflate[0],
                deflate[1],
                deflate[2],
                inflate[0],
                inflate[1],
                inflate[2],
                dict_bytes as f64 / total as f64,
                shared_bytes as f64 / total as f64,
            );
        }

        // Levels: CPU and ratio in shared mode.
        println!("\nshared mode by level, µs per message / payload÷plain:");
        for size in [1024usize, 16384] {
            let mut rng = Rng(size as u64 + 1);
            let msgs: Vec<Vec<u8>> = (0..200).map(|_| json(&mut rng, size)).collect();
            let total: usize = msgs.iter().map(Vec::len).sum();
            let levels = [1u8, 2, 4, 6, 9];
            let mut deflaters: Vec<Deflater> = levels.iter().map(|&l| Deflater::new(l)).collect();
            let mut bytes = vec![0usize; levels.len()];
            let mut us = vec![f64::MAX; levels.len()];
            let mut out = Vec::with_capacity(size + 4096);
            for _ in 0..7 {
                for (i, dd) in deflaters.iter_mut().enumerate() {
                    bytes[i] = 0;
                    let t = thread_cpu_us();
                    for m in &msgs {
                        out.clear();
                        dd.compress(15, &[], m, &mut out).unwrap();
                        bytes[i] += out.len();
                    }
                    us[i] = us[i].min((thread_cpu_us() - t) / msgs.len() as f64);
                }
            }
            let line: Vec<String> = levels
                .iter()
                .zip(us.iter().zip(&bytes))
                .map(|(l, (u, b))| format!("L{l} {u:.2}/{:.3}", *b as f64 / total as f64))
                .collect();
            println!("{size:>6}: {}", line.join("  "));
        }

        // Threshold: what small messages gain, and what they cost.
        println!(
            "\nsmall JSON messages, payload÷plain: shared | window=12 (after 50 messages); µs:"
        );
        for size in [16usize, 32, 48, 64, 96, 128, 256] {
            let mut rng = Rng(size as u64 + 2);
            let msgs: Vec<Vec<u8>> = (0..100)
                .map(|_| {
                    let mut m = json(&mut rng, size);
                    m.truncate(size);
                    m
                })
                .collect();
            let total: usize = msgs.iter().map(Vec::len).sum();
            let half: usize = msgs[50..].iter().map(Vec::len).sum();
            let (mut s, mut wbytes) = (0, 0);
            let mut w = ContextWindows::new(&a).unwrap();
            for (i, m) in msgs.iter().enumerate() {
                let mut p = Vec::new();
                d.compress(15, &[], m, &mut p).unwrap();
                s += p.len();
                let mut p = Vec::new();
                d.compress_message(&a, Some(&mut w), m, &mut p).unwrap();
                if i >= 50 {
                    wbytes += p.len();
                }
            }
            let mut out = Vec::with_capacity(1024);
            let mut f = || {
                for m in &msgs {
                    out.clear();
                    d.compress(15, &[], m, &mut out).unwrap();
                }
            };
            let mut d2 = Deflater::new(6);
            let mut out2 = Vec::with_capacity(1024);
            let mut g = || {
                for m in &msgs {
                    out2.clear();
                    d2.compress_message(&a, Some(&mut w), m, &mut out2).unwrap();
                }
            };
            let us = bench(&mut [&mut f, &mut g], msgs.len());
            println!(
                "{size:>4} B: {:.2} | {:.2}  ({:.2} | {:.2} µs)",
                s as f64 / total as f64,
                wbytes as f64 / half as f64,
                us[0],
                us[1]
            );
        }
    }
}
