//! `--reuse-port`: two processes share one port and the kernel spreads connections.

mod common;
use common::*;
use std::time::Duration;
use tungstenite::Message;

#[test]
fn two_processes_share_a_port() {
    let first = Server::start(&["--reuse-port"]);
    let port = first.addr.port().to_string();
    // The second asks for the same port explicitly (a later --listen overrides the
    // harness's); without SO_REUSEPORT it would fail to bind.
    let listen = format!("127.0.0.1:{port}");
    let second = Server::start(&["--reuse-port", "--listen", &listen]);
    assert_eq!(second.addr, first.addr);

    let mut clients = Vec::new();
    for i in 0..64 {
        let mut ws = connect(first.url());
        assert_echo(&mut ws, Message::text(format!("client {i}")));
        clients.push(ws);
    }
    let opened = |s: &Server| {
        s.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(": open /ws"))
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || opened(&first)
        + opened(&second)
        == 64));
    assert!(
        opened(&first) > 0 && opened(&second) > 0,
        "one process got every connection: {} / {}",
        opened(&first),
        opened(&second)
    );
}
