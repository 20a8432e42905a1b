//! examples/json_echo.rs end to end (feature `json`): build the example, run it on a
//! free loopback port and send it requests, good and bad, over one connection.

use serde_json::{Value, json};
use tungstenite::Message;

mod common;
use common::example::Example;
use common::{Client, connect};

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
    let mut ws = connect(ex.url.as_str());
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
    let mut ws = connect(ex.url.as_str());
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
