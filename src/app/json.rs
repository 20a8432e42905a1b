//! JSON messages (feature `json`): the counterpart of gorilla's `ReadJSON`/`WriteJSON`.
//!
//! [`SendJson::send_json`] serializes a value into a text message and queues it like
//! [`Ctx::send`] — on a callback's `Ctx`, on [`Server::ctx`](crate::Server::ctx), or on
//! a [`Sender`] from another thread; [`from_message`] parses a received text or binary
//! message. [`to_message`] encodes once for a value that goes to many connections.
//!
//! ```
//! use serde::Deserialize;
//! use wsloop::json::{SendJson, from_message};
//! use wsloop::{ConnId, Ctx, Handler, Message};
//!
//! #[derive(Deserialize)]
//! struct Hello {
//!     name: String,
//! }
//!
//! struct Greeter;
//!
//! impl Handler for Greeter {
//!     fn on_message(&mut self, ctx: &mut Ctx, conn: ConnId, msg: Message) {
//!         let reply = match from_message::<Hello>(&msg) {
//!             Ok(hello) => serde_json::json!({ "greeting": format!("hello, {}", hello.name) }),
//!             Err(e) => serde_json::json!({ "error": e.to_string() }),
//!         };
//!         // Encoding a `serde_json::Value` cannot fail.
//!         let _ = ctx.send_json(conn, &reply);
//!     }
//! }
//! ```

use crate::{ConnId, Ctx, Message, SendError, Sender};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value could not be sent or received as JSON.
#[derive(Debug)]
pub enum JsonError {
    /// The message was a ping, pong, close or raw frame: it carries no JSON document.
    NotData,
    /// The payload is not JSON, or not JSON of the expected shape.
    Decode(serde_json::Error),
    /// The value could not be serialized (e.g. a map whose keys are not strings).
    Encode(serde_json::Error),
    /// The message was encoded but not accepted (the connection is closed, say).
    Send(SendError),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::NotData => f.write_str("not a text or binary message"),
            JsonError::Decode(e) => write!(f, "invalid JSON message: {e}"),
            JsonError::Encode(e) => write!(f, "cannot encode JSON: {e}"),
            JsonError::Send(e) => write!(f, "JSON message not sent: {e}"),
        }
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JsonError::NotData => None,
            JsonError::Decode(e) | JsonError::Encode(e) => Some(e),
            JsonError::Send(e) => Some(e),
        }
    }
}

/// Parses the payload of a text or binary message as JSON into a `T`.
///
/// `T` may borrow from the message (e.g. `&str` fields). Ping, pong, close and raw
/// frames give [`JsonError::NotData`]; a payload that does not parse gives
/// [`JsonError::Decode`].
pub fn from_message<'a, T: Deserialize<'a>>(msg: &'a Message) -> Result<T, JsonError> {
    match msg {
        Message::Text(text) => serde_json::from_str(text.as_str()).map_err(JsonError::Decode),
        Message::Binary(bytes) => serde_json::from_slice(bytes).map_err(JsonError::Decode),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
            Err(JsonError::NotData)
        }
    }
}

/// Serializes `value` into a text message. Encode once and clone the message (a cheap,
/// reference-counted copy) to send the same value to many connections.
pub fn to_message<T: Serialize + ?Sized>(value: &T) -> Result<Message, JsonError> {
    serde_json::to_string(value)
        .map(|s| Message::Text(s.into()))
        .map_err(JsonError::Encode)
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Ctx<'_> {}
    impl Sealed for crate::Sender {}
}

/// JSON sending for [`Ctx`] (and so for [`Server::ctx`](crate::Server::ctx)) and for
/// [`Sender`]; bring it into scope with `use wsloop::json::SendJson`.
pub trait SendJson: sealed::Sealed {
    /// Serializes `value` and queues it for `conn` as a text message, like `send`. On
    /// an error nothing is queued.
    fn send_json<T: Serialize + ?Sized>(
        &mut self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), JsonError>;
}

impl SendJson for Ctx<'_> {
    fn send_json<T: Serialize + ?Sized>(
        &mut self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), JsonError> {
        self.send(conn, to_message(value)?).map_err(JsonError::Send)
    }
}

