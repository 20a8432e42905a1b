//! permessage-deflate (RFC 7692) against real clients and bad input.
//!
//! - Negotiation over raw HTTP: the exact `Sec-WebSocket-Extensions` answer (or its
//!   absence) for offers across lines, quoted values, window bits, absurd parameters,
//!   in every mode; each agreement is then used for one echo, checked on the wire.
//! - Real clients: Python `websockets` (compression on and off, window mode, a strict
//!   256-byte window), Node `ws` (tests/node, installed with `npm ci` when missing),
//!   tungstenite's client (which offers nothing) against a compressing server.
//! - Bad input, written frame by frame after a handshake: RSV1 where it is not allowed
//!   (1002), corrupt and truncated streams and inflated text that is not UTF-8 (1007),
//!   a deflate bomb (1009, with the server's peak memory bounded). A healthy client
//!   echoes alongside each.
//! - Topics: one published message reaches a compressing and a plain subscriber.
//!
//! Compressed payloads are made and checked with flate2 (raw deflate, sync flush, the
//! trailing `00 00 ff ff` removed: RFC 7692 §7.2.1), not with the server's codec.

mod common;

use common::python::{check_report, python_venv, run_script};
use common::{
    Server, assert_echo, connect, expect_close, frame, next_frame, raw, read_head, scrape,
    upgrade_request, wait_until,
};
use flate2::Compression as Level;
use flate2::write::DeflateDecoder;
use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tungstenite::Message;

const SHARED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Each Python script bounds its checks to 60 s each; this bounds a whole run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Chat-like JSON with the same keys in every row: tests/py/compression.py's
/// `json_message`, byte for byte.
fn json_message(i: usize, items: usize) -> String {
    let rows: Vec<String> = (0..items)
        .map(|k| {
            let tags = ["\"alpha\"", "\"beta\"", "\"gamma\""][..1 + k % 3].join(",");
            format!(
                r#"{{"id":{},"user":"user{}","text":"message {k} of batch {i}","tags":[{tags}],"ok":{}}}"#,
                i * 1000 + k,
                k % 7,
                k % 2 == 0
            )
        })
        .collect();
    format!(
        r#"{{"seq":{i},"kind":"batch","rows":[{}]}}"#,
        rows.join(",")
    )
}

/// A client's compressor, keeping its context across messages (the window it may use
/// is what the server allowed: `client_max_window_bits`).
struct Deflate(flate2::Compress);

impl Deflate {
    fn new() -> Deflate {
        Deflate::with_window(15)
    }

    fn with_window(bits: u8) -> Deflate {
        Deflate(flate2::Compress::new_with_window_bits(
            Level::default(),
            false,
            bits,
        ))
    }

    /// One message's payload: sync flush, tail removed (§7.2.1).
    fn message(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = self.0.total_in();
        loop {
            let done = (self.0.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            self.0
                .compress_vec(&data[done..], &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            // Finished once every byte is in and the flush left output space unused.
            if self.0.total_in() - start == data.len() as u64 && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&TAIL), "a sync flush ends in 00 00 ff ff");
        out.truncate(out.len() - TAIL.len());
        out
    }
}

/// A one-off compressed payload (no context).
fn deflated(data: &[u8]) -> Vec<u8> {
    Deflate::new().message(data)
}

/// A client's inflater: keeps the server's context across messages (window mode).
struct Inflate(DeflateDecoder<Vec<u8>>);

impl Inflate {
    fn new() -> Inflate {
        Inflate(DeflateDecoder::new(Vec::new()))
    }

