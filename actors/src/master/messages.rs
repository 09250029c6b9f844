//! The master's public messages: what an embedding application, the CLI or a control API sends
//! to [`super::MasterActor`], and the shapes of their answers.

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::config::{WorkerConfig, WorkerSpec};
use crate::error::MasterError;
use crate::state::WorkerState;
use crate::worker::{Deployment, HealthStatus, WorkerDiagnostics, WorkerStateChanged};
use crate::WorkerId;

/// Adds a worker from its config: validates it (a `package:` is looked up in the installed
/// packages, read off the master's thread), creates its actor and (for modules) the instance,
/// and calls `initialize`. The worker is then `idle`; send [`StartWorker`] with the id this
/// answers to run it.
///
/// # Errors
/// `Validation` naming the field, `Conflict` for a taken id, `UnknownFactory`, or the
/// `initialize` failure (the worker is not added then).
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerId, MasterError>")]
pub struct AddWorker(pub WorkerConfig);

/// Adds a worker that was validated already ([`crate::config::validate_config`] or
/// [`crate::HsuConfig::validate`], against this master's settings): what `hsu run` does after
/// validating the whole file once. Otherwise as [`AddWorker`].
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerId, MasterError>")]
pub struct AddWorkerSpec(pub WorkerSpec);

/// Adds a worker of a config file (what `hsu run` and `apply` do): as [`AddWorkerSpec`], but
/// a worker whose code cannot be had (its plugin does not load) or whose `initialize` fails is
/// added all the same, with the error as its `last_error`: every start of it then fails with
/// that error (`failed_start`, and its restart policy applies), so a configured worker is never
/// silently missing. Other errors (a taken id, a dependency cycle, shutting down) are errors.
#[derive(Debug, Message)]
#[rtype(result = "Result<Added, MasterError>")]
pub struct AddConfigured(pub WorkerSpec);

/// What [`AddConfigured`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// The worker, now in the table.
    pub id: WorkerId,
    /// Why it cannot start (it was kept as failed), if so.
    pub error: Option<String>,
}

/// Stops (if running) and removes a worker.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct RemoveWorker(pub WorkerId);

/// Starts a worker; replies when it runs. A manual start also closes an open restart circuit.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct StartWorker(pub WorkerId);

/// Stops a worker on purpose; replies when it is stopped. Never triggers a restart, and cancels
/// a pending one.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct StopWorker(pub WorkerId);

/// Stops a worker if it runs, then starts it. With `force`, a stop that fails or times out
/// does not prevent the start (the old run's tasks are aborted); without it, the error is
/// returned and no start is made.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct RestartWorker {
    /// The worker.
    pub id: WorkerId,
    /// Start even if the stop fails.
    pub force: bool,
}

/// State and diagnostics of one worker.
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerDiagnostics, MasterError>")]
pub struct GetWorkerState(pub WorkerId);

/// A summary line for every worker, in the order they were added.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerSummary>")]
pub struct GetAllWorkerStates;

/// Stops every worker, then removes them. The stops run concurrently (each within its own
/// timeout, so a slow worker delays no other) and are requested in reverse order of addition.
/// Later requests to add workers are refused. Replies when all are stopped.
#[derive(Debug, Message)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown;

/// Subscribes to every [`WorkerStateChanged`] from now on. The stream is unbounded (no event is
/// dropped) and ends when the master stops; drop the receiver to unsubscribe.
#[derive(Debug, Message)]
#[rtype(result = "mpsc::UnboundedReceiver<WorkerStateChanged>")]
pub struct Subscribe;

/// Names of the registered native module factories.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, MasterError>")]
pub struct ListModuleFactories;

/// One line of [`GetAllWorkerStates`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerSummary {
    /// The worker.
    pub id: WorkerId,
    /// Its deployment.
    pub deployment: Deployment,
    /// Current state.
    pub state: WorkerState,
    /// Restarts made.
    pub restart_count: u32,
    /// Restart budget used up.
    pub circuit_open: bool,
    /// Latest health result.
    pub health: HealthStatus,
    /// Latest error.
    pub last_error: Option<String>,
    /// The OS process while running (process workers).
    pub pid: Option<u32>,
    /// How long the current run has lasted (none unless running).
    pub uptime: Option<std::time::Duration>,
    /// Latest CPU and memory sample while running (processes).
    pub resources: Option<crate::process::ResourceUsage>,
    /// Why the worker is in its state, when the state alone does not say: "retry in 3.2s
    /// (2/5 in 1m)", "circuit open (5 restarts in 1m)", "quarantined (3 panics in 10m)".
    pub why: Option<String>,
    /// When the current run started (none unless running).
    pub started_at: Option<std::time::SystemTime>,
    /// Failed health probes since the worker was added (a counter, for metrics).
    pub health_failures_total: u64,
    /// Moved to its process form by `quarantine:`.
    pub quarantined: bool,
    /// How its process last ended (processes).
    pub last_exit: Option<crate::process::ExitInfo>,
    /// The supervision group it is a member of.
    pub group: Option<WorkerId>,
    /// Its `schedule:`: next run and counts.
    pub schedule: Option<super::ScheduleStatus>,
}

/// What [`Shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShutdownReport {
    /// Workers stopped and removed.
    pub stopped: Vec<WorkerId>,
    /// Workers whose stop failed (they were removed anyway), with the error.
    pub errors: Vec<(WorkerId, String)>,
}

/// Installs a package (a directory or a `.tar`/`.tar.gz` with a `package.yaml`) under the
/// master's `packages_directory`, verifying every file's sha256; atomic. Replies with what was
/// installed. The file work runs off the master's thread.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::packages::InstalledPackage, MasterError>")]
pub struct InstallPackage(pub std::path::PathBuf);

/// What `/metrics` needs from the workers themselves, beside the master's records: every worker
/// is asked (concurrently), in table order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerMetrics>")]
pub struct GetWorkerMetrics;

/// One worker's answer to [`GetWorkerMetrics`].
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// The worker.
    pub id: WorkerId,
    /// A module's live tasks (its spawned tasks still running); none for processes.
    pub module_tasks: Option<usize>,
    /// A module call blocking a runtime thread.
    pub blocked: bool,
    /// How its log writes fare (write errors, lines kept and dropped).
    pub log_writes: Option<crate::process::logs::LogWrites>,
    /// `cgroup`, `process_group` or `attached` (processes).
    pub containment: Option<&'static str>,
}

/// The [`WorkerSummary`] of one worker (what `hsu ls` shows for it), from the master's records
/// alone: no worker is asked.
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerSummary, MasterError>")]
pub struct GetWorkerSummary(pub WorkerId);
