//! The HTTP side of the upgrade: parse a request that may arrive in pieces, apply the
//! Upgrader's policy (path, origin, subprotocols, limits) and write the reply.
//!
//! The request is read by us, not by tungstenite's `MidHandshake`: its reader rejects a
//! request that trickles in as many small packets and replies nothing when a request
//! is too large, where a server owes the client a status code (see docs/ARCHITECTURE.md).

use super::extensions::{self, Agreement};
use crate::config::{Config, OriginPolicy};
use std::net::SocketAddr;

/// The upgrade request as the handler sees it in `on_open`.
#[derive(Debug, Clone)]
pub struct Request {
    /// Request target as sent, including any query string.
    pub path: String,
    /// Header names (as sent) and values (lossy UTF-8), in order.
    pub headers: Vec<(String, String)>,
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
    /// The extensions the server accepted, as answered in `Sec-WebSocket-Extensions`
    /// (e.g. `permessage-deflate; server_no_context_takeover; client_no_context_takeover`).
    pub extensions: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to do with the bytes received so far.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The request is not complete yet.
    Partial,
    /// Upgrade, once the application agrees ([`switching_protocols`] makes the 101):
    /// `consumed` bytes were the request, the rest are the start of the first frame.
    Accept {
        accept_key: String,
        consumed: usize,
        request: Request,
        deflate: Option<Agreement>,
    },
    /// Answer over plain HTTP (an error, or the console page) and close; `reply` is
    /// the whole response. `whole`: the input was exactly one complete request, so
    /// nothing unread can turn the close into a reset — no need to linger.
    Respond {
        status: u16,
        reply: Vec<u8>,
        whole: bool,
    },
}

/// Headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;

/// Parses `buf` (everything received so far) and decides. `over_limit` turns a valid
/// upgrade into 503 (the connection limits are the server's to judge).
pub(crate) fn evaluate(buf: &[u8], cfg: &Config, peer: SocketAddr, over_limit: bool) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > cfg.max_request => {
            return reject(431, "request header fields too large", &[]);
        }
        Ok(httparse::Status::Partial) => return Outcome::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return reject(431, "too many request header fields", &[]);
        }
        Err(e) => return reject(400, &format!("malformed HTTP request: {e}"), &[]),
    };
    let whole = consumed == buf.len();
    let decide = || {
        if consumed > cfg.max_request {
            return reject(431, "request header fields too large", &[]);
        }
        let Some(method) = req.method else {
            return reject(400, "malformed HTTP request", &[]);
        };
        if method != "GET" {
            return reject(405, "websocket: method must be GET", &["Allow: GET"]);
        }
        if req.version != Some(1) {
            return reject(400, "websocket: HTTP/1.1 required", &[]);
        }
        let target = req.path.unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        // The console's question "what would my upgrade get?" (src/protocol/console.rs).
        if cfg.console
            && let Some(verdict) = super::console::probe(&req, cfg, peer, over_limit)
        {
            return verdict;
        }
        if cfg.console && path == "/" {
            return Outcome::Respond {
                status: 200,
                reply: super::console::page(cfg),
                whole: true,
            };
        }
        // Probes on the WebSocket port (--ws-probes); readiness as the server sees it
        // when this socket came in: 503 over the connection limits.
        if cfg.ws_probes && path == "/healthz" {
            return reject(200, "alive", &[]);
        }
        if cfg.ws_probes && path == "/readyz" {
            return match over_limit {
                false => reject(200, "ready", &[]),
                true => reject(503, "not ready: at max_connections", &[]),
            };
        }
        if path != cfg.path {
            return reject(404, "not found", &[]);
        }
        let find = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let Some(host) = find("Host").and_then(|h| std::str::from_utf8(h).ok()) else {
            return reject(400, "websocket: missing Host header", &[]);
        };
        let has_token = |name: &str, token: &str| {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .any(|h| list_items(h.value).any(|t| t.eq_ignore_ascii_case(token)))
        };
        if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
            return reject(
                426,
                "websocket: this endpoint speaks WebSocket only (Upgrade: websocket required)",
                &["Upgrade: websocket", "Connection: Upgrade"],
            );
        }
        if find("Sec-WebSocket-Version").map(trim) != Some(&b"13"[..]) {
            return reject(
                426,
                "websocket: unsupported version (13 required)",
                &["Sec-WebSocket-Version: 13", "Upgrade: websocket"],
            );
        }
        let Some(key) = find("Sec-WebSocket-Key").map(trim).filter(|k| valid_key(k)) else {
            return reject(
                400,
                "websocket: missing or malformed Sec-WebSocket-Key",
                &[],
            );
        };
        if let Some(origin) = find("Origin")
            && !origin_allowed(&cfg.origins, origin, host)
        {
            return reject(403, "websocket: origin not allowed", &[]);
        }
        if over_limit {
            return reject(
                503,
                "server at connection limit, retry later",
                &["Retry-After: 1"],
            );
        }
        let subprotocol = choose_subprotocol(&cfg.subprotocols, &req);
        let offers = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .map(|h| h.value);
        let deflate = extensions::negotiate(offers, &cfg.compression);
        let accept_key = tungstenite::handshake::derive_accept_key(key);
        let request = Request {
            path: target.to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            subprotocol,
            extensions: deflate.map(|a| a.to_string()),
            peer,
        };
        Outcome::Accept {
            accept_key,
            consumed,
            request,
            deflate,
        }
    };
    match decide() {
        Outcome::Respond { status, reply, .. } => Outcome::Respond {
            status,
            reply,
            whole,
        },
        accept => accept,
    }
}

