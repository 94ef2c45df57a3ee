//! The command prompt: commands typed in the terminal (or piped on stdin) act through the
//! balancer's [`Handle`].
//!
//! It runs on its own thread, because reading a terminal blocks. On a terminal it has line
//! editing, history and tab completion (rustyline); otherwise it reads plain lines and prints
//! no prompt. End of input never stops the balancer: it keeps serving until `quit`, SIGINT or
//! SIGTERM, so it runs as a service with stdin closed.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;

use lb_net::COMMAND_NAMES;
use lb_net::{Command, Handle, Reply};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Handle as Runtime;

const PROMPT: &str = "lb> ";

/// Starts the prompt on its own thread.
pub(crate) fn spawn(
    handle: Handle,
    runtime: Runtime,
    quiet: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("repl".into()).spawn(move || {
        let interactive = !quiet && std::io::stdin().is_terminal();
        if interactive {
            if let Err(e) = interactive_loop(&handle, &runtime) {
                tracing::warn!(error = %e, "terminal line editing unavailable; reading plain lines");
                plain_loop(&handle, &runtime);
            }
        } else {
            plain_loop(&handle, &runtime);
        }
    })
}

/// Runs one line; returns false once the balancer is shutting down.
fn execute(handle: &Handle, runtime: &Runtime, line: &str) -> bool {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return true;
    }
    let mut out = std::io::stdout().lock();
    match runtime.block_on(handle.execute(line)) {
        Ok(reply) => {
            let _ = writeln!(out, "{reply}");
            if matches!(reply, Reply::ShuttingDown) {
                let _ = out.flush();
                return false;
            }
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
    }
    let _ = out.flush();
    !handle.is_shutting_down()
}

/// Longest command line read from a pipe; the rest of a longer line is skipped unread into
/// memory, so no input, however long or binary, can make the prompt hold more than this.
const MAX_LINE: usize = 4096;

/// One line from a pipe, at most [`MAX_LINE`] bytes of it kept.
enum PlainLine {
    Line(String),
    TooLong(usize),
    NotUtf8,
}

/// Reads the next line, or `None` at end of input (or a read error, which ends input too).
fn read_plain_line(input: &mut impl BufRead) -> Option<PlainLine> {
    let (mut kept, mut total) = (Vec::new(), 0usize);
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if chunk.is_empty() {
            if total == 0 {
                return None;
            }
            break; // a last line without a newline
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        let room = MAX_LINE.saturating_sub(kept.len());
        kept.extend_from_slice(&part[..part.len().min(room)]);
        total += part.len();
        let newline = done > part.len();
        input.consume(done);
        if newline {
            break;
        }
    }
    Some(if total > MAX_LINE {
        PlainLine::TooLong(total)
    } else {
        match String::from_utf8(kept) {
            Ok(line) => PlainLine::Line(line),
            Err(_) => PlainLine::NotUtf8,
        }
    })
}

fn plain_loop(handle: &Handle, runtime: &Runtime) {
    let mut input = std::io::stdin().lock();
    while let Some(line) = read_plain_line(&mut input) {
        let line = match line {
            PlainLine::Line(line) => line,
            PlainLine::TooLong(len) => {
                out!("error: line of {len} bytes ignored: a command is at most {MAX_LINE}");
                continue;
            }
            PlainLine::NotUtf8 => {
                out!("error: line ignored: not valid UTF-8 text");
                continue;
            }
        };
        if !execute(handle, runtime, &line) {
            return;
        }
    }
    tracing::info!("stdin closed; still serving until SIGINT or SIGTERM");
}

fn interactive_loop(handle: &Handle, runtime: &Runtime) -> rustyline::Result<()> {
    let mut editor: Editor<Completion, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(Completion { handle: handle.clone() }));
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !execute(handle, runtime, &line) {
                    return Ok(());
                }
            }
            // Ctrl-C at the prompt: the same as SIGINT, a graceful shutdown.
            Err(ReadlineError::Interrupted) => {
                out!("{}", Reply::ShuttingDown);
                let _ = runtime.block_on(handle.execute_command(Command::Quit));
                return Ok(());
            }
            Err(ReadlineError::Eof) => {
                out!("stdin closed: still serving; stop with Ctrl-C (SIGINT) or SIGTERM");
                tracing::info!("stdin closed; still serving until SIGINT or SIGTERM");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Tab completion: command names first, then pool names, algorithm names or backends.
struct Completion {
    handle: Handle,
}

impl Completer for Completion {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let pools: Vec<(String, Vec<SocketAddr>)> = self
            .handle
            .pool_names()
            .into_iter()
            .filter_map(|name| {
                let backends = self.handle.pool_named(&name)?.backends();
                Some((name, backends.iter().map(|b| b.addr).collect()))
            })
            .collect();
        let mut matches: Vec<String> =
            candidates(&words, &pools).into_iter().filter(|o| o.starts_with(word)).collect();
        if matches.len() == 1 {
            matches[0].push(' ');
        }
        Ok((start, matches))
    }
}

