//! Workers: the messages every worker actor (module or process) understands, the event it
//! reports, and its diagnostics; the two worker actors and the part they share.
//!
//! - [`module_worker`]: `ModuleWorkerActor`, a `WorkerModule` in this process;
//! - [`process_worker`]: `ProcessWorkerActor`, an OS process (managed, integrated, unmanaged);
//! - `lifecycle`: state, op lock and the stop/terminate paths both share;
//! - `module_tasks`: the tasks a module spawns, supervised per run;
//! - `logs`: the tracing layer that writes module workers' events to their log files.

mod lifecycle;
pub mod logs;
mod module_tasks;
pub mod module_worker;
pub mod process_worker;

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use hsu_module::ModuleInfo;
use serde::Serialize;

use crate::config::{ModuleType, ProbeType, ProcessType};
use crate::error::WorkerError;
use crate::process::{ExitInfo, ResourceUsage};
use crate::state::WorkerState;
use crate::WorkerId;

/// Event: a worker changed state. Sent by worker actors to the master, which forwards it to
/// subscribers ([`crate::master::Subscribe`]).
#[derive(Debug, Clone, PartialEq, Message, Serialize)]
#[rtype(result = "()")]
pub struct WorkerStateChanged {
    /// The worker.
    pub id: WorkerId,
    /// Its state before.
    pub from: WorkerState,
    /// Its state now.
    pub to: WorkerState,
    /// Why, for failures: the error text (also the worker's `last_error`); for `waiting`, what
    /// it waits for.
    pub reason: Option<String>,
    /// The OS process now running, for process workers that just became running.
    pub pid: Option<u32>,
    /// The failure was a panic in module code (counted by `quarantine:`).
    pub panicked: bool,
    /// When.
    pub at: SystemTime,
    /// Which actor of the worker reported it: a new number each time the worker's actor is
    /// replaced under the same id (a changed config applied, a quarantine), so a late event of
    /// the old one is never taken for the new one's.
    pub instance: u64,
    /// How the process ended, on the event its end caused (processes only).
    pub exit: Option<ExitInfo>,
}

/// Makes an added worker ready to start (for modules: create the instance and `initialize`).
/// Sent once by the master during `AddWorker`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Initialize;

/// Starts the worker. Replies when it is running, or with why it is not.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Start;

/// Stops the worker. Replies when it is stopped.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Stop;

/// The worker's start waits for its dependencies: `waiting`, with `reason` ("waiting for db
/// (healthy)") in the event. Sent by the master, which sends [`Start`] once they are met.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Wait {
    /// What it waits for.
    pub reason: String,
}

/// A waiting worker will not start: a dependency failed for good, or the wait timed out. It
/// becomes `failed_start` with `reason`. Ignored unless the worker is waiting.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AbandonWait {
    /// Why; becomes `last_error`.
    pub reason: String,
}

/// Marks a running worker failed (failed health checks, a limit) and cleans it up.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Fail {
    /// Why; becomes `last_error`.
    pub reason: String,
}

/// One health probe of the worker's own kind (module: `is_healthy`). `Ok(false)` is unhealthy;
/// an error (panic, timeout) is a failed probe.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, WorkerError>")]
pub struct CheckHealth {
    /// Which probe: `module`, `process`, `ping` or `grpc_health`.
    pub probe: ProbeType,
    /// For `grpc_health`: the service name asked about.
    pub service: String,
    /// Limit for the probe.
    pub timeout: Duration,
}

/// The worker's own facts ([`WorkerFacts`]); the master composes [`WorkerDiagnostics`] from
/// them and its own records (restarts, circuit, health, resources, quarantine).
#[derive(Debug, Message)]
#[rtype(result = "WorkerFacts")]
pub struct GetFacts;

/// What a worker actor knows of itself, and nothing the master knows better.
#[derive(Debug, Clone)]
pub struct WorkerFacts {
    /// Current state.
    pub state: WorkerState,
    /// The worker's last error, as it recorded it.
    pub last_error: Option<String>,
    /// When the current run started.
    pub started_at: Option<SystemTime>,
    /// How long the current run has lasted (none unless running).
    pub uptime: Option<Duration>,
    /// OS process id; none for modules.
    pub pid: Option<u32>,
    /// The program, or `in-proc-module:NAME` for modules.
    pub executable_path: String,
    /// Module details; none for processes.
    pub module: Option<ModuleDiagnostics>,
    /// How the process last ended (processes only).
    pub last_exit: Option<ExitInfo>,
    /// The worker's output file.
    pub log_file: Option<std::path::PathBuf>,
    /// What holds its processes together: `cgroup`, `process_group` or `attached`
    /// (processes only).
    pub containment: Option<&'static str>,
    /// How its log writes fare (a full disk: failed writes, lines kept, lines dropped).
    pub log_writes: Option<crate::process::logs::LogWrites>,
}

/// Ends the worker actor, stopping it first if it runs. Sent on removal and shutdown; the
/// reply carries the stop's error, if any (the actor ends either way).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Terminate;

/// Where and how a worker runs, as one word: the deployment its config chose. The YAML says it
/// in two keys (`type: module` + `module_type: native|plugin`, or `type: process` +
/// `process_type: managed|integrated|unmanaged`); diagnostics, events, logs and docs use this
/// one name. (In the code, `WorkerType`, `ModuleType` and `ProcessType` are only those YAML
/// keys; a validated worker's deployment details are a [`crate::config::DeploymentSpec`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    /// Native module.
    Native,
    /// Plugin module.
    Plugin,
    /// Managed process.
    Managed,
    /// Integrated process.
    Integrated,
    /// Unmanaged process.
    Unmanaged,
}

