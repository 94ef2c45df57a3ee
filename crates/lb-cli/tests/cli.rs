//! The `lb` binary end to end, as a user runs it: real processes, real sockets on 127.0.0.1,
//! commands on stdin, the log file, signals and exit statuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

mod support;
use support::{backend, eventually, LB, WAIT};

/// A running `lb` with its stdin, stdout lines, log file and (if started with one) config file.
/// Killed on drop if still running.
struct Lb {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    addr: SocketAddr,
    log: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Lb {
    fn start(args: &[&str]) -> Lb {
        Lb::start_with(None, args)
    }

    /// Starts with `--config` on a file holding `config` (rewrite it with `write_config`).
    fn start_with_config(config: &str, args: &[&str]) -> Lb {
        Lb::start_with(Some(config), args)
    }

    fn start_with(config: Option<&str>, args: &[&str]) -> Lb {
        Lb::launch(config, &["--host", "127.0.0.1", "--port", "0"], args)
    }

    /// Starts with `--config` on a file whose `[[listen]]` tables say where to listen (so
    /// without --host and --port); `addr` is the first listener's.
    fn start_services(config: &str, args: &[&str]) -> Lb {
        Lb::launch(Some(config), &[], args)
    }

    /// Starts with the open files limit (soft and hard: lb raises the soft one) at `limit`.
    fn start_with_open_files(limit: u32, args: &[&str]) -> Lb {
        Lb::launch_limited(None, &["--host", "127.0.0.1", "--port", "0"], args, Some(limit))
    }

    fn launch(config: Option<&str>, listen: &[&str], args: &[&str]) -> Lb {
        Lb::launch_limited(config, listen, args, None)
    }

    fn launch_limited(
        config: Option<&str>,
        listen: &[&str],
        args: &[&str],
        open_files: Option<u32>,
    ) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lb.log");
        let config_path = dir.path().join("lb.toml");
        let mut command = match open_files {
            // The shell sets the limit and becomes lb (exec): the child is lb itself.
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(LB);
                shell
            }
            None => Command::new(LB),
        };
        command.args(listen).args(["--log-level", "debug"]).arg("--log-file").arg(&log);
        if let Some(text) = config {
            std::fs::write(&config_path, text).unwrap();
            command.arg("--config").arg(&config_path);
        }
        let mut child = command
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
        let mut lb = Lb {
            child,
            stdin,
            lines,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            config: config_path,
            _dir: dir,
        };
        // Quiet prints no banner, but still the port that --port 0 picked.
        let banner = lb.expect_line("listening on");
        let addr = banner.split("listening on ").nth(1).unwrap().split(' ').next().unwrap();
        let addr = addr.to_owned();
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

    /// The admin endpoint's address, from the start-up line that names it.
    fn admin(&mut self) -> String {
        let line = self.expect_line("admin endpoint on http://");
        line.split("http://").nth(1).unwrap().split(' ').next().unwrap().to_owned()
    }

