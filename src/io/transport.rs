//! What a connection's bytes travel over. Every transport answers every question
//! itself (no defaults), so the truth about TLS lives in one place.

use mio::event::Source;
use std::io::{self, Read, Write};

/// A non-blocking byte stream a connection can run on.
pub(crate) trait Transport: Read + Write + Source {
    /// Whether the transport holds output of its own (TLS records) the socket has not
    /// taken yet.
    fn has_pending(&self) -> bool;

    /// Pushes that output; `Ok(true)` once none is left.
    fn flush_pending(&mut self) -> io::Result<bool>;

    /// Ends our direction after the last byte written (TCP FIN), keeping the read side
    /// open: the peer sees end of stream, and whatever it still sends can be read and
    /// discarded instead of answered with a reset.
    fn shutdown_write(&mut self);

    /// Last words before the socket is dropped (a TLS close_notify).
    fn close(&mut self);

    /// Whether a read that returned less than asked means nothing more is queued, so
    /// the next readiness edge will report new data (true of a kernel socket; not of
    /// TLS, which buffers decrypted data of its own).
    fn short_read_drains(&self) -> bool;
}

/// The kernel sockets: nothing of their own to flush, a short read drains them.
macro_rules! kernel_socket {
    ($t:ty) => {
        impl Transport for $t {
            fn has_pending(&self) -> bool {
                false
            }

            fn flush_pending(&mut self) -> io::Result<bool> {
                Ok(true)
            }

            fn shutdown_write(&mut self) {
                let _ = self.shutdown(std::net::Shutdown::Write);
            }

            fn close(&mut self) {}

            fn short_read_drains(&self) -> bool {
                true
            }
        }
    };
}

kernel_socket!(mio::net::TcpStream);
kernel_socket!(mio::net::UnixStream);
