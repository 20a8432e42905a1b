//! The real `wsloop` binary driven by a client nobody here wrote: Python's `websockets`
//! (asyncio API), in the venv that `common::python` bootstraps under `target/pyvenv`.
//! The checks themselves are in `tests/py/client.py`.

mod common;

use common::python::{check_report, python_venv, run_script};
use common::{Server, http, wait_until};
use std::time::Duration;

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

    let out = run_script(&python, "client.py", &[&server.url()], CLIENT_TIMEOUT);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let logs = server.logs.clone();
    let server_log = move || {
        format!(
            "--- server log (last 40 lines) ---\n{}",
            tail(&logs.lock().unwrap(), 40)
        )
    };
    check_report(&out, "python-websockets", CHECKS, &server_log);
    let report = || {
        format!(
            "--- client.py stdout ---\n{stdout}\n--- client.py stderr ---\n{stderr}\n{}",
            server_log()
        )
    };

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
