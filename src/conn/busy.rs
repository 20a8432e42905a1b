//! What a connection holds only while it has work in progress, and the per-loop pool
//! those boxes go back to: an idle connection keeps none of it.

use crate::config::Config;
use crate::io::outq::OutQueue;
use crate::protocol::scan::FrameScanner;
use std::time::Instant;

/// A connection's work in progress.
pub(crate) struct Busy {
    pub(crate) scanner: FrameScanner,
    /// The request during the handshake, then the bytes of an incomplete frame; a
    /// large frame read straight into it has all its room from the start (see
    /// `direct_end`).
    pub(crate) partial: Vec<u8>,
    /// While a large frame is read straight into `partial`: its length, header
    /// included (`partial` holds what arrived of it).
    pub(crate) direct_end: usize,
    /// Its masking key and where its payload starts (it is unmasked as it arrives).
    pub(crate) direct_key: ([u8; 4], usize),
    /// The payload so far of a fragmented message, unmasked.
    pub(crate) message: Vec<u8>,
    /// That message's opcode (text or binary).
    pub(crate) message_opcode: u8,
    pub(crate) out: OutQueue,
    /// While output is pending: when the socket last took any of it (the write
    /// deadline counts from here).
    pub(crate) out_since: Option<Instant>,
    /// Since when the unsent output has been over `max_pending_output` (the slow
    /// consumer deadline counts from here).
    pub(crate) over_since: Option<Instant>,
    /// When the connection started closing (the close deadline counts from here).
    pub(crate) since: Instant,
    /// Bytes read and thrown away while lingering.
    pub(crate) discarded: usize,
}

impl Busy {
    fn new(cfg: &Config, now: Instant) -> Box<Busy> {
        Box::new(Busy {
            scanner: FrameScanner::new(cfg.frame_limit() as u64, cfg.max_message as u64),
            partial: Vec::new(),
            direct_end: 0,
            direct_key: ([0; 4], 0),
            message: Vec::new(),
            message_opcode: 0,
            out: OutQueue::default(),
            out_since: None,
            over_since: None,
            since: now,
            discarded: 0,
        })
    }

    /// A large frame is being read straight into `partial`, which is sized for it.
    pub(crate) fn reading_direct(&self) -> bool {
        self.partial.len() < self.direct_end
    }

    /// Nothing in progress: the box can go back to the pool.
    pub(crate) fn is_idle(&self) -> bool {
        self.scanner.between_messages()
            && self.partial.is_empty()
            && self.message.is_empty()
            && self.out.is_empty()
    }
}

/// Busy boxes of connections that went idle, ready for the next busy one: warm
/// buffers instead of cold allocations.
pub(crate) struct Pool {
    // Boxed so moving a state between a connection and the pool copies one pointer.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Busy>>,
    max: usize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            boxes: Vec::new(),
            max,
        }
    }

    /// Boxes held for reuse.
    pub(crate) fn len(&self) -> usize {
        self.boxes.len()
    }

    pub(crate) fn take(&mut self, cfg: &Config, now: Instant) -> Box<Busy> {
        match self.boxes.pop() {
            Some(mut b) => {
                b.since = now;
                b
            }
            None => Busy::new(cfg, now),
        }
    }

    /// Takes back an idle box; buffers that grew past what a busy connection usually
    /// needs are freed rather than kept.
    pub(crate) fn put(&mut self, mut busy: Box<Busy>, cfg: &Config) {
        if self.boxes.len() >= self.max {
            return;
        }
        if busy.partial.capacity() > cfg.read_buffer {
            busy.partial = Vec::new();
        }
        busy.discarded = 0;
        busy.direct_end = 0;
        busy.out_since = None;
        busy.over_since = None;
        self.boxes.push(busy);
    }
}
