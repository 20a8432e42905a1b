//! Messages read where they lie (`Handler::on_data`) and answers framed straight into
//! the connection's output (`Ctx::send` to the connection being called back), on a
//! real server in this process with tungstenite's client: which messages arrive
//! borrowed, that every kind of answer arrives intact and in the order made, and
//! that the counters see answers that skipped the command queue.

mod common;
use common::inproc::Loop;
use common::*;
use std::sync::{Arc, Mutex};
use tungstenite::protocol::frame::coding::CloseCode;
use wsloop::{Bytes, Config, ConnId, Ctx, Data, Handler, Message};

/// (borrowed, text, length) of each message, as `on_data` saw it.
type Seen = Arc<Mutex<Vec<(bool, bool, usize)>>>;

/// Echoes; `order` answers "a", then closes with 4000, then tries "b"; `ping` sends
/// a Ping with payload "p", then "after-ping"; `owned` answers with an owned message.
struct InPlace(Seen);

impl Handler for InPlace {
    fn on_message(&mut self, _: &mut Ctx, _: ConnId, _: Message) {
        unreachable!("on_data is overridden and never calls on_message");
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, data: Data<'_>) {
        let facts = (data.is_borrowed(), data.is_text(), data.len());
        self.0.lock().unwrap().push(facts);
        match data.as_text() {
            Some("order") => {
                ctx.send(conn, "a").unwrap();
                ctx.close(conn, 4000, "bye").unwrap();
                // Queued behind the close, so it never goes out.
                let _ = ctx.send(conn, "b");
            }
            Some("ping") => {
                ctx.send(conn, Message::Ping(Bytes::from_static(b"p")))
                    .unwrap();
                ctx.send(conn, &String::from("after-ping")).unwrap();
            }
            Some("owned") => ctx.send(conn, Message::text("owned answer")).unwrap(),
            _ => ctx.send(conn, data).unwrap(),
        }
    }
}

fn start() -> (Loop<InPlace>, Seen) {
    let seen = Seen::default();
    (Loop::start(Config::default(), InPlace(seen.clone())), seen)
}

#[test]
fn small_frames_arrive_borrowed_and_large_or_fragmented_ones_owned() {
    let (lp, seen) = start();
    let mut ws = connect(lp.url.as_str());
    assert_echo(&mut ws, Message::binary(vec![7u8; 32]));
    assert_echo(&mut ws, Message::text("héllo wörld"));
    let large: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    assert_echo(&mut ws, Message::binary(large));
    // Read straight into their own buffers and unmasked as they arrive: a large
    // text of multi-byte characters, and a large message in two large frames.
    let text = "é€😀 ".repeat(80_000);
    assert_echo(&mut ws, Message::text(text.as_str()));
    // A message in two frames is joined into a buffer of its own.
    let mut raw = upgraded(lp.addr, "/ws");
    use std::io::Write;
    raw.write_all(&frame(0x02, b"first half "))
        .and_then(|_| raw.write_all(&frame(0x80, b"second half")))
        .unwrap();
    let (byte0, payload) = read_frame(&mut raw).unwrap();
    assert_eq!(
        (byte0, payload.as_slice()),
        (0x82, &b"first half second half"[..])
    );
    let halves: Vec<Vec<u8>> = (0..2u8)
        .map(|h| (0..300_000u32).map(|i| (i % 241) as u8 ^ h).collect())
        .collect();
    raw.write_all(&frame(0x02, &halves[0]))
        .and_then(|_| raw.write_all(&frame(0x80, &halves[1])))
        .unwrap();
    let (byte0, payload) = read_frame(&mut raw).unwrap();
    assert_eq!(byte0, 0x82);
    assert!(
        payload == halves.concat(),
        "a message of two large frames came back changed"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (true, false, 32),
            (true, true, "héllo wörld".len()),
            (false, false, 1 << 20),
            (false, true, text.len()),
            (false, false, 22),
            (false, false, 600_000),
        ]
    );
    let out = lp.with(|s, _| s.stats().messages_out);
    assert_eq!(
        out, 6,
        "answers framed straight into the output are counted"
    );
}

#[test]
fn answers_keep_the_order_they_were_made_in() {
    let (lp, _) = start();
    let mut ws = connect(lp.url.as_str());
    ws.send(Message::text("ping")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Ping(Bytes::from_static(b"p")));
    assert_eq!(ws.read().unwrap(), Message::text("after-ping"));
    ws.send(Message::text("owned")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("owned answer"));

    ws.send(Message::text("order")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("a"));
    match ws.read().unwrap() {
        Message::Close(Some(f)) => {
            assert_eq!((f.code, f.reason.as_str()), (CloseCode::from(4000), "bye"))
        }
        other => panic!("expected the close after \"a\", got {other:?}"),
    }
    let dropped = lp.with(|s, _| s.stats().commands_dropped);
    assert_eq!(dropped, 1, "the send queued behind the close is dropped");
}

/// Borrowed answers to a client that is not reading, with a small window: 16 KiB
/// ones copied for the turn's write, 70 KiB ones written through at once when
/// nothing waits before them, the rest of what the socket refuses copied — all in
/// order, byte for byte.
#[test]
fn borrowed_answers_keep_their_bytes_and_order_when_the_socket_is_full() {
    use std::io::Write;
    let (lp, seen) = start();
    let mut s = connect_tuned(lp.addr, None, Some(16 << 10)).unwrap();
    assert_eq!(request_upgrade(&mut s, lp.addr, "/ws"), 101);
    // More than the socket buffers hold, written while the client does not read.
    let messages: Vec<Vec<u8>> = (0..120u32)
        .map(|i| {
            let len = if i % 8 == 0 { 16 << 10 } else { 70 << 10 };
            (0..len)
                .map(|j: u32| (j ^ i.wrapping_mul(2654435761)) as u8)
                .collect()
        })
        .collect();
    let mut writer = s.try_clone().unwrap();
    // Held still while the frames pile up, the loop then reads them 128 KiB at a
    // time: many arrive whole, to be answered from where they lie.
    let stall = lp.stall();
    let frames: Vec<Vec<u8>> = messages.iter().map(|m| frame(0x82, m)).collect();
    let writing = std::thread::spawn(move || {
        for f in frames {
            writer.write_all(&f).unwrap();
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    stall.release();
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (i, m) in messages.iter().enumerate() {
        let (byte0, payload) = read_frame(&mut s).unwrap();
        assert_eq!(byte0, 0x82, "message {i}");
        assert!(payload == *m, "message {i} came back changed");
    }
    writing.join().unwrap();
    let seen = seen.lock().unwrap();
    let in_place = |len: usize| seen.iter().any(|&(borrowed, _, l)| borrowed && l == len);
    assert!(
        in_place(16 << 10) && in_place(70 << 10),
        "none read in place"
    );
}
