//! `master:`, the settings of the master itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::path::PathBuf;

use super::{duration, LogsConfig, RestartConfig};

/// `master:`. Every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Default time a worker's start may take (default `30s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub start_timeout: Duration,
    /// Default time a worker's stop may take (default `30s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub stop_timeout: Duration,
    /// `error`, `warn`, `info` (default), `debug` or `trace`; `RUST_LOG` overrides it.
    pub log_level: LogLevel,
    /// Threads of the runtime that runs module code (default: the number of cores, at most 4).
    pub module_threads: Option<usize>,
    /// Restart policy for workers that have no `restart:` of their own.
    pub restart: RestartConfig,
    /// Where process output is written, and how it rotates.
    pub logs: LogsConfig,
    /// Directory of `<id>.pid` and `<id>.port` files (default `hsu-run`).
    pub run_directory: PathBuf,
    /// How often CPU and memory of processes are sampled (default `5s`).
    #[serde(with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub resource_interval: Duration,
    /// Where `hsu package install` puts packages and `package:` finds them (default
    /// `hsu-packages`).
    pub packages_directory: PathBuf,
    /// The control API `hsu run` serves (`hsu ls`, `hsu restart`, …).
    pub api: ApiConfig,
    /// Become a child subreaper and reap orphaned descendants (`hsu run`: default `true`; a
    /// master embedded in another program: default `false`, as that program may wait for
    /// children of its own). A master that is PID 1 always reaps.
    pub subreaper: Option<bool>,
    /// Contain each process worker in a cgroup of its own where the kernel allows it (default
    /// `true`); `false`: process groups only (a descendant that calls `setsid` can escape).
    pub cgroups: bool,
}

/// `master.api:`: how the running master is operated from outside. By default only through a
/// Unix socket `<run_directory>/hsu.sock` (mode 0600: the file system is the access control);
/// a TCP listener is opt-in and always needs a bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the Unix socket `<run_directory>/hsu.sock` (default `true`).
    pub socket: bool,
    /// Also listen on this TCP address, e.g. `127.0.0.1:7070` (default: none).
    pub listen: Option<String>,
    /// The bearer token for TCP clients, read from this file; default: a new random token
    /// written to `<run_directory>/api.token` (mode 0600) at every start.
    pub token_file: Option<PathBuf>,
    /// Allow `listen` on a non-loopback address (default `false`: refused).
    pub allow_remote: bool,
    /// Serve only requests that change nothing (GET) (default `false`).
    pub read_only: bool,
    /// Events an event-stream subscriber may fall behind before it is told how many it
    /// missed (default 4096).
    pub event_lag: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: true,
            listen: None,
            token_file: None,
            allow_remote: false,
            read_only: false,
            event_lag: 4096,
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            log_level: LogLevel::Info,
            module_threads: None,
            restart: RestartConfig::default(),
            logs: LogsConfig::default(),
            run_directory: PathBuf::from("hsu-run"),
            resource_interval: Duration::from_secs(5),
            packages_directory: PathBuf::from("hsu-packages"),
            api: ApiConfig::default(),
            subreaper: None,
            cgroups: true,
        }
    }
}

/// Log verbosity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Lifecycle events (default).
    #[default]
    Info,
    /// More detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name `tracing` filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}