    /// Starts a graceful shutdown (SIGTERM) and, once it is under way, cuts its grace period
    /// short with a second signal (SIGINT).
    fn cut_short(&self) {
        self.signal("TERM");
        self.expect_log("shutting down gracefully");
        self.signal("INT");
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

    /// Replaces the config file's contents (for the next `reload`).
    fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs `stats`; returns the algorithm and each backend row as (address, state, weight,
    /// active connections).
    fn stats(&mut self) -> (String, Vec<(String, String, u32, u64)>) {
        self.send("stats");
        let first = self.expect_line(", up ");
        let algorithm = first.split(' ').nth(1).unwrap().trim_end_matches(',').to_owned();
        self.expect_line("BACKEND");
        let mut rows = Vec::new();
        loop {
            let line = self.expect_line("");
            if line.starts_with("TOTAL") {
                return (algorithm, rows);
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 10 {
                rows.push((f[0].into(), f[1].into(), f[2].parse().unwrap(), f[3].parse().unwrap()));
            }
        }
    }

    /// Runs `stats` until no connection is open any more (a closed client connection is
    /// accounted for a moment later) and every backend has had its first health check;
    /// returns that stats.
    fn stats_when_idle(&mut self) -> (String, Vec<(String, String, u32, u64)>) {
        eventually("stats without open connections", || {
            let stats = self.stats();
            if stats.1.iter().all(|row| row.3 == 0 && row.1 != "init") {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        })
    }

    /// Runs `stats` until every backend has had its first health check (none shows `init`).
    fn stats_when_checked(&mut self) -> (String, Vec<(String, String, u32, u64)>) {
        eventually("stats with every backend checked", || {
            let stats = self.stats();
            if stats.1.iter().all(|row| row.1 != "init") {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log file contains `needle`.
    fn expect_log(&self, needle: &str) -> String {
        eventually(&format!("log line containing {needle:?}"), || {
            let text = self.log_text();
            let line = text.lines().find(|l| l.contains(needle)).map(str::to_owned);
            line.ok_or(format!("the log\n{text}"))
        })
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
        eventually("exit of lb", || self.child.try_wait().unwrap().ok_or("lb still running"))
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

/// Connects through the balancer and returns the greeting of the backend reached.
fn via(lb: SocketAddr) -> String {
    held(lb).1
}

#[test]
fn stats_add_remove_and_bad_commands_through_stdin() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb = Lb::start(&["--backend", &a.to_string()]);
    let row = lb.command("stats", &a.to_string());
    // `init` until the first check, which may not have run yet.
    assert!(row.contains(" up ") || row.contains(" init "), "{row}");
    lb.expect_line("TOTAL");
    assert_eq!(via(lb.addr), "alpha");

    // The seed's form: add <host> <port>.
    lb.command(&format!("add {} {}", b.ip(), b.port()), &format!("added {b}"));
    let seen: Vec<String> = (0..4).map(|_| via(lb.addr)).collect();
    assert!(seen.contains(&"alpha".into()) && seen.contains(&"beta".into()), "{seen:?}");

    lb.command(&format!("remove {} {}", a.ip(), a.port()), &format!("removed {a}"));
    assert!((0..4).all(|_| via(lb.addr) == "beta"));

    // Bad input: one line of error, and the balancer carries on.
    assert_eq!(lb.command("frobnicate", "error:"), "error: unknown command \"frobnicate\": expected one of add, remove, drain, enable, maint, weight, algorithm, stats, health, what-if, explain, help, reload, upgrade, quit");
    assert!(lb.command("add 127.0.0.1", "error:").contains("missing port"));
    assert!(lb
        .command("add 127.0.0.1:3 weight=5 weight=6", "error:")
        .contains("weight given twice (\"weight=5\" and \"weight=6\")"));
    assert!(lb
        .command("add 127.0.0.1:4 drain maint", "error:")
        .contains("admin state given twice (\"drain\" and \"maint\")"));
    assert!(lb.command("add ::1:8001", "error:").ends_with("e.g. `add [::1]:8001`"));
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
    // A backend that is not there: health checks take it down. Its port stays bound (not
    // listening, so connects are refused) for the test's life: freed, another test running
    // meanwhile could listen on it.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = held.local_addr().unwrap();
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
fn a_second_signal_cuts_open_connections_at_once_and_exits_cleanly() {
    let a = backend("alpha");
    let args = ["-q", "--shutdown-grace", "10m", "--admin", "127.0.0.1:0", "--backend"];
    let mut lb = Lb::start(&[&args[..], &[a.to_string().as_str()]].concat());
    let admin = lb.admin();
    let mut held = Held::open(lb.addr);
    held.echo("still here");
    lb.signal("TERM");
    lb.expect_log("shutting down gracefully");
    // The admin endpoint stays up through the grace period, to watch the drain.
    let stats = http_get(&admin, "/stats");
    assert!(stats.contains("\"open\": 1"), "{stats}");
    lb.signal("INT");
    assert_eq!(lb.wait_exit().code(), Some(0), "not the 10 minute grace period");
    lb.expect_log("second signal: closing open connections now");
    // The cut connection still gets its access line.
    let access = lb.expect_log("lb::access");
    assert!(access.contains(" shutdown "), "{access}");
}

#[test]
fn the_admin_endpoint_answers_while_clients_hold_every_descriptor() {
    let a = backend("alpha");
    // A connect that finds no descriptor waits for one for 5 s (the connect timeout, long here,
    // does not stretch that): the endpoint is asked well within it, while lb holds every one.
    let args = ["-q", "--admin", "127.0.0.1:0", "--connect-timeout", "10m", "--backend"];
    let mut lb = Lb::start_with_open_files(48, &[&args[..], &[a.to_string().as_str()]].concat());
    let admin = lb.admin();
    // More clients than 48 descriptors allow: lb relays what it can, the last one it accepts
    // waits for a descriptor to connect with, the rest wait in its listen backlog.
    let clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(lb.addr).unwrap()).collect();
    lb.expect_log("Too many open files");
    // The operator can still look: the endpoint's reserved descriptor. (It is taken back from
    // the admin connection that spent it, in one step; but a worker can win the descriptor
    // between the reserve's release and the accept it was released for, so later looks may
    // wait for one to free up, and only the first is asserted.)
    let stats = http_get(&admin, "/stats");
    assert!(stats.contains("\"open\""), "{stats}");
    drop(clients);
    lb.cut_short();
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn the_last_line_says_whether_the_grace_period_ran_out_or_was_cut() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["--shutdown-grace", "10m", "--backend", &a.to_string()]);
    let mut held = Held::open(lb.addr);
    held.echo("still here");
    lb.cut_short();
    let line = lb.expect_line("stopped (");
    assert!(line.contains("1 connections closed at once, before the end of the grace"), "{line}");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn an_admin_endpoint_beyond_loopback_without_a_token_is_warned_about() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["-q", "--admin", "0.0.0.0:0", "--backend", &a.to_string()]);
    let line = lb.expect_log("takes commands without a token");
    assert!(line.contains("set --admin-token"), "{line}");
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
    // With a token, or on loopback: no warning.
    for args in [
        ["--admin", "0.0.0.0:0", "--admin-token", "s3cret"],
        ["--admin", "127.0.0.1:0", "--retries", "2"],
    ] {
        let mut lb = Lb::start(&[&args[..], &["--backend", &a.to_string()]].concat());
        lb.expect_log("admin endpoint listening");
        lb.signal("TERM");
        assert_eq!(lb.wait_exit().code(), Some(0));
        assert!(!lb.log_text().contains("without a token"), "{args:?}");
    }
}

#[test]
fn settings_that_do_nothing_are_warned_about() {
    let a = backend("alpha");
    let args = ["--hash-balance-factor", "125", "--resolver", "127.0.0.1", "--backend"];
    let mut lb = Lb::start(&[&args[..], &[a.to_string().as_str()]].concat());
    lb.expect_log("hash-balance-factor applies only to ip_hash, and the algorithm is round_robin");
    lb.expect_log("resolver is the DNS server discover asks, and the pool has no discover");
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn ctl_says_why_a_full_admin_endpoint_closed_its_connection() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["-q", "--admin", "127.0.0.1:0", "--backend", &a.to_string()]);
    let admin = lb.admin();
    // Every one of the endpoint's 64 connections taken by a client that says nothing.
    let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(&admin).unwrap()).collect();
    let err = eventually("the endpoint closing ctl's connection unanswered", || {
        let (code, _, err) = ctl(&["--admin", &admin, "stats"], &[]);
        match code == Some(1) && err.contains("closed the connection without answering") {
            true => Ok(err),
            false => Err(err),
        }
    });
    assert!(err.contains("when all its 64 connections are in use (try again; its log then says 'too many admin connections open')"), "{err}");
    drop(idle);
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn a_closed_stdout_neither_stops_nor_fails_the_balancer() {
    // `lb ... | head -1`: stdout is a pipe nobody reads any more. Writes to it fail (EPIPE) and
    // must be dropped, not end the balancer or turn a clean stop into a failure.
    let a = backend("alpha");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("lb.log");
    let mut child = Command::new(LB)
        .args(["--host", "127.0.0.1", "--port", "0", "--backend", &a.to_string(), "--log-file"])
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let stdin = child.stdin.take();
    let mut lb = Lb {
        child,
        stdin,
        lines: mpsc::channel().1,
        addr: "0.0.0.0:0".parse().unwrap(),
        log,
        config: dir.path().join("unused.toml"),
        _dir: dir,
    };
    let line = lb.expect_log("listening address=");
    let addr = line.split("listening address=").nth(1).unwrap().split(' ').next().unwrap();
    lb.addr = addr.parse().unwrap();
    lb.send("stats");
    lb.send("help");
    assert_eq!(via(lb.addr), "alpha");
    lb.send("quit");
    assert_eq!(lb.wait_exit().code(), Some(0));
    let mut stderr = String::new();
    lb.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("internal error"), "{stderr}");
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
        (&["--bogus\n\nx"], "unexpected argument '--bogus\\n\\nx'"),
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
        (
            &["--port", "0", "--backend", "127.0.0.1:80", "--backend", "127.0.0.1:80"],
            "duplicate backend 127.0.0.1:80",
        ),
        (&["--admin-token", ""], "the admin token is empty"),
        (&["--admin-token", "a\nb"], "the admin token contains a control character ('\\n'"),
        (&["--admin-token", "two words"], "the admin token contains a space"),
        (
            &["--backend", "127.0.0.1:80,weight=2,weight=3"],
            "weight given twice (\"weight=2\" and \"weight=3\")",
        ),
        (
            &["--backend", "127.0.0.1:80,weight=2,drain,maint"],
            "admin state given twice (\"drain\" and \"maint\")",
        ),
        (&["--host", "[::1"], "invalid host \"[::1\""),
        (
            &["--health-check", "http:/a\r\nX: y"],
            "'http:/a\\r\\nX: y' for '--health-check <KIND>': invalid health check \"http:/a\\r\\nX: y\": the HTTP path must not contain spaces or control characters",
        ),
        (&["--port", "1\n\n2"], "invalid port \"1\\n\\n2\": expected a whole number"),
        (&["--io", "fast"], "invalid I/O engine \"fast\": expected auto, epoll or uring"),
        (&["--placement", "even"], "invalid placement \"even\": expected pack or spread"),
    ];
    for (args, needle) in cases {
        let (code, stderr) = fails(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("lb: ") && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains('\r'), "{args:?}: {stderr:?}");
    }
    // A rejected token is not echoed.
    let (_, stderr) = fails(&["--admin-token", "not secret enough"]);
    assert!(!stderr.contains("not secret enough"), "{stderr}");
}

#[test]
fn host_takes_a_bracketed_ipv6_address() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(LB)
        .current_dir(dir.path())
        .args(["--host", "[::1]", "--port", "0", "--backend", "127.0.0.1:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    assert!(banner.contains("listening on [::1]:"), "{banner}");
    child.stdin.take().unwrap().write_all(b"quit\n").unwrap();
    // Read to the end, so lb's last lines meet an open pipe.
    stdout.read_to_string(&mut String::new()).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
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

    // A running lb listens with SO_REUSEPORT; a second one must not quietly join its port.
    let a = backend("alpha");
    let running = Lb::start(&["-q", "--backend", &a.to_string()]);
    let port = running.addr.port().to_string();
    let (code, stderr) = fails(&["--host", "127.0.0.1", "--port", &port]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    drop(running);

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
        "--admin",
        "--admin-token",
        "--config",
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

/// A config file's `[[backend]]` table.
fn backend_table(addr: SocketAddr, weight: u32, state: &str) -> String {
    format!("[[backend]]\naddress = \"{addr}\"\nweight = {weight}\nstate = \"{state}\"\n\n")
}

/// A client connection held open through the balancer: greeting read, then echo.
struct Held {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    greeting: String,
}

impl Held {
    fn open(lb: SocketAddr) -> Held {
        let stream = TcpStream::connect(lb).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        Held { stream, reader, greeting: greeting.trim().to_owned() }
    }

    /// Sends a line and checks it comes back: the connection still works end to end.
    fn echo(&mut self, text: &str) {
        writeln!(self.stream, "{text}").unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), text, "the held connection no longer echoes");
    }
}

#[test]
fn config_file_then_reload_adds_removes_and_reweights_without_cutting_connections() {
    let (a, b, c) = (backend("alpha"), backend("beta"), backend("gamma"));
    // host and port in the file lose to the flags the test helper gives (127.0.0.1, port 0):
    // were the file to win, binding 192.0.2.1 (a documentation address) would fail.
    let head = "host = \"192.0.2.1\"\nport = 1\nalgorithm = \"round_robin\"\n\n";
    let config = format!("{head}{}{}", backend_table(a, 1, "ready"), backend_table(b, 1, "ready"));
    let mut lb = Lb::start_with_config(&config, &[]);
    let (algorithm, rows) = lb.stats();
    assert_eq!(algorithm, "round_robin");
    let addrs: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(addrs, [a.to_string(), b.to_string()]);

    // A client holds a connection open through the balancer across the reload.
    let mut held = Held::open(lb.addr);
    held.echo("before");
    let (gone, kept) = if held.greeting == "alpha" { (a, b) } else { (b, a) };

    // The held connection's backend leaves, the other is reweighted, a third is added in
    // drain, the algorithm changes, and a setting that needs a restart changes too.
    let config = format!(
        "{head}shutdown-grace = \"1m\"\nalgorithm = \"least_connections\"\n\n{}{}",
        backend_table(kept, 3, "ready"),
        backend_table(c, 2, "drain")
    )
    .replacen("algorithm = \"round_robin\"\n", "", 1);
    lb.write_config(&config);
    let answer = lb.command("reload", "reload");
    let expected = format!(
        "reloaded {}: added {c} (weight 2, drain), removed {gone}, weight {kept} 1->3, \
         algorithm round_robin->least_connections; needs a restart: shutdown-grace",
        lb.config.display()
    );
    assert_eq!(answer, expected);

    // The held connection still works; its backend is listed as removed while it lasts.
    held.echo("after");
    let (algorithm, rows) = lb.stats_when_checked();
    assert_eq!(algorithm, "least_connections");
    let row = |addr: SocketAddr| rows.iter().find(|r| r.0 == addr.to_string()).cloned();
    assert_eq!(row(gone), Some((gone.to_string(), "removed".into(), 1, 1)));
    assert_eq!(row(kept), Some((kept.to_string(), "up".into(), 3, 0)));
    assert_eq!(row(c), Some((c.to_string(), "drain".into(), 2, 0)));
    // New connections reach only the kept backend (the added one is draining).
    let kept_name = if kept == a { "alpha" } else { "beta" };
    assert!((0..4).all(|_| via(lb.addr) == kept_name));

    // The same file again: nothing to do, and the restart-only change is still reported.
    let answer = lb.command("reload", "reload");
    assert!(answer.ends_with(": no changes; needs a restart: shutdown-grace"), "{answer}");
    held.echo("still");

    // Health thresholds and the per-backend limit apply live.
    lb.write_config(&format!("rise = 4\nmax-connections-per-backend = 7\n{config}"));
    let answer = lb.command("reload", "reload");
    assert!(
        answer.ends_with(": rise/fall 2/3->4/3, max-connections-per-backend unlimited->7; needs a restart: shutdown-grace"),
        "{answer}"
    );
    // So do the pool's timeouts, retries and health checks.
    let more = "idle-timeout = \"1m\"\nretries = 1\nhealth-check = \"off\"\n";
    lb.write_config(&format!("rise = 4\nmax-connections-per-backend = 7\n{more}{config}"));
    let answer = lb.command("reload", "reload");
    assert!(
        answer.ends_with(": health-check tcp->off, idle-timeout 5m->1m, retries 2->1; needs a restart: shutdown-grace"),
        "{answer}"
    );
    held.echo("live");
    drop(held);
    lb.expect_log("command=reload");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn sighup_reloads_the_config_file() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb = Lb::start_with_config(&backend_table(a, 1, "ready"), &[]);
    lb.write_config(&format!("{}{}", backend_table(a, 1, "maint"), backend_table(b, 5, "ready")));
    lb.signal("HUP");
    let answer = lb.expect_line("SIGHUP:");
    assert_eq!(
        answer,
        format!(
            "SIGHUP: reloaded {}: added {b} (weight 5), state {a} ready->maint",
            lb.config.display()
        )
    );
    assert_eq!(via(lb.addr), "beta");
    lb.expect_log("SIGHUP: reopening the log file and reloading the configuration");
    lb.expect_log("command=reload");
    // Still running: SIGHUP's default action (ending the process) is replaced.
    assert!(lb.child.try_wait().unwrap().is_none());
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn a_broken_file_on_reload_changes_nothing() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let good = format!("algorithm = \"random\"\n\n{}", backend_table(a, 2, "ready"));
    let mut lb = Lb::start_with_config(&good, &[]);
    assert_eq!(via(lb.addr), "alpha");
    // After the first health check: `init` turning `up` is no change a reload made.
    let before = eventually("a health check result", || {
        let stats = lb.stats_when_idle();
        match stats.1.iter().all(|row| row.1 != "init") {
            true => Ok(stats),
            false => Err(format!("{stats:?}")),
        }
    });

    // Each file would also add b, reweight a and switch the algorithm, were it valid.
    let change = format!(
        "algorithm = \"p2c\"\n{}{}",
        backend_table(a, 7, "ready"),
        backend_table(b, 1, "ready")
    );
    let broken: [(String, String); 6] = [
        (format!("{change}[[backend]\n"), "line 12: unclosed array table".into()),
        (format!("retries = 1\nretires = 2\n{change}"), "line 2: unknown key `retires`".into()),
        (
            format!("health-interval = \"5\"\n{change}"),
            "line 1: health-interval: invalid duration \"5\": expected a number with a unit".into(),
        ),
        (
            format!("{change}[[backend]]\naddress = \"no-such-host.invalid:80\"\n"),
            "backend no-such-host.invalid:80: cannot resolve".into(),
        ),
        (
            format!("{change}{}", backend_table(b, 1, "drain")),
            format!("line 13: backend: {b} is listed twice (entries 2 and 3)"),
        ),
        (
            format!("admin-token = \"\"\n{change}"),
            "line 1: admin-token: the admin token is empty".into(),
        ),
    ];
    let unchanged = "error: reload failed, configuration unchanged: ";
    for (text, needle) in &broken {
        lb.write_config(text);
        let answer = lb.command("reload", "reload");
        assert!(answer.starts_with(unchanged) && answer.contains(needle), "{needle:?}: {answer}");
        assert_eq!(lb.stats(), before, "after {answer}");
    }
    // An empty (say, truncated) file would fall back to the built-in default backends, and an
    // empty list would remove them all.
    lb.write_config("");
    let answer = lb.command("reload", "reload");
    assert!(answer.starts_with(unchanged) && answer.contains("lists no backends"), "{answer}");
    assert!(answer.contains("only at start-up, never"), "one space: {answer}");
    assert_eq!(lb.stats(), before);
    lb.write_config("backend = []\n");
    let answer = lb.command("reload", "reload");
    assert!(answer.starts_with(unchanged) && answer.contains("the list is empty"), "{answer}");
    assert_eq!(lb.stats(), before);
    std::fs::remove_file(&lb.config).unwrap();
    let answer = lb.command("reload", "reload");
    let needle = format!("cannot read config file {}: ", lb.config.display());
    assert!(answer.starts_with(unchanged) && answer.contains(&needle), "{answer}");
    assert_eq!(lb.stats(), before);
    assert_eq!(via(lb.addr), "alpha");
    lb.expect_log("reload failed, configuration unchanged");

    // Fixed, it applies.
    lb.write_config(&change);
    let answer = lb.command("reload", "reload");
    assert!(answer.starts_with("reloaded ") && answer.contains(&format!("added {b}")), "{answer}");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn backend_flags_beat_the_file_on_reload_too() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb =
        Lb::start_with_config(&backend_table(b, 1, "ready"), &["--backend", &a.to_string()]);
    assert_eq!(via(lb.addr), "alpha");
    lb.write_config(&format!("algorithm = \"p2c\"\n{}", backend_table(b, 4, "ready")));
    let answer = lb.command("reload", "reload");
    assert!(
        answer.ends_with(
            ": algorithm round_robin->p2c; backends from the --backend flags, not the file"
        ),
        "{answer}"
    );
    assert_eq!(lb.stats().1.len(), 1);
}

#[test]
fn without_a_config_file_reload_and_sighup_say_so() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["--backend", &a.to_string()]);
    let answer = lb.command("reload", "reload");
    assert_eq!(
        answer,
        "error: reload failed, configuration unchanged: no configuration file to reload (start lb with --config FILE)"
    );
    // SIGHUP (log rotation) without a config file is not an error: the log is reopened.
    lb.signal("HUP");
    let answer = lb.expect_line("SIGHUP:");
    assert_eq!(answer, "SIGHUP: log file reopened; no --config file to reload");
    assert_eq!(via(lb.addr), "alpha");
    let line = lb.expect_log("SIGHUP: reopening the log file (no --config file to reload)");
    assert!(line.contains(" INFO "), "{line}");
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn a_bad_config_file_at_startup_gives_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let missing = dir.path().join("missing.toml").to_str().unwrap().to_owned();
    let cases = [
        (missing.clone(), format!("cannot read config file {missing}: ")),
        (file("syntax.toml", "port = 8080\nhost = \n"), "syntax.toml line 2: ".into()),
        (file("key.toml", "\nprot = 8080\n"), "key.toml line 2: unknown key `prot`".into()),
        (file("none.toml", "backend = []\n"), "backend: the list is empty".into()),
        (
            file("value.toml", "idle-timeout = \"soon\"\n"),
            "value.toml line 1: idle-timeout: invalid duration \"soon\"".into(),
        ),
        (
            file("backend.toml", "[[backend]]\naddress = \"127.0.0.1:80\"\nweight = 0\n"),
            "backend.toml line 3: backend.weight: weight 0 is out of range".into(),
        ),
        (
            file("big.toml", "port = 99999999999999999999999\n"),
            "big.toml line 1: port: invalid port \"99999999999999999999999\": expected a whole number from 0 to 65535".into(),
        ),
        (
            file("list.toml", "backend = [\"127.0.0.1:1\"]\n"),
            "list.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\"".into(),
        ),
        (
            file("token.toml", "\nadmin-token = \"\"\n"),
            "token.toml line 2: admin-token: the admin token is empty".into(),
        ),
        (
            file("token2.toml", "admin-token = \"a\\nb\"\n"),
            "token2.toml line 1: admin-token: the admin token contains a control character".into(),
        ),
    ];
    for (path, needle) in cases {
        let (code, stderr) = fails(&["--port", "0", "--config", &path]);
        assert_eq!(code, Some(2), "{path}: {stderr}");
        assert!(stderr.starts_with("lb: ") && stderr.contains(&needle), "{needle:?}: {stderr}");
    }
}

#[test]
fn demo_backends_on_free_ports_survive_a_reload() {
    // Port 0 means "a free port" for a demo backend; on reload each such entry stands for the
    // demo backend started for it, not for a new port-0 backend.
    let two = "demo = true\n[[backend]]\naddress = \"127.0.0.1:0\"\n[[backend]]\naddress = \"127.0.0.1:0\"\n";
    let mut lb = Lb::start_with_config(two, &[]);
    let (_, rows) = lb.stats();
    assert_eq!(rows.len(), 2);
    let answer = lb.command("reload", "reload");
    assert!(answer.ends_with(": no changes"), "{answer}");
    // One fewer: the second demo backend leaves the pool.
    lb.write_config("demo = true\n[[backend]]\naddress = \"127.0.0.1:0\"\n");
    let answer = lb.command("reload", "reload");
    assert!(answer.ends_with(&format!(": removed {}", rows[1].0)), "{answer}");
    // One more than were started: there is no demo backend for it.
    lb.write_config(&format!("{two}[[backend]]\naddress = \"127.0.0.1:0\"\n"));
    let answer = lb.command("reload", "reload");
    assert!(answer.contains("port 0 is only allowed with --demo"), "{answer}");
}

/// Runs `lb ctl` with `args`; returns exit status, stdout and stderr.
fn ctl(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(LB)
        .arg("ctl")
        .args(args)
        .env_remove("LB_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stdout, stderr)
}

#[test]
fn ctl_drives_a_running_balancer_through_the_admin_endpoint() {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb = Lb::start(&[
        "--backend",
        &a.to_string(),
        "--backend",
        &b.to_string(),
        "--admin",
        "127.0.0.1:0",
        "--admin-token",
        "s3cret",
    ]);
    let admin = lb.admin();

    let (code, out, _) = ctl(&["--admin", &admin, "--token", "s3cret", "stats"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&a.to_string()) && out.contains("TOTAL"), "{out}");

    // The token may come from the environment.
    let (code, out, _) =
        ctl(&["--admin", &admin, "drain", &a.to_string()], &[("LB_ADMIN_TOKEN", "s3cret")]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("draining {a}: no new connections, open ones continue").as_str())
    );
    assert!((0..4).all(|_| via(lb.addr) == "beta"));

    // Errors: one line on stderr, status 1, nothing changed.
    let (code, out, err) =
        ctl(&["--admin", &admin, "--token", "s3cret", "weight", &a.to_string(), "0"], &[]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert_eq!(
        err.trim(),
        "lb: weight 0 is out of range: a weight is a whole number from 1 to 1000"
    );
    let (code, _, err) = ctl(&["--admin", &admin, "enable", &a.to_string()], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Bearer") && err.contains("LB_ADMIN_TOKEN"), "{err}");
    let (code, _, err) =
        ctl(&["--admin", &admin, "--token", "wrong", "enable", &a.to_string()], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused the token"), "{err}");
    let (code, _, err) = ctl(&["--admin", &admin, "--token", "a b", "stats"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--token: the admin token contains a space"), "{err}");
    // The proxy's port is not the admin endpoint.
    let (code, _, err) = ctl(&["--admin", &lb.addr.to_string(), "stats"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("did not answer as lb's admin endpoint"), "{err}");
    // Output into a closed pipe is dropped, not an internal error.
    let mut piped = Command::new(LB)
        .args(["ctl", "--admin", &admin, "--token", "s3cret", "help"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let status = piped.wait().unwrap();
    let mut stderr = String::new();
    piped.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
    lb.command("stats", &format!("{a}  drain"));

    // Metrics and JSON need no token.
    let metrics = http_get(&admin, "/metrics");
    assert!(
        metrics.contains(&format!(
            "lb_backend_admin_state{{pool=\"default\",backend=\"{a}\",state=\"drain\"}} 1"
        )),
        "{metrics}"
    );
    let stats = http_get(&admin, "/stats");
    assert!(stats.contains("\"algorithm\": \"round_robin\""), "{stats}");

    let (code, out, _) = ctl(&["--admin", &admin, "--token", "s3cret", "quit"], &[]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "shutting down: no new connections; open ones may finish")
    );
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn ctl_without_a_balancer_says_where_it_looked() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, _, err) = ctl(&["--admin", &free.port().to_string(), "stats"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with(&format!("lb: cannot reach the admin endpoint at {free}")), "{err}");
    let (code, _, err) = ctl(&[], &[]);
    assert_eq!(code, Some(2), "a command is required: {err}");
    let (code, _, err) = ctl(&["--admin", "0", "stats"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("admin port 0 means a free port"), "{err}");
    for bad in ["99999", "[::1]:99999", "localhost:abc"] {
        let (code, _, err) = ctl(&["--admin", bad, "stats"], &[]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("expected a number from 0 to 65535 (0 picks a free port"), "{err}");
    }
    // Help asked for after the command is help, not a pool named --help sent to lb.
    for help in ["--help", "-h"] {
        let (code, out, err) = ctl(&["--admin", &free.port().to_string(), "stats", help], &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("Usage: lb ctl [OPTIONS] <COMMAND>..."), "{out}");
    }
    // A config file without an admin address: no guess at the default.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.toml");
    std::fs::write(&file, "port = 8080\n").unwrap();
    let (code, _, err) = ctl(&["--config", file.to_str().unwrap(), "stats"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sets no admin address (no `admin` key): pass --admin"), "{err}");
}

#[test]
fn ctl_against_another_http_server_fails() {
    // Any HTTP server answering 200 to everything, as a web server on a mistyped port would.
    let head =
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 16\r\nConnection: close\r\n\r\n";
    let (addr, server) = fake_admin(head, b"welcome to nginx", false);
    let (code, out, err) = ctl(&["--admin", &addr.to_string(), "stats"], &[]);
    server.join().unwrap();
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("is not lb's admin endpoint (Server: nginx)"), "{err}");
}

#[test]
fn ctl_says_a_full_admin_endpoint_may_be_why_a_connection_closed_unanswered() {
    // What lb's endpoint does with a connection beyond its most: closes it, unanswered.
    let (addr, server) = fake_admin("", b"", false);
    let (code, out, err) = ctl(&["--admin", &addr.to_string(), "stats"], &[]);
    server.join().unwrap();
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("closed the connection without answering"), "{err}");
    assert!(err.contains("when all its 64 connections are in use"), "{err}");
}

#[test]
fn ctl_says_a_server_that_speaks_first_is_not_the_admin_endpoint() {
    // A service that greets each connection at once (the proxy's port in front of such a
    // backend): its bytes may come before lb ctl has sent its request, which hyper reports as
    // the request cancelled; that is a wrong address, not a full endpoint.
    for _ in 0..5 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let _ = s.write_all(b"beta\n");
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        let (code, out, err) = ctl(&["--admin", &addr.to_string(), "stats"], &[]);
        server.join().unwrap();
        assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
        assert!(err.contains("did not answer as lb's admin endpoint"), "{err}");
    }
}

/// A server on the admin port that answers one request with `head` and then `body`, which it
/// goes on writing while `endless` (until the client goes).
fn fake_admin(
    head: &'static str,
    body: &'static [u8],
    endless: bool,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = [0u8; 4096];
        let _ = s.read(&mut request);
        let _ = s.write_all(head.as_bytes());
        while s.write_all(body).is_ok() && endless {}
    });
    (addr, server)
}

#[test]
fn ctl_prints_no_control_characters_from_the_endpoint() {
    // A hostile server on the admin port: a window title, a screen clear, a colour.
    let body = b"title \x1b]0;PWNED\x07 clear \x1b[2J red \x1b[31m\rline two\n\tend";
    let head = "HTTP/1.1 200 OK\r\nServer: lb/0\r\nContent-Length: 51\r\nConnection: close\r\n\r\n";
    assert_eq!(body.len(), 51);
    let (addr, server) = fake_admin(head, body, false);
    let (code, out, err) = ctl(&["--admin", &addr.to_string(), "stats"], &[]);
    server.join().unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains('\x1b') && !out.contains('\x07') && !out.contains('\r'), "{out:?}");
    assert!(out.contains(r"\u{1b}]0;PWNED\u{7}") && out.contains(r"\u{1b}[2J"), "{out:?}");
    assert!(out.contains("\\rline two\n\tend"), "line ends and tabs are kept: {out:?}");
}

#[test]
fn ctl_stops_reading_an_endless_answer() {
    // Chunks without end: lb ctl must give up, not fill its memory.
    let head = "HTTP/1.1 200 OK\r\nServer: lb/0\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("8000\r\n{}\r\n", "x".repeat(0x8000));
    let chunk: &'static [u8] = chunk.into_bytes().leak();
    let (addr, server) = fake_admin(head, chunk, true);
    let (code, out, err) = ctl(&["--admin", &addr.to_string(), "stats"], &[]);
    server.join().unwrap();
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("the answer is larger than 64 MiB"), "{err}");
}

/// A plain HTTP GET; returns the body.
fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = http_get_as(addr, addr, path);
    assert_eq!(status, 200, "{body}");
    body
}

/// A client holding a connection through the balancer: its stream and the backend it reached.
fn held(lb: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(lb).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line).unwrap();
    (stream, line.trim().to_owned())
}

/// Whether a held connection still relays (an echo comes back) rather than being closed.
fn still_relays(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"x").is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(1))
}

/// lb over the backends alpha and beta with an admin endpoint: alpha's address, lb, the
/// endpoint's address.
fn alpha_and_beta_with_admin() -> (SocketAddr, Lb, String) {
    let (a, b) = (backend("alpha"), backend("beta"));
    let mut lb = Lb::start(&[
        "--backend",
        &a.to_string(),
        "--backend",
        &b.to_string(),
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin();
    (a, lb, admin)
}

#[test]
fn drain_with_a_deadline_under_load_closes_only_what_is_still_open_then_removes() {
    let (a, lb, admin) = alpha_and_beta_with_admin();
    let mut clients: Vec<(TcpStream, String)> = (0..6).map(|_| held(lb.addr)).collect();
    assert_eq!(clients.iter().filter(|(_, n)| n == "alpha").count(), 3);

    // Load: a new connection after another, all through the drain; none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, addr) = (std::sync::Arc::clone(&stop), lb.addr);
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = via(addr);
                assert!(name == "alpha" || name == "beta", "a failed connection: {name:?}");
                served += 1;
            }
            served
        })
    };

