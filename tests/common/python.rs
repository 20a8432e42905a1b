//! Python's `websockets` (asyncio API) as a client nobody here wrote: a venv under
//! `target/pyvenv` is bootstrapped the first time (Python's `venv` module, then `pip
//! install websockets==WEBSOCKETS_VERSION`), so plain `cargo test` works on a fresh
//! machine that has `python3` and PyPI access. Scripts live in `tests/py/` and print
//! `PASS name: detail` / `FAIL name: error` lines (see `check_report`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `websockets` release the scripts were written and checked against.
pub const WEBSOCKETS_VERSION: &str = "17.4";

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
/// runs and test binaries (the lock is released by the OS if a run dies half-way).
pub fn python_venv() -> PathBuf {
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
            "python: creating {} with websockets=={WEBSOCKETS_VERSION}",
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

/// Runs `tests/py/<script>` with `args` under a time limit; kills it (by PID) when
/// the limit passes.
pub fn run_script(python: &Path, script: &str, args: &[&str], limit: Duration) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let child = Command::new(python)
        .arg("-u")
        .arg(&path)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start tests/py/{script}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("wait for tests/py/{script}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("tests/py/{script} did not finish within {limit:?}");
        }
    }
}

/// Checks a script's report: it exited 0, every check in `checks` printed a `PASS`
/// line, none printed `FAIL`, and the closing line counts them all (`<what>: N passed,
/// 0 failed`). `context` is appended to a failure (the server's log, say).
pub fn check_report(out: &Output, what: &str, checks: &[&str], context: &dyn Fn() -> String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = || {
        format!(
            "--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
            context()
        )
    };
    assert!(
        out.status.success(),
        "{what} exited with {}\n{}",
        out.status,
        report()
    );
    for check in checks {
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
    let closing = format!("{what}: {} passed, 0 failed", checks.len());
    assert!(
        stdout.lines().any(|l| l == closing),
        "no line {closing:?}\n{}",
        report()
    );
}
