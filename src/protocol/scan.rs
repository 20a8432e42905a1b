//! Incremental scanner for the client-to-server WebSocket byte stream.
//!
//! Every received byte passes through [`FrameScanner::scan`] exactly once before any
//! frame is read. The scanner finds frame boundaries (so the connection only ever
//! reads whole frames), rejects protocol errors, oversized frames and messages and
//! invalid UTF-8 as soon as the offending byte arrives, and reports when the
//! connection is idle between messages. It never allocates and its state is a
//! handful of integers. What it approved needs no second check: a text message that
//! passed it is valid UTF-8.

use std::str;

/// Why the scanner rejected the input; the server maps it to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// RFC 6455 protocol violation → close 1002. The string is a short reason for logs
    /// and the close frame (at most 60 bytes), e.g. "reserved bits set".
    Protocol(&'static str),
    /// A frame declared a payload longer than the frame limit → close 1009.
    FrameTooLarge,
    /// A frame would take its message over the message limit → close 1009.
    MessageTooLarge,
    /// Text message payload is not valid UTF-8 → close 1007.
    InvalidUtf8,
}

impl ScanError {
    /// The close code RFC 6455 gives this error, and a reason for the Close frame.
    pub(crate) fn close(self) -> (u16, &'static str) {
        match self {
            ScanError::Protocol(reason) => (1002, reason),
            ScanError::FrameTooLarge => (1009, "frame too large"),
            ScanError::MessageTooLarge => (1009, "message too large"),
            ScanError::InvalidUtf8 => (1007, "invalid UTF-8 in text message"),
        }
    }
}

/// A rejected chunk: the error, and how much of the chunk was whole frames before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Length of the leading part of the chunk that forms complete, valid frames.
    pub(crate) complete: usize,
    /// What was wrong with the bytes after it.
    pub(crate) error: ScanError,
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;

/// `header_left` value meaning byte0 was read and the length byte comes next.
const NEED_BYTE1: u8 = u8::MAX;
/// The masking key is always the last 4 header bytes (unmasked frames are rejected).
const MASK_LEN: u8 = 4;

/// Incremental scanner state for one connection's incoming byte stream.
#[derive(Debug, Clone)]
pub(crate) struct FrameScanner {
    /// Payload bytes left in the current frame; while the extended length is being
    /// read it accumulates the partial length instead.
    remaining: u64,
    max_frame_size: u64,
    max_message_size: u64,
    /// Payload bytes of the data message in progress, the current frame included.
    message_len: u64,
    /// Masking key rotated so that `mask[0]` applies to the next payload byte.
    mask: [u8; 4],
    /// Header bytes still expected after byte1 (extended length, then mask), or
    /// `NEED_BYTE1`. 0 means the header is done: with `remaining == 0` that is a frame
    /// boundary, which lets one byte describe the whole header state.
    header_left: u8,
    /// Byte0 (FIN | opcode) of the current frame.
    frame: u8,
    /// Opcode of the data message whose final fragment has not arrived yet, or
    /// `OP_CONTINUATION` when no fragmented message is in progress.
    fragmented: u8,
    /// UTF-8 validator state carried across chunks and fragments of a text message.
    utf8: Utf8State,
    /// `COMPRESSION_ON`: permessage-deflate was negotiated (RSV1 may start a message);
    /// `COMPRESSED`: the message in progress is compressed (its payload is validated
    /// once inflated, not here).
    deflate: u8,
}

const COMPRESSION_ON: u8 = 1;
const COMPRESSED: u8 = 2;
const RSV1: u8 = 0x40;

impl FrameScanner {
    /// `max_frame_size`: largest payload a single frame may declare;
    /// `max_message_size`: largest sum of the payloads of a message's frames.
    pub(crate) fn new(max_frame_size: u64, max_message_size: u64) -> Self {
        FrameScanner {
            remaining: 0,
            max_frame_size,
            max_message_size,
            message_len: 0,
            mask: [0; 4],
            header_left: 0,
            frame: 0,
            fragmented: OP_CONTINUATION,
            utf8: Utf8State::Accept,
            deflate: 0,
        }
    }

    /// Whether the connection negotiated permessage-deflate: RSV1 may then mark the
    /// first frame of a compressed message. Set before scanning a connection's bytes.
    pub(crate) fn allow_compression(&mut self, on: bool) {
        if on {
            self.deflate |= COMPRESSION_ON;
        } else {
            self.deflate = 0;
        }
    }

    /// Scans `bytes`, which directly follow every byte passed before.
    ///
    /// Returns the length of the prefix of `bytes` that ends exactly at the end of the
    /// last complete frame within `bytes` (0 if no frame completes here). Bytes after
    /// that boundary belong to a frame still in progress: the caller keeps them but must
    /// not pass them again, since the scanner has consumed them.
    ///
    /// On error the scanner's state is unspecified and the connection is to be failed;
    /// [`Rejected::complete`] still tells which leading frames were whole and valid, so
    /// they can be delivered before the connection is failed.
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<usize, Rejected> {
        let mut boundary = 0;
        match self.scan_from(bytes, &mut boundary) {
            Ok(()) => Ok(boundary),
            Err(error) => Err(Rejected {
                complete: boundary,
                error,
            }),
        }
    }

