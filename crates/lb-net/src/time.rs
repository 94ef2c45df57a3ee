//! Deadlines from durations that may be as large as a user likes.

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
