//! Operations: the health and readiness probes, the drain on SIGTERM (spread closes,
//! the close code, a second signal), socket activation (`LISTEN_FDS`) and its bad
//! values, and systemd's `Type=notify` messages. The restart under load is
//! tests/restart.rs.

mod common;
use common::systemd::{activated, listen_socket};
use common::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tungstenite::Message;

/// A connected client that reads on its own thread until the server closes it; the
/// close code it got goes into `closed` as it arrives.
fn until_close(mut ws: Client, closed: Arc<Mutex<Vec<u16>>>) -> JoinHandle<Option<u16>> {
    std::thread::spawn(move || {
        let mut code = None;
        loop {
            match ws.read() {
                Ok(Message::Close(f)) => {
                    code = f.map(|f| u16::from(f.code));
                    closed.lock().unwrap().push(code.unwrap_or(1005));
                }
                Ok(_) => {}
                Err(_) => return code,
            }
        }
    })
}

/// Client threads, and the close codes they got so far.
type Clients = (Vec<JoinHandle<Option<u16>>>, Arc<Mutex<Vec<u16>>>);

/// `n` clients that echoed once, each then waiting for its close on a thread.
fn clients(server: &Server, n: usize) -> Clients {
    let closed = Arc::new(Mutex::new(Vec::new()));
    let threads = (0..n)
        .map(|i| {
            let mut ws = connect(server.url());
            assert_echo(&mut ws, Message::text(format!("client {i}")));
            until_close(ws, closed.clone())
        })
        .collect();
    (threads, closed)
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes(),
    )
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with the PID of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

#[test]
fn probes_follow_readiness_at_max_connections_on_both_ports() {
    let server = Server::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-connections",
        "2",
        "--ws-probes",
    ]);
    let probes = server.metrics_addr();
    for addr in [probes, server.addr] {
        let (status, body) = get(addr, "/healthz");
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("alive\n"), "{body}");
        let (status, body) = get(addr, "/readyz?verbose=1");
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("ready\n"), "{body}");
    }
    // The metrics port has no WebSocket path; the WebSocket port still upgrades.
    assert_eq!(get(probes, "/ws").0, 404);
    let mut a = connect(server.url());
    let b = connect(server.url());
    assert_echo(&mut a, Message::text("a"));
    let full = wait_until(Duration::from_secs(5), || get(probes, "/readyz").0 == 503);
    assert!(full, "readyz still 200 with every connection taken");
    assert!(get(probes, "/readyz").1.contains("at max_connections"));
    assert_eq!(get(probes, "/healthz").0, 200, "alive while full");
    assert_eq!(
        get(server.addr, "/readyz").0,
        503,
        "WebSocket port when full"
    );
    assert_eq!(
        get(server.addr, "/healthz").0,
        200,
        "WebSocket port when full"
    );
    drop(b);
    let room = wait_until(Duration::from_secs(5), || get(probes, "/readyz").0 == 200);
    assert!(room, "readyz did not come back once a connection closed");
    assert_echo(&mut a, Message::text("still here"));
}

#[test]
fn readyz_is_503_while_accepting_is_paused_for_lack_of_descriptors() {
    // 64 descriptors, room for 1000 connections: the descriptors run out first.
    let server = Server::start_with_fd_limit(
        64,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-connections",
            "1000",
        ],
    );
    let probes = server.metrics_addr();
    assert_eq!(get(probes, "/readyz").0, 200);
    let socks: Vec<_> = (0..80).map(|_| raw(server.addr)).collect();
    assert!(wait_until(Duration::from_secs(10), || server
        .logged("out of file descriptors")));
    let (status, body) = get(probes, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("out of file descriptors"), "{body}");
    assert_eq!(get(probes, "/healthz").0, 200, "alive without descriptors");
    drop(socks);
    let back = wait_until(Duration::from_secs(10), || get(probes, "/readyz").0 == 200);
    assert!(back, "readyz did not come back once descriptors were free");
}

