//! The one state machine every worker type goes through. [`WorkerState::next`] is the only code
//! that decides a transition; actors apply it and report the change as an event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Added (and initialised), never started.
    Idle,
    /// A start was asked for and waits for the worker's `depends_on:` conditions; the
    /// reason (`waiting for db (healthy)`) is in the event and in `hsu ls`.
    Waiting,
    /// A start is in progress.
    Starting,
    /// Started and serving.
    Running,
    /// A stop is in progress.
    Stopping,
    /// Stopped on purpose (or a process that exited cleanly).
    Stopped,
    /// The last start failed (error, panic or timeout).
    FailedStart,
    /// It failed while running (task error, panic, failed health checks, bad exit).
    Failed,
    /// Being removed; the worker's actor ends after this.
    Terminating,
}

impl WorkerState {
    /// The snake_case name used in YAML, logs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::FailedStart => "failed_start",
            Self::Failed => "failed",
            Self::Terminating => "terminating",
        }
    }

    /// Failed or failed to start.
    pub fn is_failed(self) -> bool {
        matches!(self, Self::Failed | Self::FailedStart)
    }

    /// The state after `event`, or an error if `event` is not allowed now.
    ///
    /// # Errors
    /// [`InvalidTransition`] naming both.
    pub fn next(self, event: Lifecycle) -> Result<WorkerState, InvalidTransition> {
        use Lifecycle::*;
        use WorkerState::*;
        match (self, event) {
            // A start may begin from any resting state, or once what it waited for is there.
            (Idle | Stopped | FailedStart | Failed | Waiting, StartRequested) => Ok(Starting),
            // A start that must wait for dependencies first.
            (Idle | Stopped | FailedStart | Failed, WaitRequested) => Ok(Waiting),
            // A dependency failed for good, or the wait timed out.
            (Waiting, WaitFailed) => Ok(FailedStart),
            // The start call returned Ok (and, for processes, the child is alive/ready).
            (Starting, Started) => Ok(Running),
            // The start call failed, panicked or timed out.
            (Starting, StartFailed) => Ok(FailedStart),
            // A task ended with an error or panic, health checks failed, a limit was hit.
            (Running, Crashed) => Ok(Failed),
            // A process exited on its own: cleanly or not.
            (Running, Exited { success: true }) => Ok(Stopped),
            (Running, Exited { success: false }) => Ok(Failed),
            // Stop on purpose; from a failed state it cancels any pending restart.
            (Running | Failed | FailedStart | Waiting, StopRequested) => Ok(Stopping),
            // The stop finished (for a process: it exited while being stopped).
            (Stopping, StopCompleted | Exited { .. }) => Ok(Stopped),
            // The stop call failed or timed out: the worker's state is unknown, so failed.
            (Stopping, StopFailed) => Ok(Failed),
            // Removal or shutdown of a worker that is not mid-start or mid-stop.
            (Idle | Stopped | FailedStart | Failed | Waiting, TerminateRequested) => {
                Ok(Terminating)
            }
            (from, event) => Err(InvalidTransition { from, event }),
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a worker: the input of [`WorkerState::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Someone asked for a start.
    StartRequested,
    /// A start must wait for the worker's dependencies.
    WaitRequested,
    /// What it waited for will not come (a dependency failed for good) or took too long.
    WaitFailed,
    /// The start succeeded.
    Started,
    /// The start failed.
    StartFailed,
    /// It failed while running.
    Crashed,
    /// A process exited on its own.
    Exited {
        /// Exit status 0.
        success: bool,
    },
    /// Someone asked for a stop.
    StopRequested,
    /// The stop finished.
    StopCompleted,
    /// The stop failed.
    StopFailed,
    /// The worker is being removed.
    TerminateRequested,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::StartRequested => "start",
            Self::WaitRequested => "wait for dependencies",
            Self::WaitFailed => "fail waiting",
            Self::Started => "finish starting",
            Self::StartFailed => "fail to start",
            Self::Crashed => "fail",
            Self::Exited { success: true } => "exit cleanly",
            Self::Exited { success: false } => "exit with failure",
            Self::StopRequested => "stop",
            Self::StopCompleted => "finish stopping",
            Self::StopFailed => "fail to stop",
            Self::TerminateRequested => "remove",
        })
    }
}

/// An event that the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event} while {from}")]
pub struct InvalidTransition {
    /// The state it was in.
    pub from: WorkerState,
    /// The refused event.
    pub event: Lifecycle,
}

#[cfg(test)]
mod tests {
    use super::{Lifecycle::*, WorkerState::*};

    #[test]
    fn a_normal_life() {
        let mut s = Idle;
        for e in [
            StartRequested,
            Started,
            StopRequested,
            StopCompleted,
            StartRequested,
        ] {
            s = s.next(e).unwrap();
        }
        assert_eq!(s, Starting);
    }

    #[test]
    fn failures_land_in_failed_states() {
        assert_eq!(Starting.next(StartFailed), Ok(FailedStart));
        assert_eq!(Running.next(Crashed), Ok(Failed));
        assert_eq!(Running.next(Exited { success: false }), Ok(Failed));
        assert_eq!(Stopping.next(StopFailed), Ok(Failed));
        assert_eq!(Failed.next(StartRequested), Ok(Starting));
    }

    #[test]
    fn invalid_transitions_are_errors_not_overwrites() {
        assert!(Running.next(StartRequested).is_err());
        assert!(Idle.next(StopRequested).is_err());
        assert!(Stopped.next(Started).is_err());
        assert!(Starting.next(TerminateRequested).is_err());
        let err = Running.next(StartRequested).unwrap_err();
        assert_eq!(err.to_string(), "cannot start while running");
    }

    #[test]
    fn waiting_leads_to_a_start_a_failed_start_a_stop_or_removal() {
        assert_eq!(Idle.next(WaitRequested), Ok(Waiting));
        assert_eq!(Failed.next(WaitRequested), Ok(Waiting));
        assert_eq!(Waiting.next(StartRequested), Ok(Starting));
        assert_eq!(Waiting.next(WaitFailed), Ok(FailedStart));
        assert_eq!(Waiting.next(StopRequested), Ok(Stopping));
        assert_eq!(Waiting.next(TerminateRequested), Ok(Terminating));
        assert!(Running.next(WaitRequested).is_err());
        assert!(Waiting.next(WaitRequested).is_err());
        assert!(Waiting.next(Started).is_err());
    }

    #[test]
    fn terminating_is_final() {
        let events = [
            StartRequested,
            WaitRequested,
            WaitFailed,
            Started,
            StartFailed,
            Crashed,
            Exited { success: true },
            StopRequested,
            StopCompleted,
            StopFailed,
            TerminateRequested,
        ];
        for e in events {
            assert!(Terminating.next(e).is_err(), "{e:?}");
        }
    }
}
