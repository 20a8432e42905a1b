//! The server's sockets: a connection's `Stream` (TCP, a Unix socket, or TLS on TCP)
//! behind one type, so the connection state machine is one piece of code for all, and
//! the `Listener` that accepts them.

use super::transport::Transport;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the server listens: `127.0.0.1:8080` or `unix:/run/wsloop.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (removed again on clean exit).
    Unix(PathBuf),
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr::Tcp(a)
    }
}

impl ListenAddr {
    /// The TCP port (None for a Unix socket).
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::Tcp(a) => Some(a.port()),
            ListenAddr::Unix(_) => None,
        }
    }

    /// The TCP address (None for a Unix socket).
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// What [`Server::bind`](crate::Server::bind) accepts as an address: a `SocketAddr`,
/// a `ListenAddr`, or text such as `"127.0.0.1:0"` or `"unix:/run/wsloop.sock"`.
pub trait ToListenAddr {
    /// The address, or `InvalidInput` for text that names none.
    fn to_listen_addr(&self) -> io::Result<ListenAddr>;
}

impl ToListenAddr for ListenAddr {
    fn to_listen_addr(&self) -> io::Result<ListenAddr> {
        Ok(self.clone())
    }
}

impl ToListenAddr for SocketAddr {
    fn to_listen_addr(&self) -> io::Result<ListenAddr> {
        Ok(ListenAddr::Tcp(*self))
    }
}

impl ToListenAddr for str {
    fn to_listen_addr(&self) -> io::Result<ListenAddr> {
        self.parse()
            .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

impl ToListenAddr for String {
    fn to_listen_addr(&self) -> io::Result<ListenAddr> {
        self.as_str().to_listen_addr()
    }
}

impl<T: ToListenAddr + ?Sized> ToListenAddr for &T {
    fn to_listen_addr(&self) -> io::Result<ListenAddr> {
        (**self).to_listen_addr()
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/wsloop.sock".into());
            }
            return Ok(ListenAddr::Unix(path.into()));
        }
        s.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("invalid listen address {s:?}: expected IP:PORT or unix:PATH"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Pending connections the kernel queues for us (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

impl Listener {
    pub(crate) fn bind(addr: &ListenAddr, reuse_port: bool) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => {
                use socket2::{Domain, Socket, Type};
                let socket = Socket::new(Domain::for_address(*a), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                if reuse_port {
                    socket.set_reuse_port(true)?;
                }
                socket.set_nonblocking(true)?;
                socket.bind(&(*a).into())?;
                socket.listen(BACKLOG)?;
                Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
            }
            ListenAddr::Unix(path) => {
                // A socket file left by a process that died is stale; anything else at
                // that path is not ours to remove.
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path)
                    && meta.file_type().is_socket()
                    && std::os::unix::net::UnixStream::connect(path).is_err()
                {
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(_, p) => Ok(ListenAddr::Unix(p.clone())),
        }
    }

    /// The next connection and its peer (Unix peers have no IP: 0.0.0.0:0 stands in).
    pub(crate) fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), SocketAddr::from(([0, 0, 0, 0], 0))))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l, _) => l.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l, _) => l.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l, _) => l.deregister(r),
        }
    }
}

/// A client connection's stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsStream>),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
            #[cfg(feature = "tls")]
            Stream::Tls($s) => $e,
        }
    };
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        each!(self, s => s.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        each!(self, s => s.flush())
    }
}

impl Transport for Stream {
    fn has_pending(&self) -> bool {
        each!(self, s => s.has_pending())
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        each!(self, s => s.flush_pending())
    }

    fn shutdown_write(&mut self) {
        each!(self, s => s.shutdown_write())
    }

    fn close(&mut self) {
        each!(self, s => s.close())
    }

    fn short_read_drains(&self) -> bool {
        each!(self, s => s.short_read_drains())
    }

    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        each!(self, s => s.read_append(buf, max))
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        each!(self, s => s.register(r, t, i))
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        each!(self, s => s.reregister(r, t, i))
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        each!(self, s => s.deregister(r))
    }
}
