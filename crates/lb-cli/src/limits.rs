//! The open files limit. Every relayed connection holds two descriptors (client and backend;
//! a bulk transfer briefly holds a pipe too), so the default soft limit of many systems (1024)
//! would cap the balancer at about 500 connections. As HAProxy and nginx do, `lb` raises its
//! soft limit to the hard limit at start and says what that allows.

/// Descriptors kept for everything that is not a relayed connection: listeners, the log file,
/// health checks, the admin endpoint, pipes.
const RESERVED: u64 = 64;

/// The soft open files limit before and after raising it to the hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    pub(crate) before: u64,
    pub(crate) now: u64,
}

impl OpenFiles {
    /// About how many connections can be relayed at once within this limit.
    pub(crate) fn connections(&self) -> u64 {
        // Under a tiny limit the balancer itself needs fewer than RESERVED (one listener per
        // worker, the log, a few checks): keep a quarter instead of claiming room for none.
        self.now.saturating_sub(RESERVED.min(self.now / 4)) / 2
    }

    /// The limit before, if it was raised (a log line that says `raised_from` when nothing was
    /// raised would send someone looking for a change that did not happen).
    pub(crate) fn raised_from(&self) -> Option<u64> {
        (self.now > self.before).then_some(self.before)
    }
}

/// Raises the soft open files limit to the hard one. Failure to raise is not an error: the
/// balancer runs within whatever it has, and the log says what that is.
#[cfg(unix)]
pub(crate) fn raise_open_files_limit() -> Option<OpenFiles> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // Linux refuses an unlimited RLIMIT_NOFILE; its ceiling (fs.nr_open) defaults to 2^20.
    const CEILING: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(CEILING);
    let target = limit.maximum.unwrap_or(CEILING);
    if target > before
        && setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: limit.maximum })
            .is_ok()
    {
        return Some(OpenFiles { before, now: target });
    }
    Some(OpenFiles { before, now: before })
}

/// No such limit here.
#[cfg(not(unix))]
pub(crate) fn raise_open_files_limit() -> Option<OpenFiles> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_a_connection_after_the_reserve() {
        assert_eq!(OpenFiles { before: 1024, now: 20_000 }.connections(), 9_968);
        assert_eq!(OpenFiles { before: 10, now: 10 }.connections(), 4);
        assert_eq!(OpenFiles { before: 64, now: 64 }.connections(), 24);
        assert_eq!(OpenFiles { before: 256, now: 256 }.connections(), 96);
    }

    #[test]
    fn raised_from_only_when_raised() {
        assert_eq!(OpenFiles { before: 1024, now: 20_000 }.raised_from(), Some(1024));
        assert_eq!(OpenFiles { before: 20_000, now: 20_000 }.raised_from(), None);
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_limit() {
        let limits = raise_open_files_limit().expect("unix has the limit");
        assert!(limits.now >= limits.before);
    }
}
