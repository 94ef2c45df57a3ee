//! The `lb` binary end to end, as a user runs it: real processes, real sockets on 127.0.0.1,
//! commands on stdin, the log file, signals and exit statuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const LB: &str = env!("CARGO_BIN_EXE_lb");
const WAIT: Duration = Duration::from_secs(20);

/// A running `lb` with its stdin, stdout lines and log file. Killed on drop if still running.
struct Lb {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lb {
    fn start(args: &[&str]) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lb.log");
        let mut child = Command::new(LB)
            .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "debug"])
            .arg("--log-file")
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut lb = Lb { child, stdin, lines, addr: "0.0.0.0:0".parse().unwrap(), log, _dir: dir };
        let addr = if args.contains(&"-q") {
            // Quiet: no banner, so learn the address from the log.
            let line = lb.expect_log("listening address=");
            line.split("listening address=").nth(1).unwrap().split(' ').next().unwrap().to_owned()
        } else {
            let banner = lb.expect_line("listening on");
            banner.split("listening on ").nth(1).unwrap().split(' ').next().unwrap().to_owned()
        };
        lb.addr = addr.parse().unwrap();
        lb
    }

    /// Waits for a stdout line containing `needle`; returns it.
    fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no output line containing {needle:?}"),
            }
        }
    }

    /// Sends one command line on stdin.
    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a command and returns the output lines up to the first containing `needle`.
    fn command(&mut self, command: &str, needle: &str) -> String {
        self.send(command);
        self.expect_line(needle)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log file contains `needle`.
    fn expect_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "log has no line containing {needle:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "lb did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A backend that greets each connection with `name\n` and then echoes; runs until the test ends.
fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.write_all(format!("{name}\n").as_bytes());
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects through the balancer and returns the greeting of the backend reached.
fn via(lb: SocketAddr) -> String {
    let mut stream = TcpStream::connect(lb).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line).unwrap();
    line.trim().to_owned()
}

#[test]
fn stats_add_remove_and_bad_commands_through_stdin() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb = Lb::start(&["--backend", &a.to_string()]);
    let row = lb.command("stats", &a.to_string());
    assert!(row.contains(" up "), "{row}");
    lb.expect_line("TOTAL");
    assert_eq!(via(lb.addr), "alpha");

    // The seed's form: add <host> <port>.
    lb.command(&format!("add {} {}", b.ip(), b.port()), &format!("added {b}"));
    let seen: Vec<String> = (0..4).map(|_| via(lb.addr)).collect();
    assert!(seen.contains(&"alpha".into()) && seen.contains(&"beta".into()), "{seen:?}");

    lb.command(&format!("remove {} {}", a.ip(), a.port()), &format!("removed {a}"));
    assert!((0..4).all(|_| via(lb.addr) == "beta"));

    // Bad input: one line of error, and the balancer carries on.
    assert_eq!(lb.command("frobnicate", "error:"), "error: unknown command \"frobnicate\": expected one of add, remove, drain, enable, maint, weight, algorithm, stats, health, help, reload, quit");
    assert!(lb.command("add 127.0.0.1", "error:").contains("missing port"));
    assert!(lb.command(&format!("add {b}"), "error:").contains("already in the pool"));
    assert!(lb.command("weight 127.0.0.1:1 5", "error:").contains("no backend 127.0.0.1:1"));
    lb.command("algorithm least_connections", "algorithm least_connections");
    lb.command("stats", "algorithm least_connections");
    assert_eq!(via(lb.addr), "beta");
    lb.command("help", "Commands:");

    // Control commands are logged.
    lb.expect_log(&format!("command=remove {a}"));
    lb.expect_log("command=algorithm least_connections");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn log_file_has_startup_connections_and_health_transitions() {
    let a = backend("alpha");
    // A backend that is not there: health checks take it down.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut lb = Lb::start(&[
        "--backend",
        &a.to_string(),
        "--backend",
        &dead.to_string(),
        "--health-interval",
        "50ms",
        "--fall",
        "2",
    ]);
    let start = lb.expect_log("starting");
    assert!(
        start.contains(&format!("address={}", lb.addr))
            && start.contains("algorithm=round_robin")
            && start.contains(&a.to_string()),
        "{start}"
    );
    let down = lb.expect_log("backend is down");
    assert!(
        down.contains(&format!("backend={dead}"))
            && down.contains("from=up")
            && down.contains("to=down"),
        "{down}"
    );
    assert_eq!(via(lb.addr), "alpha");
    // The access line: client [accept time] backend Tc/Tt bytes_in bytes_out termination retries
    let line = lb.expect_log("lb::access:");
    let fields: Vec<&str> = line.split("lb::access: ").nth(1).unwrap().split(' ').collect();
    assert_eq!(fields.len(), 8, "{line}");
    assert!(fields[0].starts_with("127.0.0.1:") && fields[1].starts_with('['), "{line}");
    let backend = a.to_string();
    assert_eq!(
        (fields[2], fields[4], fields[5], fields[6]),
        (backend.as_str(), "0", "6", "normal"),
        "{line}"
    );
    lb.command("health", &format!("{dead}  FAILED"));
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
    lb.expect_log("shut down");
}

