//! One `thiserror` enum per layer. Every variant carries the worker id (or the file and field)
//! so that a message read out of context still says what it is about.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hsu_module::ModuleError;

use crate::config::ValidationIssue;
use crate::state::{Lifecycle, WorkerState};
use crate::WorkerId;

/// The broad class of an error, for code that reacts to errors (an API mapping them to status
/// codes, a test asserting what went wrong). New classes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is wrong (config, id, message fields).
    Validation,
    /// The thing exists already.
    Conflict,
    /// No such worker or factory.
    NotFound,
    /// The request does not fit the worker's current state.
    InvalidState,
    /// A call took longer than its limit.
    Timeout,
    /// The module's code returned an error.
    ModuleFailed,
    /// The module's code panicked.
    Panicked,
    /// An actor is gone (the master is shutting down).
    Unavailable,
    /// Valid, but not something this build can do.
    Unsupported,
    /// The OS refused (spawn, file, signal).
    Io,
    /// A start did not happen because of the worker's `depends_on:` (a dependency failed,
    /// the wait timed out or was cancelled).
    Dependency,
}

/// Loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not have the expected shape. `message` names the field; line and column
    /// are 1-based.
    #[error("{}{}: {message}", path.display(), match (line, column) { (Some(l), Some(c)) => format!(":{l}:{c}"), _ => String::new() })]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line of the problem.
        line: Option<usize>,
        /// Column of the problem.
        column: Option<usize>,
        /// serde's description, naming the field.
        message: String,
    },
    /// A `${VAR}` of the file cannot be replaced (each error with its line and column).
    #[error("{}: {}", path.display(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Interpolation {
        /// The file.
        path: PathBuf,
        /// Every one that cannot.
        errors: Vec<crate::config::InterpolationError>,
    },
    /// The YAML parsed, but breaks rules (each issue names its worker and field).
    #[error("{}", Invalid(path.as_ref(), issues))]
    Invalid {
        /// The file, if any.
        path: Option<PathBuf>,
        /// Every problem found.
        issues: Vec<ValidationIssue>,
    },
}

struct Invalid<'a>(Option<&'a PathBuf>, &'a [ValidationIssue]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.0 {
            write!(f, "{}: ", p.display())?;
        }
        write!(f, "{} problem(s):", self.1.len())?;
        for issue in self.1 {
            // `file:line:column:` as compilers write it, so editors can jump there.
            match (self.0, issue.line, issue.column) {
                (Some(p), Some(l), Some(c)) => write!(f, "\n  - {}:{l}:{c}: {issue}", p.display())?,
                (None, Some(l), Some(c)) => write!(f, "\n  - {l}:{c}: {issue}")?,
                _ => write!(f, "\n  - {issue}")?,
            }
        }
        Ok(())
    }
}

/// What a worker actor was doing when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Creating the module instance with its factory.
    Create,
    /// `initialize`.
    Initialize,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `is_healthy` or a probe.
    HealthCheck,
    /// A task the module spawned.
    Task,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Initialize => "initialize",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::HealthCheck => "health check",
            Self::Task => "task",
        })
    }
}

/// An error from one worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The state machine refused the request.
    #[error("worker `{id}`: cannot {event} while {from}")]
    InvalidState {
        /// The worker.
        id: WorkerId,
        /// Its state.
        from: WorkerState,
        /// What was asked.
        event: Lifecycle,
    },
    /// A module call or probe ran over its limit; it was cancelled.
    #[error("worker `{id}`: {op} timed out after {after:?}")]
    Timeout {
        /// The worker.
        id: WorkerId,
        /// The call.
        op: Operation,
        /// The limit.
        after: Duration,
    },
    /// The module returned an error.
    #[error("worker `{id}`: {op} failed")]
    ModuleFailed {
        /// The worker.
        id: WorkerId,
        /// The call.
        op: Operation,
        /// The module's error.
        #[source]
        source: ModuleError,
    },
    /// The module panicked; the panic was contained.
    #[error("worker `{id}`: panicked in {op}: {message}")]
    Panicked {
        /// The worker.
        id: WorkerId,
        /// The call.
        op: Operation,
        /// The panic payload.
        message: String,
    },
    /// The process could not be spawned.
    #[error("worker `{id}`: cannot start `{path}`")]
    Spawn {
        /// The worker.
        id: WorkerId,
        /// The executable.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An unmanaged worker could not attach to its process.
    #[error("worker `{id}`: {reason}")]
    Attach {
        /// The worker.
        id: WorkerId,
        /// What is wrong (PID, pid file); part of this message.
        reason: crate::process::attach::AttachError,
    },
    /// A managed or integrated worker has no `execution` to start.
    #[error("worker `{id}`: no `execution` to start")]
    NoExecution {
        /// The worker.
        id: WorkerId,
    },
    /// A file the worker needs (log, run file) could not be written.
    #[error("worker `{id}`: cannot {what}")]
    Io {
        /// The worker.
        id: WorkerId,
        /// What it was doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An integrated worker never answered its control protocol.
    #[error("worker `{id}`: not ready: {reason}")]
    NotReady {
        /// The worker.
        id: WorkerId,
        /// Why.
        reason: String,
    },
    /// A call ran over its limit and did not end when cancelled: module code is blocking a
    /// worker thread. Further calls are refused until it returns.
    #[error("worker `{id}`: {op}: module code has blocked a worker thread in {blocked} for {after:.1?} (it does not yield, so it cannot be cancelled); calls for this worker are refused until it returns")]
    Blocked {
        /// The worker.
        id: WorkerId,
        /// The call refused (or the one that overran).
        op: Operation,
        /// The call that is blocking.
        blocked: Operation,
        /// How long it has been blocking.
        after: Duration,
    },
    /// The call was cancelled because the worker stopped meanwhile.
    #[error("worker `{id}`: {op} was cancelled")]
    Cancelled {
        /// The worker.
        id: WorkerId,
        /// The call.
        op: Operation,
    },
}

impl WorkerError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidState { .. } => ErrorKind::InvalidState,
            Self::Timeout { .. } | Self::Blocked { .. } => ErrorKind::Timeout,
            Self::ModuleFailed { .. } => ErrorKind::ModuleFailed,
            Self::Panicked { .. } => ErrorKind::Panicked,
            Self::Cancelled { .. } => ErrorKind::Unavailable,
            Self::Spawn { .. } | Self::Io { .. } => ErrorKind::Io,
            Self::Attach { .. } | Self::NoExecution { .. } => ErrorKind::Validation,
            Self::NotReady { .. } => ErrorKind::Timeout,
        }
    }

    /// Module code misbehaved (it panicked, or blocked its thread): the instance is not to be
    /// trusted, the failure counts toward crash quarantine.
    pub fn is_broken_module(&self) -> bool {
        matches!(self, Self::Panicked { .. } | Self::Blocked { .. })
    }

    /// The worker it concerns.
    pub fn worker(&self) -> &WorkerId {
        match self {
            Self::InvalidState { id, .. }
            | Self::Timeout { id, .. }
            | Self::Blocked { id, .. }
            | Self::ModuleFailed { id, .. }
            | Self::Panicked { id, .. }
            | Self::Cancelled { id, .. }
            | Self::Spawn { id, .. }
            | Self::Attach { id, .. }
            | Self::NoExecution { id }
            | Self::Io { id, .. }
            | Self::NotReady { id, .. } => id,
        }
    }
}