/// The 101 response, with the application's extra headers; Err if one of them is not
/// a valid header line (a name that is no HTTP token, a value with a line break).
pub(crate) fn switching_protocols(
    accept_key: &str,
    request: &Request,
    extra: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let mut reply = Vec::with_capacity(160);
    reply.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    reply.extend_from_slice(accept_key.as_bytes());
    if let Some(p) = &request.subprotocol {
        reply.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        reply.extend_from_slice(p.as_bytes());
    }
    if let Some(e) = &request.extensions {
        reply.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        reply.extend_from_slice(e.as_bytes());
    }
    reply.extend_from_slice(b"\r\n");
    for line in header_lines(extra)? {
        reply.extend_from_slice(line.as_bytes());
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"\r\n");
    Ok(reply)
}

/// An application's refusal: its status, reason and headers as an HTTP response.
pub(crate) fn refusal(
    status: u16,
    reason: &str,
    extra: &[(String, String)],
) -> Result<Vec<u8>, String> {
    if !(400..=599).contains(&status) {
        return Err(format!("refusal status {status} is not 4xx or 5xx"));
    }
    let lines = header_lines(extra)?;
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let body: String = reason.chars().filter(|c| !c.is_control()).collect();
    Ok(error_reply(status, &body, &lines))
}

/// `Name: value` lines; Err for a name that is no HTTP token or a value with a line
/// break (which would let a header smuggle in others).
fn header_lines(headers: &[(String, String)]) -> Result<Vec<String>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            if name.is_empty() || !name.bytes().all(crate::config::is_token_byte) {
                return Err(format!("header name {name:?} is not an HTTP token"));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("header {name} has a line break in its value"));
            }
            Ok(format!("{name}: {value}"))
        })
        .collect()
}

/// An error reply with a one-line text body; the connection closes after it.
pub(crate) fn reject(status: u16, body: &str, extra: &[&str]) -> Outcome {
    Outcome::Respond {
        status,
        reply: error_reply(status, body, extra),
        whole: false,
    }
}

