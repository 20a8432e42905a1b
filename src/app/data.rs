//! [`Data`]: a message either borrowed where it lies or owned — how the loop hands a
//! small message to a handler without allocating, and how a handler sends bytes it
//! holds without first making a `Message` of them.

use tungstenite::{Bytes, Message};

/// A text or binary message, borrowed or owned.
///
/// Arriving ([`Handler::on_data`](crate::Handler::on_data)): a message that came in
/// one frame is borrowed from the loop's receive buffer, valid for the callback (as
/// uWebSockets hands its handler a view); others, and every compressed one, arrive
/// owned. Leaving ([`Ctx::send`](crate::Ctx::send)): anything that converts into it —
/// a `Message`, `&str` (text) or `&[u8]` (binary); borrowed bytes are copied into the
/// connection's output, owned large ones are shared.
#[derive(Debug, Clone, PartialEq)]
pub enum Data<'a> {
    /// Text, valid UTF-8.
    Text(&'a str),
    /// Binary data.
    Binary(&'a [u8]),
    /// An owned message. Any kind may be sent this way; what arrives is text or binary.
    Message(Message),
}

impl Data<'_> {
    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Data::Text(_) | Data::Message(Message::Text(_)))
    }

    /// The payload. For an owned ping, pong or close, its payload; empty for a raw frame.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Text(t) => t.as_bytes(),
            Data::Binary(b) => b,
            Data::Message(Message::Text(t)) => t.as_bytes(),
            Data::Message(Message::Binary(b) | Message::Ping(b) | Message::Pong(b)) => b,
            Data::Message(Message::Close(Some(f))) => f.reason.as_bytes(),
            Data::Message(Message::Close(None) | Message::Frame(_)) => &[],
        }
    }

    /// The text, if it is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(t) => Some(t),
            Data::Message(Message::Text(t)) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it borrows (and `into_message` would copy).
    pub fn is_borrowed(&self) -> bool {
        !matches!(self, Data::Message(_))
    }

    /// An owned message: a borrowed payload is copied, an owned one moved.
    pub fn into_message(self) -> Message {
        match self {
            Data::Text(t) => Message::text(t),
            Data::Binary(b) => Message::Binary(Bytes::copy_from_slice(b)),
            Data::Message(m) => m,
        }
    }
}

impl From<Message> for Data<'_> {
    fn from(msg: Message) -> Self {
        Data::Message(msg)
    }
}

impl<'a> From<&'a str> for Data<'a> {
    fn from(text: &'a str) -> Self {
        Data::Text(text)
    }
}

impl<'a> From<&'a String> for Data<'a> {
    fn from(text: &'a String) -> Self {
        Data::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Data<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Data::Binary(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Data<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Data::Binary(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_agree() {
        let pairs = [
            (Data::from("héllo"), Data::from(Message::text("héllo"))),
            (
                Data::from(&b"\x00\xff"[..]),
                Data::from(Message::binary(&b"\x00\xff"[..])),
            ),
        ];
        for (borrowed, owned) in pairs {
            assert!(borrowed.is_borrowed() && !owned.is_borrowed());
            assert_eq!(borrowed.is_text(), owned.is_text());
            assert_eq!(borrowed.as_bytes(), owned.as_bytes());
            assert_eq!(borrowed.as_text(), owned.as_text());
            assert_eq!(borrowed.into_message(), owned.into_message());
        }
        assert_eq!(Data::from(Message::Ping(Bytes::from_static(b"p"))).len(), 1);
        assert!(Data::from(&Vec::new()).is_empty());
    }
}