    let waiting = {
        let (admin, alpha) = (admin.clone(), a.to_string());
        std::thread::spawn(move || {
            ctl(&["--admin", &admin, "drain", &alpha, "deadline=2s", "remove", "--wait"], &[])
        })
    };
    eventually("the drain running", || {
        let stats = http_get(&admin, "/stats");
        if stats.contains("\"remaining_seconds\": 1") || stats.contains("\"remaining_seconds\": 2")
        {
            Ok(())
        } else {
            Err(stats)
        }
    });
    // One of alpha's clients leaves before the deadline.
    let at = clients.iter().position(|(_, n)| n == "alpha").unwrap();
    drop(clients.remove(at));

    let (code, out, err) = waiting.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.join().unwrap();
    assert!(served > 0);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "draining {a}: no new connections, open ones continue for up to 2s, then are closed; removed once empty"
        )
    );
    assert!(
        lines.iter().any(|l| l.contains(" connections open, ") && l.contains("s to the deadline")),
        "{out}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("{a}: deadline passed after 2."))
            && last.ends_with(": closed 2 connections still open; removed"),
        "{out}"
    );

    // Alpha's two that were still open were closed; beta's three still relay.
    for (mut stream, name) in clients {
        assert_eq!(still_relays(&mut stream), name == "beta", "{name}");
    }
    let log = eventually("two drained lines", || {
        let log = std::fs::read_to_string(&lb.log).unwrap();
        let drained = log.lines().filter(|l| l.contains(" drained ")).count();
        if drained == 2 {
            Ok(log)
        } else {
            Err(format!("{drained} drained lines"))
        }
    });
    assert!(log.lines().filter(|l| l.contains(" drained ")).all(|l| l.contains(&format!(" {a} "))));
    assert!(log.contains(&format!("drain of {a}: deadline passed: closed 2 connections; removed")));
    // Removed, and with its connections gone, no longer listed.
    eventually("alpha gone from stats", || {
        let (_, out, _) = ctl(&["--admin", &admin, "stats"], &[]);
        if out.contains(&a.to_string()) {
            Err(out)
        } else {
            Ok(())
        }
    });
    let metrics = http_get(&admin, "/metrics");
    assert!(metrics.contains("lb_connections_drained_total 2"), "{metrics}");
}

