//! A sliding window of event times: how many events happened within the last `window`. Used
//! for restart intensity (`restart.max_restarts` within `restart.window`) and for crash
//! quarantine (`quarantine.after_panics` within `quarantine.within`). Pure: the caller passes
//! `now`, so it is tested with made-up instants.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Event times, oldest first. An event at `t` counts at `now` while `now - t < window`.
#[derive(Debug, Clone, Default)]
pub struct SlidingWindow {
    events: VecDeque<Instant>,
}

impl SlidingWindow {
    /// Forgets the events that fell out of `window` at `now` and counts the rest.
    pub fn count(&mut self, now: Instant, window: Duration) -> u32 {
        while let Some(&t) = self.events.front() {
            if now.saturating_duration_since(t) >= window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        self.events.len() as u32
    }

    /// Records an event at `now` and counts the events within `window`, this one included.
    pub fn record(&mut self, now: Instant, window: Duration) -> u32 {
        self.events.push_back(now);
        self.count(now, window)
    }

    /// Forgets every event.
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn counts_events_within_the_window_only() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        assert_eq!(w.record(t0, MINUTE), 1);
        assert_eq!(w.record(t0 + Duration::from_secs(30), MINUTE), 2);
        assert_eq!(w.record(t0 + Duration::from_secs(59), MINUTE), 3);
        // At exactly one window after the first, the first no longer counts.
        assert_eq!(w.count(t0 + MINUTE, MINUTE), 2);
        assert_eq!(w.count(t0 + Duration::from_secs(90), MINUTE), 1);
        assert_eq!(w.count(t0 + Duration::from_secs(200), MINUTE), 0);
    }

    #[test]
    fn events_at_the_same_instant_all_count() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        for n in 1..=5 {
            assert_eq!(w.record(t0, MINUTE), n);
        }
    }

    #[test]
    fn a_zero_window_counts_nothing_and_clear_forgets() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::default();
        assert_eq!(w.record(t0, Duration::ZERO), 0);
        w.record(t0, MINUTE);
        w.record(t0, MINUTE);
        w.clear();
        assert_eq!(w.count(t0, MINUTE), 0);
    }

    #[test]
    fn an_instant_before_the_events_forgets_nothing() {
        // `now` earlier than a recorded event (clocks are monotonic, but callers may mix
        // instants): the difference saturates at zero, so the event still counts.
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = SlidingWindow::default();
        w.record(t0, MINUTE);
        assert_eq!(w.count(t0 - Duration::from_secs(5), MINUTE), 1);
    }
}