    fn message(&mut self, payload: &[u8]) -> Vec<u8> {
        self.0.write_all(payload).unwrap();
        self.0.write_all(&TAIL).unwrap();
        self.0.flush().unwrap();
        std::mem::take(self.0.get_mut())
    }
}

/// The values of every `Sec-WebSocket-Extensions` line of a response head.
fn extension_lines(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// A raw socket upgraded with `offers` (one header line each); the server's answer.
fn handshake(addr: SocketAddr, offers: &[&str]) -> (TcpStream, Option<String>) {
    let extra: String = offers
        .iter()
        .map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n"))
        .collect();
    let mut s = raw(addr);
    s.write_all(upgrade_request(addr, "/ws", &extra).as_bytes())
        .unwrap();
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 101, "offers {offers:?}:\n{head}");
    let lines = extension_lines(&head);
    assert!(lines.len() <= 1, "several extension lines: {head}");
    (s, lines.into_iter().next())
}

/// A raw socket that negotiated shared-mode compression.
fn negotiated(addr: SocketAddr) -> TcpStream {
    let (s, answer) = handshake(addr, &["permessage-deflate"]);
    assert_eq!(answer.as_deref(), Some(SHARED));
    s
}

/// Sends one compressed text message and expects its compressed echo back.
fn compressed_echo(s: &mut TcpStream, text: &str) {
    s.write_all(&frame(0xC1, &deflated(text.as_bytes())))
        .unwrap();
    let (b0, payload) = next_frame(s).unwrap();
    assert_eq!(b0, 0xC1, "a compressed text echo");
    assert_eq!(Inflate::new().message(&payload), text.as_bytes());
}

/// `(compressed, plain)` of a `wsloop_deflate_*_bytes_total` counter.
fn deflate_bytes(metrics: SocketAddr, way: &str) -> (u64, u64) {
    let (status, text) = scrape(metrics, "/metrics");
    assert_eq!(status, 200);
    let series = |form| format!("wsloop_deflate_{way}_bytes_total{{form=\"{form}\"}}");
    (
        common::metric(&text, &series("compressed")),
        common::metric(&text, &series("plain")),
    )
}

fn metric(metrics: SocketAddr, series: &str) -> u64 {
    common::metric(&scrape(metrics, "/metrics").1, series)
}

// ---------------------------------------------------------------- negotiation

#[test]
fn negotiation_answers_exactly_over_raw_http() {
    let w12 = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12";
    let w12_nct = "permessage-deflate; client_no_context_takeover; server_max_window_bits=12";
    // (mode, header lines offered, the exact answer or None for no header)
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        ("shared", &["permessage-deflate"], Some(SHARED)),
        ("shared", &["PerMessage-Deflate"], Some(SHARED)),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits"],
            Some(SHARED),
        ),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits=10"],
            Some(SHARED),
        ),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits=\"10\""],
            Some(SHARED),
        ),
        (
            "shared",
            &["permessage-deflate; server_max_window_bits=8"],
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8",
            ),
        ),
        (
            "shared",
            &["permessage-deflate; server_max_window_bits=\"11\"; server_no_context_takeover"],
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11",
            ),
        ),
        // Several offers on one line and over several lines: the first acceptable wins.
        (
            "shared",
            &[
                "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=99, permessage-deflate; server_max_window_bits=10",
            ],
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10",
            ),
        ),
        (
            "shared",
            &[
                "foo; bar=1",
                "permessage-deflate; bogus",
                "permessage-deflate; client_max_window_bits",
            ],
            Some(SHARED),
        ),
        ("shared", &[" , permessage-deflate ,, "], Some(SHARED)),
        // Absurd, unknown, duplicate or missing values decline the offer.
        (
            "shared",
            &["permessage-deflate; server_max_window_bits=99"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits=7"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits=16"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; server_max_window_bits=010"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; server_max_window_bits"],
            None,
        ),
        ("shared", &["permessage-deflate; mystery=1"], None),
        (
            "shared",
            &["permessage-deflate; client_max_window_bits; client_max_window_bits"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; server_no_context_takeover=1"],
            None,
        ),
        ("shared", &["x-webkit-deflate-frame"], None),
        // A header that does not parse declines every offer, even a good one after it.
        (
            "shared",
            &["permessage-deflate; =", "permessage-deflate"],
            None,
        ),
        (
            "shared",
            &["permessage-deflate; a=\"unterminated", "permessage-deflate"],
            None,
        ),
        // Window mode: context takeover when the client can limit its window.
        (
            "window=12",
            &["permessage-deflate; client_max_window_bits"],
            Some(w12),
        ),
        ("window=12", &["permessage-deflate"], Some(w12_nct)),
        (
            "window=12",
            &["permessage-deflate; server_max_window_bits=8; client_max_window_bits"],
            Some("permessage-deflate; server_max_window_bits=8; client_max_window_bits=12"),
        ),
        (
            "window=12",
            &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"],
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"),
        ),
        (
            "window=12",
            &["permessage-deflate; server_no_context_takeover; client_max_window_bits=15"],
            Some(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            ),
        ),
        (
            "window=12",
            &["permessage-deflate; client_no_context_takeover; client_max_window_bits"],
            Some(w12_nct),
        ),
        (
            "window=12",
            &["permessage-deflate; server_max_window_bits=99"],
            None,
        ),
        (
            "window=12",
            &["permessage-deflate; client_max_window_bits=\"1x\""],
            None,
        ),
        // Off: never answered.
        ("off", &["permessage-deflate"], None),
        (
            "off",
            &[
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate",
            ],
            None,
        ),
        (
            "off",
            &["permessage-deflate; server_max_window_bits=8"],
            None,
        ),
    ];
    let servers: Vec<(&str, Server)> = ["shared", "window=12", "off"]
        .into_iter()
        .map(|m| (m, Server::start(&["--compression", m])))
        .collect();
    let server = |mode: &str| &servers.iter().find(|(m, _)| *m == mode).unwrap().1;
    // A healthy client on each server, echoing between the cases.
    let mut healthy: Vec<_> = servers.iter().map(|(_, s)| connect(s.url())).collect();
    let text = json_message(1, 3);
    for (i, (mode, offers, want)) in cases.iter().enumerate() {
        let (mut s, answer) = handshake(server(mode).addr, offers);
        assert_eq!(answer.as_deref(), *want, "{mode}: offers {offers:?}");
        // The agreement is what the connection then does: a compressed echo (whose
        // first message an inflater without history reads, in every mode), or a plain
        // one.
        s.write_all(&frame(0x81, text.as_bytes())).unwrap();
        let (b0, payload) = next_frame(&mut s).unwrap();
        if want.is_some() {
            assert_eq!(b0, 0xC1, "{mode}: {offers:?}: echo not compressed");
            assert_eq!(Inflate::new().message(&payload), text.as_bytes());
            assert!(payload.len() < text.len());
        } else {
            assert_eq!(b0, 0x81, "{mode}: {offers:?}: echo compressed");
            assert_eq!(payload, text.as_bytes());
        }
        let n = healthy.len();
        let h = &mut healthy[i % n];
        assert_echo(h, Message::text(format!("healthy {i}")));
    }
}