#[test]
fn ctl_wait_reports_a_cancelled_drain_and_refuses_other_commands() {
    let (a, mut lb, admin) = alpha_and_beta_with_admin();
    let (_held_a, _) = held(lb.addr);
    let (_held_b, _) = held(lb.addr);
    let waiting = {
        let (admin, alpha) = (admin.clone(), a.to_string());
        std::thread::spawn(move || {
            ctl(&["--admin", &admin, "--wait", "drain", &alpha, "deadline=10m"], &[])
        })
    };
    eventually("the drain running", || {
        let stats = http_get(&admin, "/stats");
        if stats.contains("\"remaining_seconds\"") {
            Ok(())
        } else {
            Err(stats)
        }
    });
    lb.command(&format!("enable {a}"), &format!("{a} ready"));
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err.trim(), format!("lb: the drain of {a} was cancelled by enable"));

    // A follower follows its own drain: a new drain of the backend cancels it.
    let waiting = {
        let (admin, alpha) = (admin.clone(), a.to_string());
        std::thread::spawn(move || {
            ctl(&["--admin", &admin, "drain", &alpha, "deadline=10m", "remove", "--wait"], &[])
        })
    };
    eventually("the second drain running", || {
        let stats = http_get(&admin, "/stats");
        if stats.matches("\"remaining_seconds\": 5").count() == 1 {
            Ok(())
        } else {
            Err(stats)
        }
    });
    let (code, _, err) = ctl(&["--admin", &admin, "drain", &a.to_string(), "deadline=1s"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = waiting.join().unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err.trim(), format!("lb: the drain of {a} was cancelled by a new drain"));

    let (code, _, err) = ctl(&["--admin", &admin, "stats", "--wait"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--wait goes with drain"), "{err}");
}

/// An HTTP GET naming `host` in its Host header; returns the status and the body.
fn http_get_as(addr: &str, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[test]
fn the_admin_endpoint_answers_only_to_addresses_and_allowed_names() {
    let a = backend("alpha");
    let mut lb = Lb::start(&[
        "--backend",
        &a.to_string(),
        "--admin",
        "127.0.0.1:0",
        "--admin-allowed-hosts",
        "lb1.internal, *.corp.example",
    ]);
    let admin = lb.admin();
    let port = admin.rsplit(':').next().unwrap();
    for (host, status) in [
        (admin.clone(), 200),
        (format!("localhost:{port}"), 200),
        (format!("lb1.internal:{port}"), 200),
        (format!("ops.corp.example:{port}"), 200),
        (format!("rebind.evil.example:{port}"), 403),
    ] {
        let (got, body) = http_get_as(&admin, &host, "/stats");
        assert_eq!(got, status, "{host}: {body}");
    }
    // lb ctl given a name rather than an address still gets through: it names the address it
    // connected to.
    let (code, out, err) = ctl(&["--admin", &format!("localhost:{port}"), "health"], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    lb.expect_log("admin request refused");
    let (code, err) = fails(&["--admin-allowed-hosts", "127.0.0.1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("IP addresses are always allowed"), "{err}");
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

#[test]
fn sighup_reopens_a_rotated_log_file() {
    let a = backend("alpha");
    let mut lb = Lb::start(&["--backend", &a.to_string()]);
    lb.expect_log("listening");
    let rotated = lb.log.with_extension("log.1");
    std::fs::rename(&lb.log, &rotated).unwrap();
    lb.signal("HUP");
    // The old file ends with the SIGHUP line; a new one at the --log-file path gets what follows.
    eventually("new log file after SIGHUP", || {
        lb.log.exists().then_some(()).ok_or("nothing at the --log-file path")
    });
    assert_eq!(via(lb.addr), "alpha");
    lb.expect_log("lb::access");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("starting") && old.contains("SIGHUP: reopening"), "{old}");
    assert!(!old.contains("lb::access"), "{old}");
    // The new file says why it starts, in the usual line format.
    let new = std::fs::read_to_string(&lb.log).unwrap();
    let first = new.lines().next().unwrap();
    assert!(
        first.starts_with("20") && first.ends_with(" INFO lb::log: log file reopened (SIGHUP)"),
        "{first}"
    );
    lb.signal("TERM");
    assert_eq!(lb.wait_exit().code(), Some(0));
}

/// The address in a line `... listening on ADDR ...` (the banner, or a quiet lb's line).
fn listening_on(line: &str) -> SocketAddr {
    let addr = line.split("listening on ").nth(1).unwrap().split(' ').next().unwrap();
    addr.trim_end_matches(':').parse().unwrap()
}

/// Connects through a listener and returns the greeting of the backend reached, or why not.
fn try_via(lb: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(lb)?;
    stream.set_read_timeout(Some(WAIT))?;
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line)?;
    match line.trim() {
        "" => Err(std::io::ErrorKind::UnexpectedEof.into()),
        name => Ok(name.to_owned()),
    }
}

/// A `[[pool]]` table with these backends.
fn pool_table(name: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{b}\" }}")).collect();
    format!("[[pool]]\nname = \"{name}\"\nbackend = [{}]\n\n", list.join(", "))
}

/// A `[[listen]]` table on a free port of 127.0.0.1, routing to `pool`.
fn listen_table(name: &str, pool: &str) -> String {
    format!("[[listen]]\nname = \"{name}\"\naddress = \"127.0.0.1:0\"\npool = \"{pool}\"\n\n")
}

#[test]
fn two_pools_and_two_listeners_serve_their_own_backends() {
    let (w1, w2, d1) = (backend("web-1"), backend("web-2"), backend("db-1"));
    let config = format!(
        "admin = \"127.0.0.1:0\"\n\n{}{}algorithm = \"least_connections\"\n\n{}{}",
        pool_table("web", &[w1, w2]),
        pool_table("db", &[d1]),
        listen_table("web-in", "web"),
        listen_table("db-in", "db"),
    );
    let mut lb = Lb::start_services(&config, &[]);
    let web_in = lb.addr;
    let db_in = listening_on(&lb.expect_line("(listener db-in): pool db"));
    let admin = lb.admin();

    let mut seen: Vec<String> = (0..4).map(|_| via(web_in)).collect();
    seen.sort();
    assert_eq!(seen, ["web-1", "web-1", "web-2", "web-2"]);
    assert_eq!(via(db_in), "db-1");

    // A table per pool, at the prompt and through lb ctl.
    lb.send("stats");
    lb.expect_line(" 2 pools");
    lb.expect_line("pool web: algorithm round_robin, 2 of 2 backends available");
    lb.expect_line(&w2.to_string());
    lb.expect_line("pool db: algorithm least_connections, 1 of 1 backends available");
    lb.expect_line(&d1.to_string());
    let (code, out, err) = ctl(&["--admin", &admin, "stats", "web"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&w1.to_string()) && out.contains(&w2.to_string()), "{out}");
    assert!(!out.contains(&d1.to_string()), "{out}");

    // A backend named by its pool.
    let (code, out, _) = ctl(&["--admin", &admin, "drain", &format!("web/{w1}")], &[]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("draining web/{w1}: no new connections, open ones continue").as_str())
    );
    assert!((0..4).all(|_| via(web_in) == "web-2"));
    lb.command(&format!("enable web/{w1}"), &format!("web/{w1} ready"));

    // Metrics and JSON name pools and listeners.
    let metrics = http_get(&admin, "/metrics");
    for series in [
        format!("lb_backend_admin_state{{pool=\"web\",backend=\"{w1}\",state=\"ready\"}} 1"),
        format!("lb_backend_connections_total{{pool=\"db\",backend=\"{d1}\"}} 1"),
        "lb_listener_connections_accepted_total{listener=\"db-in\"} 1".to_owned(),
    ] {
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let stats = http_get(&admin, "/stats");
    assert!(stats.contains("\"pools\"") && stats.contains("\"name\": \"db-in\""), "{stats}");

    let start = lb.expect_log("starting");
    assert!(start.contains("pools=") && start.contains("listeners="), "{start}");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn bad_service_files_give_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let path = path.to_str().unwrap();
    let pools = format!(
        "{}{}",
        pool_table("web", &["10.0.0.5:443".parse().unwrap()]),
        pool_table("db", &["10.0.0.9:5432".parse().unwrap()])
    );
    let listen = |body: &str| format!("{pools}[[listen]]\naddress = \"127.0.0.1:0\"\n{body}");
    let cases: Vec<(String, &[&str], String)> = vec![
        (
            listen("pool = \"wbe\"\n"),
            &[],
            "lb.toml line 11: listen.pool: no pool named \"wbe\" (pools: web, db)".into(),
        ),
        (
            listen("pool = \"web\"\nroutes = [{ sni = [\"a.example\"], pool = \"db\" }]\n"),
            &[],
            "lb.toml line 12: listen.routes: give pool = \"NAME\" or routes, not both".into(),
        ),
        (listen("\n"), &[], "lb.toml line 9: listen: neither pool nor routes".into()),
        (
            listen("pool = \"web\"\ndefault-pool = \"db\"\n"),
            &[],
            "lb.toml line 12: listen.default-pool: default-pool goes with routes".into(),
        ),
        (listen("routes = []\n"), &[], "lb.toml line 11: listen.routes: the list is empty".into()),
        (
            listen("routes = [{ sni = [\"*.*.example\"], pool = \"db\" }]\n"),
            &[],
            "lb.toml line 11: listen.routes.sni: invalid server name \"*.*.example\"".into(),
        ),
        (
            listen("pool = \"web\"\nnmae = \"x\"\n"),
            &[],
            "lb.toml line 12: listen: unknown key `nmae`, expected one of `address`, `name`".into(),
        ),
        (
            format!("{pools}log-file = \"x.log\"\n"),
            &["--port", "0"],
            "lb.toml line 9: pool: `log-file` is a top-level key, not a pool's".into(),
        ),
        (
            format!("{}{pools}", pool_table("web", &["10.0.0.7:443".parse().unwrap()])),
            &["--port", "0"],
            "lb.toml line 6: pool.name: two pools named \"web\" (the first on line 2)".into(),
        ),
        (
            format!("{pools}{}", pool_table("Bad/name", &["10.0.0.7:443".parse().unwrap()])),
            &["--port", "0"],
            "lb.toml line 10: pool.name: invalid pool name \"Bad/name\"".into(),
        ),
        (
            listen("pool = \"web\"\n[[listen]]\naddress = \"127.0.0.1:0\"\nname = \"127.0.0.1:0\"\npool = \"db\"\n"),
            &[],
            "lb.toml line 14: listen.name: two listeners named \"127.0.0.1:0\" (the first on line 10)".into(),
        ),
        (
            listen("pool = \"web\"\n[[listen]]\naddress = \"127.0.0.1:1\"\npool = \"db\"\n[[listen]]\naddress = \"127.0.0.1:1\"\npool = \"web\"\n"),
            &[],
            "lb.toml line 16: listen.address: 127.0.0.1:1 is also where listener 127.0.0.1:1 listens (line 13)".into(),
        ),
        (
            listen("pool = \"web\"\n[[listen]]\naddress = \"0.0.0.0:1\"\npool = \"db\"\n[[listen]]\naddress = \"127.0.0.1:1\"\npool = \"web\"\n"),
            &[],
            "lb.toml line 16: listen.address: 127.0.0.1:1 overlaps listener 0.0.0.0:1 on 0.0.0.0:1: two listeners cannot share an address".into(),
        ),
        (
            pools.clone(),
            &["--port", "0"],
            "lb.toml line 1: pool: 2 pools (web, db) and no [[listen]] tables".into(),
        ),
        (
            listen("pool = \"web\"\n"),
            &["--port", "0"],
            "lb.toml line 9: listen: --host and --port do not go with [[listen]] tables".into(),
        ),
        (
            listen("pool = \"web\"\n"),
            &["--backend", "10.0.0.1:80"],
            "lb.toml line 1: pool: --backend does not go with [[pool]] tables".into(),
        ),
        (
            format!("backend = [{{ address = \"10.0.0.1:80\" }}]\n{}", listen("pool = \"web\"\n")),
            &[],
            "lb.toml line 1: backend: a top-level backend list does not go with [[pool]] tables"
                .into(),
        ),
    ];
    for (text, flags, needle) in cases {
        std::fs::write(path, &text).unwrap();
        let (code, stderr) = fails(&[&["--config", path][..], flags].concat());
        assert_eq!(code, Some(2), "{text}\n{stderr}");
        assert!(stderr.starts_with("lb: ") && stderr.contains(&needle), "{needle:?}\n{stderr}");
    }

    // A listener whose address is taken: status 1, naming it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _holder = TcpListener::bind(taken).unwrap();
    let text = listen(&format!(
        "pool = \"web\"\n[[listen]]\nname = \"db-in\"\naddress = \"{taken}\"\npool = \"db\"\n"
    ));
    std::fs::write(path, text).unwrap();
    let (code, stderr) = fails(&["--config", path]);
    assert_eq!(code, Some(1), "{stderr}");
    let needle = format!("lb: listener db-in: cannot listen on {taken}: ");
    assert!(stderr.starts_with(&needle) && stderr.contains("in use"), "{stderr}");
}

#[test]
fn reload_adds_and_removes_pools_and_listeners_without_client_errors() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;

    let (w1, d1, c1) = (backend("web-1"), backend("db-1"), backend("cache-1"));
    let web = format!("{}{}", pool_table("web", &[w1]), listen_table("web-in", "web"));
    let config = format!("{web}{}{}", pool_table("db", &[d1]), listen_table("db-in", "db"));
    let mut lb = Lb::start_services(&config, &["--workers", "2"]);
    let web_in = lb.addr;
    let db_in = listening_on(&lb.expect_line("(listener db-in)"));
    // A long-lived connection through the listener that will go.
    let mut held = Held::open(db_in);
    assert_eq!(held.greeting, "db-1");

    // Connection-per-request load on the listener that stays, counting every failure.
    let (stop, served, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                match try_via(web_in) {
                    Ok(name) if name == "web-1" => served.fetch_add(1, Relaxed),
                    _ => failed.fetch_add(1, Relaxed),
                };
            }
        })
    };
    let served_past = |n: u64| {
        eventually("requests served", || {
            let now = served.load(Relaxed);
            if now >= n {
                Ok(now)
            } else {
                Err(now)
            }
        })
    };
    let before = served_past(20);

    // db goes with its listener; cache comes with one.
    let next = format!("{web}{}{}", pool_table("cache", &[c1]), listen_table("cache-in", "cache"));
    lb.write_config(&next);
    let answer = lb.command("reload", "reload");
    let prefix = format!(
        "reloaded {}: pool cache added (1 backend); listener cache-in added on 127.0.0.1:",
        lb.config.display()
    );
    assert!(answer.starts_with(&prefix), "{answer}");
    assert!(answer.ends_with("; listener db-in removed; pool db removed"), "{answer}");
    let cache_in = answer[prefix.len() - "127.0.0.1:".len()..].split(';').next().unwrap();
    let cache_in: SocketAddr = cache_in.parse().unwrap();

    served_past(before + 20);
    stop.store(true, Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Relaxed), 0, "client errors on the kept listener");

    // The new listener serves its pool; the removed one takes no new connections while the
    // connection it accepted runs to its end.
    assert_eq!(via(cache_in), "cache-1");
    eventually("the removed listener closed", || {
        TcpStream::connect(db_in).map(drop).err().ok_or("db-in still accepts")
    });
    held.echo("still here");
    drop(held);
    assert!(lb.command("stats db", "error:").contains("no pool named \"db\" (pools: web, cache)"));
    // The same file again changes nothing.
    let answer = lb.command("reload", "reload");
    assert!(answer.ends_with(": no changes"), "{answer}");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn a_reload_whose_new_address_is_taken_changes_nothing() {
    let (w1, c1) = (backend("web-1"), backend("cache-1"));
    let web = format!("{}{}", pool_table("web", &[w1]), listen_table("web-in", "web"));
    let mut lb = Lb::start_services(&web, &[]);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // A new pool, a listener for it on a taken address, and a new algorithm for web.
    let next = format!(
        "{}{}[[listen]]\nname = \"cache-in\"\naddress = \"{addr}\"\npool = \"cache\"\n",
        web.replace("name = \"web\"\n", "name = \"web\"\nalgorithm = \"p2c\"\n"),
        pool_table("cache", &[c1]),
    );
    lb.write_config(&next);
    let answer = lb.command("reload", "reload");
    assert!(
        answer.starts_with(&format!(
            "error: reload failed, configuration unchanged: listener cache-in: cannot listen on {addr}: "
        )),
        "{answer}"
    );
    assert!(lb.command("stats cache", "error:").contains("no pool named \"cache\""));
    lb.command("algorithm", "algorithm round_robin");
    assert_eq!(via(lb.addr), "web-1");
    // Once the address is free, the same file applies.
    drop(taken);
    let answer = lb.command("reload", "reload");
    assert!(
        answer.ends_with(&format!(
            ": pool web: algorithm round_robin->p2c; pool cache added (1 backend); listener cache-in added on {addr}"
        )),
        "{answer}"
    );
    assert_eq!(via(addr), "cache-1");
}