impl SendJson for Sender {
    fn send_json<T: Serialize + ?Sized>(
        &mut self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), JsonError> {
        self.send(conn, to_message(value)?).map_err(JsonError::Send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ctx::{Command, ConnCommand, IdTable, TopicLimits};
    use crate::server::topics::Topics;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::error::Error as _;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, Deserialize)]
    struct Named<'a> {
        name: &'a str,
    }

    #[test]
    fn reads_text_and_binary() {
        let text = Message::text(r#"{"x":1,"y":-2}"#);
        assert_eq!(from_message::<Point>(&text).unwrap(), Point { x: 1, y: -2 });
        let binary = Message::binary(&br#"{"y":5,"x":4}"#[..]);
        assert_eq!(
            from_message::<Point>(&binary).unwrap(),
            Point { x: 4, y: 5 }
        );
        let value: serde_json::Value = from_message(&Message::text("[1,2,3]")).unwrap();
        assert_eq!(value, serde_json::json!([1, 2, 3]));
    }

    #[test]
    fn borrows_from_the_message() {
        let msg = Message::text(r#"{"name":"alice"}"#);
        let named: Named = from_message(&msg).unwrap();
        assert_eq!(named.name, "alice");
    }

    #[test]
    fn control_messages_are_not_data() {
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }));
        for msg in [
            Message::Ping("{}".into()),
            Message::Pong("{}".into()),
            Message::Close(None),
            close,
        ] {
            let err = from_message::<serde_json::Value>(&msg).unwrap_err();
            assert!(matches!(err, JsonError::NotData), "{msg:?}: {err:?}");
            assert!(err.source().is_none());
        }
        assert_eq!(
            JsonError::NotData.to_string(),
            "not a text or binary message"
        );
    }

    #[test]
    fn decode_errors() {
        for msg in [
            Message::text("{\"x\":1"),
            Message::text("not json"),
            Message::text(r#"{"x":"one","y":2}"#),
            Message::text(""),
            Message::binary(&b"\xff\xfe"[..]),
        ] {
            let err = from_message::<Point>(&msg).unwrap_err();
            assert!(matches!(err, JsonError::Decode(_)), "{msg:?}: {err:?}");
            assert!(err.to_string().starts_with("invalid JSON message: "));
            assert!(err.source().is_some());
        }
        let err = from_message::<Point>(&Message::text(r#"{"x":1}"#)).unwrap_err();
        assert!(err.to_string().contains("missing field `y`"), "{err}");
    }

    /// Two open connections in slots 7 and 8, and one that closed, in slot 9.
    fn table() -> (IdTable, [ConnId; 3]) {
        let mut ids = IdTable::default();
        let open = [ids.id(7), ids.id(8), ids.id(9)];
        ids.update(7, true, 0);
        ids.update(8, true, 0);
        (ids, open)
    }

    #[test]
    fn send_json_queues_a_text_message() {
        let (ids, [a, b, closed]) = table();
        let mut commands = Vec::new();
        let topics = Topics::default();
        let mut ctx = Ctx {
            commands: &mut commands,
            ids: &ids,
            topics: &topics,
            limits: TopicLimits {
                max_name: 256,
                max_subscriptions: 16,
            },
            current: None,
        };
        ctx.send_json(a, &Point { x: 3, y: 4 }).unwrap();
        ctx.send_json(b, "just a string").unwrap();
        let err = ctx.send_json(closed, "late").unwrap_err();
        assert!(matches!(err, JsonError::Send(SendError::Closed)), "{err:?}");
        assert_eq!(commands.len(), 2);
        match &commands[0] {
            Command::Conn(id, ConnCommand::Send(Message::Text(t))) if *id == a => {
                assert_eq!(t.as_str(), r#"{"x":3,"y":4}"#)
            }
            other => panic!("unexpected command {other:?}"),
        }
        match &commands[1] {
            Command::Conn(id, ConnCommand::Send(Message::Text(t))) if *id == b => {
                assert_eq!(t.as_str(), r#""just a string""#)
            }
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn encode_errors_queue_nothing() {
        // JSON object keys must be strings; a sequence key cannot be encoded.
        let mut bad = BTreeMap::new();
        bad.insert(vec![1u8, 2], 3);
        let (ids, [a, _, _]) = table();
        let mut commands = Vec::new();
        let topics = Topics::default();
        let mut ctx = Ctx {
            commands: &mut commands,
            ids: &ids,
            topics: &topics,
            limits: TopicLimits {
                max_name: 256,
                max_subscriptions: 16,
            },
            current: None,
        };
        let err = ctx.send_json(a, &bad).unwrap_err();
        assert!(matches!(err, JsonError::Encode(_)), "{err:?}");
        assert!(err.to_string().starts_with("cannot encode JSON: "), "{err}");
        assert!(err.source().is_some());
        assert!(commands.is_empty());
        assert!(matches!(to_message(&bad), Err(JsonError::Encode(_))));
    }

    #[test]
    fn round_trip_through_to_message() {
        let p = Point { x: -9, y: 9 };
        let msg = to_message(&p).unwrap();
        assert!(msg.is_text());
        assert_eq!(from_message::<Point>(&msg).unwrap(), p);
    }
}
