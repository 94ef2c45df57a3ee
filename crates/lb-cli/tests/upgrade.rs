//! The process lifecycle end to end, as an operator meets it: a zero-downtime upgrade (and a
//! failed one), systemd's notification protocol and socket activation, and two instances
//! agreeing on `ip_hash` picks. Real processes and sockets on 127.0.0.1; every wait is a poll
//! with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod support;
use support::{backend, eventually, LB, WAIT};

/// A running `lb` (our child) with its output lines (stdout and stderr, which an upgrade's
/// successor shares) and its files. Killed on drop if still running.
struct Lb {
    child: Child,
    lines: Receiver<String>,
    dir: tempfile::TempDir,
}

impl Lb {
    /// The files an `lb` of a test uses: `lb.toml` and `lb.log` in a new directory.
    fn dir(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lb.toml"), config).unwrap();
        dir
    }

    /// Runs `command` (lb with its arguments; `--log-file` is added), reading its output.
    fn spawn(mut command: Command, dir: tempfile::TempDir) -> Lb {
        let mut child = command
            .arg("--log-file")
            .arg(dir.path().join("lb.log"))
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Lb { child, lines, dir }
    }

    /// `lb --config lb.toml ARGS`, stdin from /dev/null.
    fn start(config: &str, args: &[&str]) -> Lb {
        Lb::start_in(Lb::dir(config), args, &[])
    }

