//! wss://: rustls driven from the same loop. rustls does no I/O of its own, so a
//! `TlsStream` moves records between the socket and the `ServerConnection` on each read
//! and write, and tells the loop when records wait for the socket.

use super::transport::Transport;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, BufRead, ErrorKind, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

pub use rustls::ServerConfig;

/// Loads a PEM certificate chain and private key into a rustls server configuration
/// (TLS 1.2 and 1.3, ring's algorithms, no client authentication).
pub fn load_server_config(cert: &Path, key: &Path) -> io::Result<Arc<ServerConfig>> {
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("{what} {}: {e}", p.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read certificates from", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("bad certificate in", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", cert, &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("cannot read private key from", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(ErrorKind::InvalidInput, format!("certificate and key: {e}"))
        })?;
    Ok(Arc::new(config))
}

/// A TLS session over a non-blocking TCP socket.
pub(crate) struct TlsStream {
    sock: TcpStream,
    tls: ServerConnection,
}

impl TlsStream {
    pub(crate) fn new(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { sock, tls })
    }

    /// Decrypts what `read_tls` took and sends what rustls queued for the peer (an
    /// alert, a handshake flight, a key update).
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.tls.process_new_packets() {
            // rustls queued an alert for the peer; send it if the socket takes it.
            let _ = self.flush_pending();
            return Err(io::Error::new(ErrorKind::InvalidData, e));
        }
        self.flush_pending().map(drop)
    }

    /// One socket read by rustls (a record or so), decrypted; `Ok(0)` at the end of
    /// the stream.
    fn read_record(&mut self) -> io::Result<usize> {
        let n = self.tls.read_tls(&mut self.sock)?;
        if n > 0 {
            self.process()?;
        }
        Ok(n)
    }

    /// Appends up to `max` bytes of the plaintext rustls holds to `buf`, copied from
    /// its chunks into `buf`'s spare capacity (nothing zeroed first); `None` when it
    /// holds none yet, `Some(0)` after the peer's close_notify.
    fn take_plaintext(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<usize>> {
        let start = buf.len();
        let mut reader = self.tls.reader();
        while buf.len() - start < max {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(_) if buf.len() > start => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(max - (buf.len() - start));
            buf.extend_from_slice(&chunk[..n]);
            reader.consume(n);
        }
        Ok(Some(buf.len() - start))
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // Ok(0) is the peer's close_notify: the end of the stream.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.read_record()? == 0 {
                return Ok(0);
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Records the socket has not taken yet count as blocked output: the caller
        // keeps the plaintext, where backpressure can see it.
        if !self.flush_pending()? {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        self.flush_pending()?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.flush_pending()? {
            return Err(ErrorKind::WouldBlock.into());
        }
        // rustls takes the slices into records of its own in one call.
        let n = self.tls.writer().write_vectored(bufs)?;
        self.flush_pending()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TlsStream {
    fn has_pending(&self) -> bool {
        self.tls.wants_write()
    }

    fn flush_pending(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn shutdown_write(&mut self) {
        // close_notify first: the peer learns the end was meant, not a truncation.
        self.close();
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_pending();
    }

    /// rustls keeps decrypted plaintext of its own: a short read does not mean the
    /// socket is drained, so the next edge may never come.
    fn short_read_drains(&self) -> bool {
        false
    }

    /// Plaintext is copied out of rustls's own buffers into the spare capacity:
    /// zeroing `max` bytes for each record (16 KiB) read would cost more than the copy.
    fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        loop {
            if let Some(n) = self.take_plaintext(buf, max)? {
                return Ok(n);
            }
            if self.read_record()? == 0 {
                return Ok(0);
            }
        }
    }
}

impl Source for TlsStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.register(r, t, i)
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.sock.reregister(r, t, i)
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.sock.deregister(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
    use std::time::{Duration, Instant};

    /// A server `TlsStream` on a loopback socket and a blocking rustls client on the
    /// other end, both trusting a certificate made for the test.
    fn pair() -> (
        TlsStream,
        rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    ) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.into())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client_tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client_tcp
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server_tcp, _) = listener.accept().unwrap();
        server_tcp.set_nonblocking(true).unwrap();
        let server = TlsStream::new(TcpStream::from_std(server_tcp), Arc::new(server)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        (server, rustls::StreamOwned::new(client, client_tcp))
    }

    /// One `read_append` of a room from a fixed cycle; `Ok(true)` at the end.
    fn step(server: &mut TlsStream, got: &mut Vec<u8>, calls: &mut usize) -> io::Result<bool> {
        let (before, max) = (got.len(), [100_000, 7, 40_000][*calls % 3]);
        *calls += 1;
        match server.read_append(got, max) {
            Ok(0) => {
                assert_eq!(got.len(), before, "bytes appended at the end of the stream");
                return Ok(true);
            }
            Ok(n) => {
                assert!(n <= max, "{n} bytes for a room of {max}");
                assert_eq!(got.len(), before + n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e),
        }
        Ok(false)
    }

    /// `read_append` hands over at most `max` bytes per call, all of them in order,
    /// then the end of the stream: the client's close_notify arrives right behind its
    /// last record, already in the socket when the server reads.
    #[test]
    fn read_append_takes_at_most_max_then_sees_close_notify() {
        let (mut server, mut client) = pair();
        let sent: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                client.write_all(&sent).unwrap();
                client.conn.send_close_notify();
                client.flush().unwrap();
                client
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut got, mut calls) = (Vec::new(), 0);
        // The client's first write waits for the server's side of the handshake.
        while server.tls.is_handshaking() {
            assert!(Instant::now() < deadline, "handshake stuck");
            assert!(!step(&mut server, &mut got, &mut calls).unwrap());
        }
        // Then all of it (small enough for the socket buffers) and close_notify wait.
        let _client = writer.join().unwrap();
        while !step(&mut server, &mut got, &mut calls).unwrap() {
            assert!(Instant::now() < deadline, "stuck after {} bytes", got.len());
        }
        assert_eq!(got, sent);
    }
}
