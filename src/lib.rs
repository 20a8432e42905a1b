//! wsloop: a WebSocket server on one thread, in a mio poll loop, with no async runtime.
//!
//! [`Server::run`] serves on a poll of its own; an application that owns its `Poll`
//! calls [`Server::register`], [`Server::handle_event`], [`Server::next_timeout`] and
//! [`Server::handle_timers`] instead. Applications implement [`Handler`]; [`Echo`] sends
//! every message back.
#![warn(missing_docs)]

pub mod config;
mod conn;
// permessage-deflate (RFC 7692), I/O-free: the lead places these under protocol/.
#[path = "protocol/deflate.rs"]
pub mod deflate;
#[path = "protocol/extensions.rs"]
pub mod extensions;
#[doc(hidden)]
pub mod fuzz;
mod handler;
mod handshake;
#[cfg(feature = "json")]
pub mod json;
pub mod metrics;
pub mod scan;
mod server;
mod sys;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
mod wire;

pub use config::{Config, ConfigError, OriginPolicy};
pub use handler::{Close, ConnId, Ctx, Echo, Handler};
pub use handshake::Request;
pub use server::{REJECT_SLACK, Server};
pub use transport::ListenAddr;
pub use tungstenite::{Bytes, Message, Utf8Bytes};