    /// `lb --config lb.toml ARGS` in `dir` with `env` added, stdin from /dev/null.
    fn start_in(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &Path)]) -> Lb {
        let mut command = Command::new(LB);
        command.args(["--config", "lb.toml", "--log-level", "debug"]).args(args);
        command.envs(env.iter().copied()).stdin(Stdio::null());
        Lb::spawn(command, dir)
    }

    /// Waits for an output line containing `needle`; returns it.
    fn expect_line(&self, needle: &str) -> String {
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

    /// The address after `prefix` in the next output line that has it.
    fn address_after(&self, prefix: &str) -> SocketAddr {
        let line = self.expect_line(prefix);
        let rest = line.split(prefix).nth(1).unwrap();
        rest.split([' ', '/']).next().unwrap().parse().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("lb.log")).unwrap_or_default()
    }

    /// Waits until the log file contains `needle`.
    fn expect_log(&self, needle: &str) -> String {
        eventually(&format!("log line containing {needle:?}"), || {
            let text = self.log_text();
            let line = text.lines().find(|l| l.contains(needle)).map(str::to_owned);
            line.ok_or(format!("the log\n{text}"))
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
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

/// A process the test did not start itself (an upgrade's successor, a child of the old lb):
/// killed on drop if still running.
struct Successor(u32);

impl Successor {
    fn alive(&self) -> bool {
        // A zombie (exited, not reaped by whoever adopted it) has ended too.
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|s| !s.trim().starts_with('Z')))
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.0.to_string()).status();
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.alive() {
            self.signal("KILL");
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(status.unwrap().success());
}

/// A client connection through the balancer, after the backend's greeting.
struct Client {
    reader: BufReader<TcpStream>,
    greeting: String,
}

impl Client {
    fn connect(lb: SocketAddr) -> std::io::Result<Client> {
        Client::over(TcpStream::connect(lb)?)
    }

    fn over(stream: TcpStream) -> std::io::Result<Client> {
        stream.set_read_timeout(Some(WAIT))?;
        let mut reader = BufReader::new(stream);
        let mut greeting = String::new();
        reader.read_line(&mut greeting)?;
        if greeting.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Client { reader, greeting: greeting.trim().to_owned() })
    }

    /// Sends a line and checks that it comes back.
    fn echo(&mut self, text: &str) -> std::io::Result<()> {
        self.reader.get_mut().write_all(format!("{text}\n").as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        match line.trim() == text {
            true => Ok(()),
            false => Err(std::io::Error::other(format!("sent {text:?}, got {line:?}"))),
        }
    }
}

/// `lb ctl --admin ADMIN ARGS`: exit status, stdout, stderr.
fn ctl(admin: SocketAddr, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(LB)
        .args(["ctl", "--admin", &admin.to_string()])
        .args(args)
        .env_remove("LB_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr)
}

/// Clients opening a connection per request (connect, greeting, echo, close) as fast as they
/// can, counting successes and keeping every failure.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(lb: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
                std::thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        match Client::connect(lb).and_then(|mut c| c.echo("ping")) {
                            Ok(()) => drop(done.fetch_add(1, SeqCst)),
                            Err(e) => errors.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load { stop, done, errors, threads }
    }

    /// Waits until `more` further requests have succeeded.
    fn wait_for(&self, more: u64) {
        let target = self.done.load(SeqCst) + more;
        eventually("more requests served", || {
            let done = self.done.load(SeqCst);
            if done >= target {
                Ok(())
            } else {
                Err(format!("{done} of {target}; errors {:?}", self.errors.lock().unwrap()))
            }
        });
    }

    /// Stops the clients; returns how many requests succeeded and every error.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, SeqCst);
        self.threads.into_iter().for_each(|t| t.join().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (self.done.load(SeqCst), errors)
    }
}

fn backend_config(backends: &[SocketAddr]) -> String {
    backends.iter().map(|b| format!("[[backend]]\naddress = \"{b}\"\n")).collect()
}

#[test]
fn an_upgrade_under_load_drops_no_client_and_the_old_process_exits_after_its_last_connection() {
    let alpha = backend("alpha");
    let dir = Lb::dir(&backend_config(&[alpha]));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut old = Lb::start_in(
        dir,
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--shutdown-grace",
            "60s",
            "-q",
        ],
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let addr = old.address_after("listening on ");
    let admin = old.address_after("admin endpoint on http://");
    expect_notification(&notify, &["READY=1"]);
    let mut held = Client::connect(addr).unwrap();
    held.echo("before the upgrade").unwrap();

    let load = Load::start(addr, 4);
    load.wait_for(50);
    let (code, answer, stderr) = ctl(admin, &["upgrade"]);
    assert_eq!(code, Some(0), "{answer}{stderr}");
    let new_pid: u32 = answer
        .split("upgraded: process ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no new process in {answer:?}"));
    let new = Successor(new_pid);
    assert_ne!(new_pid, old.pid());
    assert!(new.alive(), "the new process {new_pid} runs");
    assert!(answer.contains(&format!("this process ({})", old.pid())), "{answer}");
    old.expect_log(&format!(
        "upgrade: serving; the old process stops accepting predecessor={}",
        old.pid()
    ));
    // systemd is told to follow the new process (NotifyAccess=all accepts it from there).
    expect_notification(&notify, &[&format!("MAINPID={new_pid}"), "READY=1"]);

    // Clients keep being served while the old process drains its one connection.
    load.wait_for(100);
    held.echo("during the drain").unwrap();
    assert!(old.child.try_wait().unwrap().is_none(), "the old process waits for its connection");
    drop(held);
    let status = old.wait_exit();
    assert!(status.success(), "the old process exits 0: {status:?}");

    // The old process told systemd nothing of its own shutdown: the service did not stop.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        let message = String::from_utf8_lossy(&buf[..n]);
        assert!(!message.contains("STOPPING=1"), "{message}");
    }

    // The new process alone: clients, and the admin endpoint it took over.
    load.wait_for(100);
    let (served, errors) = load.finish();
    assert!(errors.is_empty(), "{} client errors of {served}: {errors:?}", errors.len());
    let (code, stats, stderr) = ctl(admin, &["stats"]);
    assert_eq!(code, Some(0), "{stats}{stderr}");
    assert!(stats.contains(&alpha.to_string()), "{stats}");
    let mut after = Client::connect(addr).unwrap();
    after.echo("after the upgrade").unwrap();
    assert_eq!(after.greeting, "alpha");
    drop(after);

    new.signal("TERM");
    eventually("exit of the new process", || match new.alive() {
        false => Ok(()),
        true => Err("still running"),
    });
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving_and_says_why() {
    let alpha = backend("alpha");
    let mut lb = Lb::start(
        &backend_config(&[alpha]),
        &["--host", "127.0.0.1", "--port", "0", "--admin", "127.0.0.1:0", "-q"],
    );
    let addr = lb.address_after("listening on ");
    let admin = lb.address_after("admin endpoint on http://");
    std::fs::write(lb.path("lb.toml"), "[[backend]]\naddress = \"127.0.0.1:1\"\nwieght = 2\n")
        .unwrap();

    let (code, stdout, stderr) = ctl(admin, &["upgrade"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("upgrade failed, this process keeps serving"), "{stderr}");
    assert!(stderr.contains("could not start: lb.toml line 3: unknown key `wieght`"), "{stderr}");
    lb.expect_log("upgrade failed, this process keeps serving");

    // SIGUSR2 is the same command: the same refusal, logged.
    signal(lb.pid(), "USR2");
    lb.expect_log("SIGUSR2: upgrading");
    eventually("a second refusal in the log", || {
        let text = lb.log_text();
        let refusals = text.matches("upgrade failed, this process keeps serving").count();
        if refusals >= 2 {
            Ok(())
        } else {
            Err(text)
        }
    });

    let mut client = Client::connect(addr).unwrap();
    client.echo("still served").unwrap();
    assert_eq!(client.greeting, "alpha");
    let (code, stats, _) = ctl(admin, &["stats"]);
    assert_eq!(code, Some(0), "{stats}");
    drop(client);
    signal(lb.pid(), "TERM");
    assert!(lb.wait_exit().success());
}

/// Receives datagrams on `socket` until one contains every one of `wanted`; returns it.
fn expect_notification(socket: &UnixDatagram, wanted: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no notification with {wanted:?}; got {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if wanted.iter().all(|w| message.lines().any(|l| l.starts_with(w))) {
            return message;
        }
        seen.push(message);
    }
}

#[test]
fn systemd_hears_ready_status_reloading_watchdog_and_stopping() {
    let alpha = backend("alpha");
    let dir = Lb::dir(&backend_config(&[alpha]));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut command = Command::new(LB);
    command
        .args(["--config", "lb.toml", "--host", "127.0.0.1", "--port", "0", "-q"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::piped());
    let mut lb = Lb::spawn(command, dir);
    let ready = expect_notification(&notify, &["READY=1", "STATUS="]);
    assert!(ready.contains("STATUS=1 of 1 backends available, 0 connections open"), "{ready}");
    assert!(!ready.contains("MAINPID="), "not an upgrade: {ready}");
    expect_notification(&notify, &["WATCHDOG=1"]);

    let stdin = lb.child.stdin.as_mut().unwrap();
    stdin.write_all(b"reload\n").unwrap();
    stdin.flush().unwrap();
    let reloading = expect_notification(&notify, &["RELOADING=1", "MONOTONIC_USEC="]);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reloading}"));
    assert!(usec > 0);
    expect_notification(&notify, &["READY=1", "STATUS="]);

    signal(lb.pid(), "TERM");
    expect_notification(&notify, &["STOPPING=1"]);
    assert!(lb.wait_exit().success());
}

#[test]
fn without_notify_socket_nothing_is_sent_and_lb_runs_as_before() {
    let alpha = backend("alpha");
    let mut lb =
        Lb::start(&backend_config(&[alpha]), &["--host", "127.0.0.1", "--port", "0", "-q"]);
    let addr = lb.address_after("listening on ");
    Client::connect(addr).unwrap().echo("plain").unwrap();
    signal(lb.pid(), "TERM");
    assert!(lb.wait_exit().success());
    assert!(!lb.log_text().contains("cannot notify systemd"));
}

#[test]
fn socket_activation_serves_on_the_listener_systemd_passes() {
    use std::os::fd::AsRawFd as _;
    let alpha = backend("alpha");
    let passed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let fd = passed.as_raw_fd();
    let mut command = Command::new("sh");
    // LISTEN_PID must be lb's own pid: the shell's, which `exec` keeps.
    command
        .args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, LB])
        .args(["--config", "lb.toml", "--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--workers", "2", "-q"])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "lb.socket")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on a
    // descriptor this process owns and keeps open until the child has started.
    unsafe {
        command.pre_exec(move || {
            let done = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut lb = Lb::spawn(command, Lb::dir(&backend_config(&[alpha])));
    // The test still holds the socket and never accepts on it, and lb could not have bound
    // the port beside it: a client served proves lb accepts on the passed socket.
    let mut client = eventually("a client served on the passed socket", || Client::connect(addr));
    client.echo("activated").unwrap();
    assert_eq!(client.greeting, "alpha");
    lb.expect_log("taking over passed listening sockets");
    drop((client, passed));
    Client::connect(addr).unwrap().echo("still there").unwrap();
    signal(lb.pid(), "TERM");
    assert!(lb.wait_exit().success());
}

/// Connects to `lb` from `source` (any 127.x.y.z: all of 127/8 is this machine's) and returns
/// the backend's greeting.
fn greeting_from(source: Ipv4Addr, lb: SocketAddr) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&lb.into()).unwrap();
    Client::over(socket.into()).unwrap().greeting
}

