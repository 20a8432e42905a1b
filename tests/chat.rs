//! examples/chat.rs end to end: build the example, run it on a free loopback port and
//! talk to it with tungstenite clients. (Across processes through Redis: tests/redis.rs.)

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

/// Joins and waits for the room to announce it: everyone after this call is a member.
fn enter(ex: &Example, query: &str, name: &str) -> Client {
    let mut ws = join(ex, query);
    expect(&mut ws, &format!("* {name} joined"));
    ws
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
fn messages_reach_every_member_sender_included() {
    let ex = Example::start("chat");
    let mut alice = enter(&ex, "?name=alice", "alice");
    let mut bob = enter(&ex, "?name=bob", "bob");
    expect(&mut alice, "* bob joined");
    let mut carol = join_with_header(&ex, "carol");
    for ws in [&mut alice, &mut bob, &mut carol] {
        expect(ws, "* carol joined");
    }

    // One line, the same order for everyone: the room is one topic.
    say(&mut alice, "hello");
    say(&mut bob, "hi all");
    say(&mut carol, "yo");
    let seen: Vec<Vec<String>> = [&mut alice, &mut bob, &mut carol]
        .into_iter()
        .map(|ws| {
            (0..3)
                .map(|_| match next(ws) {
                    Message::Text(t) => t.to_string(),
                    other => panic!("expected a line, got {other:?}"),
                })
                .collect()
        })
        .collect();
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    let mut lines = seen[0].clone();
    lines.sort();
    assert_eq!(lines, ["alice: hello", "bob: hi all", "carol: yo"]);
    say(&mut alice, "bye");
    for ws in [&mut alice, &mut bob, &mut carol] {
        expect(ws, "alice: bye");
    }
}

#[test]
fn rooms_are_separate() {
    let ex = Example::start("chat");
    let mut alice = enter(&ex, "?name=alice&room=a", "alice");
    let mut bob = enter(&ex, "?name=bob&room=b", "bob");
    let mut ann = enter(&ex, "?name=ann&room=a", "ann");
    expect(&mut alice, "* ann joined");
    say(&mut bob, "anyone?");
    expect(&mut bob, "bob: anyone?");
    say(&mut ann, "hi alice");
    // Room a's next line is ann's: bob's never came.
    expect(&mut alice, "ann: hi alice");
    expect(&mut ann, "ann: hi alice");
}

#[test]
fn departed_members_are_removed() {
    let ex = Example::start("chat");
    let mut alice = enter(&ex, "?name=alice", "alice");
    let mut bob = enter(&ex, "?name=bob", "bob");
    expect(&mut alice, "* bob joined");
    let carol = enter(&ex, "?name=carol", "carol");
    expect(&mut alice, "* carol joined");
    expect(&mut bob, "* carol joined");

    // carol vanishes without a close frame.
    drop(carol);
    expect(&mut alice, "* carol left");
    expect(&mut bob, "* carol left");
    say(&mut alice, "still here?");
    expect(&mut bob, "alice: still here?");
    expect(&mut alice, "alice: still here?");

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
    let mut dave = enter(&ex, "?name=dave", "dave");
    expect(&mut alice, "* dave joined");
    say(&mut dave, "hi");
    expect(&mut alice, "dave: hi");
    say(&mut alice, "welcome");
    expect(&mut dave, "dave: hi");
    expect(&mut dave, "alice: welcome");
}

#[test]
fn binary_is_refused_with_1003() {
    let ex = Example::start("chat");
    let mut alice = enter(&ex, "?name=alice", "alice");
    let mut bob = enter(&ex, "?name=bob", "bob");
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
    let mut carol = enter(&ex, "?name=carol", "carol");
    expect(&mut alice, "* carol joined");
    say(&mut carol, "hi");
    expect(&mut alice, "carol: hi");
}

#[test]
fn names_from_query_header_or_guest() {
    let ex = Example::start("chat");
    let mut watcher = enter(&ex, "?name=watcher", "watcher");
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

/// How many members a notice line announces: `* a, b and 3 more joined` is 5.
fn announced(line: &str, verb: &str) -> usize {
    let names = line
        .strip_prefix("* ")
        .and_then(|l| l.strip_suffix(&format!(" {verb}")))
        .unwrap_or_else(|| panic!("not a {verb} notice: {line:?}"));
    match names.split_once(" and ") {
        Some((listed, more)) => {
            let more = more.strip_suffix(" more").expect("`and N more`");
            listed.split(", ").count() + more.parse::<usize>().expect("a count")
        }
        None => names.split(", ").count(),
    }
}

/// A crowd joining at once is announced in a few lines, not one per member (which
/// would be quadratic as a room fills); every member is counted once.
#[test]
fn joins_are_announced_in_batches() {
    const CROWD: usize = 40;
    let ex = Example::start("chat");
    let mut watcher = enter(&ex, "?name=watcher", "watcher");
    let crowd: Vec<Client> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..CROWD)
            .map(|i| {
                let ex = &ex;
                s.spawn(move || join(ex, &format!("?name=m{i}")))
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let (mut counted, mut lines) = (0, 0);
    while counted < CROWD {
        match next(&mut watcher) {
            Message::Text(t) => counted += announced(&t, "joined"),
            other => panic!("expected a notice, got {other:?}"),
        }
        lines += 1;
    }
    assert_eq!(counted, CROWD);
    assert!(lines < CROWD, "{CROWD} joins took {lines} notices");
    drop(crowd);
    let mut left = 0;
    while left < CROWD {
        match next(&mut watcher) {
            Message::Text(t) => left += announced(&t, "left"),
            other => panic!("expected a notice, got {other:?}"),
        }
    }
    assert_eq!(left, CROWD);
}

#[test]
fn a_quiet_member_is_told_and_a_talking_one_is_not() {
    let ex = Example::start_with("chat", &["--idle-notice", "2"]);
    let mut quiet = enter(&ex, "?name=quiet&room=idle", "quiet");
    let mut talker = enter(&ex, "?name=talker&room=idle", "talker");
    expect(&mut quiet, "* talker joined");
    // The talker speaks every 500 ms, which moves its idle timer each time; the quiet
    // member hears those lines, then its own notice after 2 s.
    for i in 0..6 {
        say(&mut talker, &format!("line {i}"));
        expect(&mut talker, &format!("talker: line {i}"));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let mut heard = Vec::new();
    loop {
        match next(&mut quiet) {
            Message::Text(t) if t.as_str() == "* you have said nothing for 2 s" => break,
            Message::Text(t) => heard.push(t.as_str().to_owned()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        heard.iter().all(|l| l.starts_with("talker: line")),
        "{heard:?}"
    );
    // The talker heard its lines only: no notice came to it while it talked.
    say(&mut talker, "last");
    expect(&mut talker, "talker: last");
}