/// The bytes of an HTTP error response with a one-line body.
pub(crate) fn error_reply(status: u16, body: &str, extra: &[&str]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len() + 1
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.push('\n');
    r.into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Items of a comma-separated header value, trimmed, as text.
fn list_items(v: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(v)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// RFC 6455 4.1: the key is 16 random bytes in base64, i.e. 22 symbols and `==`.
fn valid_key(k: &[u8]) -> bool {
    k.len() == 24
        && k.ends_with(b"==")
        && k[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn origin_allowed(policy: &OriginPolicy, origin: &[u8], host: &str) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    match policy {
        OriginPolicy::Any => true,
        OriginPolicy::List(allowed) => allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)),
        // gorilla's checkSameOrigin: the origin's host[:port] equals the Host header.
        OriginPolicy::SameOrigin => origin
            .split_once("://")
            .map(|(_, authority)| authority.eq_ignore_ascii_case(host.trim()))
            .unwrap_or(false),
    }
}

/// The server's most preferred subprotocol that the client offers.
fn choose_subprotocol(ours: &[String], req: &httparse::Request) -> Option<String> {
    let offered: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .flat_map(|h| list_items(h.value))
        .collect();
    ours.iter().find(|p| offered.contains(&p.as_str())).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    fn status(req: &str, cfg: &Config) -> u16 {
        match evaluate(req.as_bytes(), cfg, peer(), false) {
            Outcome::Accept { .. } => 101,
            Outcome::Respond { status, .. } => status,
            Outcome::Partial => 0,
        }
    }

    #[test]
    fn accepts_and_derives_the_rfc_example_key() {
        let req = request("") + "!";
        let Outcome::Accept {
            accept_key,
            consumed,
            request,
            ..
        } = evaluate(req.as_bytes(), &Config::default(), peer(), false)
        else {
            panic!("not accepted")
        };
        assert_eq!(consumed, req.len() - 1);
        let extra = [("Set-Cookie".to_string(), "s=1".to_string())];
        let reply = switching_protocols(&accept_key, &request, &extra).unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.ends_with("\r\nSet-Cookie: s=1\r\n\r\n"), "{reply}");
        assert!(reply.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn rejections() {
        let cfg = Config::default();
        assert_eq!(status(&request("").replace("/ws", "/other"), &cfg), 404);
        assert_eq!(status(&request("Origin: http://evil.com\r\n"), &cfg), 403);
        assert_eq!(
            status(&request("Origin: http://example.com\r\n"), &cfg),
            101
        );
        assert_eq!(status(&request("").replace("websocket", "h2c"), &cfg), 426);
        assert_eq!(
            status(&request("").replace("Version: 13", "Version: 12"), &cfg),
            426
        );
        assert_eq!(status(&request("").replace(KEY, "short"), &cfg), 400);
        assert_eq!(status(&request("").replace("GET", "POST"), &cfg), 405);
        assert_eq!(
            status(&request("").replace("HTTP/1.1", "HTTP/1.0"), &cfg),
            400
        );
        assert_eq!(
            status(&request("").replace("Host: example.com\r\n", ""), &cfg),
            400
        );
        assert_eq!(status("\x16\x03\x01garbage\r\n\r\n", &cfg), 400);
        assert_eq!(status(&request("")[..30], &cfg), 0);
        let big = format!("X-Big: {}\r\n", "a".repeat(9000));
        assert_eq!(status(&request(&big), &cfg), 431);
        assert_eq!(
            status(
                &format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(9000)),
                &cfg
            ),
            431
        );
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&request(&many), &cfg), 431);
    }

    #[test]
    fn application_headers_are_checked() {
        let req = request("");
        let Outcome::Accept {
            accept_key,
            request,
            ..
        } = evaluate(req.as_bytes(), &Config::default(), peer(), false)
        else {
            panic!()
        };
        let bad = [("X-A".to_string(), "v\r\nInjected: 1".to_string())];
        assert!(switching_protocols(&accept_key, &request, &bad).is_err());
        let bad = [("X A".to_string(), "v".to_string())];
        assert!(switching_protocols(&accept_key, &request, &bad).is_err());
        let r = refusal(
            401,
            "login first",
            &[("WWW-Authenticate".into(), "Bearer".into())],
        );
        let r = String::from_utf8(r.unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
        assert!(r.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nlogin first\n"), "{r}");
        assert!(refusal(200, "no", &[]).is_err());
    }

    #[test]
    fn origin_policies() {
        let list = OriginPolicy::List(vec!["https://app.example".into()]);
        assert!(origin_allowed(&list, b"https://app.example", "x"));
        assert!(!origin_allowed(&list, b"https://evil.example", "x"));
        assert!(origin_allowed(&OriginPolicy::Any, b"null", "x"));
        assert!(!origin_allowed(&OriginPolicy::SameOrigin, b"null", "x"));
        assert!(origin_allowed(
            &OriginPolicy::SameOrigin,
            b"http://H:8080",
            "h:8080"
        ));
    }

    #[test]
    fn subprotocol_follows_server_preference() {
        let cfg = Config {
            subprotocols: vec!["b".into(), "a".into()],
            ..Config::default()
        };
        let req = request("Sec-WebSocket-Protocol: a, b\r\n");
        let Outcome::Accept {
            request: chosen,
            accept_key,
            ..
        } = evaluate(req.as_bytes(), &cfg, peer(), false)
        else {
            panic!()
        };
        assert_eq!(chosen.subprotocol.as_deref(), Some("b"));
        let reply = switching_protocols(&accept_key, &chosen, &[]).unwrap();
        assert!(
            String::from_utf8(reply)
                .unwrap()
                .contains("Sec-WebSocket-Protocol: b\r\n")
        );
        let req = request("Sec-WebSocket-Protocol: c\r\n");
        let Outcome::Accept { request, .. } = evaluate(req.as_bytes(), &cfg, peer(), false) else {
            panic!()
        };
        assert_eq!(request.subprotocol, None);
    }
}
