//! Logging to a file through a non-blocking writer.
//!
//! Events are formatted on the thread that emits them and handed to a background thread that
//! writes the file, so a slow disk never stalls the proxy. If the writer falls behind by more
//! than its buffer (128k lines) lines are dropped rather than blocking traffic. The background
//! thread writes through a `BufWriter` and flushes whenever it has drained its queue, so under
//! load many lines go out in one `write` call instead of one call per line.

use std::fs::OpenOptions;
use std::io::BufWriter;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Opens (appends to) `path` and sends all `tracing` events at `level` there. Keep the guard
/// alive until exit: dropping it flushes what is still queued.
pub(crate) fn init(path: &str, level: &str) -> Result<WorkerGuard, String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {path}: {e}"))?;
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    let (writer, guard) = tracing_appender::non_blocking(BufWriter::with_capacity(64 * 1024, file));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true)
        .init();
    Ok(guard)
}