    fn scan_from(&mut self, bytes: &[u8], boundary: &mut usize) -> Result<(), ScanError> {
        let mut pos = 0;
        while pos < bytes.len() {
            if let Some(used) = self.small_message(&bytes[pos..])? {
                pos += used;
                *boundary = pos;
                continue;
            }
            if self.header_left == 0 && self.remaining > 0 {
                let avail = (bytes.len() - pos) as u64;
                // Fits in usize: bounded by the remaining slice length.
                let n = self.remaining.min(avail) as usize;
                if self.text_payload() {
                    self.check_text(&bytes[pos..pos + n])?;
                }
                self.remaining -= n as u64;
                pos += n;
            } else if let Some(used) = self.whole_header(&bytes[pos..])? {
                pos += used;
            } else {
                self.header_byte(bytes[pos])?;
                pos += 1;
            }
            // Only reachable right after the last header byte of an empty frame or the
            // last payload byte: the frame just completed.
            if self.header_left == 0 && self.remaining == 0 {
                self.finish_frame()?;
                *boundary = pos;
            }
        }
        Ok(())
    }

    /// True when every byte scanned so far forms complete frames and no fragmented data
    /// message is in progress (a context handed exactly these bytes is idle between
    /// messages).
    pub(crate) fn between_messages(&self) -> bool {
        self.at_frame_boundary() && self.fragmented == OP_CONTINUATION
    }

    /// Payload bytes of the frame in progress not seen yet (0 at a boundary or while its
    /// header is still arriving).
    pub(crate) fn frame_remaining(&self) -> u64 {
        if self.header_left == 0 {
            self.remaining
        } else {
            0
        }
    }

    /// True when the scanner is at a frame boundary (no partial frame pending),
    /// regardless of fragmentation.
    pub(crate) fn at_frame_boundary(&self) -> bool {
        self.header_left == 0 && self.remaining == 0
    }

    /// The common case in one step: between messages, `bytes` starts with a whole
    /// unfragmented, uncompressed text or binary message of at most 125 bytes. Leaves
    /// the scanner as the general path would (it ends at a boundary, between
    /// messages); None, changing nothing, for anything else.
    fn small_message(&mut self, bytes: &[u8]) -> Result<Option<usize>, ScanError> {
        let [b0, b1, m0, m1, m2, m3, ..] = *bytes else {
            return Ok(None);
        };
        let len = usize::from(b1 & 0x7F);
        if self.header_left != 0
            || self.remaining != 0
            || self.fragmented != OP_CONTINUATION
            || !matches!(b0, 0x81 | 0x82)
            || b1 & 0x80 == 0
            || len > 125
            || bytes.len() < 6 + len
            || len as u64 > self.max_frame_size.min(self.max_message_size)
        {
            return Ok(None);
        }
        self.frame = b0;
        self.deflate &= !COMPRESSED;
        self.message_len = len as u64;
        if b0 == 0x81 {
            self.mask = [m0, m1, m2, m3];
            self.check_text(&bytes[6..6 + len])?;
            if self.utf8 != Utf8State::Accept {
                return Err(ScanError::InvalidUtf8);
            }
        }
        Ok(Some(6 + len))
    }

