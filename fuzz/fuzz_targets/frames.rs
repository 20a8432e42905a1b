//! Arbitrary bytes as client frames after a valid upgrade, through the server's connection code.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsloop::fuzz::frames(data));
