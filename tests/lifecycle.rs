//! Process lifecycle of the real `wsloop` binary and of examples/embed.rs: graceful
//! shutdown on SIGTERM, exit code 2 with a clear message for invalid flags, `--help`
//! listing the defaults, and one Poll serving WebSocket and plain TCP echo.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// A raw client that reads until the server's Close, answers it, and reports the
/// code and whether the server then ended the TCP connection with nothing more.
fn raw_client_answering_close(mut s: TcpStream) -> std::thread::JoinHandle<(Option<u16>, bool)> {
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let code = read_close_code(&mut s);
        if let Some(code) = code {
            let _ = s.write_all(&close_frame(code, b"ok"));
        }
        let eof = expect_eof(&mut s, Duration::from_secs(10)).is_ok();
        (code, eof)
    })
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    // All at once (the drain's spread is tests/ops.rs's): the test times the exit.
    let mut server = Server::start(&["--close-timeout", "10s", "--drain-period", "0s"]);
    // A tungstenite client (answers Close by itself) and a raw one, both echoing first.
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("before shutdown"));
    let mut s = upgraded(server.addr, &server.path);
    s.write_all(&frame(0x81, b"raw")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x81, b"raw".to_vec()));
    // And a socket that never finished its handshake.
    let mut half = raw(server.addr);
    half.write_all(b"GET /ws HTTP/1.1\r\n").unwrap();

    let tung = std::thread::spawn(move || {
        let mut close = None;
        loop {
            match ws.read() {
                Ok(Message::Close(f)) => close = f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => return (close, true),
                Err(_) => return (close, false),
            }
        }
    });
    let rawc = raw_client_answering_close(s);

    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(8))
        .expect("wsloop did not exit within 8 s of SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(0));
    // Both clients answered at once, so the server did not wait for its 10 s close timeout.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let (code, clean) = tung.join().unwrap();
    assert_eq!(code, Some(1001), "tungstenite client's close code");
    assert!(
        clean,
        "tungstenite client: close handshake did not complete"
    );
    let (code, eof) = rawc.join().unwrap();
    assert_eq!(code, Some(1001), "raw client's close code");
    assert!(
        eof,
        "raw client: TCP connection not closed after the handshake"
    );
    let mut buf = [0u8; 16];
    half.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        matches!(half.read(&mut buf), Ok(0) | Err(_)),
        "half-open handshake should be dropped at shutdown"
    );
    assert!(server.wait_logged("shutdown complete"));
}

#[test]
fn sigterm_with_unresponsive_client_waits_close_timeout_then_exits_0() {
    let mut server = Server::start(&["--close-timeout", "700ms"]);
    let mut s = upgraded(server.addr, &server.path);
    s.write_all(&frame(0x82, b"x")).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), (0x82, b"x".to_vec()));
    let started = Instant::now();
    sigterm(server.pid());
    // The Close arrives; we never answer it.
    assert_eq!(read_close_code(&mut s), Some(1001));
    // The listener is closed once shutdown starts: new connections are refused.
    let refused = wait_until(Duration::from_secs(2), || {
        TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_err()
    });
    assert!(refused, "still accepting connections during shutdown");
    let status = wait_exit(&mut server.child, Duration::from_secs(6))
        .expect("wsloop did not exit after its close timeout");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        took >= Duration::from_millis(600),
        "exited after {took:?}, before the 700ms close timeout for an unanswered Close"
    );
}

#[test]
fn sigterm_right_after_start_exits_0() {
    // A supervisor may stop the server as soon as it reports that it listens: the
    // SIGTERM must be handled gracefully from then on, not kill the process. The
    // signal goes out the moment the line is read, several times over.
    use std::os::unix::process::ExitStatusExt;
    for round in 0..10 {
        let mut child = Guard(
            Command::new(env!("CARGO_BIN_EXE_wsloop"))
                .args(["--listen", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
        let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
        let mut seen = false;
        for line in lines.by_ref() {
            if line.unwrap().contains("listening on ws://") {
                sigterm(child.0.id());
                seen = true;
                break;
            }
        }
        assert!(seen, "no listening line");
        // Keep draining stderr so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let status = wait_exit(&mut child.0, Duration::from_secs(5)).expect("no exit within 5 s");
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM right after \"listening on\" was logged: {status:?} \
             (killed by signal {:?}: the handler is not installed yet when the server announces it listens)",
            status.signal()
        );
    }
}

#[test]
fn sigterm_with_no_clients_exits_0_promptly() {
    let mut server = Server::start(&[]);
    // Once a connection has been served the loop is certainly running.
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("up"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(5))
        .expect("no exit within 5 s");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn invalid_flags_exit_2_with_a_clear_message() {
    // (flags, words the message must contain)
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--idle-timeout", "1s", "--ping-interval", "5s"],
            &["idle timeout", "ping interval", "1s", "5s"],
        ),
        (&["--read-buffer", "banana"], &["--read-buffer", "banana"]),
        (&["--idle-timeout", "soon"], &["--idle-timeout", "soon"]),
        (&["--ping-interval", "1.5s"], &["--ping-interval"]),
        (&["--max-message", "12XB"], &["--max-message", "12XB"]),
        (
            &["--max-frame", "2MiB", "--max-message", "1MiB"],
            &["max frame", "max message"],
        ),
        (&["--read-buffer", "100"], &["read buffer"]),
        (&["--path", "ws"], &["path"]),
        (&["--subprotocol", "a b"], &["subprotocol"]),
        (&["--max-connections", "0"], &["max connections"]),
        (&["--max-connections", "many"], &["--max-connections"]),
        (&["--write-timeout", "0s"], &["write timeout"]),
        (&["--listen", "nowhere"], &["--listen"]),
        (&["--log-level", "loud"], &["--log-level"]),
        (&["--no-such-flag"], &["--no-such-flag"]),
    ];
    for (args, words) in cases {
        let (code, out, err) = run_to_exit(Command::new(env!("CARGO_BIN_EXE_wsloop")), args);
        assert_eq!(code, Some(2), "{args:?}: exit code; stderr: {err}");
        assert!(
            out.is_empty(),
            "{args:?}: nothing expected on stdout, got {out:?}"
        );
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.contains("error") || first.contains("invalid"),
            "{args:?}: first stderr line should say what is wrong: {err:?}"
        );
        for w in *words {
            assert!(
                err.to_lowercase().contains(&w.to_lowercase()),
                "{args:?}: stderr should mention {w:?}: {err:?}"
            );
        }
        assert!(
            !err.contains("listening on"),
            "{args:?}: it must not start serving: {err:?}"
        );
    }
}

