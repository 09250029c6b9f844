//! The hsu engine: configuration, the worker state machine, restart policy, and the actors
//! (master, module workers, health, registry) that run services under one lifecycle.
//!
//! Most applications use it through the `hsu` crate, which re-exports everything here.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod health;
mod id;
pub mod master;
pub mod module_worker;
pub mod packages;
pub mod plugin;
pub mod process;
pub mod process_worker;
pub mod registry;
pub mod resources;
pub mod restart;
pub mod runtime;
pub mod state;
pub mod worker;
pub mod worker_logs;

pub use config::{HsuConfig, MasterConfig, WorkerConfig, WorkerSpec};
pub use error::{ConfigError, ErrorKind, MasterError, WorkerError};
pub use id::WorkerId;
pub use master::{
    AddWorker, GetAllWorkerStates, GetWorkerState, InstallPackage, ListModuleFactories,
    MasterActor, RemoveWorker, RestartWorker, Shutdown, ShutdownReport, StartWorker, StopWorker,
    Subscribe, WorkerSummary,
};
pub use plugin::{PluginError, PluginInfo};
pub use registry::{ListLoadedModules, RegisterNativeModuleFactory};
pub use state::{Lifecycle, WorkerState};
pub use worker::{WorkerDiagnostics, WorkerStateChanged};
