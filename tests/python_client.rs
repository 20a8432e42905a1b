//! The real `wsloop` binary driven by a client nobody here wrote: Python's `websockets`
//! (asyncio API). The test bootstraps its own venv under `target/pyvenv` (Python's
//! `venv` module, then `pip install websockets==WEBSOCKETS_VERSION`) the first time, so
//! plain `cargo test` works on a fresh machine that has `python3` and PyPI access.
//! The checks themselves are in `tests/py/client.py`.

mod common;

use common::{Server, http, wait_until};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `websockets` release this test was written and checked against.
const WEBSOCKETS_VERSION: &str = "17.4";
/// Each check in client.py has its own 60 s limit; this bounds the whole script.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// The checks client.py must report as passed, in its order.
const CHECKS: &[&str] = &[
    "text-echo",
    "binary-echo",
    "fragmented",
    "ping-pong",
    "close-4000",
    "subprotocol",
    "concurrent-50",
    "origin-403",
];

/// `target/` (or `$CARGO_TARGET_DIR`): the parent of cargo's integration-test tmp dir.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// Runs `cmd` to completion; panics with `what`, the command and its output on failure.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what}: {cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Returns the venv's python, creating the venv first if it is missing or was made for
/// another pin. A file lock on `target/pyvenv.lock` serialises concurrent `cargo test`
/// runs (the lock is released by the OS if a run dies half-way).
fn python_venv() -> PathBuf {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 --version failed ({}): {}. This test runs the Python `websockets` \
             client and needs a working python3 on PATH (with the venv module: Debian's \
             python3-venv package).",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "python3 not found on PATH ({e}). This test runs the Python `websockets` client \
             and needs python3 with the venv module (Debian: apt-get install python3 \
             python3-venv); it bootstraps everything else itself."
        ),
    }

    let target = target_dir();
    fs::create_dir_all(&target).expect("create target dir");
    let venv = target.join("pyvenv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".wsloop-python-client");
    let want = format!("websockets=={WEBSOCKETS_VERSION}\n");

    let lock = File::create(target.join("pyvenv.lock")).expect("create target/pyvenv.lock");
    lock.lock().expect("lock target/pyvenv.lock");
    let ready = python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want);
    if !ready {
        eprintln!(
            "python_client: creating {} with websockets=={WEBSOCKETS_VERSION}",
            venv.display()
        );
        let _ = fs::remove_dir_all(&venv);
        let _ = run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating the Python venv (on Debian/Ubuntu: apt-get install python3-venv)",
        );
        let _ = run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(["--no-input", "-q"])
                .arg(format!("websockets=={WEBSOCKETS_VERSION}")),
            "installing websockets from PyPI into the venv",
        );
        fs::write(&stamp, &want).expect("write venv stamp");
    }
    let out = run(
        Command::new(&python).args(["-c", "import websockets; print(websockets.__version__)"]),
        "importing websockets from the venv",
    );
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        version, WEBSOCKETS_VERSION,
        "websockets version in {venv:?}"
    );
    drop(lock);
    python
}

/// Runs the client script against `url` with a time limit; kills it (by PID) on timeout.
fn run_client(python: &Path, url: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/client.py");
    let child = Command::new(python)
        .arg("-u")
        .arg(&script)
        .arg(url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/py/client.py");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLIENT_TIMEOUT) {
        Ok(out) => out.expect("wait for client.py"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("tests/py/client.py did not finish within {CLIENT_TIMEOUT:?}");
        }
    }
}

#[test]
fn python_websockets_client() {
    let python = python_venv();
    let mut server = Server::start(&["--subprotocol", "chat"]);
    // What an idle, running server holds (listener, poll, signal pipe, stdio): measured
    // after it has served one request, since `run()` sets up the poll and the signal
    // pipe after the "listening" log line.
    let (status, _) = http(
        server.addr,
        format!(
            "GET /nothing-here HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    assert_eq!(status, 404, "plain GET of another path");
    let mut idle_fds = server.open_fds();
    wait_until(Duration::from_secs(2), || {
        let now = server.open_fds();
        let settled = now == idle_fds;
        idle_fds = now;
        settled
    });

    let started = Instant::now();
    let out = run_client(&python, &server.url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let logs = server.logs.clone();
    let report = || {
        format!(
            "--- client.py stdout ---\n{stdout}\n--- client.py stderr ---\n{stderr}\n\
             --- server log (last 40 lines) ---\n{}",
            tail(&logs.lock().unwrap(), 40)
        )
    };

    assert!(
        out.status.success(),
        "client.py exited with {} after {:?}\n{}",
        out.status,
        started.elapsed(),
        report()
    );
    for check in CHECKS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("PASS {check}:"))),
            "check {check} did not pass\n{}",
            report()
        );
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("FAIL ")),
        "{}",
        report()
    );
    let closing = format!("python-websockets: {} passed, 0 failed", CHECKS.len());
    assert!(
        stdout.lines().any(|l| l == closing),
        "no line {closing:?}\n{}",
        report()
    );

    // the server survived all of it and let go of every connection
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "wsloop exited during the Python client run\n{}",
        report()
    );
    assert!(
        wait_until(Duration::from_secs(10), || server.open_fds() <= idle_fds),
        "wsloop still holds {} file descriptors (idle: {idle_fds}) after every client closed",
        server.open_fds()
    );
    assert!(
        !server.logged("panicked"),
        "server log mentions a panic\n{}",
        report()
    );
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}