/// The block of `--help` text that describes `--flag`.
fn help_block<'a>(help: &'a str, flag: &str) -> &'a str {
    let start = help
        .find(&format!("{flag} "))
        .or_else(|| help.find(&format!("{flag}\n")))
        .unwrap_or_else(|| panic!("--help does not list {flag}:\n{help}"));
    let rest = &help[start..];
    let end = rest[1..].find("\n  -").map(|i| i + 1).unwrap_or(rest.len());
    &rest[..end]
}

fn shown_default(block: &str) -> Option<String> {
    let i = block.find("[default: ")?;
    let rest = &block[i + "[default: ".len()..];
    Some(rest[..rest.find(']')?].to_string())
}

#[test]
fn help_lists_every_default_and_they_are_the_real_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "--help exit status {:?}", out.status);
    let help = String::from_utf8(out.stdout).unwrap();

    // The configuration the server reports at start-up with no flags (only the test's
    // --listen 127.0.0.1:0 and --log-level debug).
    let server = Server::start(&[]);
    // The reader thread stores the line just after reporting the address.
    assert!(wait_until(Duration::from_secs(5), || server
        .logged("listening on ws://")));
    let line = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("listening on ws://"))
        .cloned()
        .unwrap();
    let effective = |key: &str| -> String {
        server
            .setting(key)
            .unwrap_or_else(|| panic!("{key} not in start-up line {line}"))
    };

    // flag, config key in the start-up line (None: cannot be compared that way)
    let flags: &[(&str, Option<&str>)] = &[
        ("--listen", None),
        ("--path", Some("path")),
        ("--read-buffer", Some("read_buffer")),
        ("--write-buffer", Some("write_buffer")),
        ("--max-pending-output", Some("max_pending_output")),
        ("--max-message", Some("max_message")),
        ("--max-frame", None), // follows --max-message: tests/limit_flags.rs
        ("--max-request", Some("max_request")),
        ("--max-connections", None),
        ("--max-connections-per-ip", None),
        ("--ping-interval", Some("ping_interval")),
        ("--idle-timeout", Some("idle_timeout")),
        ("--write-timeout", Some("write_timeout")),
        ("--handshake-timeout", Some("handshake_timeout")),
        ("--close-timeout", Some("close_timeout")),
        ("--allow-origin", None),
        ("--log-level", None),
    ];
    for (flag, key) in flags {
        let block = help_block(&help, flag);
        let shown = shown_default(block)
            .unwrap_or_else(|| panic!("--help shows no default for {flag}:\n{block}"));
        if let Some(key) = key {
            assert_eq!(
                shown,
                effective(key),
                "{flag}: --help says one default, the server runs with another"
            );
        }
    }
    assert_eq!(
        shown_default(help_block(&help, "--listen")).unwrap(),
        "127.0.0.1:8080"
    );
    assert_eq!(
        shown_default(help_block(&help, "--log-level")).unwrap(),
        "info"
    );
    assert_eq!(
        shown_default(help_block(&help, "--max-connections-per-ip")).unwrap(),
        "no limit"
    );
    assert_eq!(effective("max_connections_per_ip"), "off");
    assert!(
        shown_default(help_block(&help, "--allow-origin"))
            .unwrap()
            .contains("same origin")
    );
    assert_eq!(effective("origins"), "same-origin");
    // max connections: "open-file limit less a reserve"; the server raises its soft
    // limit to the hard one and keeps FD_RESERVE descriptors back.
    assert!(
        shown_default(help_block(&help, "--max-connections"))
            .unwrap()
            .contains("open-file limit"),
    );
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let expected = if lim.rlim_max == libc::RLIM_INFINITY {
        1u64 << 24
    } else {
        lim.rlim_max
            .saturating_sub(wsloop::config::FD_RESERVE as u64)
            .clamp(1, 1 << 24)
    };
    assert_eq!(effective("max_connections"), expected.to_string());
    // The remaining options are listed too.
    for flag in ["--subprotocol", "--help", "--version"] {
        help_block(&help, flag);
    }
    assert_eq!(effective("subprotocols"), "[]");
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn embed_example_bridges_tcp_lines_to_websocket_clients_from_one_poll() {
    let bin = common::example::example_exe("embed");
    let mut child = Guard(
        Command::new(&bin)
            .args(["127.0.0.1:0", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn embed"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut tcp_addr: Option<SocketAddr> = None;
    let mut ws_url: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tcp_addr.is_none() || ws_url.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("embed did not print both listening addresses");
        if let Some(a) = line.strip_prefix("tcp lines listening on ") {
            tcp_addr = Some(a.trim().parse().expect("tcp address"));
        } else if let Some(rest) = line.split("listening on ws://").nth(1) {
            ws_url = Some(format!("ws://{}", rest.trim()));
        }
    }
    let tcp_addr = tcp_addr.unwrap();
    let ws_url = ws_url.unwrap();
    assert!(ws_url.ends_with("/ws"), "{ws_url}");

    // Two WebSocket clients; every line written on the plain TCP side reaches both,
    // in order, while the first one's echoes go on interleaved with the lines.
    let mut ws = connect(&ws_url);
    let mut ws2 = connect(&ws_url);
    assert_echo(&mut ws2, Message::text("second client"));
    let mut tcp = TcpStream::connect(tcp_addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let lines: Vec<String> = (0..200).map(|i| format!("plain line {i}")).collect();
    let mut sent = 0;
    let mut got = [Vec::new(), Vec::new()];
    for i in 0..200 {
        // Lines go out in bursts, some split across writes, with a CRLF or a LF.
        if i % 3 == 0 && sent < lines.len() {
            let burst: String = lines[sent..(sent + 5).min(lines.len())]
                .iter()
                .map(|l| format!("{l}\r\n"))
                .collect();
            let (a, b) = burst.as_bytes().split_at(burst.len() / 2);
            tcp.write_all(a).unwrap();
            tcp.write_all(b).unwrap();
            sent = (sent + 5).min(lines.len());
        }
        let echo = if i % 2 == 0 {
            Message::text(format!("ws text {i}"))
        } else {
            Message::binary(vec![i as u8; 1 + i * 50])
        };
        ws.send(echo.clone()).unwrap();
        loop {
            match ws.read().expect("read on the first client") {
                Message::Text(t) if t.starts_with("plain line ") => got[0].push(t.to_string()),
                Message::Ping(_) | Message::Pong(_) => {}
                m => {
                    assert_eq!(m, echo, "echo {i}");
                    break;
                }
            }
        }
    }
    tcp.write_all(
        lines[sent..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    )
    .unwrap();
    while got[0].len() < lines.len() {
        match ws
            .read()
            .expect("the rest of the lines on the first client")
        {
            Message::Text(t) => got[0].push(t.to_string()),
            m => panic!("unexpected {m:?}"),
        }
    }
    while got[1].len() < lines.len() {
        match ws2.read().expect("lines on the second client") {
            Message::Text(t) => got[1].push(t.to_string()),
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(got[0], lines, "first client");
    assert_eq!(got[1], lines, "second client");
    // The WebSocket side refuses a bad request with an HTTP status, like the binary.
    let ws_addr: SocketAddr = ws_url["ws://".len()..ws_url.len() - "/ws".len()]
        .parse()
        .unwrap();
    let (status, _) = http(ws_addr, upgrade_request(ws_addr, "/nope", "").as_bytes());
    assert_eq!(status, 404);

    // SIGTERM: the WebSocket clients get Close 1001, then the process exits 0.
    let started = Instant::now();
    sigterm(child.0.id());
    let readers: Vec<_> = [ws, ws2]
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                let mut code = None;
                loop {
                    match ws.read() {
                        Ok(Message::Close(f)) => code = f.map(|f| u16::from(f.code)),
                        Ok(_) => {}
                        Err(_) => return code,
                    }
                }
            })
        })
        .collect();
    let status = wait_exit(&mut child.0, Duration::from_secs(10))
        .expect("embed did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "embed exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "embed took {:?} to exit though its clients answered Close",
        started.elapsed()
    );
    for r in readers {
        assert_eq!(
            r.join().unwrap(),
            Some(1001),
            "WebSocket client's close code"
        );
    }
    // The plain TCP connection ends with the process.
    let mut buf = [0u8; 8];
    assert!(matches!(tcp.read(&mut buf), Ok(0) | Err(_)));
}
