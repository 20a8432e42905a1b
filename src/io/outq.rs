//! A connection's unsent output: frames made for it alone, copied into buffers of its
//! own, and frames shared with other connections (reference-counted, never copied),
//! in order, written with one `writev` per flush.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Write};
use tungstenite::Bytes;

/// Payloads from this size on are queued by reference instead of copied: a copy costs
/// more than an extra iovec from about here.
const SHARE_FROM: usize = 8 << 10;

/// Borrowed payloads from this size on are written through at once when nothing
/// waits before them; smaller ones are cheaper copied into the turn's one `writev`
/// (16 KiB echoes written one by one took 1.27× the CPU per message).
const WRITE_THROUGH_FROM: usize = 64 << 10;

/// Capacity an emptied buffer may keep for the next frames; larger ones are freed.
const KEEP_CAPACITY: usize = 64 << 10;

/// Slices handed to one `writev` (Linux allows 1024; a few dozen cover any queue
/// that one flush can hope to write).
const MAX_IOVECS: usize = 64;

enum Segment {
    /// Frames made for this connection, back to back.
    Owned(Vec<u8>),
    /// Bytes shared with other connections or with the message they came from.
    Shared(Bytes),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(v) => v,
            Segment::Shared(b) => b,
        }
    }
}

/// Output the socket has not taken yet, sent in order before anything newer.
#[derive(Default)]
pub(crate) struct OutQueue {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    head: usize,
    /// Unsent bytes in all.
    len: usize,
    /// An emptied buffer kept for the next frames.
    spare: Vec<u8>,
}

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes made for this connection (an HTTP reply, a frame).
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        // An empty segment would make a writev of nothing, which reads as a failure.
        if bytes.is_empty() {
            return;
        }
        self.tail().extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends a frame: its header, then the payload — copied when small, shared
    /// when large, so a large message is never copied on its way out.
    pub(crate) fn push_frame(&mut self, header: &[u8], payload: &Bytes) {
        if payload.len() < SHARE_FROM {
            self.push_frame_copy(header, payload);
        } else {
            self.push_bytes(header);
            self.push_shared(payload.clone());
        }
    }

    /// Appends a frame whose payload is only borrowed for now. A large one (64 KiB) with
    /// nothing queued before it goes to `socket` at once, and only what the socket
    /// does not take is copied — most of the time nothing. A failed write is left for
    /// the next flush to meet.
    pub(crate) fn push_frame_through(
        &mut self,
        header: &[u8],
        payload: &[u8],
        socket: &mut dyn Write,
    ) {
        let mut written = 0;
        if payload.len() >= WRITE_THROUGH_FROM && self.is_empty() {
            let frame = [IoSlice::new(header), IoSlice::new(payload)];
            written = loop {
                match socket.write_vectored(&frame) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break 0,
                }
            };
        }
        match written.checked_sub(header.len()) {
            None => self.push_frame_copy(&header[written..], payload),
            Some(sent) => self.push_bytes(&payload[sent..]),
        }
    }

    /// Appends a frame, its payload copied.
    pub(crate) fn push_frame_copy(&mut self, header: &[u8], payload: &[u8]) {
        let tail = self.tail();
        tail.extend_from_slice(header);
        tail.extend_from_slice(payload);
        self.len += header.len() + payload.len();
    }

    /// Appends bytes shared with others, e.g. a frame built once for many connections.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.segments.push_back(Segment::Shared(bytes));
    }

    /// Writes as much as `w` takes, many segments per call; returns how many bytes
    /// went out. Everything did once `is_empty`.
    pub(crate) fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.segments.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut used = 0;
            for (i, seg) in self.segments.iter().take(MAX_IOVECS).enumerate() {
                let skip = if i == 0 { self.head } else { 0 };
                slices[i] = IoSlice::new(&seg.bytes()[skip..]);
                used += 1;
            }
            let written = match w.write_vectored(&slices[..used]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += written;
            self.advance(written);
        }
        if self.spare.capacity() > KEEP_CAPACITY {
            self.spare = Vec::new();
        }
        Ok(total)
    }

    /// The buffer new frames are appended to. A partly written front buffer is not
    /// appended to, so that what was sent of it is freed once the rest goes out.
    fn tail(&mut self) -> &mut Vec<u8> {
        let reusable = match self.segments.back() {
            Some(Segment::Owned(_)) => self.segments.len() > 1 || self.head == 0,
            _ => false,
        };
        if !reusable {
            let buf = std::mem::take(&mut self.spare);
            self.segments.push_back(Segment::Owned(buf));
        }
        match self.segments.back_mut() {
            Some(Segment::Owned(v)) => v,
            // Just made sure the back is an owned buffer.
            _ => unreachable!("the tail is an owned buffer"),
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front() else {
                return;
            };
            let rest = front.bytes().len() - self.head;
            if n < rest {
                self.head += n;
                return;
            }
            n -= rest;
            self.head = 0;
            if let Some(seg) = self.segments.pop_front() {
                self.recycle(seg);
            }
        }
    }

    fn recycle(&mut self, seg: Segment) {
        if let Segment::Owned(mut v) = seg
            && v.capacity() > self.spare.capacity()
            && v.capacity() <= KEEP_CAPACITY
        {
            v.clear();
            self.spare = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `budget` bytes per call, then blocks once.
    struct Trickle {
        got: Vec<u8>,
        budget: usize,
        calls: usize,
        block_every: usize,
    }

    impl Trickle {
        /// Takes at most `budget` bytes per call; every `block_every`-th call blocks.
        fn new(budget: usize, block_every: usize) -> Trickle {
            Trickle {
                got: Vec::new(),
                budget,
                calls: 0,
                block_every,
            }
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(self.block_every) {
                return Err(ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.budget - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn order_is_kept_across_owned_and_shared_segments_and_short_writes() {
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![7u8; SHARE_FROM + 5]);
        let mut want = Vec::new();
        for round in 0..50u8 {
            q.push_bytes(&[round; 3]);
            want.extend_from_slice(&[round; 3]);
            q.push_frame(&[0x82, 126], &big);
            want.extend_from_slice(&[0x82, 126]);
            want.extend_from_slice(&big);
            q.push_shared(Bytes::from_static(b"shared"));
            want.extend_from_slice(b"shared");
        }
        assert_eq!(q.len(), want.len());
        let mut w = Trickle::new(1000, 7);
        while q.write_to(&mut w).unwrap() > 0 || !q.is_empty() {}
        assert_eq!(w.got, want);
        assert!(q.is_empty());
        assert!(q.segments.is_empty());
    }

    #[test]
    fn a_partly_written_front_buffer_is_not_grown() {
        let mut q = OutQueue::default();
        q.push_bytes(&[1; 100]);
        let mut w = Trickle::new(10, 2);
        assert_eq!(q.write_to(&mut w).unwrap(), 10);
        q.push_bytes(&[2; 100]);
        assert_eq!(q.segments.len(), 2, "appended behind, not into, the front");
        q.push_bytes(&[3; 100]);
        assert_eq!(q.segments.len(), 2, "the new tail takes further frames");
        assert_eq!(q.len(), 290);
    }

    #[test]
    fn small_payloads_are_copied_and_large_ones_shared() {
        let mut q = OutQueue::default();
        q.push_frame(&[0x82, 3], &Bytes::from_static(b"abc"));
        q.push_frame(&[0x81, 1], &Bytes::from_static(b"d"));
        assert_eq!(q.segments.len(), 1);
        q.push_frame(&[0x82, 126, 0, 0], &Bytes::from(vec![0; SHARE_FROM]));
        assert_eq!(q.segments.len(), 2);
        assert!(matches!(q.segments.back(), Some(Segment::Shared(_))));
    }

    /// A borrowed frame written through: whatever the socket takes — nothing, part
    /// of the header, part of the payload, all — the socket then the queue hold the
    /// frame exactly once; behind queued output, or when small, nothing is written.
    #[test]
    fn frames_written_through_leave_exactly_the_rest_queued() {
        let header = [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        let payload: Vec<u8> = (0..WRITE_THROUGH_FROM as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let whole = [&header[..], &payload].concat();
        for budget in [
            0,
            1,
            3,
            4,
            5,
            4000,
            whole.len() - 1,
            whole.len(),
            usize::MAX,
        ] {
            let mut q = OutQueue::default();
            let block_every = if budget == 0 { 1 } else { usize::MAX };
            let mut w = Trickle::new(budget.min(whole.len()), block_every);
            q.push_frame_through(&header, &payload, &mut w);
            assert_eq!(w.calls, 1, "budget {budget}");
            assert_eq!(w.got.len() + q.len(), whole.len(), "budget {budget}");
            let mut rest = w.got.clone();
            let mut drain = Trickle::new(usize::MAX, usize::MAX);
            q.write_to(&mut drain).unwrap();
            rest.extend_from_slice(&drain.got);
            assert!(rest == whole, "budget {budget}");
            assert!(
                q.segments.is_empty(),
                "budget {budget}: no empty segment left"
            );
        }
        let mut q = OutQueue::default();
        q.push_bytes(b"queued first");
        let mut w = Trickle::new(usize::MAX, usize::MAX);
        q.push_frame_through(&header, &payload, &mut w);
        assert_eq!(w.calls, 0, "behind queued output: not written");
        assert_eq!(q.len(), 12 + whole.len());
        let mut q = OutQueue::default();
        q.push_frame_through(&[0x82, 126, 0x20, 0], &payload[..SHARE_FROM], &mut w);
        assert_eq!(w.calls, 0, "under 64 KiB: copied for the turn's writev");
        assert_eq!(q.len(), 4 + SHARE_FROM);
    }
}