/// An error answered by the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The worker config is invalid; each issue names the field.
    #[error("worker `{id}`: invalid config: {}", issues.iter().map(|i| format!("`{}`: {}", i.field, i.message)).collect::<Vec<_>>().join("; "))]
    Validation {
        /// The id as given (it may itself be the problem).
        id: String,
        /// Every problem found.
        issues: Vec<ValidationIssue>,
    },
    /// A worker with this id exists already.
    #[error("worker `{id}` already exists")]
    Conflict {
        /// The id.
        id: WorkerId,
    },
    /// No worker with this id.
    #[error("no worker `{id}`")]
    NotFound {
        /// The id asked for.
        id: WorkerId,
    },
    /// `module_name` names no registered factory.
    #[error("worker `{id}`: no native module factory named `{name}` (registered: {})", if registered.is_empty() { "none".to_string() } else { registered.join(", ") })]
    UnknownFactory {
        /// The worker.
        id: WorkerId,
        /// The name asked for.
        name: String,
        /// The names that exist.
        registered: Vec<String>,
    },
    /// The worker's plugin library cannot be used.
    #[error("worker `{id}`: cannot load its plugin")]
    Plugin {
        /// The worker.
        id: WorkerId,
        /// What is wrong with the library.
        #[source]
        source: crate::plugin::PluginError,
    },
    /// A package could not be installed.
    #[error("cannot install the package at `{}`", source_path.display())]
    Package {
        /// The directory or tarball given.
        source_path: std::path::PathBuf,
        /// Why.
        #[source]
        source: crate::packages::PackageError,
    },
    /// A factory of this name is registered already.
    #[error("a native module factory named `{name}` is already registered")]
    FactoryConflict {
        /// The name.
        name: String,
    },
    /// Valid config, but not something this build runs.
    #[error("worker `{id}`: {what} is not supported by this version of hsu")]
    Unsupported {
        /// The worker.
        id: WorkerId,
        /// What.
        what: String,
    },
    /// The master is shutting down and takes no new workers.
    #[error("worker `{id}`: the master is shutting down")]
    ShuttingDown {
        /// The id of the worker the request would have added, as given.
        id: String,
    },
    /// One of the master's own actors (the registry, the master itself) did not answer: it is
    /// gone, which happens only while the system shuts down.
    #[error("the {actor} did not answer")]
    Unanswered {
        /// Which actor: `registry` or `master`.
        actor: &'static str,
        /// Why.
        #[source]
        source: actix::MailboxError,
    },
    /// Work the master ran off its thread ended before finishing (its runtime is shutting down).
    #[error("{what} was interrupted")]
    Interrupted {
        /// What: `the package install`.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The worker's actor did not answer (it is gone).
    #[error("worker `{id}` did not answer")]
    Mailbox {
        /// The worker.
        id: WorkerId,
        /// Why.
        #[source]
        source: actix::MailboxError,
    },
    /// A start did not happen because of the worker's `depends_on:`.
    #[error("worker `{id}`: {reason}")]
    Dependency {
        /// The worker.
        id: WorkerId,
        /// What it waited for and what happened instead.
        reason: String,
    },
    /// The worker reported an error.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

impl MasterError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Validation { .. } => ErrorKind::Validation,
            Self::Conflict { .. } | Self::FactoryConflict { .. } => ErrorKind::Conflict,
            Self::NotFound { .. } | Self::UnknownFactory { .. } => ErrorKind::NotFound,
            Self::Unsupported { .. } => ErrorKind::Unsupported,
            Self::Package { source, .. } => source.kind(),
            Self::Plugin { source, .. } => match source {
                crate::plugin::PluginError::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Validation,
            },
            Self::ShuttingDown { .. }
            | Self::Mailbox { .. }
            | Self::Unanswered { .. }
            | Self::Interrupted { .. } => ErrorKind::Unavailable,
            Self::Dependency { .. } => ErrorKind::Dependency,
            Self::Worker(e) => e.kind(),
        }
    }
}

pub use hsu_module::error_chain;
