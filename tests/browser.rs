//! The browser console (`--console`: src/console.html at `GET /`).
//!
//! `console_page_over_http` checks the page with a raw socket. `console_in_chromium`
//! loads it in Debian's headless Chromium, driven by playwright-core
//! (tests/browser/console.test.mjs): connect, text and binary echoes with their round-trip
//! times, close 4000 "bye", and a screenshot at `target/browser-console.png`.
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
/// The script bounds itself at 30 s; this is the backstop (a cold first start included).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const APT_TIMEOUT: Duration = Duration::from_secs(900);
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

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

fn get(addr: std::net::SocketAddr, target: &str) -> (u16, String, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (status, text) = http(addr, req.as_bytes());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn console_page_over_http() {
    let server = Server::start(&["--console"]);
    let (status, head, body) = get(server.addr, "/");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert!(
        body.contains(">/ws</script>"),
        "ws path not in the page:\n{body}"
    );
    assert!(
        !body.contains("__WS_PATH__"),
        "placeholder left in the page"
    );
    for id in [
        "url",
        "connect",
        "disconnect",
        "message",
        "send-text",
        "send-binary",
    ] {
        assert!(
            body.contains(&format!("id=\"{id}\"")),
            "no #{id} in the page"
        );
    }
    assert!(body.len() < 10 * 1024, "page is {} bytes", body.len());
    // A query string is still the page; the WebSocket path without an upgrade is not.
    assert_eq!(get(server.addr, "/?x=1").0, 200);
    assert_eq!(get(server.addr, "/ws").0, 426);

    let other = Server::start(&["--console", "--path", "/echo/v1"]);
    let (status, _, body) = get(other.addr, "/");
    assert_eq!(status, 200);
    assert!(
        body.contains(">/echo/v1</script>"),
        "--path not in the page"
    );

    let plain = Server::start(&[]);
    let (status, head, _) = get(plain.addr, "/");
    assert_eq!(status, 404, "without --console GET / must be 404: {head}");
}

#[test]
fn console_in_chromium() {
    let Some(node) = browser_tools() else {
        return;
    };
    let server = Server::start(&["--console"]);
    let page = format!("http://{}/", server.addr);
    let shot = target_dir().join("browser-console.png");
    fs::create_dir_all(target_dir()).expect("create target dir");
    let _ = fs::remove_file(&shot);
    let script = manifest_dir().join("tests/browser/console.test.mjs");
    let started = Instant::now();
    let out = run_bounded(
        Command::new(&node)
            .arg(&script)
            .arg(&page)
            .arg(&shot)
            .current_dir(manifest_dir()),
        SCRIPT_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("cannot run {node} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    println!("browser: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "console.test.mjs failed ({}):\n{stdout}\n--- stderr ---\n{}\n--- server log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.logs.lock().unwrap().join("\n")
    );
    let size = fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "no screenshot at {}", shot.display());
    println!("screenshot: {} ({size} bytes)", shot.display());
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
    eprintln!("SKIPPED browser::console_in_chromium: {why} (set CI=1 to make this a failure)");
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