// ---------------------------------------------------------------- real clients

/// Runs tests/py/compression.py in `mode` against `url`; `checks` must all pass, or
/// the test fails with `log()` (the server's log) attached.
fn compression_py(python: &Path, url: &str, mode: &str, checks: &[&str], log: &dyn Fn() -> String) {
    let out = run_script(python, "compression.py", &[url, mode], SCRIPT_TIMEOUT);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    check_report(&out, "compression", checks, log);
}

#[test]
fn python_websockets_with_and_without_compression() {
    let python = python_venv();
    for (mode, args) in [
        ("shared", &["--compression", "shared"][..]),
        ("none", &[][..]),
    ] {
        let server = Server::start(&[&["--metrics-listen", "127.0.0.1:0"][..], args].concat());
        let metrics = server.metrics_addr();
        let checks = ["negotiated", "text-echo", "binary-echo"];
        compression_py(&python, &server.url(), mode, &checks, &|| {
            server_log(&server)
        });
        let (out_c, out_p) = deflate_bytes(metrics, "out");
        let (in_c, in_p) = deflate_bytes(metrics, "in");
        println!("{mode}: deflate out {out_c}/{out_p}, in {in_c}/{in_p} (compressed/plain)");
        if mode == "none" {
            assert_eq!(
                (out_c, out_p, in_c, in_p),
                (0, 0, 0, 0),
                "nothing negotiated"
            );
        } else {
            // Repetitive JSON dominates what was sent: well under half its size.
            assert!(out_c > 0 && out_c * 2 < out_p, "out {out_c}/{out_p}");
            assert!(in_c > 0 && in_c * 2 < in_p, "in {in_c}/{in_p}");
        }
        assert!(!server.logged("panicked"));
    }
}

