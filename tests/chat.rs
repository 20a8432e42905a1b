//! examples/chat.rs end to end: build the example, run it on a free loopback port and
//! talk to it with tungstenite clients.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Builds example `name` (once per test binary) and returns its executable.
fn example_exe(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some((_, exe)) = built.iter().find(|(n, _)| n == name) {
        return exe.clone();
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--example", name]);
    if cfg!(feature = "json") {
        cmd.args(["--features", "json"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cargo build");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo build") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo build --example {name} took over 600 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "cargo build --example {name}: {status}");
    let exe = out
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""kind":["example"]"#))
        .filter(|l| l.contains(&format!(r#""name":"{name}""#)))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .unwrap_or_else(|| panic!("no executable reported for example {name}"));
    built.push((name.to_string(), exe.clone()));
    exe
}

/// A running example process; killed (by its PID) when dropped.
struct Example {
    child: Child,
    /// `ws://ADDR/ws`
    url: String,
}

impl Example {
    fn start(name: &str) -> Example {
        let mut child = Command::new(example_exe(name))
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the address so the example never blocks on stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("example {name} did not report its listening address");
            }
        };
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        Example { child, url }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_timeout(ws: Client) -> Client {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// Joins with `query` appended to the URL (e.g. `?name=alice`).
fn join(ex: &Example, query: &str) -> Client {
    let (ws, _) = tungstenite::connect(format!("{}{query}", ex.url)).expect("connect");
    with_timeout(ws)
}

/// Joins with the name in an `X-Chat-Name` header.
fn join_with_header(ex: &Example, name: &'static str) -> Client {
    let mut req = ex.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Chat-Name", HeaderValue::from_static(name));
    let (ws, _) = tungstenite::connect(req).expect("connect");
    with_timeout(ws)
}

/// The next data or close message (pings and pongs skipped).
fn next(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

/// Expects the next message to be the text `want`.
fn expect(ws: &mut Client, want: &str) {
    match next(ws) {
        Message::Text(t) => assert_eq!(t.as_str(), want),
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

fn say(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

#[test]
fn messages_reach_the_others_not_the_sender() {
    let ex = Example::start("chat");
    let mut alice = join(&ex, "?name=alice");
    let mut bob = join(&ex, "?name=bob");
    expect(&mut alice, "* bob joined");
    let mut carol = join_with_header(&ex, "carol");
    expect(&mut alice, "* carol joined");
    expect(&mut bob, "* carol joined");

    say(&mut alice, "hello");
    expect(&mut bob, "alice: hello");
    expect(&mut carol, "alice: hello");

    // The server handles messages in order on one thread: had alice been sent her own
    // line, it would come before bob's, which was sent after bob received hers.
    say(&mut bob, "hi all");
    expect(&mut alice, "bob: hi all");
    expect(&mut carol, "bob: hi all");

    say(&mut carol, "yo");
    expect(&mut alice, "carol: yo");
    expect(&mut bob, "carol: yo");

    say(&mut alice, "bye");
    expect(&mut bob, "alice: bye");
    expect(&mut carol, "alice: bye");
}

#[test]
fn departed_members_are_removed() {
    let ex = Example::start("chat");
    let mut alice = join(&ex, "?name=alice");
    let mut bob = join(&ex, "?name=bob");
    expect(&mut alice, "* bob joined");
    let carol = join(&ex, "?name=carol");
    expect(&mut alice, "* carol joined");
    expect(&mut bob, "* carol joined");

    // carol vanishes without a close frame.
    drop(carol);
    expect(&mut alice, "* carol left");
    expect(&mut bob, "* carol left");
    say(&mut alice, "still here?");
    expect(&mut bob, "alice: still here?");

    // bob leaves properly.
    bob.close(None).expect("close");
    loop {
        match bob.read() {
            Ok(Message::Close(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(other) => panic!("bob got {other:?} after closing"),
            Err(_) => break,
        }
    }
    expect(&mut alice, "* bob left");

    // A newcomer may get a departed member's id; the room works on.
    let mut dave = join(&ex, "?name=dave");
    expect(&mut alice, "* dave joined");
    say(&mut dave, "hi");
    expect(&mut alice, "dave: hi");
    say(&mut alice, "welcome");
    expect(&mut dave, "alice: welcome");
}

#[test]
fn binary_is_refused_with_1003() {
    let ex = Example::start("chat");
    let mut alice = join(&ex, "?name=alice");
    let mut bob = join(&ex, "?name=bob");
    expect(&mut alice, "* bob joined");

    bob.send(Message::binary(vec![1u8, 2, 3])).expect("send");
    match next(&mut bob) {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Unsupported);
            assert_eq!(u16::from(frame.code), 1003);
            assert_eq!(frame.reason.as_str(), "text only");
        }
        other => panic!("expected close 1003, got {other:?}"),
    }
    // Nothing of the binary message reached alice; bob's leaving did.
    expect(&mut alice, "* bob left");
    let mut carol = join(&ex, "?name=carol");
    expect(&mut alice, "* carol joined");
    say(&mut carol, "hi");
    expect(&mut alice, "carol: hi");
}

#[test]
fn names_from_query_header_or_guest() {
    let ex = Example::start("chat");
    let mut watcher = join(&ex, "?name=watcher");
    let _a = join(&ex, "");
    expect(&mut watcher, "* guest-1 joined");
    let _b = join(&ex, "?name=J%C3%BCrgen+K");
    expect(&mut watcher, "* Jürgen K joined");
    let _c = join_with_header(&ex, "hedda");
    expect(&mut watcher, "* hedda joined");
    // The query string wins over the header.
    let mut req = format!("{}?name=quinn", ex.url)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("X-Chat-Name", HeaderValue::from_static("ignored"));
    let (_d, _) = tungstenite::connect(req).expect("connect");
    expect(&mut watcher, "* quinn joined");
    let _e = join(&ex, "?name=");
    expect(&mut watcher, "* guest-2 joined");
}
