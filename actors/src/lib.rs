//! The hsu engine: configuration, the worker state machine, restart policy, and the actors
//! (master, module workers, health, registry) that run services under one lifecycle.
//!
//! Most applications use it through the `hsu` crate, which re-exports everything here. The
//! public surface is what is re-exported below plus the [`config`] and [`packages`] modules;
//! the actors' internals (process control, the plugin loader, the worker actors) are private,
//! so they can change without breaking anyone.
//!
//! The tree follows the architecture:
//! - pure core: `state` (the one transition function), `restart` (restart decisions),
//!   `window` (the sliding window both restart intensity and quarantine count with), `id`,
//!   `error`;
//! - [`config`]: the YAML's types, durations, validation;
//! - `master/`: `MasterActor`, its messages, supervision, quarantine, limits;
//! - `worker/`: the messages every worker handles, `ModuleWorkerActor`, `ProcessWorkerActor`;
//! - `process/`: what process workers drive (spawn, stop, logs, attach, the integrated
//!   protocol's client, resource sampling);
//! - `health`, `registry`, `plugin/` (the host side of the plugin ABI), [`packages`];
//! - `runtime`: the multi-threaded runtime module code and process I/O run on.
#![warn(missing_docs)]

pub mod config;
mod error;
mod health;
mod id;
mod line_watch;
mod master;
pub mod packages;
mod plugin;
mod preflight;
mod process;
mod registry;
mod restart;
mod runtime;
pub mod schedule;
pub mod sockets;
mod state;
mod window;
mod worker;

pub use config::{HsuConfig, MasterConfig, WorkerConfig, WorkerSpec};
pub use error::{error_chain, ConfigError, ErrorKind, MasterError, Operation, WorkerError};
pub use id::{IdError, WorkerId, MAX_ID_LEN};
pub use master::{
    AddConfigured, AddWorker, AddWorkerSpec, Added, Apply, ApplyReport, GetAllWorkerStates,
    GetGroups, GetWorkerMetrics, GetWorkerState, GetWorkerSummary, GroupState, GroupSummary,
    InstallPackage, ListModuleFactories, MasterActor, RefreshResources, RemoveWorker,
    RestartWorker, SetGroups, Shutdown, ShutdownReport, StartWorker, StopWorker, Subscribe,
    WaitExhausted, WorkerMetrics, WorkerSummary,
};
pub use plugin::{inspect as inspect_plugin, HeaderFacts, PluginError, PluginInfo};
pub use preflight::preflight;
pub use process::attach::AttachError;
pub use process::integrated::{ControlClient, ControlError};
pub use process::leftovers::clean_up as clean_up_run_directory;
pub use process::logs::{tail as worker_log_tail, LogFollower};
pub use process::reaper::{active as reaping_orphans, reaped as orphans_reaped};
pub use process::{ExitInfo, ResourceUsage};
pub use registry::{ListLoadedModules, RegisterNativeModuleFactory};
pub use runtime::WorkerRuntime;
pub use state::{InvalidTransition, Lifecycle, WorkerState};
pub use worker::logs::layer as worker_logs_layer;
pub use worker::{
    Deployment, HealthStatus, ModuleDiagnostics, QuarantineStatus, SocketStatus, WorkerDiagnostics,
    WorkerStateChanged,
};

/// Not API: what the project's own benchmarks measure with (the master's `/proc` reader, the
/// spawn helper, the plugin loader). May change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::plugin::{inspect_bytes, PluginLibrary, PluginModule};
    pub use crate::process::{cgroup, child, run_table, sys};
}
