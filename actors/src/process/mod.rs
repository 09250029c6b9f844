//! What `ProcessWorkerActor` drives: spawning, stopping process groups, output logs,
//! attaching to running processes, the integrated protocol's client and readiness wait, and
//! resource sampling. These act; the worker actor decides.

pub mod attach;
pub mod cgroup;
pub mod child;
pub mod integrated;
pub mod leftovers;
pub mod logs;
pub mod reaper;
pub mod resources;
pub mod run_table;
pub mod spawn;
pub mod stop;
pub mod sys;

use std::os::unix::process::ExitStatusExt;
use std::time::SystemTime;

use serde::Serialize;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
    /// When the exit was seen.
    pub at: SystemTime,
}

impl ExitInfo {
    /// From a wait status.
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        Self {
            code: status.code(),
            signal: status.signal(),
            at: SystemTime::now(),
        }
    }

    /// An exit whose status is unknown (an attached process, or a failed wait).
    pub fn unknown() -> Self {
        Self {
            code: None,
            signal: None,
            at: SystemTime::now(),
        }
    }

    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig} ({})", signal_name(sig)),
            (None, None) => write!(f, "exited (status unknown)"),
        }
    }
}

/// `SIGTERM`-style name of a signal number.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// CPU and memory of a process at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResourceUsage {
    /// CPU use over the last sampling interval, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// CPU time used so far (user + system), in seconds, where the platform tells it (Linux).
    pub cpu_seconds: Option<f64>,
    /// When sampled.
    pub at: SystemTime,
}
