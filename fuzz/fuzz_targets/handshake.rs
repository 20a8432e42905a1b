//! Arbitrary bytes as the HTTP upgrade request, through the server's connection code.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsloop::fuzz::handshake(data));