    /// At a frame boundary with the whole header in `bytes`: reads it in one step (the
    /// same checks, in the same order, as byte by byte) and returns its length. None
    /// when the header is split across chunks: then it goes byte by byte.
    fn whole_header(&mut self, bytes: &[u8]) -> Result<Option<usize>, ScanError> {
        if self.header_left != 0 || bytes.len() < 2 {
            return Ok(None);
        }
        let extended = match bytes[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = 2 + extended + usize::from(MASK_LEN);
        let Some(header) = bytes.get(..len) else {
            return Ok(None);
        };
        self.read_byte0(header[0])?;
        self.read_byte1(header[1])?;
        for &b in &header[2..2 + extended] {
            self.read_length_byte(b)?;
        }
        self.mask.copy_from_slice(&header[2 + extended..]);
        self.header_left = 0;
        Ok(Some(len))
    }

    fn header_byte(&mut self, b: u8) -> Result<(), ScanError> {
        match self.header_left {
            0 => self.read_byte0(b),
            NEED_BYTE1 => self.read_byte1(b),
            left if left > MASK_LEN => self.read_length_byte(b),
            left => {
                self.mask[usize::from(MASK_LEN - left)] = b;
                self.header_left -= 1;
                Ok(())
            }
        }
    }

    fn read_byte0(&mut self, b: u8) -> Result<(), ScanError> {
        let opcode = b & 0x0F;
        if b & 0x30 != 0 {
            return Err(ScanError::Protocol("reserved bits set"));
        }
        if b & RSV1 != 0 {
            // RFC 7692 §6: RSV1 marks a compressed message, on its first frame only.
            if self.deflate & COMPRESSION_ON == 0 {
                return Err(ScanError::Protocol("reserved bits set"));
            }
            if !matches!(opcode, OP_TEXT | OP_BINARY) {
                return Err(ScanError::Protocol(
                    "RSV1 on a control or continuation frame",
                ));
            }
        }
        if !matches!(opcode, 0..=2 | 8..=10) {
            return Err(ScanError::Protocol("reserved opcode"));
        }
        let fin = b & 0x80 != 0;
        if opcode >= 8 && !fin {
            return Err(ScanError::Protocol("fragmented control frame"));
        }
        if opcode == OP_CONTINUATION && self.fragmented == OP_CONTINUATION {
            return Err(ScanError::Protocol("continuation without start"));
        }
        if matches!(opcode, OP_TEXT | OP_BINARY) && self.fragmented != OP_CONTINUATION {
            return Err(ScanError::Protocol("expected continuation"));
        }
        if matches!(opcode, OP_TEXT | OP_BINARY) {
            if b & RSV1 != 0 {
                self.deflate |= COMPRESSED;
            } else {
                self.deflate &= !COMPRESSED;
            }
        }
        self.frame = b;
        self.header_left = NEED_BYTE1;
        Ok(())
    }

    fn read_byte1(&mut self, b: u8) -> Result<(), ScanError> {
        if b & 0x80 == 0 {
            return Err(ScanError::Protocol("unmasked client frame"));
        }
        let len7 = b & 0x7F;
        if self.frame & 0x08 != 0 && len7 > 125 {
            return Err(ScanError::Protocol("control frame too long"));
        }
        self.remaining = 0;
        match len7 {
            126 => self.header_left = 2 + MASK_LEN,
            127 => self.header_left = 8 + MASK_LEN,
            len => {
                self.header_left = MASK_LEN;
                self.set_length(u64::from(len))?;
            }
        }
        Ok(())
    }

    fn read_length_byte(&mut self, b: u8) -> Result<(), ScanError> {
        if self.header_left == 8 + MASK_LEN && b & 0x80 != 0 {
            return Err(ScanError::Protocol("invalid frame length"));
        }
        self.header_left -= 1;
        let partial = self.remaining << 8 | u64::from(b);
        let bytes_left = u32::from(self.header_left - MASK_LEN);
        if bytes_left > 0 {
            // Whatever the remaining bytes are, the length is at least
            // `partial << 8*bytes_left`, so fail as soon as that exceeds the limit.
            if partial > self.max_frame_size >> (8 * bytes_left) {
                return Err(ScanError::FrameTooLarge);
            }
            self.remaining = partial;
            Ok(())
        } else {
            self.set_length(partial)
        }
    }

    fn set_length(&mut self, len: u64) -> Result<(), ScanError> {
        if len > self.max_frame_size {
            return Err(ScanError::FrameTooLarge);
        }
        if self.opcode() & 0x08 == 0 {
            // A data frame: a new message starts from 0, a continuation adds up.
            let so_far = if self.opcode() == OP_CONTINUATION {
                self.message_len
            } else {
                0
            };
            self.message_len = so_far + len;
            if self.message_len > self.max_message_size {
                return Err(ScanError::MessageTooLarge);
            }
        }
        self.remaining = len;
        Ok(())
    }

    fn opcode(&self) -> u8 {
        self.frame & 0x0F
    }

    /// Payload of an uncompressed text frame or of a continuation of a fragmented,
    /// uncompressed text message.
    fn text_payload(&self) -> bool {
        let op = self.opcode();
        let text = op == OP_TEXT || (op == OP_CONTINUATION && self.fragmented == OP_TEXT);
        text && self.deflate & COMPRESSED == 0
    }

    fn check_text(&mut self, masked: &[u8]) -> Result<(), ScanError> {
        // Between characters, whole words of ASCII need no more than a look at their
        // high bits: skip them eight bytes (a multiple of 4, so the mask stays
        // aligned) at a time; the first non-ASCII word and all after it go through
        // the validator.
        let mut ascii = 0;
        if self.utf8 == Utf8State::Accept {
            let [m0, m1, m2, m3] = self.mask;
            let wide = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
            for word in masked.chunks_exact(8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(word);
                if (u64::from_ne_bytes(w) ^ wide) & 0x8080_8080_8080_8080 != 0 {
                    break;
                }
                ascii += 8;
            }
        }
        // All ASCII, the common case: no block to set up.
        let rest = &masked[ascii..];
        if !rest.is_empty() {
            // A multiple of 4 so every block starts at mask[0].
            let mut buf = [0u8; 64];
            for block in rest.chunks(buf.len()) {
                let plain = &mut buf[..block.len()];
                for (i, (p, &m)) in plain.iter_mut().zip(block).enumerate() {
                    *p = m ^ self.mask[i & 3];
                }
                self.utf8 = self.utf8.feed(plain).ok_or(ScanError::InvalidUtf8)?;
            }
        }
        self.mask.rotate_left(masked.len() & 3);
        Ok(())
    }

    fn finish_frame(&mut self) -> Result<(), ScanError> {
        let op = self.opcode();
        if !matches!(op, OP_CONTINUATION | OP_TEXT | OP_BINARY) {
            // Control frames neither end nor start a message.
            return Ok(());
        }
        if self.frame & 0x80 != 0 {
            if self.text_payload() && self.utf8 != Utf8State::Accept {
                return Err(ScanError::InvalidUtf8);
            }
            self.fragmented = OP_CONTINUATION;
        } else if op != OP_CONTINUATION {
            self.fragmented = op;
        }
        Ok(())
    }
}

/// Position inside a UTF-8 sequence, named after what the next byte must be
/// (Unicode 3.9, table 3-7). Only used for the at most 3 bytes of a sequence that
/// straddles a chunk boundary; whole runs go through `str::from_utf8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Utf8State {
    /// At a character boundary.
    Accept,
    /// 1, 2 or 3 plain continuation bytes (80..=BF) still needed.
    Cont1,
    /// See `Cont1`.
    Cont2,
    /// See `Cont1`.
    Cont3,
    /// After E0: A0..=BF (rules out overlongs).
    AfterE0,
    /// After ED: 80..=9F (rules out surrogates).
    AfterED,
    /// After F0: 90..=BF (rules out overlongs).
    AfterF0,
    /// After F4: 80..=8F (rules out code points above U+10FFFF).
    AfterF4,
}

