//! Bytes between sockets and connections: the transports (TCP, Unix, TLS) behind one
//! trait, the listener, a connection's output queue, and the OS facts mio does not cover.

pub(crate) mod outq;
pub(crate) mod stream;
pub(crate) mod sys;
#[cfg(feature = "tls")]
pub mod tls;
pub(crate) mod transport;
