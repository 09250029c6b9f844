//! What validation produces: a worker's config with every default filled in and every rule
//! checked. The master and the worker actors run from these, never from raw configs.

use std::time::Duration;

use hsu_module::ModuleConfig;

use super::{
    AttachConfig, ExecutionConfig, HealthCheckConfig, IntegratedConfig, LimitsConfig, ModuleType,
    ProbeType, ProcessType, RestartConfig, StopConfig,
};
use crate::WorkerId;

/// A worker config that passed validation, with the master's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Its id.
    pub id: WorkerId,
    /// What runs and how.
    pub deployment: DeploymentSpec,
    /// Supervision (the worker's own `restart:` or the master's).
    pub restart: RestartConfig,
    /// Health polling.
    pub health_check: HealthCheckConfig,
    /// Time limit of a start.
    pub start_timeout: Duration,
    /// Time limit of a stop.
    pub stop_timeout: Duration,
    /// Module workers with `quarantine:`: when and to what process form to move.
    pub quarantine: Option<QuarantineSpec>,
    /// What must be reached before it starts, in id order.
    pub depends_on: Vec<DependencySpec>,
    /// When it is started, if it runs on a schedule.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Listening sockets the master holds for it, in the order written.
    pub sockets: Vec<super::SocketSpec>,
    /// Started by `hsu run` and `apply` (`enabled:`); a disabled one only by hand.
    pub enabled: bool,
}

/// A validated `depends_on:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencySpec {
    /// The worker depended on.
    pub id: WorkerId,
    /// What it must reach.
    pub condition: super::Condition,
    /// `log_line:` compiled.
    pub pattern: Option<super::LinePattern>,
    /// How long to wait at most.
    pub timeout: Option<Duration>,
}

impl DependencySpec {
    /// `id (condition)`, as waiting reasons name it.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.id, self.condition)
    }
}

/// A validated `quarantine:` with the process form it moves the module to.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineSpec {
    /// Panics that trigger the move.
    pub after_panics: u32,
    /// Window in which panics are counted.
    pub within: Duration,
    /// The module as an integrated process: the worker's `execution:` and `config:`.
    pub process: std::sync::Arc<ProcessSpec>,
}

/// The deployment-specific part of a [`WorkerSpec`]: what runs, in the master or as a
/// process ([`DeploymentSpec::deployment`] names it).
#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentSpec {
    /// Runs inside the master.
    Module {
        /// Native or plugin.
        module_type: ModuleType,
        /// Factory name or library path.
        module_name: String,
        /// The `config:` section for `initialize`.
        config: ModuleConfig,
    },
    /// An OS process.
    Process(std::sync::Arc<ProcessSpec>),
}

impl DeploymentSpec {
    /// The one name of this deployment.
    pub fn deployment(&self) -> crate::Deployment {
        match self {
            Self::Module { module_type, .. } => crate::Deployment::from(*module_type),
            Self::Process(p) => crate::Deployment::from(p.process_type),
        }
    }

    /// The probe a health check uses when `health_check.type` is not given.
    pub fn default_probe(&self) -> ProbeType {
        match self {
            Self::Module { .. } => ProbeType::Module,
            Self::Process(p) if p.process_type == ProcessType::Integrated => ProbeType::Ping,
            Self::Process(_) => ProbeType::Process,
        }
    }
}

/// A validated process worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// Managed, integrated or unmanaged.
    pub process_type: ProcessType,
    /// What to run (absent only for unmanaged).
    pub execution: Option<ExecutionConfig>,
    /// The `config:` section (passed to integrated workers as `HSU_CONFIG`).
    pub config: ModuleConfig,
    /// Stop signal and grace period.
    pub stop: StopConfig,
    /// Unmanaged: the process to attach to.
    pub attach: Option<AttachConfig>,
    /// Integrated: protocol settings.
    pub integrated: IntegratedConfig,
    /// Resource limits.
    pub limits: Option<LimitsConfig>,
}