impl Utf8State {
    fn step(self, b: u8) -> Option<Self> {
        use Utf8State::*;
        let (range, next) = match self {
            Accept => {
                return match b {
                    0x00..=0x7F => Some(Accept),
                    0xC2..=0xDF => Some(Cont1),
                    0xE0 => Some(AfterE0),
                    0xE1..=0xEC | 0xEE..=0xEF => Some(Cont2),
                    0xED => Some(AfterED),
                    0xF0 => Some(AfterF0),
                    0xF1..=0xF3 => Some(Cont3),
                    0xF4 => Some(AfterF4),
                    _ => None,
                };
            }
            Cont1 => (0x80..=0xBF, Accept),
            Cont2 => (0x80..=0xBF, Cont1),
            Cont3 => (0x80..=0xBF, Cont2),
            AfterE0 => (0xA0..=0xBF, Cont1),
            AfterED => (0x80..=0x9F, Cont1),
            AfterF0 => (0x90..=0xBF, Cont2),
            AfterF4 => (0x80..=0x8F, Cont2),
        };
        range.contains(&b).then_some(next)
    }

    /// State after `bytes`, or None once they cannot be a prefix of valid UTF-8.
    fn feed(mut self, mut bytes: &[u8]) -> Option<Self> {
        while self != Utf8State::Accept {
            let Some((&b, rest)) = bytes.split_first() else {
                return Some(self);
            };
            self = self.step(b)?;
            bytes = rest;
        }
        match str::from_utf8(bytes) {
            Ok(_) => Some(Utf8State::Accept),
            // `error_len() == None`: the input ends inside a sequence that is valid so
            // far; remember how far it got.
            Err(e) if e.error_len().is_none() => bytes[e.valid_up_to()..]
                .iter()
                .try_fold(Utf8State::Accept, |s, &b| s.step(b)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FrameScanner {
        /// The verdict without the boundary before an error.
        fn scan_e(&mut self, bytes: &[u8]) -> Result<usize, ScanError> {
            self.scan(bytes).map_err(|r| r.error)
        }
    }

    const MAX: u64 = 1 << 20;

    /// A masked client frame with the given byte0 and (unmasked) payload.
    fn frame(byte0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![byte0];
        let len = payload.len();
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn text(payload: &[u8]) -> Vec<u8> {
        frame(0x81, payload, KEY)
    }

    fn scan_all(bytes: &[u8]) -> Result<usize, ScanError> {
        FrameScanner::new(MAX, MAX).scan_e(bytes)
    }

    fn proto(reason: &'static str) -> Result<usize, ScanError> {
        Err(ScanError::Protocol(reason))
    }

    #[test]
    fn scanner_is_small() {
        assert!(std::mem::size_of::<FrameScanner>() <= 48);
    }

    #[test]
    fn rsv1_only_with_compression_and_only_on_a_first_frame() {
        let compressed = frame(0xC1, b"\xff\xfe not UTF-8 before inflating", KEY);
        assert_eq!(scan_all(&compressed), proto("reserved bits set"));
        let mut s = FrameScanner::new(MAX, MAX);
        s.allow_compression(true);
        // A compressed text message is not checked as UTF-8 here.
        assert_eq!(s.scan_e(&compressed), Ok(compressed.len()));
        // Fragmented: RSV1 on the first frame; a continuation with RSV1 is refused.
        let first = frame(0x41, b"\xff", KEY);
        assert_eq!(s.scan_e(&first), Ok(first.len()));
        let bad = frame(0xC0, b"\xff", KEY);
        assert_eq!(
            s.scan_e(&bad),
            proto("RSV1 on a control or continuation frame")
        );
        let mut s = FrameScanner::new(MAX, MAX);
        s.allow_compression(true);
        let ping = frame(0xC9, b"", KEY);
        assert_eq!(
            s.scan_e(&ping),
            proto("RSV1 on a control or continuation frame")
        );
        // An uncompressed text message after a compressed one is checked again.
        let mut s = FrameScanner::new(MAX, MAX);
        s.allow_compression(true);
        assert_eq!(s.scan_e(&compressed), Ok(compressed.len()));
        assert_eq!(s.scan_e(&text(b"\xff")), Err(ScanError::InvalidUtf8));
        // RSV2 and RSV3 stay errors.
        let mut s = FrameScanner::new(MAX, MAX);
        s.allow_compression(true);
        assert_eq!(s.scan_e(&frame(0xA1, b"", KEY)), proto("reserved bits set"));
    }

    #[test]
    fn single_frame() {
        let f = text(b"Hello");
        let mut s = FrameScanner::new(MAX, MAX);
        assert!(s.between_messages());
        assert_eq!(s.scan_e(&f), Ok(f.len()));
        assert!(s.between_messages());
    }

    #[test]
    fn many_frames_and_partial_tail() {
        let mut stream = text(b"one");
        stream.extend(frame(0x82, &[0xFF; 300], KEY));
        stream.extend(frame(0x89, b"ping", KEY));
        let complete = stream.len();
        let tail = text("ünïcödé".as_bytes());
        stream.extend_from_slice(&tail[..tail.len() - 3]);
        let mut s = FrameScanner::new(MAX, MAX);
        assert_eq!(s.scan_e(&stream), Ok(complete));
        assert!(!s.at_frame_boundary());
        assert!(!s.between_messages());
        assert_eq!(s.scan_e(&tail[tail.len() - 3..]), Ok(3));
        assert!(s.between_messages());
    }

    #[test]
    fn byte_at_a_time() {
        let mut stream = text(b"");
        stream.extend(text("héllo wörld €𝄞".as_bytes()));
        stream.extend(frame(0x82, &[7; 200], KEY));
        let mut ends = Vec::new();
        let mut s = FrameScanner::new(MAX, MAX);
        for (i, b) in stream.iter().enumerate() {
            match s.scan_e(std::slice::from_ref(b)) {
                Ok(1) => ends.push(i + 1),
                Ok(0) => {}
                other => panic!("unexpected {other:?} at {i}"),
            }
            assert_eq!(s.at_frame_boundary(), ends.last() == Some(&(i + 1)));
        }
        let l0 = text(b"").len();
        let l1 = l0 + text("héllo wörld €𝄞".as_bytes()).len();
        assert_eq!(ends, [l0, l1, stream.len()]);
    }

    #[test]
    fn extended_lengths() {
        let f16 = frame(0x82, &[1; 1000], KEY);
        assert_eq!(f16[1], 0x80 | 126);
        assert_eq!(scan_all(&f16), Ok(f16.len()));
        let f64 = text(&vec![b'a'; 70_000]);
        assert_eq!(f64[1], 0x80 | 127);
        let mut s = FrameScanner::new(MAX, MAX);
        assert_eq!(s.scan_e(&f64[..f64.len() - 1]), Ok(0));
        assert_eq!(s.scan_e(&f64[f64.len() - 1..]), Ok(1));
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(scan_all(&[0xC1]), proto("reserved bits set"));
        assert_eq!(scan_all(&[0x91]), proto("reserved bits set"));
        assert_eq!(scan_all(&[0xA2]), proto("reserved bits set"));
        for op in (3..=7).chain(11..=15) {
            assert_eq!(scan_all(&[0x80 | op]), proto("reserved opcode"));
        }
        for op in 8..=10 {
            assert_eq!(scan_all(&[op]), proto("fragmented control frame"));
            assert_eq!(
                scan_all(&[0x80 | op, 0x80 | 126]),
                proto("control frame too long")
            );
            let ok = frame(0x80 | op, &[0; 125], KEY);
            assert_eq!(scan_all(&ok), Ok(ok.len()));
        }
        assert_eq!(scan_all(&[0x81, 0x05]), proto("unmasked client frame"));
        assert_eq!(scan_all(&[0x80]), proto("continuation without start"));
        assert_eq!(scan_all(&[0x00]), proto("continuation without start"));
        for first in [0x01, 0x02] {
            for next in [0x81, 0x82, 0x01, 0x02] {
                let mut st = frame(first, b"a", KEY);
                st.push(next);
                assert_eq!(scan_all(&st), proto("expected continuation"));
            }
        }
        let mut st = vec![0x82, 0x80 | 127, 0x80];
        assert_eq!(
            FrameScanner::new(u64::MAX, u64::MAX).scan_e(&st),
            proto("invalid frame length")
        );
        st[2] = 0x7F;
        assert_eq!(FrameScanner::new(u64::MAX, u64::MAX).scan_e(&st), Ok(0));
    }

    #[test]
    fn frame_too_large_at_header() {
        // 2^40: rejected as soon as the third length byte shows it exceeds MAX.
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(scan_all(&hdr[..5]), Err(ScanError::FrameTooLarge));
        assert_eq!(scan_all(&hdr[..4]), Ok(0));
        // max + 1 is only known at the last length byte.
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&(MAX + 1).to_be_bytes());
        assert_eq!(scan_all(&hdr[..9]), Ok(0));
        assert_eq!(scan_all(&hdr), Err(ScanError::FrameTooLarge));
        let mut hdr = vec![0x82, 0x80 | 127];
        hdr.extend_from_slice(&MAX.to_be_bytes());
        assert_eq!(scan_all(&hdr), Ok(0));
        // Small limits apply to 7- and 16-bit lengths too.
        assert_eq!(
            FrameScanner::new(100, u64::MAX).scan_e(&[0x82, 0x80 | 101]),
            Err(ScanError::FrameTooLarge)
        );
        assert_eq!(
            FrameScanner::new(300, u64::MAX).scan_e(&[0x82, 0x80 | 126, 0x01, 0x2D]),
            Err(ScanError::FrameTooLarge)
        );
        assert_eq!(
            FrameScanner::new(300, u64::MAX).scan_e(&[0x82, 0x80 | 126, 0x01, 0x2C]),
            Ok(0)
        );
    }

    #[test]
    fn zero_length_frames() {
        let mut st = frame(0x01, b"", KEY);
        st.extend(frame(0x00, b"", KEY));
        st.extend(frame(0x80, b"", KEY));
        st.extend(text(b""));
        st.extend(frame(0x88, b"", KEY));
        assert_eq!(scan_all(&st), Ok(st.len()));
    }

    #[test]
    fn invalid_utf8_fails_mid_frame() {
        let mut payload = b"hello".to_vec();
        payload.extend_from_slice(&[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xF4, 0x90]);
        payload.extend_from_slice(&[b'x'; 100]);
        let f = text(&payload);
        let bad_end = f.len() - 100;
        let mut s = FrameScanner::new(MAX, MAX);
        assert_eq!(s.scan_e(&f[..bad_end - 1]), Ok(0));
        assert_eq!(
            s.scan_e(&f[bad_end - 1..bad_end]),
            Err(ScanError::InvalidUtf8)
        );
        // Same in one chunk that stops right after the bad byte.
        assert_eq!(scan_all(&f[..bad_end]), Err(ScanError::InvalidUtf8));
        for bad in [
            &[0xC0, 0x80][..],   // overlong
            &[0xE0, 0x80],       // overlong
            &[0xED, 0xA0],       // surrogate
            &[0xF5],             // beyond U+10FFFF
            &[0x80],             // stray continuation
            &[0xE2, 0x82, b'a'], // truncated sequence
            &[0xF0, 0x80],       // overlong
        ] {
            let mut p = bad.to_vec();
            p.extend_from_slice(b"padding");
            let f = text(&p);
            assert_eq!(
                scan_all(&f[..6 + bad.len()]),
                Err(ScanError::InvalidUtf8),
                "{bad:x?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_across_fragments() {
        let mut s = FrameScanner::new(MAX, MAX);
        let first = frame(0x01, b"ab\xF4", KEY);
        assert_eq!(s.scan_e(&first), Ok(first.len()));
        assert!(!s.between_messages());
        let second = frame(0x80, b"\x90\x80\x80", [1, 2, 3, 4]);
        assert_eq!(s.scan_e(&second[..7]), Err(ScanError::InvalidUtf8));
    }

    #[test]
    fn ascii_words_then_anything_at_every_offset_and_split() {
        // The ASCII fast path skips whole words: whatever follows them, wherever the
        // chunks end, the verdict must be std's.
        for at in 0..40 {
            for tail in [&b"\xC3\xA9 ok"[..], b"\xFF", b"\xE2\x82", b"\xED\xA0\x80"] {
                let mut msg = vec![b'a'; at];
                msg.extend_from_slice(tail);
                msg.extend_from_slice(b"0123456789abcdef");
                let valid = std::str::from_utf8(&msg).is_ok();
                let st = frame(0x81, &msg, KEY);
                for size in [1, 3, 8, 13, st.len()] {
                    let mut s = FrameScanner::new(MAX, MAX);
                    let ok = st.chunks(size).all(|c| s.scan(c).is_ok());
                    assert_eq!(ok, valid, "at {at}, tail {tail:?}, chunks of {size}");
                }
            }
        }
    }

    #[test]
    fn valid_utf8_split_everywhere() {
        let msg = "aé€𝄞 ünï 😀".as_bytes();
        for split in 0..=msg.len() {
            let mut st = frame(0x01, &msg[..split], KEY);
            st.extend(frame(0x89, b"\xFF\xFE", KEY)); // ping payload is not checked
            st.extend(frame(0x80, &msg[split..], [9, 8, 7, 6]));
            let mut s = FrameScanner::new(MAX, MAX);
            for chunk in st.chunks(3) {
                s.scan_e(chunk).unwrap();
            }
            assert!(s.between_messages());
        }
    }

    #[test]
    fn incomplete_sequence_at_fin() {
        let f = text(b"ok\xE2\x82");
        assert_eq!(scan_all(&f[..f.len() - 1]), Ok(0));
        assert_eq!(scan_all(&f), Err(ScanError::InvalidUtf8));
        let mut st = frame(0x01, b"ok\xE2\x82", KEY);
        st.extend(frame(0x80, b"", KEY));
        assert_eq!(scan_all(&st), Err(ScanError::InvalidUtf8));
        // A non-final fragment may end mid-character.
        let st = frame(0x01, b"ok\xE2\x82", KEY);
        assert_eq!(scan_all(&st), Ok(st.len()));
    }

    #[test]
    fn message_limit_counts_fragments_at_their_headers() {
        let mut s = FrameScanner::new(100, 150);
        let first = frame(0x02, &[1; 100], KEY);
        assert_eq!(s.scan_e(&first), Ok(first.len()));
        // A ping in between counts for nothing.
        let ping = frame(0x89, &[2; 100], KEY);
        assert_eq!(s.scan_e(&ping), Ok(ping.len()));
        // 100 + 51 > 150: refused at the length byte, before any payload.
        let over = frame(0x80, &[3; 51], KEY);
        assert_eq!(s.scan_e(&over[..2]), Err(ScanError::MessageTooLarge));
        // Exactly at the limit is fine, and the next message starts from 0.
        let mut s = FrameScanner::new(100, 150);
        let mut st = frame(0x02, &[1; 100], KEY);
        st.extend(frame(0x80, &[1; 50], KEY));
        st.extend(frame(0x82, &[1; 100], KEY));
        assert_eq!(s.scan_e(&st), Ok(st.len()));
    }

    #[test]
    fn non_text_payloads_unchecked() {
        let mut st = frame(0x82, b"\xFF\xC0", KEY);
        st.extend(frame(0x02, b"\xED\xA0", KEY));
        st.extend(frame(0x80, b"\xF5", KEY));
        st.extend(frame(0x88, b"\x03\xE8\xFF", KEY));
        st.extend(frame(0x8A, b"\xFF", KEY));
        assert_eq!(scan_all(&st), Ok(st.len()));
    }

    #[test]
    fn between_messages_tracks_fragmentation() {
        let mut s = FrameScanner::new(MAX, MAX);
        let first = frame(0x01, b"frag", KEY);
        assert_eq!(s.scan_e(&first[..3]), Ok(0));
        assert!(!s.at_frame_boundary() && !s.between_messages());
        s.scan_e(&first[3..]).unwrap();
        assert!(s.at_frame_boundary() && !s.between_messages());
        let ping = frame(0x89, b"p", KEY);
        assert_eq!(s.scan_e(&ping), Ok(ping.len()));
        assert!(s.at_frame_boundary() && !s.between_messages());
        let mid = frame(0x00, b"ment", KEY);
        s.scan_e(&mid).unwrap();
        assert!(!s.between_messages());
        let last = frame(0x80, b"ed", KEY);
        assert_eq!(s.scan_e(&last), Ok(last.len()));
        assert!(s.between_messages());
        // A new message may start now.
        let f = frame(0x82, b"", KEY);
        assert_eq!(s.scan_e(&f), Ok(f.len()));
    }

    struct Rng(crate::testutil::XorShift);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(crate::testutil::XorShift(seed))
        }
        fn next(&mut self) -> u64 {
            self.0.next()
        }
        fn below(&mut self, n: usize) -> usize {
            self.0.below(n as u64) as usize
        }
        fn key(&mut self) -> [u8; 4] {
            (self.next() as u32).to_ne_bytes()
        }
        /// Mostly ASCII with random high bytes, so both valid and invalid UTF-8 occur.
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len)
                .map(|_| match self.below(4) {
                    0 => 0x80 | self.next() as u8,
                    _ => b'a' + self.below(26) as u8,
                })
                .collect()
        }
        fn utf8(&mut self, len: usize) -> Vec<u8> {
            const CHARS: [char; 8] = [
                'a',
                'é',
                '€',
                '𝄞',
                '\u{10FFFF}',
                '\u{D7FF}',
                'Z',
                '\u{E000}',
            ];
            let s: String = (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect();
            s.into_bytes()
        }
    }

    /// Random message split into fragments with a ping between some of them; returns
    /// the frames' end offsets.
    fn push_message(rng: &mut Rng, stream: &mut Vec<u8>, op: u8, payload: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut rest = payload;
        let mut first = true;
        loop {
            let take = if rest.is_empty() || rng.below(3) == 0 {
                rest.len()
            } else {
                rng.below(rest.len() + 1)
            };
            let (part, tail) = rest.split_at(take);
            let fin = if tail.is_empty() { 0x80 } else { 0 };
            let opcode = if first { op } else { OP_CONTINUATION };
            stream.extend(frame(fin | opcode, part, rng.key()));
            ends.push(stream.len());
            if tail.is_empty() {
                return ends;
            }
            if rng.below(3) == 0 {
                let len = rng.below(20);
                let ping = rng.bytes(len);
                stream.extend(frame(0x89, &ping, rng.key()));
                ends.push(stream.len());
            }
            first = false;
            rest = tail;
        }
    }

    /// Feeds `stream` in random chunks, returning each chunk's range with the absolute
    /// boundary reported for it (the chunk start when 0 was returned), and the verdict.
    type Chunks = Vec<(usize, usize, usize)>;

    fn scan_chunked(rng: &mut Rng, stream: &[u8]) -> (Chunks, Result<(), ScanError>) {
        let mut s = FrameScanner::new(MAX, MAX);
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let n = match rng.below(3) {
                0 => 1,
                1 => 1 + rng.below(16),
                _ => 1 + rng.below(2000),
            }
            .min(stream.len() - pos);
            match s.scan_e(&stream[pos..pos + n]) {
                Ok(k) => chunks.push((pos, pos + n, pos + k)),
                Err(e) => return (chunks, Err(e)),
            }
            pos += n;
        }
        (chunks, Ok(()))
    }

    #[test]
    fn random_valid_streams_chunking_invariant() {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let len = [0, 5, 125, 126, 300, 70_000][rng.below(6)];
                let len = rng.below(len + 1);
                let (op, payload) = match rng.below(3) {
                    0 => (OP_BINARY, rng.bytes(len)),
                    _ => (OP_TEXT, rng.utf8(len / 3)),
                };
                ends.extend(push_message(&mut rng, &mut stream, op, &payload));
            }
            let mut whole = FrameScanner::new(MAX, MAX);
            assert_eq!(whole.scan_e(&stream), Ok(stream.len()));
            assert!(whole.between_messages());
            let (chunks, verdict) = scan_chunked(&mut rng, &stream);
            assert_eq!(verdict, Ok(()));
            for (start, end, boundary) in chunks {
                let last_end = ends.iter().rev().find(|&&e| e > start && e <= end);
                assert_eq!(boundary, *last_end.unwrap_or(&start));
            }
        }
    }

    #[test]
    fn random_text_agrees_with_std() {
        let mut rng = Rng::new(0x1234_5678_9ABC_DEF1);
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..2000 {
            let len = rng.below(40);
            let payload = rng.bytes(len);
            let mut stream = Vec::new();
            push_message(&mut rng, &mut stream, OP_TEXT, &payload);
            let expected = str::from_utf8(&payload).is_ok();
            let whole = FrameScanner::new(MAX, MAX).scan_e(&stream).map(|_| ());
            let (_, chunked) = scan_chunked(&mut rng, &stream);
            assert_eq!(whole, chunked);
            assert_eq!(whole.is_ok(), expected, "{payload:x?}");
            if expected {
                valid += 1;
            } else {
                assert_eq!(whole, Err(ScanError::InvalidUtf8));
                invalid += 1;
            }
        }
        assert!(valid > 100 && invalid > 100);
    }

    #[test]
    fn fails_at_first_impossible_byte() {
        let mut rng = Rng::new(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..2000 {
            let len = 1 + rng.below(30);
            let payload = rng.bytes(len);
            // The first byte after which no continuation can make the prefix valid.
            let fail_at = (1..=payload.len()).find(
                |&k| matches!(str::from_utf8(&payload[..k]), Err(e) if e.error_len().is_some()),
            );
            let f = text(&payload);
            let header = f.len() - payload.len();
            let mut s = FrameScanner::new(MAX, MAX);
            let got = (0..f.len()).find(|&i| s.scan_e(&f[i..i + 1]).is_err());
            let expected = match fail_at {
                Some(k) => Some(header + k - 1),
                None if str::from_utf8(&payload).is_err() => Some(f.len() - 1),
                None => None,
            };
            assert_eq!(got, expected, "{payload:x?}");
        }
    }

    /// The one-step path for small whole messages agrees with the byte-by-byte path
    /// (which it never takes) on random streams: small and larger text and binary
    /// messages, valid and invalid UTF-8, fragments, pings, and limits under 125.
    #[test]
    fn small_messages_in_one_step_agree_with_byte_by_byte() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let byte0s = [0x81, 0x82, 0x01, 0x02, 0x80, 0x00, 0x89, 0x8A, 0xC1, 0x83];
        let alphabet = [b'a', b'z', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF, 0x80];
        for round in 0..3000 {
            let mut stream = Vec::new();
            for _ in 0..1 + next(6) {
                let len = if next(4) == 0 {
                    126 + next(200)
                } else {
                    next(40)
                };
                let payload: Vec<u8> = (0..len)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                    .collect();
                let key = [next(256) as u8, 1, next(256) as u8, 3];
                stream.extend(frame(
                    byte0s[next(byte0s.len() as u64) as usize],
                    &payload,
                    key,
                ));
            }
            let (frame_max, message_max) = match round % 3 {
                0 => (MAX, MAX),
                1 => (20, MAX),
                _ => (MAX, 30),
            };
            let mut whole = FrameScanner::new(frame_max, message_max);
            let mut bytewise = FrameScanner::new(frame_max, message_max);
            let one = whole.scan(&stream);
            let mut done = 0;
            let mut verdict = Ok(0);
            for (i, b) in stream.iter().enumerate() {
                match bytewise.scan(std::slice::from_ref(b)) {
                    Ok(1) => done = i + 1,
                    Ok(_) => {}
                    Err(Rejected { error, .. }) => {
                        verdict = Err(Rejected {
                            complete: done,
                            error,
                        });
                        break;
                    }
                }
            }
            let verdict = verdict.map(|_: usize| done);
            assert_eq!(one, verdict, "round {round}: {stream:x?}");
        }
    }
}