#[test]
fn who_may_connect_is_set_by_flags_and_changed_by_reload() {
    let b = backend("b-1");
    // Denied by a flag: closed before any backend is reached.
    let mut lb = Lb::start(&["--backend", &b.to_string(), "--deny", "127.0.0.0/8"]);
    assert!(try_via(lb.addr).is_err(), "a denied client reached a backend");
    assert_eq!(try_via(lb.addr).ok(), None);
    lb.send("quit");
    lb.wait_exit();

    // Set in the file, lifted by a reload that says what changed.
    let file = |deny: &str| format!("deny = [{deny}]\n{}", backend_table(b, 1, "ready"));
    let mut lb = Lb::start_with_config(&file("\"127.0.0.1\""), &[]);
    assert!(try_via(lb.addr).is_err(), "a denied client reached a backend");
    lb.write_config(&file(""));
    let answer = lb.command("reload", "reload");
    assert!(answer.contains("deny 127.0.0.1/32->none"), "{answer}");
    assert_eq!(try_via(lb.addr).unwrap(), "b-1");
    // And the limit per client: one connection open at once.
    lb.write_config(&format!("max-connections-per-client = 1\n{}", file("")));
    let answer = lb.command("reload", "reload");
    assert!(answer.contains("max-connections-per-client unlimited->1"), "{answer}");
    let held = Held::open(lb.addr);
    assert!(try_via(lb.addr).is_err(), "a second connection from one client was let in");
    drop(held);
    eventually("a connection once the first closed", || {
        try_via(lb.addr).map_err(|e| e.to_string())
    });
}

