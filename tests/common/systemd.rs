//! Playing systemd: a listening socket the test holds (`listen_socket`) and handed to
//! a wsloop as socket activation does (`activated`: fd 3, `LISTEN_FDS`, `LISTEN_PID`).

use std::net::TcpListener;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A loopback listening socket with a backlog as deep as wsloop's own, so that
/// connections arriving while no process accepts wait instead of being dropped.
pub fn listen_socket() -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(4096).unwrap();
    s.into()
}

/// `sh -c` running `exe` (or wsloop) as systemd would: `fd` as fd 3, `LISTEN_FDS`
/// (`fds`, normally "1") and `LISTEN_PID` set to the process's own PID (the shell's
/// `$$`, which `exec` keeps). `pid_offset` other than 0 names a wrong PID on purpose.
pub fn activated(fd: RawFd, fds: &str, pid_offset: u32) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!(r#"export LISTEN_FDS={fds} LISTEN_PID=$(($$ + {pid_offset})); exec "$0" "$@""#),
        env!("CARGO_BIN_EXE_wsloop"),
    ]);
    // SAFETY: dup2 is async-signal-safe; `fd` stays open in the parent until spawn
    // returns. The copy at 3 has no close-on-exec flag, so it survives both execs.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    cmd
}
