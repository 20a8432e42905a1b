//! wss:// through rustls: a certificate made at test time, clients that trust it or
//! not, and a plain-HTTP client on the TLS port.
#![cfg(feature = "tls")]

mod common;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::Message;

struct Certs {
    dir: PathBuf,
    cert_der: CertificateDer<'static>,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_certs(tag: &str) -> Certs {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("wsloop-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    Certs {
        cert_der: certified.cert.der().clone(),
        dir,
    }
}

fn start_tls(certs: &Certs) -> Server {
    let cert = certs.dir.join("cert.pem");
    let key = certs.dir.join("key.pem");
    Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

fn client_config(trusted: Option<&CertificateDer<'static>>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(c) = trusted {
        roots.add(c.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type TlsClient = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

fn wss_connect(
    server: &Server,
    config: Arc<rustls::ClientConfig>,
) -> tungstenite::Result<TlsClient> {
    let tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp);
    let url = format!("wss://localhost:{}{}", server.addr.port(), server.path);
    tungstenite::client::client(url, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

#[test]
fn echo_over_wss() {
    let certs = make_certs("echo");
    let server = start_tls(&certs);
    assert!(server.wait_logged("listening on wss://"));
    let mut ws = wss_connect(&server, client_config(Some(&certs.cert_der))).expect("wss handshake");
    assert_echo(&mut ws, Message::text("over TLS"));
    let big: Vec<u8> = (0..(1 << 20) + 1).map(|i| (i % 251) as u8).collect();
    assert_echo(&mut ws, Message::binary(big));
    for i in 0..200 {
        ws.write(Message::text(format!("pipelined {i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..200 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("pipelined {i}")));
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[test]
fn plain_http_and_untrusted_clients_fail_cleanly() {
    let certs = make_certs("bad");
    let server = start_tls(&certs);
    let mut healthy = wss_connect(&server, client_config(Some(&certs.cert_der))).unwrap();

    // A plain WebSocket client on the TLS port: the server answers with a TLS alert or
    // closes, never with HTTP, and the connection ends promptly.
    let mut plain = raw(server.addr);
    plain
        .write_all(upgrade_request(server.addr, "/ws", "").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/1.1 101"),
        "plain client upgraded on TLS port"
    );
    assert!(reply.len() < 64, "unexpected reply: {reply:?}");

    // A client that does not trust the certificate fails its handshake.
    let err = wss_connect(&server, client_config(None)).expect_err("untrusted handshake succeeded");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    assert_echo(&mut healthy, Message::text("still here"));
}

#[test]
fn unreadable_certificate_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cert.pem"));
}

/// SIGHUP: new connections get the certificate now in the files, open ones keep
/// theirs; files that do not load leave the certificate in use serving.
#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let old = make_certs("reload");
    let server = start_tls(&old);
    let mut before = wss_connect(&server, client_config(Some(&old.cert_der))).unwrap();
    assert_echo(&mut before, Message::text("old certificate"));

    let new = make_certs("reload-new");
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(new.dir.join(f), old.dir.join(f)).unwrap();
    }
    let hup = |server: &Server| {
        // SAFETY: kill(2) with the PID of a child this test spawned.
        assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) }, 0);
    };
    hup(&server);
    assert!(wait_until(Duration::from_secs(10), || server
        .logged("SIGHUP: new connections get")));
    let mut after =
        wss_connect(&server, client_config(Some(&new.cert_der))).expect("new certificate");
    assert_echo(&mut after, Message::text("new certificate"));
    let err = wss_connect(&server, client_config(Some(&old.cert_der)))
        .expect_err("old certificate still served");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert_echo(
        &mut before,
        Message::text("the open connection keeps its session"),
    );

    std::fs::write(old.dir.join("cert.pem"), "not a certificate").unwrap();
    hup(&server);
    assert!(wait_until(Duration::from_secs(10), || server
        .logged("SIGHUP: the certificate in use stays")));
    let mut still =
        wss_connect(&server, client_config(Some(&new.cert_der))).expect("kept certificate");
    assert_echo(&mut still, Message::text("kept"));
}
