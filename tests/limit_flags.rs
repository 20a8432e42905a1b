//! The message and frame limit flags (issue 14): the frame limit follows the message
//! limit unless given, `--max-frame` alone may only lower it, and contradictory values
//! exit with status 2 and a message that says what to do. Run against the real binary;
//! the same rule at the `Config` level is tested in src/config.rs.

mod common;

use common::{Server, frame, read_close_code, read_frame, run_to_exit, upgraded};
use std::io::Write;
use std::process::Command;

/// The effective `key=` value in the server's start-up line.
fn effective(server: &Server, key: &str) -> String {
    server
        .setting(key)
        .unwrap_or_else(|| panic!("no {key} in the start-up line"))
}

/// A single binary frame of `len` bytes is echoed.
fn echoes(server: &Server, len: usize) -> bool {
    let mut s = upgraded(server.addr, "/ws");
    s.write_all(&frame(0x82, &vec![7u8; len])).unwrap();
    matches!(read_frame(&mut s), Ok((0x82, p)) if p.len() == len)
}

/// The header of a binary frame of `len` bytes is refused with 1009 (only the header is
/// sent: the refusal comes at the length, and no unread payload can turn it into a reset).
fn refuses(server: &Server, len: usize) -> bool {
    let mut s = upgraded(server.addr, "/ws");
    let header = match len {
        0..126 => 6,
        126..65536 => 8,
        _ => 14,
    };
    s.write_all(&frame(0x82, &vec![7u8; len])[..header])
        .unwrap();
    read_close_code(&mut s) == Some(1009)
}

#[test]
fn max_message_alone_lowers_both_limits() {
    let server = Server::start(&["--max-message", "64KiB"]);
    assert_eq!(effective(&server, "max_message"), "64KiB");
    assert_eq!(effective(&server, "max_frame"), "64KiB");
    assert!(echoes(&server, 64 << 10));
    assert!(refuses(&server, (64 << 10) + 1));
}

#[test]
fn max_frame_alone_may_lower_the_frame_limit() {
    let server = Server::start(&["--max-frame", "1KiB"]);
    assert_eq!(effective(&server, "max_message"), "16MiB");
    assert_eq!(effective(&server, "max_frame"), "1KiB");
    assert!(echoes(&server, 1024));
    assert!(refuses(&server, 1025));
    // A message of several frames, each under the frame limit, may exceed it.
    let mut s = upgraded(server.addr, "/ws");
    s.write_all(&frame(0x02, &[1; 1000])).unwrap();
    s.write_all(&frame(0x80, &[2; 1000])).unwrap();
    let (b0, payload) = read_frame(&mut s).expect("echo");
    assert_eq!((b0, payload.len()), (0x82, 2000));

    let defaults = Server::start(&[]);
    assert_eq!(effective(&defaults, "max_message"), "16MiB");
    assert_eq!(effective(&defaults, "max_frame"), "16MiB");
    let equal = Server::start(&["--max-message", "64KiB", "--max-frame", "64KiB"]);
    assert_eq!(effective(&equal, "max_frame"), "64KiB");
    assert!(echoes(&equal, 64 << 10));
    assert!(refuses(&equal, 100 << 10));
}

#[test]
fn max_frame_above_the_message_limit_exits_2() {
    // (flags, what the first line of stderr must say)
    let cases: &[(&[&str], &str)] = &[
        // --max-frame alone may not raise the frame limit above the default message limit.
        (
            &["--max-frame", "32MiB"],
            "max frame (32MiB) is above max message (16MiB)",
        ),
        // Contradictory explicit values, in either order.
        (
            &["--max-frame", "2MiB", "--max-message", "1MiB"],
            "max frame (2MiB) is above max message (1MiB)",
        ),
        (
            &["--max-message", "64KiB", "--max-frame", "65KiB"],
            "max frame (65KiB) is above max message (64KiB)",
        ),
        (&["--max-frame", "0"], "at least 1 byte"),
    ];
    for (args, says) in cases {
        let (code, _, err) = run_to_exit(Command::new(env!("CARGO_BIN_EXE_wsloop")), args);
        assert_eq!(code, Some(2), "{args:?}: exit status; stderr: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("wsloop: invalid configuration: ") && first.contains(says),
            "{args:?}: stderr's first line should say {says:?}: {err}"
        );
        if says.contains("above") {
            assert!(
                first.contains("leave it unset") && first.contains("raise max message"),
                "{args:?}: the message should say what to do: {first}"
            );
        }
    }
}

#[test]
fn help_says_the_frame_limit_follows_the_message_limit() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let at = help.find("--max-frame <").expect("--max-frame in --help");
    let block = &help[at..at + help[at..].find("\n  -").unwrap_or(help.len() - at)];
    assert!(
        block.contains("At most --max-message")
            && block.contains("[default: the --max-message value]"),
        "{block}"
    );
}
