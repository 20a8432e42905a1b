//! examples/chat.rs end to end: build the example, run it on a free loopback port and
//! talk to it with tungstenite clients.

use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;

mod common;
use common::example::Example;
use common::{Client, connect};

/// Joins with `query` appended to the URL (e.g. `?name=alice`).
fn join(ex: &Example, query: &str) -> Client {
    connect(format!("{}{query}", ex.url))
}

/// Joins with the name in an `X-Chat-Name` header.
fn join_with_header(ex: &Example, name: &'static str) -> Client {
    let mut req = ex.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("X-Chat-Name", HeaderValue::from_static(name));
    connect(req)
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
