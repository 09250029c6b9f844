//! Supervision arithmetic: whether to restart, after how long, and when to give up. Pure
//! functions of `Instant`s so they are tested with made-up times; the master owns the timers.

use std::time::{Duration, Instant};

use crate::config::{BackoffConfig, RestartConfig, RestartPolicy};
use crate::window::SlidingWindow;

/// Why a worker stopped running without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Start failed, a task failed or panicked, health checks failed, a non-zero exit.
    Failure,
    /// A process exited with status 0 on its own.
    CleanExit,
}

/// The master's answer to a trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Policy says no restart for this trigger.
    Leave,
    /// Restart after `delay`; this is restart number `attempt` within the window (1-based).
    Restart {
        /// Backoff before the start.
        delay: Duration,
        /// Restarts within the window, this one included.
        attempt: u32,
    },
    /// `max_restarts` within `window` used up: the circuit opens and the worker stays down.
    GiveUp {
        /// Restarts already made within the window.
        restarts: u32,
    },
}

/// Restart history of one worker.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    recent: SlidingWindow,
    /// Automatic restarts ever made.
    pub total: u32,
    /// The budget is spent: no more automatic restarts until a manual start.
    pub circuit_open: bool,
}

impl RestartTracker {
    /// Decides what to do about `trigger` at `now`. `jitter_sample` is a number in
    /// `[-1.0, 1.0]` (random in production) that scales the jitter.
    pub fn decide(
        &mut self,
        config: &RestartConfig,
        trigger: Trigger,
        now: Instant,
        jitter_sample: f64,
    ) -> Decision {
        let wanted = match (config.policy, trigger) {
            (RestartPolicy::Never, _) => false,
            (RestartPolicy::OnFailure, Trigger::Failure) => true,
            (RestartPolicy::OnFailure, Trigger::CleanExit) => false,
            (RestartPolicy::Always, _) => true,
        };
        if !wanted {
            return Decision::Leave;
        }
        let in_window = self.recent.count(now, config.window);
        if in_window >= config.max_restarts {
            self.circuit_open = true;
            return Decision::GiveUp {
                restarts: in_window,
            };
        }
        self.recent.record(now, config.window);
        self.total += 1;
        // A crash after a quiet window restarts at once; a crash loop gets the backoff
        // sequence from its second restart on.
        let delay = match (config.backoff.immediate_first, in_window) {
            (true, 0) => Duration::ZERO,
            (true, n) => backoff_delay(&config.backoff, n - 1, jitter_sample),
            (false, n) => backoff_delay(&config.backoff, n, jitter_sample),
        };
        Decision::Restart {
            delay,
            attempt: in_window + 1,
        }
    }

    /// Forgets the window and closes the circuit: a manual start gives a fresh budget.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.circuit_open = false;
    }
}

/// The delay before restart number `n + 1` within the window: `initial * multiplier^n`, capped
/// at `max`, then varied by `jitter * jitter_sample` (and capped again).
pub fn backoff_delay(backoff: &BackoffConfig, n: u32, jitter_sample: f64) -> Duration {
    let base = backoff.initial.as_secs_f64() * backoff.multiplier.powi(n.min(1000) as i32);
    let capped = base.min(backoff.max.as_secs_f64());
    let varied = capped * (1.0 + backoff.jitter * jitter_sample.clamp(-1.0, 1.0));
    Duration::from_secs_f64(varied.clamp(0.0, backoff.max.as_secs_f64()))
}

/// A number in `[-1.0, 1.0]` from the standard library's randomly seeded hasher: enough to
/// spread restarts, without a dependency on a random number crate.
pub fn jitter_sample() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() as f64 / u64::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: RestartPolicy, max_restarts: u32) -> RestartConfig {
        RestartConfig {
            policy,
            max_restarts,
            window: Duration::from_secs(60),
            backoff: BackoffConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                multiplier: 2.0,
                jitter: 0.0,
                immediate_first: false,
            },
            strategy: Default::default(),
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let c = config(RestartPolicy::OnFailure, 10);
        let delays: Vec<_> = (0..6).map(|n| backoff_delay(&c.backoff, n, 0.0)).collect();
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut b = config(RestartPolicy::OnFailure, 10).backoff;
        b.jitter = 0.5;
        assert_eq!(backoff_delay(&b, 0, 1.0), Duration::from_millis(150));
        assert_eq!(backoff_delay(&b, 0, -1.0), Duration::from_millis(50));
        for _ in 0..100 {
            let s = jitter_sample();
            assert!((-1.0..=1.0).contains(&s));
        }
    }

    #[test]
    fn gives_up_after_max_restarts_within_window() {
        let c = config(RestartPolicy::OnFailure, 2);
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        assert!(matches!(
            t.decide(&c, Trigger::Failure, t0, 0.0),
            Decision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            t.decide(&c, Trigger::Failure, t0, 0.0),
            Decision::Restart { attempt: 2, .. }
        ));
        assert_eq!(
            t.decide(&c, Trigger::Failure, t0, 0.0),
            Decision::GiveUp { restarts: 2 }
        );
        assert!(t.circuit_open);
        t.reset();
        assert!(!t.circuit_open);
        assert!(matches!(
            t.decide(&c, Trigger::Failure, t0, 0.0),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn a_crash_after_a_quiet_window_restarts_at_once_and_a_crash_loop_backs_off() {
        let mut c = config(RestartPolicy::OnFailure, 10);
        c.backoff.immediate_first = true;
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..4)
            .map(|_| match t.decide(&c, Trigger::Failure, t0, 0.0) {
                Decision::Restart { delay, .. } => delay.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        // At once, then the configured sequence (100, 200, 400 ms).
        assert_eq!(delays, [0, 100, 200, 400]);
        // Once the window is quiet again, the next crash restarts at once.
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(
            t.decide(&c, Trigger::Failure, later, 0.0),
            Decision::Restart { attempt: 1, delay } if delay.is_zero()
        ));
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let c = config(RestartPolicy::OnFailure, 1);
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        assert!(matches!(
            t.decide(&c, Trigger::Failure, t0, 0.0),
            Decision::Restart { .. }
        ));
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(
            t.decide(&c, Trigger::Failure, later, 0.0),
            Decision::Restart { attempt: 1, delay } if delay == Duration::from_millis(100)
        ));
        assert_eq!(t.total, 2);
    }

    #[test]
    fn policy_decides_which_triggers_restart() {
        let now = Instant::now();
        let mut t = RestartTracker::default();
        assert_eq!(
            t.decide(&config(RestartPolicy::Never, 5), Trigger::Failure, now, 0.0),
            Decision::Leave
        );
        assert_eq!(
            t.decide(
                &config(RestartPolicy::OnFailure, 5),
                Trigger::CleanExit,
                now,
                0.0
            ),
            Decision::Leave
        );
        assert!(matches!(
            t.decide(
                &config(RestartPolicy::Always, 5),
                Trigger::CleanExit,
                now,
                0.0
            ),
            Decision::Restart { .. }
        ));
    }
}
