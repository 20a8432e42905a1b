//! What the push server and client share: the message layout and the clock.
//!
//! A pushed message is 64 bytes of binary: the send time (`mono_ns`, little-endian)
//! in bytes 0..8, a sequence number in 8..16, zeros after.

/// Bytes in every pushed message.
pub const MSG_LEN: usize = 64;

/// CLOCK_MONOTONIC in nanoseconds. On Linux it is one clock for the whole machine,
/// so a stamp taken in the server process can be compared in the client's
/// (`std::time::Instant` reads the same clock but hides the value).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Cannot fail for CLOCK_MONOTONIC with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A 64-byte payload stamped now, carrying `seq`.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; MSG_LEN];
    b[..8].copy_from_slice(&mono_ns().to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b
}

/// The send stamp of a pushed payload, if it is one.
pub fn stamp_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}
