//! Logging to a file without putting the disk, or a wake-up per line, on the proxy's path.
//!
//! Events are formatted on the thread that emits them (tracing-subscriber's `fmt`) and appended
//! to a shared in-memory batch under a mutex held for a `memcpy`. A background thread writes the
//! batch to the file every [`FLUSH_EVERY`], or as soon as it holds [`WAKE_AT`] bytes. Unlike a
//! channel per line (tracing-appender's non-blocking writer, which we used first), logging a
//! line costs no system call and wakes no thread: measured with `strace -c` under 3,000 new
//! connections a second, the channel cost three system calls per connection (a `write`, a
//! `futex` wake and `sched_yield` spins of the writer thread), and the batch costs none.
//!
//! [`LogReopener::request`] (lb calls it on SIGHUP) makes the writer close the file and open the
//! path again after the lines already pending, so `logrotate` can rename the file and have a new
//! one started without `copytruncate`.
//!
//! Nothing is lost on a normal exit: the guard returned by [`init`] flushes what is pending when
//! dropped. If the disk cannot keep up, the batch is capped at [`MAX_PENDING`] bytes; lines
//! beyond it are counted and the count is written to the file once it catches up, rather than
//! letting memory grow or blocking traffic.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use lb_net::{write_rfc3339, TimestampPrecision};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::args::LogFormat;
use tracing_subscriber::EnvFilter;

