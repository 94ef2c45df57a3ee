//! Durations as users write them ([`parse_duration`]), deadlines from durations that may be
//! as large as a user likes, and wall-clock times as log lines write them ([`write_rfc3339`]).

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `from + after`, or a time some 30 years away when that would overflow: timeouts are plain
/// `Duration`s that an embedder (or a config file) may set as large as it likes, and
/// `Instant + Duration` panics on overflow.
pub(crate) fn deadline(
    from: tokio::time::Instant,
    after: std::time::Duration,
) -> tokio::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);
    from.checked_add(after).unwrap_or_else(|| from + FAR)
}

/// Parses a duration as written in commands, flags and the configuration file: `500ms`, `2s`,
/// `5m`, `1h`, also combined (`1m30s`), or `0`. The error says what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a number with a unit, e.g. 500ms, 2s, 5m or 1h")
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        // Only digits here, so a parse failure is a number beyond u64.
        let n: u64 = rest[..digits].parse().map_err(|_| {
            format!("invalid duration {s:?}: too large (at most about 584 billion years)")
        })?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" if n == 0 => Duration::ZERO,
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// How many digits of the second [`write_rfc3339`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampPrecision {
    /// Milliseconds, as the access log's accept time: `2026-12-03T12:03:46.586Z`.
    Millis,
    /// Microseconds, as the log's own timestamps: `2026-12-03T12:03:46.586240Z`.
    Micros,
}

/// The last second [`write_rfc3339`] wrote on this thread, and its text up to the fraction
/// (`2026-12-03T12:03:46`).
type CachedSecond = (u64, [u8; 19]);

thread_local! {
    static SECOND: Cell<Option<CachedSecond>> = const { Cell::new(None) };
}

/// Writes `t` as an RFC 3339 time in UTC with a fraction of the second, the format of
/// humantime's `format_rfc3339_millis` and of tracing-subscriber's timestamps. It is written
/// for a line per connection: the date and time of day are worked out (by humantime) once per
/// second on each thread and copied after that, so a call costs a comparison and two short
/// writes. A time before 1970 is written as 1970's first instant, one after 9999 as 9999's
/// last second, where a formatter that fails or panics would lose the line.
pub fn write_rfc3339(
    out: &mut dyn fmt::Write,
    t: SystemTime,
    precision: TimestampPrecision,
) -> fmt::Result {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let since = if since.as_secs() > LAST { Duration::from_secs(LAST) } else { since };
    let secs = since.as_secs();
    let text = match SECOND.get() {
        Some((cached, text)) if cached == secs => text,
        _ => {
            let mut text = [0u8; 19];
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + since).to_string();
            // "YYYY-MM-DDTHH:MM:SSZ": everything but the zone, which follows the fraction.
            text.copy_from_slice(whole.as_bytes().get(..19).ok_or(fmt::Error)?);
            SECOND.set(Some((secs, text)));
            text
        }
    };
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    let (mut value, digits) = match precision {
        TimestampPrecision::Millis => (since.subsec_millis(), 3),
        TimestampPrecision::Micros => (since.subsec_micros(), 6),
    };
    let mut tail = *b".000000Z";
    for digit in tail[1..=digits].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    tail[digits + 1] = b'Z';
    out.write_str(std::str::from_utf8(&tail[..digits + 2]).map_err(|_| fmt::Error)?)
}

/// A time as [`write_rfc3339`] writes it, for a `Display` (a log field, a JSON string).
pub(crate) struct Rfc3339(pub(crate) SystemTime, pub(crate) TimestampPrecision);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_rfc3339(f, self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(t: SystemTime, precision: TimestampPrecision) -> String {
        let mut s = String::new();
        write_rfc3339(&mut s, t, precision).unwrap();
        s
    }

    #[test]
    fn times_are_written_as_humantime_writes_them_whatever_came_before() {
        // Seconds in an order that reuses, replaces and returns to the cached second.
        let seconds = [0, 1_764_763_426, 1_764_763_426, 1_764_763_427, 951_782_400, 1_764_763_426];
        for (i, secs) in seconds.into_iter().enumerate() {
            for nanos in [0, 999_999_999, 586_240_123, 7_000] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let millis = humantime::format_rfc3339_millis(t).to_string();
                let micros = humantime::format_rfc3339_micros(t).to_string();
                assert_eq!(rfc3339(t, TimestampPrecision::Millis), millis, "sample {i}");
                assert_eq!(rfc3339(t, TimestampPrecision::Micros), micros, "sample {i}");
            }
        }
    }

    #[test]
    fn times_out_of_range_are_clamped_rather_than_lost() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339(before, TimestampPrecision::Millis), "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::new(300_000_000_000, 123_000_000);
        assert_eq!(rfc3339(after, TimestampPrecision::Millis), "9999-12-31T23:59:59.000Z");
    }
}
