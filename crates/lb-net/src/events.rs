//! The most recent health transitions and control commands, for the dashboard.
//!
//! The log already has every one of them; this keeps the last [`EVENTS_KEPT`] in memory so
//! `GET /stats` can show them to someone who has no access to the log file. It is a bounded
//! ring behind a mutex: written only on a health transition or a command (rare, never on the
//! connection path), read by each `/stats` request.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lb_core::{Health, Transition};
use tokio::time::Instant;

/// How many events are kept: about as many as a dashboard shows, and a few minutes of a
/// flapping backend. Older ones are only in the log.
pub const EVENTS_KEPT: usize = 50;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A backend went down (checks or traffic failed `fall` times in a row).
    HealthDown,
    /// A backend came back up.
    HealthUp,
    /// A command that changes something was carried out (from any front end).
    Command,
    /// Such a command failed, and changed nothing.
    CommandFailed,
    /// A drain ended: its backend emptied, its deadline closed what was left, or it was
    /// cancelled.
    Drain,
}

impl EventKind {
    /// The kind as `/stats` writes it: `health-down`, `health-up`, `command`,
    /// `command-failed` or `drain`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HealthDown => "health-down",
            EventKind::HealthUp => "health-up",
            EventKind::Command => "command",
            EventKind::CommandFailed => "command-failed",
            EventKind::Drain => "drain",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most of an event's text kept (the log has it whole): a reload of thousands of pools
/// answers with tens of kilobytes, and `/stats`, which the dashboard polls every second, carries
/// every event kept.
pub(crate) const EVENT_TEXT_KEPT: usize = 2048;

/// Cuts `text` to at most `max` bytes (at a character boundary), saying how much was left out.
fn cut_to(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("... ({left_out} more bytes in the log)"));
    text.shrink_to_fit();
}

/// One health transition or command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Numbered from 1 in the order they happened, so a reader polling `/stats` can tell new
    /// ones from those it has shown.
    pub id: u64,
    /// Wall-clock time, for people; `id` and `uptime` order events even if the clock jumps.
    pub time: SystemTime,
    /// Time since the balancer started.
    pub uptime: Duration,
    /// What happened.
    pub kind: EventKind,
    /// The pool concerned, for health transitions.
    pub pool: Option<String>,
    /// What the log line says: the transition and its reason, or the command and its answer.
    pub text: String,
}

/// The last [`EVENTS_KEPT`] events, shared by the handle and every pool's health log.
#[derive(Debug)]
pub(crate) struct EventLog {
    started: Instant,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    events: VecDeque<Event>,
}

impl EventLog {
    /// An empty log for a balancer started at `started`.
    pub(crate) fn new(started: Instant) -> Self {
        EventLog { started, ring: Mutex::new(Ring::default()) }
    }

    /// Adds an event, dropping the oldest beyond [`EVENTS_KEPT`]; its text is cut to
    /// [`EVENT_TEXT_KEPT`] bytes.
    pub(crate) fn push(&self, kind: EventKind, pool: Option<&str>, mut text: String) {
        cut_to(&mut text, EVENT_TEXT_KEPT);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.next_id += 1;
        let event = Event {
            id: ring.next_id,
            time: SystemTime::now(),
            uptime: self.started.elapsed(),
            kind,
            pool: pool.map(str::to_owned),
            text,
        };
        if ring.events.len() == EVENTS_KEPT {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
    }

    /// A health transition of a backend of `pool`.
    pub(crate) fn transition(&self, pool: &str, t: &Transition) {
        let kind = match t.to {
            Health::Down => EventKind::HealthDown,
            Health::Up => EventKind::HealthUp,
        };
        self.push(kind, Some(pool), t.to_string());
    }

    /// The events kept, oldest first.
    pub(crate) fn recent(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_events_in_order_with_increasing_ids() {
        let log = EventLog::new(Instant::now());
        assert!(log.recent().is_empty());
        for i in 0..EVENTS_KEPT + 7 {
            log.push(EventKind::Command, None, format!("command {i}"));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), EVENTS_KEPT);
        assert_eq!(recent[0].text, "command 7");
        assert_eq!(recent[0].id, 8);
        assert_eq!(recent.last().unwrap().text, format!("command {}", EVENTS_KEPT + 6));
        assert!(recent.windows(2).all(|w| w[1].id == w[0].id + 1));
    }

    #[test]
    fn kinds_have_their_wire_names() {
        let names: Vec<&str> = [
            EventKind::HealthDown,
            EventKind::HealthUp,
            EventKind::Command,
            EventKind::CommandFailed,
        ]
        .iter()
        .map(|k| k.as_str())
        .collect();
        assert_eq!(names, ["health-down", "health-up", "command", "command-failed"]);
    }

    #[test]
    fn a_long_text_is_cut_at_a_character_boundary() {
        let log = EventLog::new(Instant::now());
        log.push(EventKind::Command, None, "é".repeat(3000));
        let text = &log.recent()[0].text;
        assert!(text.starts_with(&"é".repeat(1024)), "{text}");
        assert!(text.ends_with("... (3952 more bytes in the log)"), "{text}");
        log.push(EventKind::Command, None, "short".into());
        assert_eq!(log.recent()[1].text, "short");
    }
}