/// Runs `lb` with `args` to the end; its status and stdout.
fn output(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(LB).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn completions_name_every_subcommand_and_flag() {
    let (_, help) = output(&["--help"]);
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches([',', '.', ')']))
        .filter(|w| w.len() > 1 && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .collect();
    assert!(flags.contains(&"health-check") && flags.contains(&"log-format"), "{flags:?}");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, script) = output(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}");
        // fish writes `-l health-check`, the others `--health-check`.
        for flag in &flags {
            assert!(script.contains(flag), "the {shell} script lacks --{flag}");
        }
        for sub in ["ctl", "completions", "man"] {
            assert!(script.contains(sub), "the {shell} script lacks the subcommand {sub}");
        }
    }
    let (code, _) = output(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
}

#[test]
fn the_man_page_renders() {
    let (code, page) = output(&["man"]);
    assert_eq!(code, Some(0));
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "not roff: {}", &page[..80]);
    assert!(page.contains(".TH lb 1"), "no title header");
    // lb ctl's switch takes no value, and its token may come from the environment.
    assert!(page.contains("\\fB\\-\\-wait\\fR\n"), "--wait shown with a value");
    assert!(page.contains("[env: LB_ADMIN_TOKEN]"), "LB_ADMIN_TOKEN not named");
    let Ok(mut groff) = Command::new("groff")
        // No hyphenation and long lines, so that flags are not split at line ends.
        .args(["-man", "-Tutf8", "-Wall", "-rHY=0", "-rLL=250n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("groff is not installed: the page was produced but not rendered");
        return;
    };
    groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let rendered = groff.wait_with_output().unwrap();
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    // grotty writes bold and underline by overstriking (`x\x08x`): keep the last of each.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&rendered.stdout).chars() {
        match c {
            '\u{8}' => drop(text.pop()),
            '\u{2010}' | '\u{2212}' => text.push('-'),
            c => text.push(c),
        }
    }
    for needle in ["SYNOPSIS", "--health-check", "--log-format", "ctl"] {
        assert!(text.contains(needle), "the rendered page lacks {needle}");
    }
}

