//! The browser console (`--console`: src/protocol/console.html at `GET /`).
//!
//! `console_page_over_http` checks the page and the probe with a raw socket.
//! `console_in_chromium` loads it in Debian's headless Chromium, driven by playwright-core
//! (tests/browser/console.test.mjs), against wsloop servers started here: the handshake
//! shown (subprotocol, extensions), every failure kind explained (404, 403, 503, server
//! down, TLS mismatch, subprotocol mismatch), the log (timestamps, whitespace, expand,
//! copy, pretty JSON, filter, export), the editor (history, hex, send N), reconnect, the
//! page's properties (size, labels, no request off its origin), and screenshots at desktop
//! and 390 px width with the main controls inside the viewport:
//! `target/browser-console.png` and `target/browser-console-390.png`.
//!
//! `oversize_messages_close_1009_in_chromium` is a defect test, run alone with
//! `cargo test --test browser oversize`: a browser that sends a message over the limit
//! must see the server's close 1009, not an abnormal 1006, every time.
//!
//! `compression_in_chromium`: the page's WebSocket negotiates permessage-deflate and a
//! 200 KB JSON text message echoes intact (tests/browser/compression.test.mjs).
//!
//! Tools: the test installs what is missing, the first time (as root): Chromium with
//! `apt-get install -y chromium` (after `apt-get update` if that fails) and playwright-core
//! with `npm ci --prefix tests/browser`. It needs Node.js >= 20 on PATH (playwright-core's
//! own floor). Where the tools cannot be had (no node or npm, no apt-get, not root), the
//! test fails if `CI` is set and prints a skip notice otherwise.

mod common;