/// A hand-over with `--reuse-port`: the new process starts while the old one still
/// holds both ports, metrics included.
#[test]
fn reuse_port_shares_the_metrics_port_too() {
    let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
    let ws = port(listen_socket());
    let metrics = format!("127.0.0.1:{}", port(listen_socket()));
    let listen = format!("127.0.0.1:{ws}");
    let args = [
        "--reuse-port",
        "--listen",
        &listen,
        "--metrics-listen",
        &metrics,
    ];
    let old = Server::start(&args);
    let new = Server::start(&args);
    for s in [&old, &new] {
        assert_eq!(get(s.metrics_addr(), "/healthz").0, 200);
        let mut c = connect(s.url());
        assert_echo(&mut c, Message::text("shared"));
    }
}

#[test]
fn probes_stay_off_the_websocket_port_unless_asked() {
    let server = Server::start(&[]);
    assert_eq!(get(server.addr, "/healthz").0, 404);
    assert_eq!(get(server.addr, "/readyz").0, 404);
}

#[test]
fn bad_probe_requests_get_400_405_431_and_harm_nothing() {
    let server = Server::start(&["--metrics-listen", "127.0.0.1:0"]);
    let probes = server.metrics_addr();
    let mut ok = connect(server.url());
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "malformed",
            b"GET /readyz HTTP/1.1\r\nBad\x01Header\r\n\r\n".to_vec(),
            400,
        ),
        (
            "not http",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n".to_vec(),
            400,
        ),
        (
            "post",
            b"POST /readyz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
        ),
        (
            "huge",
            {
                // A head that never ends, past the endpoint's 4 KiB: no more is read.
                let mut r = b"GET /readyz HTTP/1.1\r\nX-Pad: ".to_vec();
                r.resize(4500, b'a');
                r
            },
            431,
        ),
    ];
    for (name, request, want) in cases {
        let mut s = raw(probes);
        s.write_all(&request).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert_eq!(status_of(&text), want, "{name}: {text}");
        assert_eq!(get(probes, "/healthz").0, 200, "after {name}");
        echo_ok(&mut ok, name).unwrap();
    }
}

#[test]
fn sigterm_drains_spread_over_the_period_with_the_drain_code() {
    let mut server = Server::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--drain-period",
        "4s",
        "--drain-code",
        "1012",
    ]);
    let probes = server.metrics_addr();
    let (threads, closed) = clients(&server, 4);
    sigterm(server.pid());
    let draining = wait_until(Duration::from_secs(5), || get(probes, "/readyz").0 == 503);
    assert!(draining, "readyz still 200 after SIGTERM");
    assert!(get(probes, "/readyz").1.contains("draining"));
    assert_eq!(get(probes, "/healthz").0, 200, "alive while draining");
    // The four closes are due at 0, 1, 2 and 3 s: when the first has come, the last
    // has not.
    assert!(wait_until(Duration::from_secs(5), || !closed
        .lock()
        .unwrap()
        .is_empty()));
    assert!(
        closed.lock().unwrap().len() < 4,
        "every client was closed at once"
    );
    let status = wait_exit(&mut server.child, Duration::from_secs(30))
        .expect("wsloop did not exit after its drain");
    assert_eq!(status.code(), Some(0));
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(1012));
    }
    assert!(server.wait_logged("spread over 4s"));
}