#[test]
fn each_io_engine_serves_and_the_log_says_which() {
    let b = backend("io-1");
    for io in ["uring", "epoll", "auto"] {
        let mut lb = Lb::start(&["--backend", &b.to_string(), "--io", io]);
        for _ in 0..3 {
            assert_eq!(via(lb.addr), "io-1", "--io {io}");
        }
        lb.send("quit");
        lb.wait_exit();
        let text = lb.log_text();
        let on_ring = text.contains("relaying with io_uring");
        match io {
            // This machine (and CI) has io_uring: `uring` would have refused to start without.
            "uring" | "auto" => assert!(on_ring, "--io {io}: {text}"),
            _ => assert!(!on_ring && !text.contains("io_uring is not"), "--io {io}: {text}"),
        }
        assert_eq!(text.matches(" normal ").count(), 3, "--io {io}: {text}");
    }
}

#[test]
fn each_placement_serves_every_connection_on_two_workers() {
    let b = backend("place-1");
    for placement in ["pack", "spread"] {
        let mut lb = Lb::start(&[
            "--backend",
            &b.to_string(),
            "--workers",
            "2",
            "--placement",
            placement,
            "--admin",
            "127.0.0.1:0",
        ]);
        for _ in 0..20 {
            assert_eq!(via(lb.addr), "place-1", "--placement {placement}");
        }
        // Packing starts as the balancer does; spread, nothing is ever steered.
        let packed =
            if placement == "pack" { "lb_placement_packed 1" } else { "lb_placement_packed 0" };
        let metrics = eventually(packed, || {
            let metrics = http_get(&lb.admin(), "/metrics");
            if metrics.contains(packed) {
                Ok(metrics)
            } else {
                Err(metrics)
            }
        });
        // Twenty short connections keep no worker busy: nothing was switched.
        for family in ["lb_placement_spreads_total 0", "lb_placement_packs_total 0"] {
            assert!(metrics.contains(family), "--placement {placement}: {metrics}");
        }
        lb.send("quit");
        lb.wait_exit();
    }
}

#[test]
fn the_start_line_says_when_health_checks_are_off() {
    let b = backend("hc-1");
    for (flag, said) in [("off", "health_check=off"), ("tcp", "health_check=tcp")] {
        let mut lb = Lb::start(&["--backend", &b.to_string(), "--health-check", flag]);
        lb.send("quit");
        lb.wait_exit();
        let text = lb.log_text();
        assert!(text.contains(said), "--health-check {flag}: {text}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_access_lines_included() {
    let b = backend("json-1");
    let mut lb = Lb::start(&["--backend", &b.to_string(), "--log-format", "json"]);
    assert_eq!(via(lb.addr), "json-1");
    lb.command("drain 127.0.0.1:1", "no backend");
    lb.send("quit");
    lb.wait_exit();
    let text = lb.log_text();
    let mut access = 0;
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(object.contains_key(key), "no {key}: {line}");
        }
        if object["target"] == "lb::access" {
            access += 1;
            assert_eq!(object["backend"], b.to_string().as_str(), "{line}");
            assert_eq!(object["termination"], "normal", "{line}");
            assert_eq!(object["retries"], 0, "{line}");
            for key in ["client", "accept_time", "tc", "tt", "bytes_in", "bytes_out"] {
                assert!(object.contains_key(key), "no {key}: {line}");
            }
            assert!(!object.contains_key("sni") && !object.contains_key("pool"), "{line}");
        }
    }
    assert_eq!(access, 1, "{text}");
    assert!(text.contains("\"target\":\"lb::control\""), "the failed command is logged: {text}");
}