/// Longest a line waits in memory before it is written: short enough for `tail -f`.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is written at once rather than at the next tick.
const WAKE_AT: usize = 256 * 1024;
/// Most bytes held in memory while the disk is behind; further lines are counted and dropped.
const MAX_PENDING: usize = 32 * 1024 * 1024;

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Lines dropped because `buf` was full, not yet reported in the file.
    dropped: u64,
    closing: bool,
    /// Open the file again (it was renamed by log rotation) once `buf` is written.
    reopen: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The format of every line, the writer thread's own included.
    format: LogFormat,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while appending cannot leave the batch worse than truncated.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` handed to tracing-subscriber: every event is one `write_all` of a formatted
/// line, appended to the batch.
#[derive(Clone)]
struct Batch(Arc<Shared>);

impl Write for Batch {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.buf.len() + line.len() > MAX_PENDING {
            pending.dropped += 1;
        } else {
            let before = pending.buf.len();
            pending.buf.extend_from_slice(line);
            if before < WAKE_AT && pending.buf.len() >= WAKE_AT {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batch {
    type Writer = Batch;
    fn make_writer(&'a self) -> Batch {
        self.clone()
    }
}

/// Writes what is still pending when dropped, then stops the writer thread.
pub(crate) struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogGuard {
    /// A handle for asking the writer to reopen the log file.
    pub(crate) fn reopener(&self) -> LogReopener {
        LogReopener(Arc::clone(&self.shared))
    }
}

/// Asks the log writer to reopen its file by path, after what is already pending.
#[derive(Clone)]
pub(crate) struct LogReopener(Arc<Shared>);

impl LogReopener {
    /// Lines logged before this call go to the old file, later ones to the file now at the
    /// path (created if missing). If it cannot be opened the old one is kept, and it says so.
    pub(crate) fn request(&self) {
        self.0.lock().reopen = true;
        self.0.wake.notify_one();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: takes the whole batch at each tick (or when woken) and writes it.
fn write_batches(shared: &Shared, mut file: File, path: PathBuf) {
    let mut batch = Vec::with_capacity(WAKE_AT);
    let mut failing = false;
    loop {
        let (closing, dropped, reopen) = {
            let mut pending = shared.lock();
            if !pending.closing && !pending.reopen && pending.buf.len() < WAKE_AT {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            std::mem::swap(&mut pending.buf, &mut batch);
            let reopen = std::mem::take(&mut pending.reopen);
            (pending.closing, std::mem::take(&mut pending.dropped), reopen)
        };
        if dropped > 0 {
            let note = own_line(
                shared.format,
                "WARN",
                &format!("{dropped} log lines dropped: the log file could not keep up"),
            );
            batch.extend_from_slice(note.as_bytes());
        }
        if !batch.is_empty() {
            match file.write_all(&batch) {
                Ok(()) => failing = false,
                // Said once per outage on stderr, the only other place left to say it.
                Err(e) if !failing => {
                    failing = true;
                    err!("lb: cannot write the log file: {e}");
                }
                Err(_) => {}
            }
            batch.clear();
        }
        if closing {
            return;
        }
        if reopen {
            match open(&path) {
                Ok(new) => {
                    file = new;
                    let note = own_line(shared.format, "INFO", "log file reopened (SIGHUP)");
                    let _ = file.write_all(note.as_bytes());
                }
                Err(e) => {
                    let message = format!(
                        "cannot reopen log file {}: {e}; still writing to the file opened before",
                        path.display()
                    );
                    let _ = file.write_all(own_line(shared.format, "ERROR", &message).as_bytes());
                    err!("lb: {message}");
                }
            }
        }
    }
}

/// A line about the log file itself, written by the writer thread (which cannot go through
/// `tracing`: it is the end of that pipeline), in the same format as every other line:
/// timestamp, level, target `lb::log`, message.
fn own_line(format: LogFormat, level: &str, message: &str) -> String {
    let mut time = String::new();
    let _ = write_rfc3339(&mut time, std::time::SystemTime::now(), TimestampPrecision::Micros);
    match format {
        LogFormat::Text => format!("{time} {level:>5} lb::log: {message}\n"),
        LogFormat::Json => {
            // In the order tracing-subscriber writes its own lines.
            let text = |t: &str| serde_json::Value::from(t).to_string();
            let line = format!(
                "{{\"timestamp\":{},\"level\":{},\"message\":{},\"target\":\"lb::log\"}}",
                text(&time),
                text(level),
                text(message)
            );
            format!("{line}\n")
        }
    }
}

/// Opens (appends to) `path` and sends all `tracing` events at `level` there, each line
/// written as `format` says. Keep the guard alive until exit: dropping it writes what is still
/// pending.
pub(crate) fn init(path: &str, level: &str, format: LogFormat) -> Result<LogGuard, String> {
    let file_path = PathBuf::from(path);
    let file = open(&file_path).map_err(|e| format!("cannot open log file {path}: {e}"))?;
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    let shared = Arc::new(Shared { format, ..Shared::default() });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("lb-log".into())
            .spawn(move || write_batches(&shared, file, file_path))
            .map_err(|e| format!("cannot start the log writer: {e}"))?
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Batch(Arc::clone(&shared)))
        .with_ansi(false)
        .with_target(true);
    match format {
        LogFormat::Text => subscriber.event_format(TextLines::default()).init(),
        // The event's fields beside timestamp, level and target (no nesting to look through);
        // lb opens no spans, so there is no span list to write.
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(LogGuard { shared, thread: Some(thread) })
}

/// The text format's lines: tracing-subscriber's default (`Full`) format,
/// `<time> <level> <target>: <message or fields>`, with two differences.
///
/// - **Speed.** An event whose only field is its message, outside any span (every
///   access-log line, and most of lb's own), is written here. The default format passes every
///   message through a writer that escapes terminal control characters one `char` at a time,
///   and formats its timestamp from the date up: with the access line's own `Display`, that
///   was half of lb's user-space instructions per connection in the close test. Here the line
///   is formatted into a buffer and looked over once.
/// - **One event, one line, no raw control character.** The default format escapes ESC, BEL,
///   BS, FF, DEL and the C1 controls in messages, but leaves line breaks, the other C0
///   controls, and everything in a field written by its `Display` (an error naming a file
///   whose name holds an ESC or a newline) as they are. Every line, whoever formatted it, has
///   those escaped here, as the default format escapes the ones it does (`\x1b`, `\u{85}`),
///   and line breaks as `\n` and `\r`; a tab stays a tab.
#[derive(Default)]
struct TextLines {
    full: Format,
}

thread_local! {
    /// The line being written (a buffer kept per thread, as tracing-subscriber keeps its own).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let only_message = meta.fields().len() == 1 && meta.fields().field("message").is_some();
        let written = LINE.try_with(|line| {
            // Taken for the call: an event logged while formatting another (a reentrant call)
            // goes to the default format as it is.
            let Ok(mut line) = line.try_borrow_mut() else { return None };
            line.clear();
            let formatted = if only_message && ctx.event_scope().is_none() {
                write_message_line(&mut line, event)
            } else {
                self.full.format_event(ctx, Writer::new(&mut *line), event)
            };
            Some(formatted.and_then(|()| write_escaped(&mut writer, &line)))
        });
        match written {
            Ok(Some(result)) => result,
            _ => self.full.format_event(ctx, writer, event),
        }
    }
}

/// An event that has only its message, in the default format's layout (the level
/// right-aligned in five columns).
fn write_message_line(line: &mut String, event: &Event<'_>) -> fmt::Result {
    let meta = event.metadata();
    write_rfc3339(line, std::time::SystemTime::now(), TimestampPrecision::Micros)?;
    line.push_str(match *meta.level() {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    });
    line.push_str(meta.target());
    line.push_str(": ");
    let mut visitor = MessageOnly { out: line, result: Ok(()) };
    event.record(&mut visitor);
    visitor.result?;
    line.push('\n');
    Ok(())
}

/// Writes `line` (which ends in its newline) with every control character but a tab and that
/// newline escaped: ESC, BEL, BS, FF and DEL as `\x1b`, line breaks as `\n` and `\r`, other
/// C0 controls as `\x01`, C1 controls as `\u{85}`.
fn write_escaped(writer: &mut Writer<'_>, line: &str) -> fmt::Result {
    let body = line.strip_suffix('\n').unwrap_or(line);
    // C1 controls are the only characters whose UTF-8 starts with 0xC2 that need it; others
    // starting so only take the slower way.
    let clean = |b: u8| (b >= 0x20 || b == b'\t') & (b != 0x7f) & (b != 0xc2);
    // A chunk at a time without stopping early, which the compiler turns into vector code.
    let chunk_clean = |c: &[u8]| c.iter().fold(true, |all, &b| all & clean(b));
    if body.as_bytes().chunks(32).all(chunk_clean) {
        return writer.write_str(line);
    }
    for c in body.chars() {
        match c {
            '\n' => writer.write_str("\\n")?,
            '\r' => writer.write_str("\\r")?,
            '\t' => writer.write_char(c)?,
            c if (c as u32) < 0x20 || c == '\x7f' => write!(writer, "\\x{:02x}", c as u32)?,
            c if ('\u{80}'..='\u{9f}').contains(&c) => write!(writer, "\\u{{{:x}}}", c as u32)?,
            c => writer.write_char(c)?,
        }
    }
    writer.write_char('\n')
}

/// Records an event's message as the default format writes it (a string as it is, anything
/// else by its `Debug`, which for the `format_args!` of a message is its text), unescaped:
/// [`write_escaped`] does that for the whole line.
struct MessageOnly<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl Visit for MessageOnly<'_> {
    fn record_str(&mut self, _: &Field, value: &str) {
        self.out.push_str(value);
    }

    fn record_debug(&mut self, _: &Field, value: &dyn fmt::Debug) {
        self.result = write!(self.out, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `shared`'s batch holds, as text.
    fn batched(shared: &Shared) -> String {
        String::from_utf8(shared.lock().buf.clone()).unwrap()
    }

    /// Events of every kind the text format meets, written through `subscriber`.
    fn emit_all(subscriber: impl Subscriber + Send + Sync + 'static) {
        tracing::subscriber::with_default(subscriber, || {
            let line = "127.0.0.1:51514 [2026-11-25T22:38:16.709Z] api/127.0.0.1:8001 0/3 79 108 normal 0 sni=a.example";
            tracing::info!(target: "lb::access", "{line}");
            tracing::warn!("backend {} refused", "127.0.0.1:8002");
            tracing::error!("plain");
            tracing::debug!("debug {}", 1);
            tracing::trace!("trace");
            tracing::info!(client = "127.0.0.1:5", count = 3, "with fields");
            tracing::info!("a terminal escape \x1b[31m and a bell \x07");
            tracing::info!("a C1 control \u{85}, a section sign \u{a7}, an é");
            tracing::info!("{}", "a str argument");
            let span = tracing::info_span!("listener", name = "web");
            let _in = span.enter();
            tracing::info!("inside a span");
        });
    }

    #[test]
    fn text_lines_are_the_default_formats_lines() {
        let ours = Arc::new(Shared::default());
        let default = Arc::new(Shared::default());
        let builder = || tracing_subscriber::fmt().with_ansi(false).with_max_level(Level::TRACE);
        let subscriber = builder().with_writer(Batch(Arc::clone(&ours)));
        emit_all(subscriber.event_format(TextLines::default()).finish());
        emit_all(builder().with_writer(Batch(Arc::clone(&default))).finish());
        let (ours, default) = (batched(&ours), batched(&default));
        assert_eq!(ours.lines().count(), 10, "{ours}");
        assert_eq!(ours.lines().count(), default.lines().count());
        // The same line after the timestamp, which is the time of writing.
        let time_len = "2026-11-25T22:38:16.709123Z".len();
        for (a, b) in ours.lines().zip(default.lines()) {
            assert_eq!(a[time_len..], b[time_len..]);
            let time = &a[..time_len];
            assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        }
        assert!(ours.contains("\\x1b[31m"), "escaped as the default format escapes: {ours}");
    }

    #[test]
    fn every_event_is_one_line_with_no_raw_control_character() {
        let ours = Arc::new(Shared::default());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(Batch(Arc::clone(&ours)))
            .event_format(TextLines::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let path = "/etc/lb\x1b[31m\nfake line\r\x01.toml";
            tracing::info!("reloaded {path}: no changes");
            tracing::warn!(error = %format!("cannot read config file {path}"), "command failed");
            tracing::info!(name = ?path, "as a debug field");
            tracing::info!("a tab\tstays, a C1 control \u{9b} and DEL \x7f do not");
        });
        let text = batched(&ours);
        assert_eq!(text.lines().count(), 4, "{text}");
        let raw = |c: char| c.is_control() && c != '\n' && c != '\t';
        assert!(!text.chars().any(raw), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(r"reloaded /etc/lb\x1b[31m\nfake line\r\x01.toml: no changes"));
        assert!(lines[1].contains(r"error=cannot read config file /etc/lb\x1b[31m\nfake line"));
        assert!(lines[3].ends_with("a tab\tstays, a C1 control \\u{9b} and DEL \\x7f do not"));
    }

    #[test]
    fn lines_reach_the_file_in_order_and_the_guard_flushes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let path = path.clone();
            std::thread::spawn(move || write_batches(&shared, file, path))
        };
        let guard = LogGuard { shared: Arc::clone(&shared), thread: Some(thread) };
        let mut writer = Batch(Arc::clone(&shared));
        for i in 0..10_000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
    }

    #[test]
    fn a_full_batch_drops_lines_and_says_how_many() {
        let shared = Arc::new(Shared::default());
        let mut writer = Batch(Arc::clone(&shared));
        let big = vec![b'x'; MAX_PENDING - 10];
        writer.write_all(&big).unwrap();
        writer.write_all(b"this line does not fit\n").unwrap();
        writer.write_all(b"nor this one\n").unwrap();
        assert_eq!(shared.lock().dropped, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let file = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        shared.lock().closing = true;
        write_batches(&shared, file, path.clone());
        let text = std::fs::read_to_string(&path).unwrap();
        let note = text.strip_prefix(std::str::from_utf8(&big).unwrap()).expect("the batch first");
        // One line in the usual format: timestamp, level, target, message.
        assert!(note.starts_with("20") && note.lines().count() == 1, "{note:?}");
        assert!(
            note.ends_with("  WARN lb::log: 2 log lines dropped: the log file could not keep up\n"),
            "{note:?}"
        );
    }

    #[test]
    fn reopen_starts_a_new_file_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let rotated = dir.path().join("t.log.1");
        let shared = Arc::new(Shared::default());
        let thread = {
            let (shared, path) = (Arc::clone(&shared), path.clone());
            let file = open(&path).unwrap();
            std::thread::spawn(move || write_batches(&shared, file, path))
        };
        let guard = LogGuard { shared: Arc::clone(&shared), thread: Some(thread) };
        let mut writer = Batch(Arc::clone(&shared));
        writer.write_all(b"before\n").unwrap();
        // What logrotate does: rename, then signal.
        std::fs::rename(&path, &rotated).unwrap();
        guard.reopener().request();
        // The writer takes the request with the lines pending at that moment; poll until it
        // has made the new file, then log more.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "no new log file");
            std::thread::yield_now();
        }
        writer.write_all(b"after\n").unwrap();
        drop(guard);
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        let new = std::fs::read_to_string(&path).unwrap();
        let (first, rest) = new.split_once('\n').unwrap();
        assert!(first.ends_with("  INFO lb::log: log file reopened (SIGHUP)"), "{first}");
        assert_eq!(rest, "after\n");
    }
}