impl Deployment {
    /// The name used in configs, diagnostics and logs: `native`, `plugin`, `managed`,
    /// `integrated`, `unmanaged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Plugin => "plugin",
            Self::Managed => "managed",
            Self::Integrated => "integrated",
            Self::Unmanaged => "unmanaged",
        }
    }
}

impl std::fmt::Display for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ModuleType> for Deployment {
    fn from(t: ModuleType) -> Self {
        match t {
            ModuleType::Native => Self::Native,
            ModuleType::Plugin => Self::Plugin,
        }
    }
}

impl From<ProcessType> for Deployment {
    fn from(t: ProcessType) -> Self {
        match t {
            ProcessType::Managed => Self::Managed,
            ProcessType::Integrated => Self::Integrated,
            ProcessType::Unmanaged => Self::Unmanaged,
        }
    }
}

/// Result of the last health probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Not probed since it started (or health checks are off).
    #[default]
    Unknown,
    /// The last probe passed.
    Healthy,
    /// The last probe failed.
    Unhealthy,
}

/// Everything known about one worker: `GetWorkerState`'s answer, composed by the master from
/// the worker's [`WorkerFacts`] and its own records.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerDiagnostics {
    /// The worker.
    pub id: WorkerId,
    /// Its deployment: `native`, `plugin`, `managed`, `integrated` or `unmanaged`.
    pub deployment: Deployment,
    /// Current state.
    pub state: WorkerState,
    /// The last error (start failure, panic, failed health checks…), kept until the next one.
    pub last_error: Option<String>,
    /// When the current run started.
    pub started_at: Option<SystemTime>,
    /// How long the current run has lasted (none unless running).
    pub uptime: Option<Duration>,
    /// Restarts made (automatic and manual).
    pub restart_count: u32,
    /// True when `max_restarts` within `window` was used up: no automatic restart until a
    /// manual start.
    pub circuit_open: bool,
    /// Latest health result.
    pub health: HealthStatus,
    /// Failed probes in a row.
    pub consecutive_health_failures: u32,
    /// When health was last probed (the latest report of the health actor).
    pub last_health_check: Option<SystemTime>,
    /// OS process id; none for modules.
    pub pid: Option<u32>,
    /// The program, or `in-proc-module:NAME` for modules.
    pub executable_path: String,
    /// Module details; none for processes.
    pub module: Option<ModuleDiagnostics>,
    /// How the process last ended (processes only).
    pub last_exit: Option<ExitInfo>,
    /// Latest CPU and memory sample (processes only).
    pub resources: Option<ResourceUsage>,
    /// The worker's output file.
    pub log_file: Option<std::path::PathBuf>,
    /// Set once the module was moved to its process form by `quarantine:`.
    pub quarantine: Option<QuarantineStatus>,
    /// What holds its processes together: `cgroup` (everything it starts, `setsid` or not),
    /// `process_group` (where the kernel offers no writable cgroup v2), or `attached`.
    pub containment: Option<&'static str>,
    /// How its log writes fare: failed writes (a full disk), lines kept in memory meanwhile,
    /// lines dropped when that memory was full. Never silent.
    pub log_writes: Option<crate::process::logs::LogWrites>,
    /// Why it is in its state, when the state does not say ("waiting for db (healthy)",
    /// "retry in 3.2s …", "next run …"): the `hsu ls` column.
    pub why: Option<String>,
    /// The supervision group it is a member of.
    pub group: Option<WorkerId>,
    /// Its `schedule:`: next run and counts.
    pub schedule: Option<crate::master::ScheduleStatus>,
    /// Its master-held listening sockets: name and the address bound (`sockets:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketStatus>,
}

/// One listening socket the master holds for a worker.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SocketStatus {
    /// Its name (`LISTEN_FDNAMES`, `ModuleContext::socket`).
    pub name: String,
    /// Where it listens (`127.0.0.1:8080`, `unix:/run/app.sock`).
    pub listen: String,
}

/// Why and since when a module worker runs as its integrated process form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineStatus {
    /// When the move happened.
    pub since: SystemTime,
    /// Panics counted within the window.
    pub panics: u32,
    /// The window.
    pub within: std::time::Duration,
    /// The last panic.
    pub last_panic: String,
    /// The process form's executable.
    pub executable_path: String,
    /// What the worker was before (`native` or `plugin`).
    pub was: Deployment,
}

/// Module-specific diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleDiagnostics {
    /// What the module says about itself.
    pub info: ModuleInfo,
    /// Factory name or plugin path.
    pub module_name: String,
    /// Tasks the module spawned that still run (the design's goroutine count).
    pub tasks: usize,
    /// How long creating and initialising the instance took.
    pub load_time: Duration,
    /// When the current instance was created.
    pub loaded_at: Option<SystemTime>,
    /// A call of this worker's code that is blocking a runtime thread (it overran its limit and
    /// could not be cancelled): which call, and for how long so far.
    pub blocked: Option<BlockedCall>,
}

/// A module call blocking a thread, as diagnostics show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockedCall {
    /// `start`, `stop`, `health check`, ...
    pub call: String,
    /// How long it has blocked so far.
    pub for_ms: u64,
}

pub(crate) use lifecycle::{
    abandon_wait, stop, terminate, wait, waiting_handlers, with_op_lock, LifecycleActor, WorkerCore,
};
