//! `schedule:`: cron expressions for workers started at given times (a kept crate, `croner`:
//! five fields, or six with seconds first; `@daily`-style nicknames), evaluated in UTC unless
//! `schedule_timezone: local`. Pure: the master asks what is due at a time and owns the timers.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Local, Utc};
use croner::Cron;

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    /// Behind an `Arc`: a parsed pattern is some 300 bytes, and every worker spec (there are
    /// two per table row) carries an `Option<Schedule>`.
    cron: std::sync::Arc<Cron>,
    text: String,
    local: bool,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.local == other.local
    }
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self.text, self.zone())
    }
}

/// What a timer firing at `now` for the occurrence due at `due` should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Occurrences after `due` that also passed before `now` (the master was paused or busy):
    /// not run, reported.
    pub missed: u32,
    /// The next occurrence after `now`.
    pub next: Option<SystemTime>,
}

/// At most this many missed occurrences are counted (a long pause of a per-second schedule).
const MISSED_CAP: u32 = 100_000;

impl Schedule {
    /// Parses `text` (`"*/5 * * * *"`, `"*/10 * * * * *"` with seconds, `"@hourly"`).
    ///
    /// # Errors
    /// What the cron parser says is wrong.
    pub fn parse(text: &str, local: bool) -> Result<Self, String> {
        let cron: Cron = text
            .parse()
            .map_err(|e: croner::errors::CronError| e.to_string())?;
        let schedule = Self {
            cron: std::sync::Arc::new(cron),
            text: text.to_string(),
            local,
        };
        if schedule.next_after(SystemTime::now()).is_none() {
            return Err(format!("{text:?} never matches a time"));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `UTC` or `local`.
    pub fn zone(&self) -> &'static str {
        if self.local {
            "local"
        } else {
            "UTC"
        }
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        use chrono::Timelike as _;
        // Occurrences fall on whole seconds: ask from the second `t` is in.
        let utc: DateTime<Utc> = t.into();
        let utc = utc.with_nanosecond(0).unwrap_or(utc);
        let next: Option<SystemTime> = if self.local {
            let local: DateTime<Local> = utc.with_timezone(&Local);
            self.cron
                .find_next_occurrence(&local, false)
                .ok()
                .map(Into::into)
        } else {
            self.cron
                .find_next_occurrence(&utc, false)
                .ok()
                .map(Into::into)
        };
        // croner works to the second; never answer `t` itself.
        next.filter(|n| *n > t)
    }

    /// The timer for the occurrence due at `due` fired at `now`.
    pub fn fired(&self, due: SystemTime, now: SystemTime) -> Due {
        let mut missed = 0;
        let mut at = due;
        while let Some(n) = self.next_after(at) {
            if n > now || missed >= MISSED_CAP {
                break;
            }
            missed += 1;
            at = n;
        }
        Due {
            missed,
            next: self.next_after(now.max(at)),
        }
    }

    /// `t` written in the schedule's zone, to the second.
    pub fn format(&self, t: SystemTime) -> String {
        let utc: DateTime<Utc> = t.into();
        if self.local {
            utc.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        } else {
            utc.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        }
    }
}

/// How long until `t` from `now` (zero if past).
pub fn until(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn five_or_six_fields_in_utc() {
        let s = Schedule::parse("30 3 * * *", false).unwrap();
        assert_eq!(
            s.next_after(at("2026-12-02T01:00:00Z")),
            Some(at("2026-12-02T03:30:00Z"))
        );
        let s = Schedule::parse("*/10 * * * * *", false).unwrap();
        assert_eq!(
            s.next_after(at("2026-12-02T01:00:05Z")),
            Some(at("2026-12-02T01:00:10Z"))
        );
        assert_eq!(s.format(at("2026-12-02T01:00:10Z")), "2026-12-02T01:00:10Z");
        let e = Schedule::parse("61 * * * *", false).unwrap_err();
        assert!(!e.is_empty());
        assert!(Schedule::parse("not cron", false).is_err());
    }

    #[test]
    fn a_late_timer_counts_what_it_missed_and_runs_once() {
        let s = Schedule::parse("* * * * * *", false).unwrap();
        // On time: nothing missed, the next second is next.
        let d = s.fired(at("2026-12-02T01:00:00Z"), at("2026-12-02T01:00:00Z"));
        assert_eq!(d.missed, 0);
        assert_eq!(d.next, Some(at("2026-12-02T01:00:01Z")));
        // Paused for 3.5 s: the occurrences at :01, :02, :03 passed unrun.
        let late = at("2026-12-02T01:00:03Z") + Duration::from_millis(500);
        let d = s.fired(at("2026-12-02T01:00:00Z"), late);
        assert_eq!(d.missed, 3);
        assert_eq!(d.next, Some(at("2026-12-02T01:00:04Z")));
        // An hourly job paused over two of its hours.
        let h = Schedule::parse("0 * * * *", false).unwrap();
        let d = h.fired(at("2026-12-02T01:00:00Z"), at("2026-12-02T03:10:00Z"));
        assert_eq!(d.missed, 2);
        assert_eq!(d.next, Some(at("2026-12-02T04:00:00Z")));
    }
}
