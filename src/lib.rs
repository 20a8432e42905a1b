//! wsloop: a WebSocket server on one thread, in a mio poll loop, with no async runtime.
//!
//! [`Server::run`] serves on a poll of its own; an application that owns its `Poll`
//! calls [`Server::register`], [`Server::handle_event`], [`Server::next_timeout`] and
//! [`Server::handle_timers`] instead. Applications implement [`Handler`]; [`Echo`] sends
//! every message back.
//!
//! The source is layered: `protocol` (the WebSocket protocol without I/O), `io`
//! (sockets, TLS, output queues), `conn` (one connection's state machine), `server`
//! (the loop: accept, timers, dispatch) and `app` (what applications see).
#![warn(missing_docs)]

mod app;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub mod config;
mod conn;
#[doc(hidden)]
pub mod fuzz;
mod io;
mod protocol;
mod server;
#[cfg(test)]
mod testutil;

pub use app::ctx::{Ctx, SendError};
pub use app::data::Data;
pub use app::handler::{AutoPong, Close, ConnId, Echo, Handler, Timer, Upgrade};
#[cfg(feature = "json")]
pub use app::json;
pub use app::sender::Sender;
pub use config::{Cidr, Config, ConfigError, OriginPolicy};
pub use io::stream::{ListenAddr, ToListenAddr};
#[cfg(feature = "tls")]
pub use io::tls;
pub use protocol::extensions::{Compression, DeflateConfig};
pub use protocol::handshake::Request;
#[doc(hidden)]
pub use server::REJECT_SLACK;
pub use server::metrics;
pub use server::{Server, Shutdown};
pub use tungstenite::{Bytes, Message, Utf8Bytes};
