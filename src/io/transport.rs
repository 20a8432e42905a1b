//! What a connection's bytes travel over. Every transport answers every question
//! itself (no defaults), so the truth about TLS lives in one place.

use mio::event::Source;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

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

    /// Reads at most `max` bytes onto the end of `buf` (a large frame's own buffer),
    /// into its spare capacity without zeroing it first where the transport can.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

/// `read_append` for a kernel socket: read(2) straight into the spare capacity.
fn read_fd_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    // SAFETY: `spare` is valid for writes of `max` bytes; read(2) writes at most that.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), max) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: read(2) initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
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

            fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
                read_fd_append(self.as_raw_fd(), buf, max)
            }
        }
    };
}

kernel_socket!(mio::net::TcpStream);
kernel_socket!(mio::net::UnixStream);