/// What may come after `words` (the words before the one being completed), given each pool's
/// name and backends: a command, an algorithm or a pool where a command takes one, a backend
/// (`POOL/HOST:PORT` when there are several pools, as commands then want).
fn candidates(words: &[&str], pools: &[(String, Vec<SocketAddr>)]) -> Vec<String> {
    let names = pools.iter().map(|(name, _)| name.clone());
    let algorithms = lb_core::Algorithm::ALL.iter().map(|a| a.to_string());
    match words {
        [] => COMMAND_NAMES.iter().map(|s| s.to_string()).collect(),
        ["algorithm" | "algo"] => algorithms.chain(names).collect(),
        ["algorithm" | "algo", pool] if pools.iter().any(|(name, _)| name == pool) => {
            algorithms.collect()
        }
        ["stats" | "status" | "health" | "add"] => names.collect(),
        ["remove" | "rm" | "del" | "delete" | "drain" | "enable" | "ready" | "maint" | "disable"
        | "weight"] => match pools {
            [(_, only)] => only.iter().map(|a| a.to_string()).collect(),
            _ => pools
                .iter()
                .flat_map(|(name, addrs)| addrs.iter().map(move |a| format!("{name}/{a}")))
                .collect(),
        },
        _ => Vec::new(),
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        // A tiny buffer, so lines and the cap straddle reads.
        let mut reader = std::io::BufReader::with_capacity(7, input);
        std::iter::from_fn(|| read_plain_line(&mut reader))
            .map(|l| match l {
                PlainLine::Line(s) => s,
                PlainLine::TooLong(n) => format!("<too long {n}>"),
                PlainLine::NotUtf8 => "<not utf-8>".into(),
            })
            .collect()
    }

    #[test]
    fn completion_offers_pools_and_pool_qualified_backends() {
        let a: SocketAddr = "10.0.0.5:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.9:5432".parse().unwrap();
        let one = [("default".to_owned(), vec![a])];
        let two = [("web".to_owned(), vec![a]), ("db".to_owned(), vec![b])];
        assert_eq!(candidates(&["drain"], &one), ["10.0.0.5:443"]);
        assert_eq!(candidates(&["drain"], &two), ["web/10.0.0.5:443", "db/10.0.0.9:5432"]);
        assert_eq!(candidates(&["stats"], &two), ["web", "db"]);
        assert_eq!(candidates(&["add"], &two), ["web", "db"]);
        let algorithm = candidates(&["algorithm"], &two);
        assert!(algorithm.starts_with(&["round_robin".to_owned()]), "{algorithm:?}");
        assert!(algorithm.ends_with(&["web".to_owned(), "db".to_owned()]), "{algorithm:?}");
        assert_eq!(candidates(&["algorithm", "web"], &two).len(), lb_core::Algorithm::ALL.len());
        assert!(candidates(&["algorithm", "p2c"], &two).is_empty());
        assert!(candidates(&[], &two).contains(&"reload".to_owned()));
    }

    #[test]
    fn plain_lines_survive_binary_and_overlong_input() {
        let mut input = b"stats\n\xff\xfe garbage\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend(b"\nadd 127.0.0.1 8004\r\n\nquit");
        assert_eq!(
            lines(&input),
            ["stats", "<not utf-8>", "<too long 100000>", "add 127.0.0.1 8004\r", "", "quit"]
        );
        assert_eq!(lines(b""), Vec::<String>::new());
        let exact = vec![b'a'; MAX_LINE];
        assert_eq!(lines(&exact), [String::from_utf8(exact.clone()).unwrap()]);
    }
}
