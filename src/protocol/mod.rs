//! The WebSocket protocol without I/O: the upgrade request's evaluation, the scanner
//! that approves incoming bytes, and frames as bytes; and the browser console's page
//! and probe, which answer over the same HTTP as the upgrade.

pub(crate) mod console;
#[cfg(feature = "deflate")]
pub(crate) mod deflate;
pub(crate) mod extensions;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod scan;
