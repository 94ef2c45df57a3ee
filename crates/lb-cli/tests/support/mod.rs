//! What the binary's end-to-end tests share: the binary, the longest wait, polling with a
//! deadline, and a greeting echo backend.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// The `lb` binary under test.
pub(crate) const LB: &str = env!("CARGO_BIN_EXE_lb");
/// The longest any test waits for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it holds and returns what it found; fails the test if it does not hold
/// within [`WAIT`]. Until then `check` says what it saw instead (`Err`), for the failure message.
pub(crate) fn eventually<T, S: std::fmt::Display>(
    what: &str,
    mut check: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(found) => return found,
            Err(seen) if Instant::now() >= deadline => {
                panic!("no {what} within {WAIT:?}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A backend that greets each connection with `name\n` and then echoes; runs until the test ends.
pub(crate) fn backend(name: &'static str) -> SocketAddr {
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
