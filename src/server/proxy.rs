//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec, parsed by `ppp`): a
//! connection from a listed proxy address must start with a header naming the client,
//! and the server then sees the client's address — in per-IP limits and logs.
//!
//! The header precedes everything, the TLS handshake included, so it is taken here,
//! before the connection exists: the socket is peeked until a whole header has come,
//! exactly its bytes are read, and the stream goes on to TLS and the handshake.

use crate::config::Cidr;
use crate::io::stream::Stream;
use log::debug;
use mio::{Interest, Registry, Token};
use ppp::{HeaderResult, PartialResult};
use slab::Slab;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// Sockets from proxies waiting for their header at once; more are dropped.
pub(crate) const MAX_PENDING: usize = 1024;
/// The longest header taken: a v1 header is at most 107 bytes; v2 headers with TLVs
/// from HAProxy or nginx stay far below this.
const MAX_HEADER: usize = 4096;

/// A socket whose header has not all come yet.
struct Pending {
    stream: Stream,
    peer: SocketAddr,
    deadline: Instant,
}

/// What a look at a socket found.
pub(crate) enum Header {
    /// The header was read; the stream now starts with the bytes of this client.
    Read(SocketAddr),
    /// Not all of it yet.
    Wait,
    /// No valid header, or the socket failed: drop it.
    Bad,
}

/// The listed proxies and the sockets from them still waiting for their header.
pub(crate) struct ProxyGate {
    from: Vec<Cidr>,
    pending: Slab<Pending>,
}

impl ProxyGate {
    pub(crate) fn new(from: Vec<Cidr>) -> Self {
        ProxyGate {
            from,
            pending: Slab::new(),
        }
    }

    /// Whether a connection from `peer` must start with a PROXY header.
    pub(crate) fn expects_header(&self, peer: &SocketAddr) -> bool {
        self.from.iter().any(|c| c.contains(peer.ip()))
    }

    /// Looks for the header on a socket from a listed proxy, and reads it when whole.
    pub(crate) fn take_header(stream: &mut Stream, peer: SocketAddr) -> Header {
        let Stream::Tcp(tcp) = stream else {
            return Header::Read(peer);
        };
        let mut buf = [0u8; MAX_HEADER];
        let n = match tcp.peek(&mut buf) {
            Ok(0) => return Header::Bad,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Header::Wait,
            Err(e) => {
                debug!("{peer}: dropped: {e} before the PROXY header");
                return Header::Bad;
            }
        };
        let (len, client) = match HeaderResult::parse(&buf[..n]) {
            r if r.is_incomplete() && n < MAX_HEADER => return Header::Wait,
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
            r => {
                debug!("{peer}: dropped: no valid PROXY header from a listed proxy ({r:?})");
                return Header::Bad;
            }
        };
        // Exactly the header's bytes, which have all come: the rest is the client's.
        match tcp.read(&mut buf[..len]) {
            Ok(read) if read == len => {}
            other => {
                debug!("{peer}: dropped: PROXY header not read whole ({other:?})");
                return Header::Bad;
            }
        }
        // LOCAL (a proxy's own health check) and UNKNOWN keep the socket's address.
        let client = client.unwrap_or(peer);
        debug!("{peer}: PROXY header: client {client}");
        Header::Read(client)
    }

    /// Keeps a socket whose header is still coming, registered under `token_of(key)`,
    /// until `deadline`; drops it when `MAX_PENDING` wait already.
    pub(crate) fn wait(
        &mut self,
        registry: &Registry,
        mut stream: Stream,
        peer: SocketAddr,
        deadline: Instant,
        token_of: impl Fn(usize) -> Token,
    ) {
        if self.pending.len() >= MAX_PENDING {
            debug!("{peer}: dropped: {MAX_PENDING} PROXY headers pending");
            return;
        }
        let entry = self.pending.vacant_entry();
        if registry
            .register(&mut stream, token_of(entry.key()), Interest::READABLE)
            .is_ok()
        {
            entry.insert(Pending {
                stream,
                peer,
                deadline,
            });
        }
    }

    /// A waiting socket became readable: the stream and its client, once the header
    /// has been read (the socket is then no longer registered).
    pub(crate) fn on_readable(
        &mut self,
        registry: &Registry,
        key: usize,
    ) -> Option<(Stream, SocketAddr)> {
        let p = self.pending.get_mut(key)?;
        match Self::take_header(&mut p.stream, p.peer) {
            Header::Wait => None,
            Header::Bad => {
                self.pending.remove(key);
                None
            }
            Header::Read(client) => {
                let mut p = self.pending.remove(key);
                let _ = registry.deregister(&mut p.stream);
                Some((p.stream, client))
            }
        }
    }

    /// Drops the sockets whose header did not come by their deadline.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.retain(|_, p| {
            let keep = p.deadline > now;
            if !keep {
                debug!("{}: dropped: no PROXY header in time", p.peer);
            }
            keep
        });
    }

    /// The earliest deadline of a pending socket.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|(_, p)| p.deadline).min()
    }

    /// Drops every pending socket (shutdown).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header) -> Option<SocketAddr> {
    if h.command != ppp::v2::Command::Proxy {
        return None;
    }
    match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
        _ => None,
    }
}