#[test]
fn two_instances_with_backends_in_different_orders_agree_on_every_ip_hash_pick() {
    const NAMES: [&str; 5] = ["b0", "b1", "b2", "b3", "b4"];
    let backends: Vec<SocketAddr> = NAMES.iter().map(|n| backend(n)).collect();
    let start = |order: &[usize]| {
        let mut args = vec!["--host", "127.0.0.1", "--port", "0", "--algorithm", "ip_hash", "-q"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        for &i in order {
            args.push("--backend".into());
            args.push(backends[i].to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Lb::start("", &args)
    };
    let one = start(&[0, 1, 2, 3, 4]);
    let two = start(&[3, 0, 4, 2, 1]);
    let (a, b) = (one.address_after("listening on "), two.address_after("listening on "));
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for i in 0u32..300 {
        let source =
            Ipv4Addr::new(127, 10 + (i % 7) as u8, (i / 7) as u8, 1 + (i * 37 % 250) as u8);
        let (pick_a, pick_b) = (greeting_from(source, a), greeting_from(source, b));
        assert_eq!(pick_a, pick_b, "client {source}: the instances disagree");
        // Sticky: the same client again gets the same backend.
        assert_eq!(greeting_from(source, a), pick_a, "client {source}");
        *seen.entry(pick_a).or_default() += 1;
    }
    assert_eq!(seen.len(), NAMES.len(), "every backend gets clients: {seen:?}");
    assert!(seen.values().all(|&n| n >= 20), "spread: {seen:?}");
}

/// The upgraded process's answer to `upgrade`: the new process's pid.
fn upgrade(admin: SocketAddr) -> Successor {
    let (code, answer, stderr) = ctl(admin, &["upgrade"]);
    assert_eq!(code, Some(0), "{answer}{stderr}");
    let pid = answer.split("upgraded: process ").nth(1).and_then(|r| r.split(' ').next());
    Successor(pid.and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{answer}")))
}

#[test]
fn upgrades_in_a_row_follow_the_file_for_workers_and_listeners() {
    let alpha = backend("alpha");
    let file = |workers: usize, extra: bool| {
        let mut text = format!("workers = {workers}\n{}", backend_config(&[alpha]));
        text.push_str(
            "[[listen]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\npool = \"default\"\n",
        );
        if extra {
            text.push_str(
                "[[listen]]\nname = \"extra\"\naddress = \"127.0.0.1:0\"\npool = \"default\"\n",
            );
        }
        text
    };
    let mut old = Lb::start(&file(1, false), &["--admin", "127.0.0.1:0", "-q"]);
    let addr = old.address_after("listening on ");
    let admin = old.address_after("admin endpoint on http://");

    // One worker to three: the one socket taken over, two more bound beside it on the port
    // the old process still holds; a listener new in the file bound afresh.
    std::fs::write(old.path("lb.toml"), file(3, true)).unwrap();
    let second = upgrade(admin);
    assert!(old.wait_exit().success());
    old.expect_log("taking over passed listening sockets listener=main");
    old.expect_log(&format!("listening listener=main address={addr} sockets=3"));
    let extra = old.expect_log("listening listener=extra");
    let extra: SocketAddr =
        extra.split("address=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    for lb in [addr, extra, addr, addr] {
        Client::connect(lb).unwrap().echo("after the first upgrade").unwrap();
    }

    // Three to one, and the extra listener gone: every socket still accepted on (closing one
    // would drop its queue), the extra one closed.
    std::fs::write(old.path("lb.toml"), file(1, false)).unwrap();
    let third = upgrade(admin);
    eventually("exit of the second process", || match second.alive() {
        false => Ok(()),
        true => Err("still running"),
    });
    old.expect_log(&format!(
        "taking over passed listening sockets listener=main address={addr} sockets=3"
    ));
    old.expect_log("closed a passed socket no longer configured: listener extra");
    for _ in 0..6 {
        Client::connect(addr).unwrap().echo("after the second upgrade").unwrap();
    }
    assert!(Client::connect(extra).is_err(), "the extra listener is closed");
    third.signal("TERM");
    eventually("exit of the third process", || match third.alive() {
        false => Ok(()),
        true => Err("still running"),
    });
}