/// A client whose connection the process took just before SIGTERM is not reset: its
/// upgrade completes, and it is told at once to come back.
#[test]
fn a_handshake_under_way_at_sigterm_opens_and_gets_the_drain_code() {
    let mut server = Server::start(&["--drain-period", "5s", "--drain-code", "1012"]);
    let (_threads, closed) = clients(&server, 1);
    let mut s = raw(server.addr);
    let request = upgrade_request(server.addr, &server.path, "");
    let (head, rest) = request.split_at(20);
    s.write_all(head.as_bytes()).unwrap();
    // Time for the loop to accept it (one still in the listen backlog when the listener
    // closes is reset by the kernel: socket activation is the cure for that).
    std::thread::sleep(Duration::from_millis(200));
    sigterm(server.pid());
    assert!(wait_until(Duration::from_secs(5), || !closed
        .lock()
        .unwrap()
        .is_empty()));
    s.write_all(rest.as_bytes()).unwrap();
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 101);
    assert_eq!(read_close_code(&mut s), Some(1012));
    s.write_all(&close_frame(1012, b"")).unwrap();
    let status = wait_exit(&mut server.child, Duration::from_secs(20)).expect("no exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_sigterm_or_a_sigint_ends_the_drain_at_once() {
    for second in [libc::SIGTERM, libc::SIGINT] {
        let mut server = Server::start(&["--drain-period", "60s"]);
        let (threads, closed) = clients(&server, 3);
        sigterm(server.pid());
        assert!(wait_until(Duration::from_secs(5), || !closed
            .lock()
            .unwrap()
            .is_empty()));
        // The other two are due 20 and 40 s into the drain.
        send_signal(server.pid(), second);
        let status = wait_exit(&mut server.child, Duration::from_secs(15))
            .expect("the second signal did not end the drain");
        assert_eq!(status.code(), Some(0), "signal {second}");
        for t in threads {
            assert_eq!(t.join().unwrap(), Some(1001), "signal {second}");
        }
        assert!(server.wait_logged("during the drain"), "signal {second}");
    }
}

#[test]
fn sigint_closes_every_client_at_once() {
    let mut server = Server::start(&["--drain-period", "60s"]);
    let (threads, _) = clients(&server, 3);
    send_signal(server.pid(), libc::SIGINT);
    let status = wait_exit(&mut server.child, Duration::from_secs(15))
        .expect("SIGINT did not close everyone at once");
    assert_eq!(status.code(), Some(0));
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(1001));
    }
}

#[test]
fn socket_activation_serves_the_inherited_listener_and_its_backlog() {
    let listener = listen_socket();
    let addr = listener.local_addr().unwrap();
    // A client that came before the process: it waits in the backlog.
    let early = std::thread::spawn(move || {
        let mut ws = connect(format!("ws://{addr}/ws"));
        assert_echo(&mut ws, Message::text("waited in the backlog"));
    });
    let server = Server::start_with(activated(listener.as_raw_fd(), "1", 0), &[]);
    assert_eq!(server.addr, addr, "not the inherited socket");
    assert!(server.wait_logged("systemd passed"));
    early.join().unwrap();
    let mut ws = connect(server.url());
    assert_echo(&mut ws, Message::text("after start"));
}

/// Runs a wsloop that must refuse its inherited sockets: exit 2 and `why` on stderr.
fn refuses(cmd: Command, why: &str) {
    let (code, _, err) = run_to_exit(cmd, &[]);
    assert_eq!(code, Some(2), "{why}: {err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
}

#[test]
fn wrong_socket_activation_exits_2_with_the_reason() {
    let listener = listen_socket();
    let fd = listener.as_raw_fd();
    refuses(activated(fd, "1", 1), "is not this process");
    refuses(activated(fd, "2", 0), "exactly one listening socket");
    refuses(activated(fd, "x", 0), "exactly one listening socket");
    let file = std::fs::File::open("Cargo.toml").unwrap();
    refuses(activated(file.as_raw_fd(), "1", 0), "fd 3 is not a socket");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    refuses(activated(udp.as_raw_fd(), "1", 0), "not a TCP socket");
    let idle = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    refuses(activated(idle.as_raw_fd(), "1", 0), "not listening");
    let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
    refuses(activated(unix.as_raw_fd(), "1", 0), "not a TCP socket");
    // LISTEN_FDS without LISTEN_PID (a wrapper forgot it).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
    refuses(cmd, "is not this process");
}

#[test]
fn systemd_hears_ready_then_stopping() {
    let dir = std::env::temp_dir().join(format!("wsloop-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = Server::start_with(cmd, &[]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1");
    assert_eq!(&buf[..n], b"READY=1\n");
    let status = server.terminate(Duration::from_secs(15)).expect("no exit");
    assert_eq!(status.code(), Some(0));
    let n = sock.recv(&mut buf).expect("no STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    let _ = std::fs::remove_dir_all(&dir);
}
