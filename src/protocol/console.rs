//! The browser console (`--console`): the page at `GET /`, and the probe the page sends
//! when a WebSocket fails before `open`.
//!
//! A browser tells a page nothing about a failed upgrade (every cause is "1006"). So the
//! page asks: a same-origin `fetch` of the upgrade URL carrying [`PROBE`] (the Origin its
//! WebSocket sent, since a same-origin GET carries none) and, if it asked for any,
//! [`PROBE_PROTOCOL`]. The probe is answered here, only under `--console`, by running
//! `handshake::evaluate` itself on the upgrade request the browser would have sent, on
//! this connection's own limit verdict: the policy is not restated. The answer is 200 with
//! a JSON verdict: `status` (101 when the server's checks pass; an application's
//! `on_upgrade` may still refuse), `reason` (the rejection's text), `hint` (the flag to
//! use) and `subprotocol` (what the server would choose).
//! Cross-origin pages cannot read it (no CORS headers, and the custom header makes the
//! request preflighted, which wsloop refuses): they learn only whether a server answers.

use super::handshake::{Outcome, evaluate};
use crate::config::{Config, OriginPolicy, show_size};
use std::fmt::Write;
use std::net::SocketAddr;

/// Marks a probe; its value is the Origin the page's WebSocket sends.
pub(crate) const PROBE: &str = "Wsloop-Probe";
/// The subprotocols the page's WebSocket asked for (comma-separated).
pub(crate) const PROBE_PROTOCOL: &str = "Wsloop-Probe-Protocol";

/// The console page, with the server's settings it needs in a JSON block.
pub(crate) fn page(cfg: &Config) -> Vec<u8> {
    let mut settings = String::from("{\"path\":");
    push_json_str(&mut settings, &cfg.path);
    settings.push_str(",\"subprotocols\":[");
    for (i, p) in cfg.subprotocols.iter().enumerate() {
        if i > 0 {
            settings.push(',');
        }
        push_json_str(&mut settings, p);
    }
    let _ = write!(
        settings,
        "],\"maxMessage\":{},\"maxFrame\":{}}}",
        cfg.max_message,
        cfg.frame_limit()
    );
    let page = include_str!("console.html").replace("__SETTINGS__", &settings);
    respond("text/html; charset=utf-8", &page)
}

/// The verdict for a probe request, or `None` if `req` is not one.
pub(crate) fn probe(
    req: &httparse::Request,
    cfg: &Config,
    peer: SocketAddr,
    over_limit: bool,
) -> Option<Outcome> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let page_origin = header(PROBE)?;
    // httparse refuses CR and LF in values, so none can add a line to this request.
    let mut upgrade = format!(
        "GET {} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        req.path.unwrap_or("/")
    );
    let origin = header("Origin").unwrap_or(page_origin);
    for (name, value) in [
        ("Host", header("Host")),
        ("Origin", Some(origin.clone()).filter(|o| !o.is_empty())),
        ("Sec-WebSocket-Protocol", header(PROBE_PROTOCOL)),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            let _ = write!(upgrade, "{name}: {v}\r\n");
        }
    }
    upgrade.push_str("\r\n");
    let offered = header(PROBE_PROTOCOL).is_some_and(|p| !p.is_empty());
    let (status, reason, chosen) = match evaluate(upgrade.as_bytes(), cfg, peer, over_limit) {
        Outcome::Accept { request, .. } => (101, String::new(), request.subprotocol),
        Outcome::Respond { status, reply, .. } => {
            let text = String::from_utf8_lossy(&reply);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
            let reason = if status == 200 {
                "this path serves the console page, not WebSocket".to_string()
            } else {
                body.to_string()
            };
            (status, reason, None)
        }
        Outcome::Partial => (400, "incomplete request".to_string(), None),
    };
    let hint = hint(cfg, status, &origin, offered && chosen.is_none());
    let mut json = format!("{{\"status\":{status},\"reason\":");
    push_json_str(&mut json, &reason);
    json.push_str(",\"hint\":");
    push_json_str(&mut json, &hint);
    json.push_str(",\"subprotocol\":");
    match &chosen {
        Some(p) => push_json_str(&mut json, p),
        None => json.push_str("null"),
    }
    json.push('}');
    Some(Outcome::Respond {
        status: 200,
        reply: respond("application/json", &json),
        whole: true,
    })
}

