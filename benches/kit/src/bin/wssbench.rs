//! TLS cost, measured from one client: the same pipelined echo over ws:// and wss://.
//!
//! ```text
//! wssbench URL [--ca CERT.pem] [--size BYTES] [--inflight N] [--seconds S]
//! ```
//! One blocking connection keeps N messages of BYTES in flight for S seconds and prints
//! `RESULT url=... msgs_per_s=... mib_per_s=...`. Run it against a plain and a TLS
//! server on the same machine and compare: both ends do the same work apart from TLS.

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn run<S: Read + Write>(
    mut ws: WebSocket<S>,
    size: usize,
    inflight: usize,
    secs: u64,
) -> (u64, f64) {
    let payload = vec![0x5au8; size];
    for _ in 0..inflight {
        ws.write(Message::binary(payload.clone())).unwrap();
    }
    ws.flush().unwrap();
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut done = 0u64;
    while Instant::now() < stop {
        match ws.read().unwrap() {
            Message::Binary(b) => assert_eq!(b.len(), size),
            _ => continue,
        }
        done += 1;
        ws.send(Message::binary(payload.clone())).unwrap();
    }
    (done, start.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: wssbench URL [--ca PEM] [--size N] [--inflight N] [--seconds S]")
        .clone();
    let size: usize = arg(&args, "--size", "32").parse().unwrap();
    let inflight: usize = arg(&args, "--inflight", "64").parse().unwrap();
    let secs: u64 = arg(&args, "--seconds", "5").parse().unwrap();
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        hostport.starts_with("127.") || hostport.starts_with("localhost"),
        "loopback only"
    );
    let port = hostport.rsplit(':').next().unwrap();
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    tcp.set_nodelay(true).unwrap();
    let (done, elapsed) = if url.starts_with("wss://") {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(arg(&args, "--ca", "cert.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let stream = rustls::StreamOwned::new(conn, tcp);
        let (ws, _) = tungstenite::client::client(
            url.replace(&hostport, &format!("localhost:{port}")),
            stream,
        )
        .unwrap();
        run(ws, size, inflight, secs)
    } else {
        let (ws, _) = tungstenite::client::client(url.clone(), tcp).unwrap();
        run(ws, size, inflight, secs)
    };
    let rate = done as f64 / elapsed;
    println!(
        "RESULT url={url} size={size} inflight={inflight} msgs_per_s={rate:.0} mib_per_s={:.1}",
        rate * size as f64 / (1024.0 * 1024.0)
    );
}