#[test]
fn python_websockets_in_window_mode() {
    let python = python_venv();
    let server = Server::start(&[
        "--compression",
        "window=12",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics_addr();
    let mut healthy = connect(server.url());
    for (mode, checks) in [
        (
            "window",
            &["negotiated", "text-echo", "binary-echo", "context-takeover"][..],
        ),
        ("window8", &["window8"][..]),
    ] {
        compression_py(&python, &server.url(), mode, checks, &|| {
            server_log(&server)
        });
        assert_echo(&mut healthy, Message::text(json_message(7, 5)));
    }
    let (out_c, out_p) = deflate_bytes(metrics, "out");
    println!("window=12: deflate out {out_c}/{out_p} (compressed/plain)");
    assert!(out_c > 0 && out_c * 2 < out_p, "out {out_c}/{out_p}");
    // Every Python connection closed and let go of its windows (tungstenite offered
    // nothing, so it never had any).
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            metrics,
            "wsloop_deflate_windows"
        ) == 0),
        "windows left: {}",
        metric(metrics, "wsloop_deflate_windows")
    );
}

#[test]
fn tungstenite_without_compression_against_compressing_servers() {
    for mode in ["shared", "window=12"] {
        let server = Server::start(&["--compression", mode, "--metrics-listen", "127.0.0.1:0"]);
        let metrics = server.metrics_addr();
        let (mut ws, response) = tungstenite::connect(server.url()).expect("connect");
        assert!(
            response.headers().get("Sec-WebSocket-Extensions").is_none(),
            "{mode}: nothing offered, nothing answered"
        );
        let big = json_message(0, 2000);
        for msg in [
            Message::text(big.clone()),
            Message::binary(big.into_bytes()),
            Message::text("small"),
            Message::binary(vec![0u8; 300_000]),
        ] {
            assert_echo(&mut ws, msg);
        }
        assert_eq!(deflate_bytes(metrics, "out"), (0, 0), "{mode}");
        assert_eq!(metric(metrics, "wsloop_deflate_windows"), 0, "{mode}");
    }
}

