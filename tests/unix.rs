//! `--listen unix:PATH`: WebSocket over a Unix socket, and the path removed on clean exit.

mod common;
use common::{Guard, assert_echo, sigterm, wait_exit};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use tungstenite::Message;

#[test]
fn echo_over_unix_socket_and_cleanup() {
    let path = std::env::temp_dir().join(format!("wsloop-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .arg("--listen")
            .arg(format!("unix:{}", path.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("listening on ws://unix:"));
    assert!(ready, "no listening line");
    std::thread::spawn(move || lines.for_each(drop));

    let sock = UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client::client("ws://localhost/ws", sock).unwrap();
    assert_echo(&mut ws, Message::text("over a unix socket"));
    assert_echo(&mut ws, Message::binary(vec![7u8; 70_000]));

    // SIGTERM: the client gets 1001, the process exits 0 and the socket file is gone.
    sigterm(child.0.id());
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    drop(ws);
    let status = wait_exit(&mut child.0, Duration::from_secs(10)).expect("no exit within 10 s");
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "socket path left behind");
}
