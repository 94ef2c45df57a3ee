//! The old process's half of an upgrade: start the successor with the sockets, wait for its
//! word.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::{ADMIN_KEY, INHERITED_FDS, READY_FD, UPGRADED_FROM};
use crate::error::Error;

/// How long a successor has to report ready: reading its configuration, resolving its
/// backends and starting to accept. Past it, the successor is killed and the old process
/// keeps serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A successor that reported ready: it accepts on every socket handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
}

/// Starts `program` with `args` as this process's successor, handing it `listeners` (by
/// listener name, every socket of each) and the admin endpoint's socket, and waits up to
/// `timeout` for it to report ready.
///
/// The successor gets standard input from `/dev/null` (there is no prompt to take over),
/// this process's standard output and error, and the environment less systemd's
/// `LISTEN_*` and `WATCHDOG_PID` (they were this process's), plus `LB_INHERITED_FDS`,
/// `LB_UPGRADE_READY_FD` and `LB_UPGRADED_FROM`. Its sockets are duplicates of this
/// process's: both accept on the same sockets until this one stops, so none closes.
///
/// On `ready` the successor is returned; it keeps running when this process exits. If it
/// cannot be started, reports an error, exits or stays silent for `timeout`, it is killed
/// (if still running) and the error says why; this process's sockets are untouched.
pub async fn start_successor(
    program: &Path,
    args: &[OsString],
    listeners: &[(String, Vec<TcpListener>)],
    admin: Option<&TcpListener>,
    timeout: Duration,
) -> Result<Successor, Error> {
    let fail = |why: String| Error::Upgrade(why);
    // Duplicates without close-on-exec: exactly these cross into the successor. They are
    // dropped right after the spawn; lb starts no other processes, so no other child can
    // inherit them meanwhile.
    let mut handed: Vec<OwnedFd> = Vec::new();
    let mut entries = Vec::new();
    let mut dup = |socket: &TcpListener| -> Result<String, Error> {
        let fd = inheritable(socket)
            .map_err(|e| fail(format!("cannot duplicate a listening socket: {e}")))?;
        let number = fd.as_raw_fd().to_string();
        handed.push(fd);
        Ok(number)
    };
    for (name, sockets) in listeners {
        let fds = sockets.iter().map(&mut dup).collect::<Result<Vec<_>, _>>()?;
        entries.push(format!("{name}={}", fds.join(",")));
    }
    if let Some(admin) = admin {
        entries.push(format!("{ADMIN_KEY}={}", dup(admin)?));
    }
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    let child_write =
        inheritable(&ready_write).map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    // Only the successor may hold the write end: its exit is then the end of the pipe.
    drop(ready_write);
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .env(INHERITED_FDS, entries.join(";"))
        .env(READY_FD, child_write.as_raw_fd().to_string())
        .env(UPGRADED_FROM, std::process::id().to_string());
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID"] {
        command.env_remove(var);
    }
    let spawned = command.spawn();
    drop(handed);
    drop(child_write);
    let mut child =
        spawned.map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
    let pid = child.id();
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_read)
        .map_err(|e| fail(format!("cannot wait for the new process: {e}")))?;
    // One line, bounded, however much a confused successor writes.
    let mut reader = BufReader::new(receiver.take(4096));
    let mut line = String::new();
    let heard = tokio::time::timeout(timeout, reader.read_line(&mut line)).await;
    let line = line.trim();
    match heard {
        Ok(Ok(_)) if line == "ready" => {
            // Reaped if it ends while this process still runs (it normally outlives it).
            let _ = std::thread::Builder::new()
                .name("lb-successor".into())
                .spawn(move || drop(child.wait()));
            Ok(Successor { pid })
        }
        Ok(Ok(_)) => {
            let status = stop(child).await;
            Err(fail(match line.strip_prefix("error: ") {
                Some(why) => format!("the new process (pid {pid}) could not start: {why}"),
                None if line.is_empty() => {
                    format!("the new process (pid {pid}) {status} before it was ready")
                }
                None => format!("the new process (pid {pid}) said {line:?} instead of ready"),
            }))
        }
        Ok(Err(e)) => {
            stop(child).await;
            Err(fail(format!("cannot read the new process's (pid {pid}) report: {e}")))
        }
        Err(_) => {
            stop(child).await;
            Err(fail(format!(
                "the new process (pid {pid}) was not ready within {} s; it was stopped",
                timeout.as_secs_f64()
            )))
        }
    }
}

