//! examples/json_echo.rs end to end (feature `json`): build the example, run it on a
//! free loopback port and send it requests, good and bad, over one connection.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
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
    cmd.args(["--features", "json"]);
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

fn connect(ex: &Example) -> Client {
    let (ws, _) = tungstenite::connect(ex.url.as_str()).expect("connect");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// Sends `msg` and returns the reply, which must be a JSON text message.
fn ask(ws: &mut Client, msg: Message) -> Value {
    ws.send(msg).expect("send");
    loop {
        match ws.read().expect("read reply") {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(t) => {
                return serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("reply {t:?} is not JSON: {e}"));
            }
            other => panic!("expected a text reply, got {other:?}"),
        }
    }
}

fn ask_text(ws: &mut Client, text: &str) -> Value {
    ask(ws, Message::text(text))
}

/// The `error` member of an error reply.
fn error_of(reply: &Value) -> &str {
    assert_eq!(
        reply.as_object().map(|o| o.len()),
        Some(1),
        "error reply {reply} has other members"
    );
    reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error reply: {reply}"))
}

#[test]
fn answers_requests() {
    let ex = Example::start("json_echo");
    let mut ws = connect(&ex);
    assert_eq!(
        ask_text(&mut ws, r#"{"op":"add","a":1,"b":2}"#),
        json!({"result": 3})
    );
    assert_eq!(
        ask_text(&mut ws, r#"{"b":10,"op":"sub","a":4}"#),
        json!({"result": -6})
    );
    assert_eq!(
        ask_text(&mut ws, r#" {"op":"mul","a":-7,"b":6} "#),
        json!({"result": -42})
    );
    assert_eq!(
        ask_text(&mut ws, r#"{"op":"div","a":7,"b":2}"#),
        json!({"result": 3})
    );
    // Binary messages carry JSON too; the reply is text.
    assert_eq!(
        ask(
            &mut ws,
            Message::binary(br#"{"op":"add","a":40,"b":2}"#.to_vec())
        ),
        json!({"result": 42})
    );
}

#[test]
fn malformed_requests_get_an_error_and_the_connection_stays_open() {
    let ex = Example::start("json_echo");
    let mut ws = connect(&ex);
    let cases = [
        (r#"{"op":"add","a":1"#, "EOF while parsing"),
        ("not json", "expected"),
        ("", "EOF while parsing"),
        (r#"{"op":"pow","a":2,"b":3}"#, "unknown variant `pow`"),
        (r#"{"a":1,"b":2}"#, "missing field `op`"),
        (r#"{"op":"add","a":1}"#, "missing field `b`"),
        (r#"{"op":"add","a":"1","b":2}"#, "invalid type"),
        (r#"{"op":"add","a":1.5,"b":2}"#, "invalid type"),
        (r#"[1,2]"#, "invalid type"),
        (r#"{"op":"div","a":1,"b":0}"#, "division by zero"),
        (r#"{"op":"add","a":9223372036854775807,"b":1}"#, "overflow"),
        (
            r#"{"op":"div","a":-9223372036854775808,"b":-1}"#,
            "overflow",
        ),
    ];
    for (request, needle) in cases {
        let reply = ask_text(&mut ws, request);
        let error = error_of(&reply);
        assert!(
            error.contains(needle),
            "{request:?}: error {error:?} lacks {needle:?}"
        );
        // Still open and serving after each bad request.
        assert_eq!(
            ask_text(&mut ws, r#"{"op":"add","a":1,"b":2}"#),
            json!({"result": 3}),
            "after {request:?}"
        );
    }
    let reply = ask(&mut ws, Message::binary(vec![0xff, 0xfe]));
    assert!(
        error_of(&reply).starts_with("invalid JSON message: "),
        "{reply}"
    );
    assert_eq!(
        ask_text(&mut ws, r#"{"op":"mul","a":6,"b":7}"#),
        json!({"result": 42})
    );
    ws.close(None).expect("close");
}