const NODE_DIR: &str = "tests/node";
const WS_PACKAGE: &str = "\"ws\"";
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn node_ws_with_per_message_deflate() {
    let Some(node) = node_tools() else {
        return;
    };
    let server = Server::start(&["--compression", "shared"]);
    let mut healthy = connect(server.url());
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(NODE_DIR)
        .join("compression.mjs");
    let out = run_bounded(
        Command::new(node).arg(&script).arg(server.url()),
        SCRIPT_TIMEOUT,
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let checks = ["extensions", "json-200k", "binary-200k", "small-json"];
    check_report(&out, "node-ws", &checks, &|| server_log(&server));
    assert_echo(&mut healthy, Message::text("still here"));
}

/// node, with `ws` installed in tests/node/node_modules at the version package.json
/// pins (`npm ci` there when it is missing or another). None, after a notice, when
/// node or npm is not on PATH.
fn node_tools() -> Option<&'static str> {
    for tool in ["node", "npm"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIPPED Node ws test: {tool} is not on PATH (Node.js and npm are needed)");
            return None;
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(NODE_DIR);
    let version = |p: &Path, key: &str| {
        let text = fs::read_to_string(p).unwrap_or_default();
        let at = text.find(key)? + key.len();
        let rest = text[at..].trim_start_matches([':', ' ', '"']);
        Some(rest[..rest.find('"')?].to_string())
    };
    let pinned = version(&dir.join("package.json"), WS_PACKAGE);
    let installed = || version(&dir.join("node_modules/ws/package.json"), "\"version\"");
    assert!(pinned.is_some(), "no ws pin in {NODE_DIR}/package.json");
    // One installer at a time (parallel test binaries); the OS drops the lock if we die.
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-ws.lock");
    let lock = File::create(&lock_path).expect("create lock file");
    lock.lock().expect("lock the npm ci lock file");
    if installed() != pinned {
        eprintln!("node: npm ci --prefix {NODE_DIR} (ws {pinned:?}, first run only)");
        let out = run_bounded(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir),
            NPM_TIMEOUT,
        );
        assert!(
            out.status.success() && installed() == pinned,
            "npm ci --prefix {NODE_DIR} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    Some("node")
}

/// Runs `cmd` to completion with piped output, killing it (by its PID) after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            common::sigterm(pid);
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

fn server_log(server: &Server) -> String {
    let logs = server.logs.lock().unwrap();
    let tail = logs.len().saturating_sub(40);
    format!(
        "--- server log (last 40 lines) ---\n{}",
        logs[tail..].join("\n")
    )
}

// ---------------------------------------------------------------- bad input

#[test]
fn rsv1_where_it_is_not_allowed_closes_1002() {
    let server = Server::start(&["--compression", "shared"]);
    let off = Server::start(&["--compression", "off"]);
    let mut healthy = connect(server.url());
    let payload = deflated(json_message(2, 3).as_bytes());
    // Nothing offered, or offered to a server that declines: RSV1 is a protocol error.
    let (mut s, answer) = handshake(server.addr, &[]);
    assert_eq!(answer, None);
    s.write_all(&frame(0xC1, &payload)).unwrap();
    expect_close(&mut s, 1002).unwrap();
    let (mut s, answer) = handshake(off.addr, &["permessage-deflate"]);
    assert_eq!(answer, None);
    s.write_all(&frame(0xC2, &payload)).unwrap();
    expect_close(&mut s, 1002).unwrap();
    assert_echo(&mut healthy, Message::text("after no negotiation"));

    // Negotiated, but on a control frame or a continuation.
    let half = payload.len() / 2;
    let bad: &[(&str, Vec<Vec<u8>>)] = &[
        ("ping", vec![frame(0xC9, b"p")]),
        ("pong", vec![frame(0xCA, b"p")]),
        ("close", vec![frame(0xC8, &1000u16.to_be_bytes())]),
        (
            "continuation after a compressed first frame",
            vec![frame(0x41, &payload[..half]), frame(0xC0, &payload[half..])],
        ),
        (
            "continuation after a plain first frame",
            vec![frame(0x01, b"plain "), frame(0xC0, &payload)],
        ),
        (
            "middle continuation",
            vec![
                frame(0x41, &payload[..half]),
                frame(0x40, &payload[half..]),
                frame(0x80, b""),
            ],
        ),
    ];
    for (what, frames) in bad {
        let mut s = negotiated(server.addr);
        compressed_echo(&mut s, &json_message(3, 3));
        for f in frames {
            s.write_all(f).unwrap();
        }
        expect_close(&mut s, 1002).unwrap_or_else(|e| panic!("RSV1 on {what}: {e}"));
        assert_echo(&mut healthy, Message::text(format!("after {what}")));
    }
    // RSV2 and RSV3 stay errors with compression negotiated.
    for b0 in [0xA1, 0x91] {
        let mut s = negotiated(server.addr);
        s.write_all(&frame(b0, b"x")).unwrap();
        expect_close(&mut s, 1002).unwrap();
    }
    // The right way round: RSV1 on the first frame only, fragments joined.
    let mut s = negotiated(server.addr);
    let text = json_message(4, 30);
    let payload = deflated(text.as_bytes());
    let third = payload.len() / 3;
    s.write_all(&frame(0x41, &payload[..third])).unwrap();
    s.write_all(&frame(0x89, b"between")).unwrap();
    s.write_all(&frame(0x00, &payload[third..2 * third]))
        .unwrap();
    s.write_all(&frame(0x80, &payload[2 * third..])).unwrap();
    let (b0, pong) = next_frame(&mut s).unwrap();
    assert_eq!((b0, pong.as_slice()), (0x8A, &b"between"[..]));
    let (b0, echo) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0xC1);
    assert_eq!(Inflate::new().message(&echo), text.as_bytes());
}

#[test]
fn corrupt_truncated_and_non_utf8_streams_close_1007() {
    let server = Server::start(&["--compression", "shared"]);
    let mut healthy = connect(server.url());
    let text = json_message(5, 40);
    let good = deflated(text.as_bytes());
    let mut flipped = good.clone();
    // Reserved block type 11 in the first block header.
    flipped[0] |= 0x06;
    let bad_utf8 = deflated(&[b"{\"ok\":\"".as_slice(), &[0xff, 0xfe, 0xc3], b"\"}"].concat());
    let cases: &[(&str, Vec<Vec<u8>>)] = &[
        ("garbage", vec![frame(0xC1, &[0xff; 40])]),
        ("reserved block type", vec![frame(0xC1, &flipped)]),
        (
            "truncated to half",
            vec![frame(0xC1, &good[..good.len() / 2])],
        ),
        (
            "truncated by one byte",
            vec![frame(0xC1, &good[..good.len() - 1])],
        ),
        (
            "binary, truncated",
            vec![frame(0xC2, &good[..good.len() / 3])],
        ),
        (
            "garbage in a fragment",
            vec![
                frame(0x41, &good[..good.len() / 2]),
                frame(0x80, &[0xff; 64]),
            ],
        ),
        (
            "text that is not UTF-8 once inflated",
            vec![frame(0xC1, &bad_utf8)],
        ),
    ];
    for (what, frames) in cases {
        let mut s = negotiated(server.addr);
        for f in frames {
            s.write_all(f).unwrap();
        }
        expect_close(&mut s, 1007).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_echo(&mut healthy, Message::text(format!("after {what}")));
    }
    // The same non-UTF-8 bytes as binary are fine, and so is the whole stream.
    let mut s = negotiated(server.addr);
    s.write_all(&frame(0xC2, &bad_utf8)).unwrap();
    let (b0, echo) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0x82, "short: echoed plain, under the threshold");
    assert_eq!(echo, Inflate::new().message(&bad_utf8));
    compressed_echo(&mut s, &text);
    // Bytes after a final block carry nothing and are ignored (the module docs:
    // RFC 7692 §7.2.3.4's own example ends with such bytes). Its example, then a final
    // stored block followed by a whole other stream.
    s.write_all(&frame(
        0xC1,
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
    ))
    .unwrap();
    assert_eq!(next_frame(&mut s).unwrap(), (0x81, b"Hello".to_vec()));
    s.write_all(&frame(
        0xC1,
        &[&[0x01, 0x01, 0x00, 0xfe, 0xff, b'x'][..], &good].concat(),
    ))
    .unwrap();
    assert_eq!(next_frame(&mut s).unwrap(), (0x81, b"x".to_vec()));
}