/// What to do about a verdict, in the server's own flags.
fn hint(cfg: &Config, status: u16, origin: &str, no_subprotocol: bool) -> String {
    match status {
        101 if no_subprotocol => {
            let ours = if cfg.subprotocols.is_empty() {
                "none (start it with --subprotocol NAME)".to_string()
            } else {
                cfg.subprotocols.join(", ")
            };
            format!(
                "the server chose none of the subprotocols asked for, and a browser then fails the connection; it speaks: {ours}"
            )
        }
        403 => {
            let now = match &cfg.origins {
                OriginPolicy::SameOrigin => "only its own origin".to_string(),
                OriginPolicy::Any => "any origin".to_string(),
                OriginPolicy::List(l) => l.join(", "),
            };
            format!(
                "start wsloop with --allow-origin {origin} (allowed now: {now}; --allow-origin '*' allows any)"
            )
        }
        404 | 200 => format!("the upgrade path is {} (--path)", cfg.path),
        503 => {
            let per_ip = cfg.max_connections_per_ip.map_or(String::new(), |n| {
                format!(" or --max-connections-per-ip {n}")
            });
            format!(
                "the server is at its connection limit (--max-connections {}{per_ip}); retry later or raise it",
                cfg.max_connections
            )
        }
        431 => format!(
            "the request is larger than --max-request {}",
            show_size(cfg.max_request)
        ),
        _ => String::new(),
    }
}

/// A 200 response that closes the connection.
fn respond(content_type: &str, body: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// `s` as a JSON string; `<` is escaped too, so the text can sit inside a `<script>`.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(cfg: &Config, over_limit: bool, target: &str, headers: &str) -> Option<String> {
        let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{headers}\r\n");
        match evaluate(
            req.as_bytes(),
            cfg,
            "127.0.0.1:1".parse().unwrap(),
            over_limit,
        ) {
            Outcome::Respond {
                status: 200, reply, ..
            } => {
                let text = String::from_utf8(reply).unwrap();
                assert!(text.contains("Content-Type: application/json"), "{text}");
                Some(text.split_once("\r\n\r\n").unwrap().1.to_string())
            }
            _ => None,
        }
    }

    fn console() -> Config {
        Config {
            console: true,
            ..Config::default()
        }
    }

    #[test]
    fn probe_answers_what_the_upgrade_would() {
        let cfg = console();
        let same = "Wsloop-Probe: http://127.0.0.1:8080\r\n";
        assert_eq!(
            verdict(&cfg, false, "/ws", same).unwrap(),
            r#"{"status":101,"reason":"","hint":"","subprotocol":null}"#
        );
        let v = verdict(&cfg, false, "/nope", same).unwrap();
        assert!(
            v.starts_with(r#"{"status":404,"reason":"not found","#),
            "{v}"
        );
        assert!(v.contains("the upgrade path is /ws"), "{v}");
        let v = verdict(&cfg, false, "/", same).unwrap();
        assert!(v.contains(r#""status":200,"#) && v.contains("/ws"), "{v}");
        let v = verdict(&cfg, false, "/ws", "Wsloop-Probe: http://evil.example\r\n").unwrap();
        assert!(v.contains(r#""status":403,"#), "{v}");
        assert!(v.contains("--allow-origin http://evil.example"), "{v}");
        let v = verdict(&cfg, true, "/ws", same).unwrap();
        assert!(
            v.contains(r#""status":503,"#) && v.contains("--max-connections"),
            "{v}"
        );
        // A real Origin header wins over the page's word.
        let v = verdict(
            &cfg,
            false,
            "/ws",
            "Wsloop-Probe: http://127.0.0.1:8080\r\nOrigin: http://evil.example\r\n",
        )
        .unwrap();
        assert!(v.contains(r#""status":403,"#), "{v}");
    }

    #[test]
    fn probe_reports_the_subprotocol_choice() {
        let cfg = Config {
            subprotocols: vec!["chat".into(), "v2".into()],
            ..console()
        };
        let v = verdict(
            &cfg,
            false,
            "/ws",
            "Wsloop-Probe: http://127.0.0.1:8080\r\nWsloop-Probe-Protocol: v2, chat\r\n",
        )
        .unwrap();
        assert!(v.ends_with(r#""subprotocol":"chat"}"#), "{v}");
        let v = verdict(
            &cfg,
            false,
            "/ws",
            "Wsloop-Probe: http://127.0.0.1:8080\r\nWsloop-Probe-Protocol: nope\r\n",
        )
        .unwrap();
        assert!(v.contains("it speaks: chat, v2"), "{v}");
    }

    #[test]
    fn probe_only_under_console() {
        let probe = "Wsloop-Probe: http://127.0.0.1:8080\r\n";
        assert_eq!(verdict(&Config::default(), false, "/ws", probe), None);
        // A real upgrade is not a probe.
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        assert_eq!(verdict(&console(), false, "/ws", upgrade), None);
    }

    #[test]
    fn settings_are_json_safe_in_a_script() {
        let cfg = Config {
            path: "/a</script>\"b".into(),
            subprotocols: vec!["chat".into()],
            ..console()
        };
        let page = String::from_utf8(page(&cfg)).unwrap();
        assert!(page.contains(r#"{"path":"/a\u003c/script>\"b","subprotocols":["chat"],"#));
        assert!(!page.contains("__SETTINGS__"));
    }
}
