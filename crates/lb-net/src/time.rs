//! Durations as users write them ([`parse_duration`]), and deadlines from durations that may be
//! as large as a user likes.

use std::time::Duration;

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