#[test]
fn deflate_bomb_closes_1009_with_memory_bounded() {
    const BOMB: usize = 10 << 20;
    let server = Server::start(&[
        "--compression",
        "shared",
        "--max-message",
        "1MiB",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics_addr();
    let mut healthy = connect(server.url());
    let bomb = deflated(&vec![0u8; BOMB]);
    println!("bomb: {BOMB} zero bytes in {} compressed", bomb.len());
    assert!(bomb.len() < 20 << 10);
    // Warm up: the codec is made on first use and a message near the limit allocated,
    // so that what follows measures the bomb alone.
    let mut s = negotiated(server.addr);
    let near = "x".repeat(1_000_000);
    compressed_echo(&mut s, &near);
    drop(s);
    let peak = || common::proc_status_kib(server.pid(), "VmHWM:") << 10;
    let rss = || common::proc_status_kib(server.pid(), "VmRSS:") << 10;
    let (peak0, rss0) = (peak(), rss());
    let half = bomb.len() / 2;
    for round in 0..10 {
        let mut s = negotiated(server.addr);
        let frames = if round % 2 == 0 {
            vec![frame(0xC2, &bomb)]
        } else {
            // Fragmented: joined before inflating, then inflated within the limit.
            vec![frame(0x41, &bomb[..half]), frame(0x80, &bomb[half..])]
        };
        for f in &frames {
            s.write_all(f).unwrap();
        }
        expect_close(&mut s, 1009).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_echo(&mut healthy, Message::text(format!("after bomb {round}")));
    }
    let (peak1, rss1) = (peak(), rss());
    println!(
        "server VmHWM {} -> {} KiB, VmRSS {} -> {} KiB over 10 bombs of {} MiB",
        peak0 >> 10,
        peak1 >> 10,
        rss0 >> 10,
        rss1 >> 10,
        BOMB >> 20
    );
    // The inflater stops at the 1 MiB limit: the peak grows by at most a couple of
    // such buffers, nowhere near one bomb, let alone ten.
    assert!(
        peak1.saturating_sub(peak0) < 3 << 20,
        "peak RSS grew {} KiB",
        (peak1 - peak0) >> 10
    );
    assert!(
        rss1.saturating_sub(rss0) < 3 << 20,
        "RSS grew {} KiB",
        (rss1 - rss0) >> 10
    );
    assert_eq!(metric(metrics, "wsloop_closes_total{code=\"1009\"}"), 10);
    // Just under the limit still inflates.
    let mut s = negotiated(server.addr);
    let under = vec![0u8; (1 << 20) - 1];
    s.write_all(&frame(0xC2, &deflated(&under))).unwrap();
    let (b0, echo) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0xC2);
    assert_eq!(Inflate::new().message(&echo), under);
}

#[test]
fn window_mode_keeps_context_and_refuses_bad_input() {
    let server = Server::start(&["--compression", "window=12", "--max-message", "1MiB"]);
    let mut healthy = connect(server.url());
    let offer = "permessage-deflate; client_max_window_bits";
    let want = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12";
    // Context takeover both ways across many messages: our compressor and inflater
    // keep theirs, as the server must.
    let mut s = {
        let (s, answer) = handshake(server.addr, &[offer]);
        assert_eq!(answer.as_deref(), Some(want));
        s
    };
    let (mut out, mut back) = (Deflate::with_window(12), Inflate::new());
    let mut sizes = Vec::new();
    for i in 0..30 {
        let text = json_message(i, 8);
        let payload = out.message(text.as_bytes());
        sizes.push(payload.len());
        s.write_all(&frame(0xC1, &payload)).unwrap();
        let (b0, echo) = next_frame(&mut s).unwrap();
        assert_eq!(b0, 0xC1, "message {i}");
        assert_eq!(back.message(&echo), text.as_bytes(), "message {i}");
        if i > 0 {
            // With the previous message as history it shrinks far below the first.
            assert!(echo.len() * 2 < sizes[0], "echo {i}: {} B", echo.len());
        }
    }
    // A message under the threshold goes out plain and outside the windows; the next
    // compressed one still decodes with the history both sides kept.
    s.write_all(&frame(0x81, b"tiny")).unwrap();
    assert_eq!(next_frame(&mut s).unwrap(), (0x81, b"tiny".to_vec()));
    let text = json_message(99, 8);
    s.write_all(&frame(0xC1, &out.message(text.as_bytes())))
        .unwrap();
    let (b0, echo) = next_frame(&mut s).unwrap();
    assert_eq!(b0, 0xC1);
    assert_eq!(back.message(&echo), text.as_bytes());
    // Then bad input on that connection, and on fresh ones.
    s.write_all(&frame(0xC1, &[0xff; 40])).unwrap();
    expect_close(&mut s, 1007).unwrap();
    let bomb = deflated(&vec![0u8; 10 << 20]);
    let cases: &[(&str, Vec<u8>, u16)] = &[
        ("bomb", frame(0xC2, &bomb), 1009),
        ("RSV1 on a ping", frame(0xC9, b""), 1002),
        (
            "truncated",
            frame(0xC1, &deflated(text.as_bytes())[..20]),
            1007,
        ),
    ];
    for (what, f, code) in cases {
        let (mut s, answer) = handshake(server.addr, &[offer]);
        assert_eq!(answer.as_deref(), Some(want));
        s.write_all(f).unwrap();
        expect_close(&mut s, *code).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_echo(&mut healthy, Message::text(format!("after {what}")));
    }
}

// ---------------------------------------------------------------- topics

/// Joins topic `feed` when the path asks (`?join=feed`); `pub:T:body` publishes body.
struct Feed;

impl wsloop::Handler for Feed {
    fn on_open(&mut self, ctx: &mut wsloop::Ctx, conn: wsloop::ConnId, request: &wsloop::Request) {
        if request.path.ends_with("?join=feed") {
            ctx.subscribe(conn, "feed").unwrap();
        }
        ctx.send(conn, Message::text("joined")).unwrap();
    }

    fn on_message(&mut self, ctx: &mut wsloop::Ctx, _conn: wsloop::ConnId, msg: Message) {
        if let Message::Text(t) = msg
            && let Some((topic, body)) = t
                .as_str()
                .strip_prefix("pub:")
                .and_then(|r| r.split_once(':'))
        {
            ctx.publish(topic, Message::text(body)).unwrap();
        }
    }
}

#[test]
fn published_messages_reach_compressing_and_plain_subscribers() {
    let python = python_venv();
    let cfg = wsloop::Config {
        compression: wsloop::DeflateConfig::new(wsloop::Compression::Shared),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..wsloop::Config::default()
    };
    let server = common::inproc::Loop::start(cfg, Feed);
    let metrics = server.with(|s, _| s.metrics_addr().unwrap());
    let feed_url = format!("{}?join=feed", server.url);
    // The plain subscriber (tungstenite offers nothing), joined before Python publishes.
    let mut plain = connect(feed_url.as_str());
    assert_eq!(plain.read().unwrap(), Message::text("joined"));
    compression_py(&python, &feed_url, "topics", &["topics"], &String::new);
    for i in 0..20 {
        match plain.read().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), json_message(i, 20), "message {i}"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    // The Python subscriber got them compressed (and sent its publishes compressed).
    let (out_c, out_p) = deflate_bytes(metrics, "out");
    let (in_c, _) = deflate_bytes(metrics, "in");
    let published: u64 = (0..20).map(|i| json_message(i, 20).len() as u64).sum();
    assert!(
        out_p >= published,
        "compressed out {out_c}/{out_p} of {published}"
    );
    assert!(out_c > 0 && out_c * 2 < out_p, "out {out_c}/{out_p}");
    assert!(in_c > 0);
    assert_echo_text(&mut plain);
    server.stop();
}

/// The plain subscriber still works: it publishes to a topic nobody else is in.
fn assert_echo_text(ws: &mut common::Client) {
    ws.send(Message::text("pub:other:x")).unwrap();
    ws.send(Message::text("pub:feed:last")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("last"));
}