use common::{Server, http};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// playwright-core 1.65 declares `engines.node >= 20`.
const NODE_MAJOR_MIN: u32 = 20;
/// The scripts bound themselves (console: 300 s, oversize: 240 s) against hangs, with
/// room for a machine busy compiling; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(420);
const APT_TIMEOUT: Duration = Duration::from_secs(900);
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// One Chromium at a time: two of them (one sending 16 MB messages) on a small machine
/// slow each other down enough to reach the scripts' hang guards.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The page must stay small: one self-contained file served from the binary.
const PAGE_MAX: usize = 30 * 1024;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` (or `$CARGO_TARGET_DIR`): the parent of cargo's integration-test tmp dir.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn get(addr: std::net::SocketAddr, target: &str, extra: &str) -> (u16, String, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    let (status, text) = http(addr, req.as_bytes());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn console_page_over_http() {
    let server = Server::start(&["--console", "--subprotocol", "chat"]);
    let (status, head, body) = get(server.addr, "/", "");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(
        body.contains(r#"<script type="application/json" id="settings">{"path":"/ws","subprotocols":["chat"],"maxMessage":16777216,"maxFrame":16777216}</script>"#),
        "settings not in the page:\n{body}"
    );
    assert!(
        !body.contains("__SETTINGS__"),
        "placeholder left in the page"
    );
    for id in [
        "url",
        "protocols",
        "connect",
        "disconnect",
        "close-code",
        "close-reason",
        "message",
        "send-text",
        "send-binary",
        "hex",
        "file",
        "count",
        "every",
        "filter",
        "export",
        "clear",
        "log",
    ] {
        assert!(
            body.contains(&format!("id=\"{id}\"")),
            "no #{id} in the page"
        );
    }
    assert!(body.len() < PAGE_MAX, "page is {} bytes", body.len());
    // Self-contained: nothing loaded from anywhere (the one link is the data: icon).
    for needle in ["src=", "url(", "@import", "<iframe", "<object", "<embed"] {
        assert!(!body.contains(needle), "the page loads something: {needle}");
    }
    assert_eq!(body.matches("href=").count(), 1, "links in the page");
    assert!(body.contains(r#"<link rel="icon" href="data:,">"#));
    // A query string is still the page; the WebSocket path without an upgrade is not.
    assert_eq!(get(server.addr, "/?x=1", "").0, 200);
    assert_eq!(get(server.addr, "/ws", "").0, 426);

    // The probe: the verdict the upgrade would get, as JSON.
    let origin = format!("http://{}", server.addr);
    let (status, head, body) = get(server.addr, "/ws", &format!("Wsloop-Probe: {origin}\r\n"));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(
        body,
        r#"{"status":101,"reason":"","hint":"","subprotocol":null}"#
    );
    let (_, _, body) = get(
        server.addr,
        "/ws",
        &format!("Wsloop-Probe: {origin}\r\nWsloop-Probe-Protocol: x, chat\r\n"),
    );
    assert!(body.ends_with(r#""subprotocol":"chat"}"#), "{body}");
    let (_, _, body) = get(server.addr, "/ws", "Wsloop-Probe: http://evil.example\r\n");
    assert!(body.starts_with(r#"{"status":403,"#), "{body}");
    let (_, _, body) = get(server.addr, "/nope", &format!("Wsloop-Probe: {origin}\r\n"));
    assert!(body.starts_with(r#"{"status":404,"#), "{body}");
    let full = Server::start(&["--console", "--max-connections", "1"]);
    let _holder = common::upgraded(full.addr, "/ws");
    let (_, _, body) = get(
        full.addr,
        "/ws",
        &format!("Wsloop-Probe: http://{}\r\n", full.addr),
    );
    assert!(body.starts_with(r#"{"status":503,"#), "{body}");

    let other = Server::start(&["--console", "--path", "/echo/v1"]);
    let (status, _, body) = get(other.addr, "/", "");
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"{"path":"/echo/v1","#),
        "--path not in the page"
    );

    let plain = Server::start(&[]);
    let (status, head, _) = get(plain.addr, "/", "");
    assert_eq!(status, 404, "without --console GET / must be 404: {head}");
    // Without --console there is no probe either: the upgrade path wants an upgrade.
    let (status, _, _) = get(plain.addr, "/ws", "Wsloop-Probe: http://x\r\n");
    assert_eq!(status, 426);
}

#[test]
fn console_in_chromium() {
    let Some(node) = browser_tools() else {
        return;
    };
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let main = Server::start(&["--console", "--subprotocol", "chat", "--subprotocol", "v2"]);
    let forbidden = Server::start(&["--console", "--allow-origin", "https://app.example"]);
    let limited = Server::start(&[
        "--console",
        "--max-connections",
        "1",
        "--max-message",
        "64KiB",
    ]);
    #[cfg(feature = "tls")]
    let (_certs, tls) = tls_server();
    #[cfg(feature = "tls")]
    let tls_addr = format!("\"{}\"", tls.addr);
    #[cfg(not(feature = "tls"))]
    let tls_addr = "null";
    // A port nothing listens on: bound, then released.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let shots = [
        target_dir().join("browser-console.png"),
        target_dir().join("browser-console-390.png"),
    ];
    fs::create_dir_all(target_dir()).expect("create target dir");
    for shot in &shots {
        let _ = fs::remove_file(shot);
    }
    let args = format!(
        r#"{{"main":"http://{}/","forbidden":"http://{}/","limited":"http://{}/","down":"{down}","tls":{tls_addr},"shot":"{}","shot390":"{}"}}"#,
        main.addr,
        forbidden.addr,
        limited.addr,
        shots[0].display(),
        shots[1].display()
    );
    let servers = [&main, &forbidden, &limited];
    run_script(&node, "console.test.mjs", &args, &servers);
    for shot in &shots {
        let size = fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "no screenshot at {}", shot.display());
        println!("screenshot: {} ({size} bytes)", shot.display());
    }
}

/// `wsloop --console` serving wss:// with a self-signed certificate made now (the
/// directory holding it is removed when the first value drops).
#[cfg(feature = "tls")]
fn tls_server() -> (TempDir, Server) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir =
        TempDir(std::env::temp_dir().join(format!("wsloop-browser-tls-{}", std::process::id())));
    fs::create_dir_all(&dir.0).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    fs::write(&cert, certified.cert.pem()).unwrap();
    fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&[
        "--console",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    (dir, server)
}

/// A directory removed on drop.
#[cfg(feature = "tls")]
struct TempDir(PathBuf);

#[cfg(feature = "tls")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Defect test (run alone: `cargo test --test browser oversize`). Against
/// `--max-message 64KiB --max-frame 64KiB`, the served page sends binary messages of
/// 100 KB, 1 MB and 16 MB, ten of each, each on a fresh connection; `onclose` must see
/// 1009 every time. A server that drops the socket while the browser is still sending
/// makes the browser report 1006 instead (the close frame is lost to the reset).
#[test]
fn oversize_messages_close_1009_in_chromium() {
    let Some(node) = browser_tools() else {
        return;
    };
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[
        "--console",
        "--max-message",
        "64KiB",
        "--max-frame",
        "64KiB",
    ]);
    let args = format!(r#"{{"page":"http://{}/"}}"#, server.addr);
    run_script(&node, "oversize.test.mjs", &args, &[&server]);
}

/// permessage-deflate in Chromium (tests/browser/compression.test.mjs): the page's
/// WebSocket reports it in `ws.extensions` and a 200 KB JSON text echoes intact; the
/// server's metrics then show compressed bytes both ways.
#[test]
fn compression_in_chromium() {
    let Some(node) = browser_tools() else {
        return;
    };
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[
        "--console",
        "--compression",
        "shared",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let args = format!(r#"{{"page":"http://{}/"}}"#, server.addr);
    run_script(&node, "compression.test.mjs", &args, &[&server]);
    let (_, text) = common::scrape(server.metrics_addr(), "/metrics");
    for way in ["in", "out"] {
        let series = |form| format!("wsloop_deflate_{way}_bytes_total{{form=\"{form}\"}}");
        let compressed = common::metric(&text, &series("compressed"));
        let plain = common::metric(&text, &series("plain"));
        assert!(
            compressed > 0 && compressed * 2 < plain && plain > 190_000,
            "{way}: {compressed} compressed for {plain} plain"
        );
    }
}

/// Runs tests/browser/SCRIPT with one JSON argument; fails with its output and the
/// servers' logs unless it exits 0.
fn run_script(node: &str, script: &str, args: &str, servers: &[&Server]) {
    let path = manifest_dir().join("tests/browser").join(script);
    let started = Instant::now();
    let out = run_bounded(
        Command::new(node)
            .arg(&path)
            .arg(args)
            .current_dir(manifest_dir()),
        SCRIPT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("cannot run {node} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    println!("browser: {:.1} s", started.elapsed().as_secs_f64());
    if !out.status.success() {
        let logs: Vec<String> = servers
            .iter()
            .map(|s| {
                let lines = s.logs.lock().unwrap();
                let tail = lines.len().saturating_sub(60);
                format!(
                    "--- server {} (last 60 lines) ---\n{}",
                    s.addr,
                    lines[tail..].join("\n")
                )
            })
            .collect();
        panic!(
            "{script} failed ({}):\n{stdout}\n--- stderr ---\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            logs.join("\n")
        );
    }
}

/// Makes sure node (>= 20), Chromium and playwright-core are there, installing the last
/// two if needed. Returns node's name, or None (after a notice) to skip outside CI.
fn browser_tools() -> Option<String> {
    let node = "node".to_string();
    let version = match Command::new(&node).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            return unavailable(
                "node is not on PATH (Node.js >= 20 and npm are needed to drive Chromium)",
            );
        }
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < NODE_MAJOR_MIN {
        return unavailable(&format!(
            "node {version} is too old (playwright-core needs >= {NODE_MAJOR_MIN})"
        ));
    }

    // One installer at a time (parallel `cargo test` runs); the OS drops the lock if we die.
    fs::create_dir_all(target_dir()).expect("create target dir");
    let lock = File::create(target_dir().join("browser-tools.lock")).expect("create lock file");
    lock.lock().expect("lock target/browser-tools.lock");

    if !Path::new(CHROMIUM).exists() {
        if Command::new("apt-get").arg("--version").output().is_err() {
            return unavailable(&format!("{CHROMIUM} is missing and there is no apt-get"));
        }
        let uid = Command::new("id").arg("-u").output().ok();
        let uid = uid.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if uid.as_deref() != Some("0") {
            return unavailable(&format!(
                "{CHROMIUM} is missing and installing it needs root (apt-get install -y chromium)"
            ));
        }
        eprintln!("browser: {CHROMIUM} missing: apt-get install -y chromium (first run only)");
        if !apt(&["install", "-y", "-q", "chromium"]) {
            assert!(apt(&["update", "-q"]), "apt-get update failed");
            assert!(
                apt(&["install", "-y", "-q", "chromium"]),
                "apt-get install -y chromium failed (after apt-get update)"
            );
        }
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} still missing after apt-get install chromium"
        );
    }

    let dir = manifest_dir().join("tests/browser");
    if !playwright_installed(&dir) {
        if Command::new("npm").arg("--version").output().is_err() {
            return unavailable("npm is not on PATH (needed for npm ci --prefix tests/browser)");
        }
        eprintln!("browser: npm ci --prefix tests/browser (playwright-core, first run only)");
        let out = run_bounded(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir),
            NPM_TIMEOUT,
        )
        .expect("run npm ci");
        assert!(
            out.status.success() && playwright_installed(&dir),
            "npm ci --prefix tests/browser failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    Some(node)
}

/// Whether tests/browser/node_modules holds the playwright-core version package.json pins.
fn playwright_installed(dir: &Path) -> bool {
    let version = |p: PathBuf, key: &str| {
        let text = fs::read_to_string(p).unwrap_or_default();
        let at = text.find(key)? + key.len();
        let rest = text[at..].trim_start_matches([':', ' ', '"']);
        Some(rest[..rest.find('"')?].to_string())
    };
    let pinned = version(dir.join("package.json"), "\"playwright-core\"");
    let installed = version(
        dir.join("node_modules/playwright-core/package.json"),
        "\"version\"",
    );
    pinned.is_some() && pinned == installed
}

/// apt-get (non-interactive, waiting up to 5 min for dpkg's lock); prints the tail if it fails.
fn apt(args: &[&str]) -> bool {
    let out = run_bounded(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        APT_TIMEOUT,
    )
    .expect("run apt-get");
    if !out.status.success() {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = all.lines().rev().take(20).collect();
        eprintln!(
            "browser: apt-get {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out.status.success()
}

/// The tools cannot be had here: a failure under CI, a skip notice otherwise.
fn unavailable(why: &str) -> Option<String> {
    if in_ci() {
        panic!(
            "browser test: {why}. CI is set, so this is a failure: install Node.js >= 20 with \
             npm, and run as root with apt-get (or preinstall Debian's chromium)."
        );
    }
    eprintln!("SKIPPED browser test: {why} (set CI=1 to make this a failure)");
    None
}

/// Runs `cmd` with piped output; on timeout sends SIGTERM (node then closes its browser),
/// then SIGKILL, both to this child's PID only.
fn run_bounded(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            eprintln!("browser: {cmd:?} still running after {limit:?}: stopping it");
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now() + Duration::from_secs(5);
            while Instant::now() < grace && child.try_wait()?.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