#[test]
fn demo_backends_answer_over_http() {
    let mut lb = Lb::start(&["--demo", "--backend", "127.0.0.1:0", "--backend", "127.0.0.1:0"]);
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(lb.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        bodies.push(response.lines().last().unwrap().to_owned());
    }
    assert!(bodies[0].starts_with("Hello from demo backend 1"), "{bodies:?}");
    assert!(bodies[1].starts_with("Hello from demo backend 2"), "{bodies:?}");
    lb.signal("INT");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn keeps_serving_with_stdin_closed_until_sigterm() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["-q", "--backend", &a.to_string()]);
    drop(lb.stdin.take()); // end of input
    lb.expect_log("stdin closed");
    assert_eq!(via(lb.addr), "alpha");
    assert!(lb.child.try_wait().unwrap().is_none(), "still running");
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

/// Runs `lb` with `args` to completion (it must fail at start-up); returns status and stderr.
fn fails(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(LB).current_dir(dir.path()).args(args).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line of error: {stderr:?}");
    (out.status.code(), stderr.trim_end().to_owned())
}

#[test]
fn bad_flags_give_one_line_and_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["--port", "http"], "invalid value 'http' for '--port <PORT>'"),
        (&["--port", "70000"], "70000"),
        (
            &["--algorithm", "fastest"],
            "expected one of round_robin, least_connections, random, ip_hash, p2c",
        ),
        (&["--backend", "127.0.0.1"], "missing port in \"127.0.0.1\""),
        (&["--backend", "127.0.0.1:80,weight=5000"], "weight 5000 is out of range"),
        (&["--health-interval", "5"], "expected a number with a unit"),
        (&["--health-check", "udp"], "expected \"tcp\" or \"http:/path\""),
        (&["--rise", "0"], "0"),
        (&["--log-level", "verbose"], "invalid log level \"verbose\""),
        (&["--max-connections", "-3"], "-3"),
        (&["--backend", "127.0.0.1:0"], "port 0 is only allowed with --demo"),
    ];
    for (args, needle) in cases {
        let (code, stderr) = fails(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("lb: ") && stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn runtime_failures_give_one_line_and_status_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = fails(&["--host", "127.0.0.1", "--port", &port]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")) && stderr.contains("in use"),
        "{stderr}"
    );

    let (code, stderr) = fails(&["--port", "0", "--log-file", "/nonexistent-dir/lb.log"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot open log file /nonexistent-dir/lb.log"), "{stderr}");

    let (code, stderr) = fails(&["--port", "0", "--backend", "no-such-host.invalid:80"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("backend no-such-host.invalid:80: cannot resolve"), "{stderr}");
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let out = Command::new(LB).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--host",
        "--port",
        "--algorithm",
        "--backend",
        "--health-interval",
        "--health-timeout",
        "--rise",
        "--fall",
        "--health-check",
        "--connect-timeout",
        "--idle-timeout",
        "--max-connections",
        "--max-connections-per-backend",
        "--retries",
        "--shutdown-grace",
        "--log-file",
        "--log-level",
        "--quiet",
        "--demo",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for default in [
        "[default: localhost]",
        "[default: 8080]",
        "[default: round_robin]",
        "[default: load_balancer.log]",
        "[default: 2s]",
        "[default: 5m]",
    ] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}
