//! permessage-deflate on a connection: what it negotiated (one byte in `Conn`, so that
//! an idle connection that negotiated shared compression costs nothing more), and the
//! loop's codec, which every connection shares.
//!
//! Shared mode needs nothing per connection. Window mode (context takeover) keeps the
//! connection's recent plaintext in a side table of the loop, fed to the shared codec
//! as a dictionary (see `protocol::deflate`). Without the `deflate` feature nothing is
//! ever negotiated and these paths are never taken.

use crate::protocol::extensions::{Agreement, DeflateConfig};
use std::collections::HashMap;

#[cfg(feature = "deflate")]
use crate::protocol::deflate::{ContextWindows, Deflater, InflateError, Inflater};

/// What a connection negotiated, in one byte: 0 for nothing; else bit 7, bit 6 when
/// it keeps context (its windows are in the loop's side table), and in the low 4 bits
/// the window bits our output must stay within.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Negotiated(u8);

impl Negotiated {
    pub(crate) fn new(agreement: &Agreement) -> Negotiated {
        let takeover = if agreement.takeover() { 0x40 } else { 0 };
        Negotiated(0x80 | takeover | (agreement.outbound_window_bits() & 0x0F))
    }

    pub(crate) fn is_on(self) -> bool {
        self.0 & 0x80 != 0
    }

    #[cfg_attr(not(feature = "deflate"), allow(dead_code))]
    fn takeover(self) -> bool {
        self.0 & 0x40 != 0
    }

    fn window_bits(self) -> u8 {
        self.0 & 0x0F
    }
}

/// The per-connection windows of window mode, by slot key.
#[cfg(feature = "deflate")]
pub(crate) type Windows = HashMap<u32, ContextWindows>;
#[cfg(not(feature = "deflate"))]
pub(crate) type Windows = HashMap<u32, ()>;

/// The loop's compression state: its codec (made on first use: ≈ 300 KB) and the
/// windows of connections that keep context.
pub(crate) struct Codec {
    config: DeflateConfig,
    #[cfg(feature = "deflate")]
    engines: Option<Box<(Deflater, Inflater)>>,
    pub(crate) windows: Windows,
    /// Compressed payload bytes received and sent, and what they stood for.
    pub(crate) stats: CompressionStats,
}

/// Bytes through the codec.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CompressionStats {
    pub(crate) in_compressed: u64,
    pub(crate) in_plain: u64,
    pub(crate) out_compressed: u64,
    pub(crate) out_plain: u64,
}

