//! Replays the inputs the fuzzers found interesting (fuzz/regressions/) through the
//! same entry points, plus a deterministic batch of mutated frames, so a normal
//! `cargo test` catches a regression without a fuzzer installed.

use std::path::Path;

fn replay(dir: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("regression corpus directory") {
        let path = entry.unwrap().path();
        if path.is_file() {
            target(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn handshake_corpus_replays_without_panic() {
    assert!(replay("handshake", wsloop::fuzz::handshake) > 0);
}

#[test]
fn frames_corpus_replays_without_panic() {
    assert!(replay("frames", wsloop::fuzz::frames) > 0);
}

#[cfg(feature = "deflate")]
#[test]
fn compressed_frames_corpus_replays_without_panic() {
    assert!(replay("compressed_frames", wsloop::fuzz::compressed_frames) > 0);
}

/// The compressed corpus with a few bytes changed: broken streams, bits and lengths.
#[cfg(feature = "deflate")]
#[test]
fn mutated_compressed_frames_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/compressed_frames");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    for i in 0..4_000 {
        let mut input = seeds[i % seeds.len()].clone();
        for _ in 0..=(next() % 4) {
            let at = (next() as usize) % input.len();
            input[at] = (next() % 256) as u8;
        }
        wsloop::fuzz::compressed_frames(&input);
    }
}

/// A small deterministic generator: the same inputs on every run.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[test]
fn mutated_frames_do_not_panic() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    #[rustfmt::skip]
    let valid: &[u8] = &[
        0x81, 0x85, 1, 2, 3, 4, b'h' ^ 1, b'e' ^ 2, b'l' ^ 3, b'l' ^ 4, b'o' ^ 1, 0x89, 0x80, 0, 0, 0,
        0, 0x01, 0x82, 9, 9, 9, 9, 0x61, 0x62, 0x80, 0x81, 5, 5, 5, 5, 0x63, 0x88, 0x82, 0, 0,
        0, 0, 0x03, 0xe8,
    ];
    for _ in 0..20_000 {
        let mut input = vec![(next() % 256) as u8];
        input.extend_from_slice(valid);
        for _ in 0..(next() % 4) {
            let i = (next() as usize) % input.len();
            input[i] = (next() % 256) as u8;
        }
        wsloop::fuzz::frames(&input);
    }
}