/// Runs `stats` until its backend rows (address, state, weight; `init` read as `up`), in
/// any order, are `want`.
fn stats_until(lb: &mut Lb, what: &str, want: &[(String, &str, u32)]) {
    eventually(what, || {
        let (_, rows) = lb.stats();
        let got: Vec<(String, &str, u32)> = rows
            .iter()
            .map(|r| (r.0.clone(), if r.1 == "init" { "up" } else { r.1.as_str() }, r.2))
            .collect();
        let mut got: Vec<(String, String, u32)> =
            got.into_iter().map(|(a, s, w)| (a, s.to_owned(), w)).collect();
        let mut want: Vec<(String, String, u32)> =
            want.iter().map(|(a, s, w)| (a.clone(), (*s).to_owned(), *w)).collect();
        got.sort();
        want.sort();
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
}

#[test]
fn discover_follows_a_dns_server_given_by_resolver() {
    use lb_net::{DnsBehavior, TestDnsServer};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(TestDnsServer::start()).unwrap();
    let alpha = backend("alpha");
    let port = alpha.port();
    dns.set_addresses("app.test", &["127.0.0.1".parse().unwrap()], 1);
    let resolver = dns.addr().to_string();
    let discover = format!("dns:app.test:{port}");
    let mut lb = Lb::start(&[
        "--discover",
        &discover,
        "--resolver",
        &resolver,
        "--dns-min-refresh",
        "50ms",
        "--dns-max-refresh",
        "200ms",
        "--health-check",
        "off",
    ]);
    // The first answer is in before lb listens: no default backends, only DNS's.
    let (_, rows) = lb.stats();
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), [alpha.to_string()]);
    assert_eq!(via(lb.addr), "alpha");
    lb.send("stats");
    let line = lb.expect_line("discovery dns:app.test");
    assert!(line.contains(&format!("via {resolver}: 1 backend,")), "{line}");

    // The A records change: the pool follows (the old address goes, no connection being open).
    dns.set_addresses("app.test", &["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()], 1);
    let at = |ip: &str| format!("{ip}:{port}");
    stats_until(
        &mut lb,
        "the new A records",
        &[(at("127.0.0.2"), "up", 1), (at("127.0.0.3"), "up", 1)],
    );
    lb.expect_log("backend added: DNS lists it");
    lb.expect_log("backend removed: DNS no longer lists it");

    // DNS fails: the members stay, the error is logged and counted.
    dns.set_behavior(DnsBehavior::ServerFailure);
    lb.expect_log("DNS lookup failed; keeping the last known members");
    stats_until(
        &mut lb,
        "the same members",
        &[(at("127.0.0.2"), "up", 1), (at("127.0.0.3"), "up", 1)],
    );
    lb.send("stats");
    let line = lb.expect_line("discovery dns:app.test");
    assert!(line.contains("keeping the last known backends"), "{line}");

    // DNS answers again, with alpha: traffic reaches it again.
    dns.set_behavior(DnsBehavior::Answer);
    dns.set_addresses("app.test", &["127.0.0.1".parse().unwrap()], 1);
    stats_until(&mut lb, "alpha again", &[(alpha.to_string(), "up", 1)]);
    assert_eq!(via(lb.addr), "alpha");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn the_pools_first_dns_lookups_at_start_up_run_together() {
    use lb_net::{DnsBehavior, TestDnsServer};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(TestDnsServer::start()).unwrap();
    let (a, b) = (backend("a"), backend("b"));
    dns.set_addresses("a.test", &["127.0.0.1".parse().unwrap()], 60);
    dns.set_addresses("b.test", &["127.0.0.1".parse().unwrap()], 60);
    // Neither name is answered before both have been asked: had one pool's first lookup
    // waited for its answer before the other's began, it would have timed out.
    dns.set_behavior(DnsBehavior::AnswerOnceAskedFor(2));
    let pool = |name: &str, port: u16| {
        format!(
            "[[pool]]\nname = \"{name}\"\ndiscover = \"dns:{name}.test:{port}\"\nresolver = \"{}\"\n\n",
            dns.addr()
        )
    };
    let config = format!(
        "{}{}{}{}",
        listen_table("la", "a"),
        listen_table("lb", "b"),
        pool("a", a.port()),
        pool("b", b.port())
    );
    let mut lb = Lb::start_services(&config, &[]);
    let lines = eventually("both pools' first lookups in the log", || {
        let text = lb.log_text();
        let lines: Vec<String> =
            text.lines().filter(|l| l.contains(" discover: ")).map(str::to_owned).collect();
        if lines.len() == 2 {
            Ok(lines)
        } else {
            Err(text)
        }
    });
    for line in lines {
        assert!(line.contains("discover: 1 backend in DNS (1 added)"), "{line}");
    }
    assert_eq!(via(lb.addr), "a");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn a_pool_table_discovers_srv_and_a_reload_keeps_or_drops_what_dns_gave() {
    use lb_net::{SrvRecord, TestDnsServer};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dns = runtime.block_on(TestDnsServer::start()).unwrap();
    let (alpha, beta, listed) = (backend("alpha"), backend("beta"), backend("listed"));
    dns.set_addresses("h.test", &["127.0.0.1".parse().unwrap()], 1);
    let srv = |port, weight| SrvRecord { priority: 1, weight, port, target: "h.test".into() };
    dns.set_srv("_app._tcp.test", &[srv(alpha.port(), 5)], 1);
    let file = |discover: &str| {
        format!(
            "[[pool]]\nname = \"default\"\n{discover}resolver = \"{}\"\ndns-min-refresh = \
             \"50ms\"\ndns-max-refresh = \"200ms\"\nbackend = [{{ address = \"{listed}\" }}]\n",
            dns.addr()
        )
    };
    let discover = "discover = \"srv:_app._tcp.test\"\n";
    let mut lb = Lb::start_with_config(&file(discover), &[]);
    stats_until(
        &mut lb,
        "listed and discovered",
        &[(listed.to_string(), "up", 1), (alpha.to_string(), "up", 5)],
    );
    // A reload of the same file keeps the discovered member the file does not list.
    let answer = lb.command("reload", "reload");
    assert!(answer.ends_with(": no changes"), "{answer}");
    dns.set_srv("_app._tcp.test", &[srv(beta.port(), 2)], 1);
    stats_until(
        &mut lb,
        "the new SRV record",
        &[(listed.to_string(), "up", 1), (beta.to_string(), "up", 2)],
    );
    // Without discover, what DNS gave goes; the listed backend stays.
    lb.write_config(&file(""));
    let answer = lb.command("reload", "reload");
    assert!(answer.contains(&format!("removed {beta}")), "{answer}");
    assert!(answer.contains("discover stopped"), "{answer}");
    stats_until(&mut lb, "only the listed backend", &[(listed.to_string(), "up", 1)]);
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}

#[test]
fn backups_serve_only_while_no_primary_can_and_traffic_keys_reload_live() {
    let (a, b, c) = (backend("alpha"), backend("beta"), backend("gamma"));
    let head = "health-interval = \"100ms\"\nrise = 1\n\n";
    let config = format!(
        "{head}{}{}backup = true\n\n",
        backend_table(a, 1, "ready"),
        backend_table(b, 1, "ready")
    );
    let mut lb = Lb::start_with_config(&config, &[]);
    let (_, rows) = lb.stats_when_checked();
    let states: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(states, ["up", "up/backup"]);
    assert!((0..4).all(|_| via(lb.addr) == "alpha"));

    // The only primary out: the backup takes every new connection, and the log says so.
    lb.command(&format!("maint {a}"), "maintenance");
    assert!((0..4).all(|_| via(lb.addr) == "beta"));
    lb.expect_log("backups are carrying new connections");
    // Back: new connections leave the backup.
    lb.command(&format!("enable {a}"), "ready");
    assert!((0..4).all(|_| via(lb.addr) == "alpha"));
    lb.expect_log("backups no longer carry new connections");

    // explain names the backend the next connection would get, and what-if changes nothing.
    let answer = lb.command("explain 192.0.2.7", "next connection");
    assert!(answer.ends_with(&format!("next connection -> {a}")), "{answer}");
    lb.command(&format!("what-if remove {a}"), "what-if remove");
    lb.expect_line("ip_hash clients that would change backend: 100.00%");
    assert!((0..2).all(|_| via(lb.addr) == "alpha"));

    // A backup added at the prompt.
    let answer = lb.command(&format!("add {c} backup"), "added");
    assert_eq!(answer, format!("added {c} (weight 1, ready, backup)"));

    // The three pool keys apply on reload, and the answer names them.
    let keys = "panic-threshold = 50\nslow-start = \"30s\"\nhash-balance-factor = 125\n";
    lb.write_config(&format!("{keys}{config}{}backup = true\n", backend_table(c, 1, "ready")));
    let answer = lb.command("reload", "reload");
    assert!(
        answer.contains(": panic-threshold 0->50, slow-start off->30s, hash-balance-factor 0->125"),
        "{answer}"
    );
    // The pool is round robin: the factor waits for ip_hash, and the answer says so.
    assert!(answer.ends_with("; warning: hash-balance-factor applies only to ip_hash, and the algorithm is round_robin: it has no effect unless the algorithm is changed to ip_hash"), "{answer}");
    lb.command("quit", "shutting down");
    assert!(lb.wait_exit().success());
}