/// Why a compressed message was refused, as a close code and reason.
pub(crate) type Refusal = (u16, &'static str);

impl Codec {
    pub(crate) fn new(config: DeflateConfig) -> Codec {
        Codec {
            config,
            #[cfg(feature = "deflate")]
            engines: None,
            windows: HashMap::new(),
            stats: CompressionStats::default(),
        }
    }

    /// A connection in slot `key` opened with `agreement`.
    pub(crate) fn opened(&mut self, key: u32, agreement: &Agreement) {
        #[cfg(feature = "deflate")]
        if let Some(w) = ContextWindows::new(agreement) {
            self.windows.insert(key, w);
        }
        #[cfg(not(feature = "deflate"))]
        let _ = (key, agreement);
    }

    /// The connection in slot `key` is gone.
    pub(crate) fn closed(&mut self, key: u32) {
        if !self.windows.is_empty() {
            self.windows.remove(&key);
        }
    }

    /// Whether a message of `len` bytes is worth compressing for `n`.
    pub(crate) fn wants(&self, n: Negotiated, len: usize) -> bool {
        n.is_on() && self.config.should_compress(len)
    }

    /// Inflates a compressed message of the connection in slot `key` (its whole
    /// payload, fragments joined), into `out`; at most `limit` bytes.
    #[cfg(feature = "deflate")]
    pub(crate) fn inflate(
        &mut self,
        n: Negotiated,
        key: u32,
        payload: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        let (_, inflater) = Self::engines(&mut self.engines, self.config.level);
        let windows = if n.takeover() {
            self.windows.get_mut(&key)
        } else {
            None
        };
        let dictionary = windows.as_deref().map_or(&[][..], |w| w.inbound());
        let result = inflater.inflate(dictionary, payload, limit, out);
        self.stats.in_compressed += payload.len() as u64;
        match result {
            Ok(()) => {
                self.stats.in_plain += out.len() as u64;
                if let Some(w) = windows {
                    w.record_inbound(out);
                }
                Ok(())
            }
            Err(InflateError::TooLarge) => Err((1009, "message too large once inflated")),
            Err(InflateError::Invalid(why)) => Err((1007, why)),
        }
    }

    #[cfg(not(feature = "deflate"))]
    pub(crate) fn inflate(
        &mut self,
        _: Negotiated,
        _: u32,
        _: &[u8],
        _: usize,
        _: &mut Vec<u8>,
    ) -> Result<(), Refusal> {
        Err((1002, "compression not negotiated"))
    }

    /// Compresses `msg` for the connection in slot `key` into `out` (the payload of a
    /// frame with RSV1); false if it cannot, and the message goes out plain.
    #[cfg(feature = "deflate")]
    pub(crate) fn deflate(
        &mut self,
        n: Negotiated,
        key: u32,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let (deflater, _) = Self::engines(&mut self.engines, self.config.level);
        let window = if n.takeover() {
            self.windows.get_mut(&key)
        } else {
            None
        };
        let dictionary = window.as_deref().map_or(&[][..], |w| w.outbound());
        let start = out.len();
        if deflater
            .compress(n.window_bits(), dictionary, msg, out)
            .is_err()
        {
            out.truncate(start);
            return false;
        }
        if let Some(w) = window {
            w.record_outbound(msg);
        }
        self.stats.out_plain += msg.len() as u64;
        self.stats.out_compressed += (out.len() - start) as u64;
        true
    }

    #[cfg(not(feature = "deflate"))]
    pub(crate) fn deflate(&mut self, _: Negotiated, _: u32, _: &[u8], _: &mut Vec<u8>) -> bool {
        false
    }

    /// Compresses `msg` once for many connections (a topic's message) with no history,
    /// which every agreement can read; None if it cannot.
    #[cfg(feature = "deflate")]
    pub(crate) fn deflate_shared(&mut self, window_bits: u8, msg: &[u8]) -> Option<Vec<u8>> {
        let (deflater, _) = Self::engines(&mut self.engines, self.config.level);
        let mut out = Vec::new();
        deflater.compress(window_bits, &[], msg, &mut out).ok()?;
        Some(out)
    }

    /// A topic message compressed for many went out to the connection in slot `key`:
    /// its outbound history takes it in, as the peer's inflater does.
    #[cfg(feature = "deflate")]
    pub(crate) fn sent_shared(&mut self, n: Negotiated, key: u32, msg: &[u8], compressed: usize) {
        if n.takeover()
            && let Some(w) = self.windows.get_mut(&key)
        {
            w.record_outbound(msg);
        }
        self.stats.out_plain += msg.len() as u64;
        self.stats.out_compressed += compressed as u64;
    }

    #[cfg(not(feature = "deflate"))]
    pub(crate) fn deflate_shared(&mut self, _: u8, _: &[u8]) -> Option<Vec<u8>> {
        None
    }

    #[cfg(not(feature = "deflate"))]
    pub(crate) fn sent_shared(&mut self, _: Negotiated, _: u32, _: &[u8], _: usize) {}

    /// The window bits of a connection's output, for grouping topic subscribers.
    pub(crate) fn window_bits(n: Negotiated) -> u8 {
        n.window_bits()
    }

    #[cfg(feature = "deflate")]
    fn engines(
        engines: &mut Option<Box<(Deflater, Inflater)>>,
        level: u8,
    ) -> &mut (Deflater, Inflater) {
        engines.get_or_insert_with(|| Box::new((Deflater::new(level), Inflater::new())))
    }
}
