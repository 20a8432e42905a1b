//! JSON messages (feature `json`): the counterpart of gorilla's `ReadJSON`/`WriteJSON`.
//!
//! [`CtxJson::send_json`] serializes a value into a text message and queues it like
//! [`Ctx::send`]; [`from_message`] parses a received text or binary message.
//! [`to_message`] encodes once for a value that goes to many connections.
//!
//! ```
//! use serde::Deserialize;
//! use wsloop::json::{CtxJson, from_message};
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

use crate::{ConnId, Ctx, Message};
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
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::NotData => f.write_str("not a text or binary message"),
            JsonError::Decode(e) => write!(f, "invalid JSON message: {e}"),
            JsonError::Encode(e) => write!(f, "cannot encode JSON: {e}"),
        }
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JsonError::NotData => None,
            JsonError::Decode(e) | JsonError::Encode(e) => Some(e),
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
    impl Sealed for crate::Ctx {}
}

/// JSON sending for [`Ctx`]; bring it into scope with `use wsloop::json::CtxJson`.
pub trait CtxJson: sealed::Sealed {
    /// Serializes `value` and queues it for `conn` as a text message, like
    /// [`Ctx::send`]. On an encoding error nothing is queued.
    fn send_json<T: Serialize + ?Sized>(
        &mut self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), JsonError>;
}

impl CtxJson for Ctx {
    fn send_json<T: Serialize + ?Sized>(
        &mut self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), JsonError> {
        let msg = to_message(value)?;
        self.send(conn, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::handler::Command;
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

    #[test]
    fn send_json_queues_a_text_message() {
        let mut ctx = Ctx::default();
        ctx.send_json(ConnId(7), &Point { x: 3, y: 4 }).unwrap();
        ctx.send_json(ConnId(8), "just a string").unwrap();
        assert_eq!(ctx.commands.len(), 2);
        match &ctx.commands[0] {
            (ConnId(7), Command::Send(Message::Text(t))) => {
                assert_eq!(t.as_str(), r#"{"x":3,"y":4}"#)
            }
            other => panic!("unexpected command {other:?}"),
        }
        match &ctx.commands[1] {
            (ConnId(8), Command::Send(Message::Text(t))) => {
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
        let mut ctx = Ctx::default();
        let err = ctx.send_json(ConnId(1), &bad).unwrap_err();
        assert!(matches!(err, JsonError::Encode(_)), "{err:?}");
        assert!(err.to_string().starts_with("cannot encode JSON: "), "{err}");
        assert!(err.source().is_some());
        assert!(ctx.commands.is_empty());
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
