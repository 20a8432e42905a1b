//! Examples as servers under test: build one (once per test binary, with the json and
//! redis features when the test has them), run it on a free loopback port, kill it
//! when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Builds example `name` (once per test binary) and returns its executable.
pub fn example_exe(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some((_, exe)) = built.iter().find(|(n, _)| n == name) {
        return exe.clone();
    }
    let mut cmd = Command::new(env!("CARGO"));
    // The variables cargo sets for this test binary describe this crate; a nested
    // cargo that inherits them reruns build scripts that watch them (ring's), and the
    // next `cargo test` then rebuilds ring, rustls and wsloop all over again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&name.as_ref())
            || name.starts_with("CARGO_BIN_")
            || name == "OUT_DIR"
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--example", name]);
    let features = [
        ("json", cfg!(feature = "json")),
        ("redis", cfg!(feature = "redis")),
    ];
    for (feature, _) in features.iter().filter(|(_, on)| *on) {
        cmd.args(["--features", feature]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cargo build");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo build") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cargo build --example {name} took over 600 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    assert!(status.success(), "cargo build --example {name}: {status}");
    let exe = out
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""kind":["example"]"#))
        .filter(|l| l.contains(&format!(r#""name":"{name}""#)))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .unwrap_or_else(|| panic!("no executable reported for example {name}"));
    built.push((name.to_string(), exe.clone()));
    exe
}

/// A running example process; killed (by its PID) when dropped.
pub struct Example {
    pub child: Child,
    /// `ws://ADDR/ws`
    pub url: String,
}

impl Example {
    pub fn start(name: &str) -> Example {
        Example::start_with(name, &[])
    }

    /// Like `start`, with `args` after the address.
    pub fn start_with(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_exe(name))
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining after the address so the example never blocks on stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("example {name} did not report its listening address");
            }
        };
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        Example { child, url }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
