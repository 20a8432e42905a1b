//! The WebSocket protocol without I/O: the upgrade request's evaluation, the scanner
//! that approves incoming bytes, and frames as bytes.

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod scan;
