//! Frames as bytes: reading the frames the scanner approved, unmasking them, and
//! writing the headers and Close payloads the server sends. No I/O, no state.

/// Opcodes (RFC 6455 §5.2).
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;
/// The FIN bit of byte 0.
pub(crate) const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate, on its first frame).
pub(crate) const RSV1: u8 = 0x40;

/// Longest header the server writes: 2 bytes and a 64-bit length (server frames are
/// not masked).
pub(crate) const MAX_HEADER: usize = 10;

/// Largest control frame payload.
pub(crate) const MAX_CONTROL: usize = 125;

/// The header of a frame the scanner approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// FIN, RSV and opcode bits as received.
    pub(crate) byte0: u8,
    pub(crate) header_len: usize,
    pub(crate) payload_len: usize,
    pub(crate) mask: [u8; 4],
}

impl Head {
    pub(crate) fn opcode(&self) -> u8 {
        self.byte0 & 0x0F
    }

    pub(crate) fn is_final(&self) -> bool {
        self.byte0 & FIN != 0
    }

    /// Header and payload.
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// The length (header and payload) of the frame whose header starts `bytes`, once
/// the whole header is there; the payload may still be missing.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<usize> {
    let head = read_header(bytes)?;
    head.header_len.checked_add(head.payload_len)
}

/// Reads the header at the start of `bytes`, which must begin with a whole frame the
/// scanner approved (masked, lengths within limits). None if it does not, which the
/// scanner rules out; callers treat it as a protocol error rather than trusting it.
pub(crate) fn read_head(bytes: &[u8]) -> Option<Head> {
    read_header(bytes).filter(|head| bytes.len() - head.header_len >= head.payload_len)
}

/// Reads the masked header at the start of `bytes`, however much of the payload
/// follows it.
pub(crate) fn read_header(bytes: &[u8]) -> Option<Head> {
    let (&byte0, rest) = bytes.split_first()?;
    let (&byte1, rest) = rest.split_first()?;
    let (payload_len, rest) = match byte1 & 0x7F {
        126 => {
            let (len, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*len)), rest)
        }
        127 => {
            let (len, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*len), rest)
        }
        len => (u64::from(len), rest),
    };
    let (mask, rest) = rest.split_first_chunk::<4>()?;
    if byte1 & 0x80 == 0 {
        return None;
    }
    Some(Head {
        byte0,
        header_len: bytes.len() - rest.len(),
        payload_len: usize::try_from(payload_len).ok()?,
        mask: *mask,
    })
}

/// Unmasks a payload in place, 32 bytes at a time: a fixed-size inner loop the
/// compiler turns into vector XORs (32 is a multiple of 4, so the key stays aligned).
/// A zero key needs nothing, as for a frame unmasked as it arrived (its key zeroed).
/// (An AVX2 build of this loop was tried: on 1 MiB echoes it is memory-bound, and
/// perf showed no gain.)
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    if mask == [0; 4] {
        return;
    }
    let mut wide = [0u8; 32];
    for (i, m) in wide.iter_mut().enumerate() {
        *m = mask[i & 3];
    }
    let mut chunks = payload.chunks_exact_mut(32);
    for c in &mut chunks {
        for (b, m) in c.iter_mut().zip(&wide) {
            *b ^= m;
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(&wide) {
        *b ^= m;
    }
}

/// The header of a final, unmasked frame with `byte0` (FIN, RSV and opcode) and a
/// payload of `len` bytes: the bytes and how many of them are used.
pub(crate) fn header(byte0: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = byte0;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// What a Close frame's payload says, or the close code its error calls for.
pub(crate) fn read_close(payload: &[u8]) -> Result<(u16, &str), (u16, &'static str)> {
    match payload {
        [] => Ok((1005, "")),
        [_] => Err((1002, "close frame payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err((1002, "invalid close code"));
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| (1007, "invalid UTF-8 in close reason"))?;
            Ok((code, reason))
        }
    }
}

/// Codes a peer may send (RFC 6455 §7.4): 1004-1006 and 1015 are reserved for
/// reporting, 1016-2999 for future standards, below 1000 and from 5000 unused.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The payload of a Close frame: the code (none for 1005) and the reason, cut at a
/// character boundary to fit the 125 bytes of a control frame.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    if code == 1005 {
        return Vec::new();
    }
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(byte0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let (h, used) = header(byte0, payload.len());
        let mut f = h[..used].to_vec();
        f[1] |= 0x80;
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn headers_round_trip_at_every_length_class() {
        let mask = [1, 2, 3, 4];
        for len in [0, 1, 31, 32, 33, 125, 126, 65_535, 65_536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = masked(FIN | OP_BINARY, &payload, mask);
            let head = read_head(&f).unwrap();
            assert_eq!(head.payload_len, len);
            assert_eq!(head.frame_len(), f.len());
            assert_eq!(frame_len(&f[..head.header_len]), Some(f.len()));
            assert_eq!(frame_len(&f[..head.header_len - 1]), None);
            assert!(head.is_final());
            assert_eq!(head.opcode(), OP_BINARY);
            let body = &mut f[head.header_len..];
            unmask(body, head.mask);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn truncated_or_unmasked_frames_are_refused() {
        let f = masked(FIN | OP_TEXT, b"hello", [9, 9, 9, 9]);
        for cut in 0..f.len() {
            assert_eq!(read_head(&f[..cut]), None, "cut at {cut}");
        }
        let (h, used) = header(FIN | OP_TEXT, 0);
        assert_eq!(read_head(&h[..used]), None);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(read_close(b""), Ok((1005, "")));
        assert_eq!(
            read_close(&[3]),
            Err((1002, "close frame payload of one byte"))
        );
        assert_eq!(read_close(&close_payload(1000, "bye")), Ok((1000, "bye")));
        assert_eq!(read_close(&close_payload(4999, "")), Ok((4999, "")));
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65_535] {
            let p = [(bad >> 8) as u8, bad as u8];
            assert_eq!(read_close(&p).map_err(|e| e.0), Err(1002), "code {bad}");
        }
        assert_eq!(read_close(&[0x03, 0xE8, 0xFF]).map_err(|e| e.0), Err(1007));
        // Reasons are cut to the control frame limit at a character boundary.
        let long = "é".repeat(100);
        let p = close_payload(1000, &long);
        assert!(p.len() <= MAX_CONTROL);
        assert!(read_close(&p).is_ok());
        assert!(close_payload(1005, "ignored").is_empty());
    }

    /// `unmask` is the XOR with the key repeated, at every length near the edges of
    /// its 32-byte words; a zero key is none.
    #[test]
    fn unmask_is_the_repeated_key_at_every_length() {
        let key = [0x37, 0xFA, 0x21, 0x3D];
        for len in (0..70).chain(1000..1100).chain([4096, 65_537]) {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut bytes = plain.clone();
            unmask(&mut bytes, key);
            let expected: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert!(bytes == expected, "length {len}");
            unmask(&mut bytes, [0; 4]);
            assert!(bytes == expected, "length {len}, zero key");
        }
    }
}
