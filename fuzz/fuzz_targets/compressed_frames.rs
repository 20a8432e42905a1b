//! Arbitrary bytes as client frames after an upgrade that negotiated permessage-deflate.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsloop::fuzz::compressed_frames(data));