/// A duplicate of `fd` that a started process inherits (no close-on-exec), numbered 3 or
/// above: with this process's standard input closed, a plain dup(2) could return 0, which
/// the successor's standard input (/dev/null) would replace.
fn inheritable(fd: impl std::os::fd::AsFd) -> rustix::io::Result<OwnedFd> {
    let copy = rustix::io::fcntl_dupfd_cloexec(fd, 3)?;
    rustix::io::fcntl_setfd(&copy, rustix::io::FdFlags::empty())?;
    Ok(copy)
}

/// Ends a successor that will not take over (it may already have exited) and says how it
/// ended (`exited with status 2`).
async fn stop(mut child: Child) -> String {
    // Give one that is exiting by itself a moment, so its own exit status is reported.
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return describe(status);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    match tokio::task::spawn_blocking(move || child.wait()).await {
        Ok(Ok(status)) => describe(status),
        _ => "was stopped".into(),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was ended by signal {signal}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -c SCRIPT` as the successor, with one listener and an admin socket. (Scripts
    /// write to the pipe through /proc: dash's `>&N` takes one digit only.)
    async fn start(script: &str, timeout: Duration) -> Result<Successor, Error> {
        let web = vec![TcpListener::bind("127.0.0.1:0").unwrap()];
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let args: Vec<OsString> = ["-c", script].iter().map(Into::into).collect();
        let listeners = [("web".to_owned(), web)];
        start_successor(Path::new("/bin/sh"), &args, &listeners, Some(&admin), timeout).await
    }

    fn message(result: Result<Successor, Error>) -> String {
        match result {
            Ok(s) => panic!("unexpectedly ready: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_successor_that_says_ready_gets_the_sockets_by_name() {
        let dir = std::env::temp_dir().join(format!("lb-successor-{}", std::process::id()));
        let file = dir.with_extension("env");
        let script = format!(
            r#"echo "$LB_INHERITED_FDS $LB_UPGRADED_FROM" > {}; echo ready > /proc/self/fd/$LB_UPGRADE_READY_FD"#,
            file.display()
        );
        let successor = start(&script, READY_TIMEOUT).await.unwrap();
        assert_ne!(successor.pid, std::process::id());
        let seen = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let (fds, from) = seen.trim().split_once(' ').unwrap();
        assert_eq!(from, std::process::id().to_string());
        let (web, admin) = fds.split_once(';').unwrap();
        assert!(web.starts_with("web=") && admin.starts_with("@admin="), "{fds}");
    }

    #[tokio::test]
    async fn a_successor_that_fails_exits_or_stays_silent_is_reported_and_stopped() {
        let refused = message(
            start(
                r#"echo "error: bad file" > /proc/self/fd/$LB_UPGRADE_READY_FD; exit 2"#,
                READY_TIMEOUT,
            )
            .await,
        );
        assert!(refused.contains("could not start: bad file"), "{refused}");
        assert!(refused.starts_with("upgrade failed, this process keeps serving: "), "{refused}");
        let exited = message(start("exit 3", READY_TIMEOUT).await);
        assert!(exited.contains("exited with status 3 before it was ready"), "{exited}");
        let silent = message(start("exec sleep 30", Duration::from_millis(200)).await);
        assert!(silent.contains("was not ready within 0.2 s; it was stopped"), "{silent}");
        let missing = Path::new("/nonexistent/lb");
        let e = start_successor(missing, &[], &[], None, READY_TIMEOUT).await.unwrap_err();
        assert!(e.to_string().contains("cannot start /nonexistent/lb"), "{e}");
    }
}
