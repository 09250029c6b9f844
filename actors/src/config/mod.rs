//! The YAML configuration: serde types (the reference for every key), loading with errors that
//! name the file, line and field, and validation that reports every problem at once.

mod depends;
pub mod duration;
mod env_file;
mod group;
mod interpolate;
mod master;
mod paths;
mod process;
mod schema;
pub mod sockets;
mod source;
mod spec;
mod validate;
mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use depends::{Condition, Dependency, DependsOn, LinePattern};
pub use group::{GroupConfig, GroupSpec, OnExhausted, Strategy};
pub use interpolate::{interpolate, InterpolationError};
pub use master::{ApiConfig, LogLevel, MasterConfig};
pub use process::{
    AttachConfig, ByteSize, IntegratedConfig, LimitsConfig, LogsConfig, OnViolation, Signal,
    StopConfig, ValueError,
};
pub use schema::config_schema;
pub use sockets::{ListenAddress, SocketConfig, SocketSpec};
pub use source::{SourceError, SourceMap, MAX_DEPTH};
pub use spec::{DependencySpec, DeploymentSpec, ProcessSpec, QuarantineSpec, WorkerSpec};
pub use validate::{validate_config, validate_groups, validate_worker, ValidationIssue};
pub use worker::{
    BackoffConfig, ExecutionConfig, HealthCheckConfig, ModuleType, ProbeType, ProcessType,
    QuarantineConfig, RestartConfig, RestartPolicy, RestartStrategy, TimeZone, WorkerConfig,
    WorkerType,
};

use crate::error::ConfigError;

/// A whole config file: `master:` settings and the `workers:` list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HsuConfig {
    /// Settings of the master itself.
    pub master: MasterConfig,
    /// The workers. They start concurrently, each once its `depends_on:` conditions are met;
    /// shutdown stops a worker after the workers that depend on it.
    pub workers: Vec<WorkerConfig>,
    /// Supervision groups over the workers (see `config/group.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupConfig>,
    /// Where each key was in the text it was parsed from (for positions in errors).
    #[serde(skip)]
    #[schemars(skip)]
    pub source: SourceMap,
}

impl HsuConfig {
    /// Reads and parses `path` (shape only; call [`validate_config`] next): `${VAR}` in its
    /// values is replaced from the environment first ([`interpolate`]), relative paths it
    /// writes mean its directory (see `config/paths.rs`: only what it writes, not defaults),
    /// and each worker's `env_file:` is read into its `execution.env` (what `env:` sets wins).
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Interpolation`] or [`ConfigError::Parse`] naming
    /// the file, line and column; [`ConfigError::Invalid`] for an `env_file` that cannot be
    /// read.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, Self::parse)
    }

    /// [`Self::load`] for a process that exits when the file is refused (`hsu run`'s launch,
    /// `hsu check`): the shape is parsed on a second thread while this one bounds the nesting
    /// and maps positions, which halves the time to the first worker's start for a large
    /// file. Never in a running master: a deeply nested file would keep that thread busy
    /// after its refusal (libyaml's time is quadratic in the nesting: why it is bounded first).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_beside(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, Self::parse_beside)
    }

    fn load_with(
        path: &Path,
        parse: fn(&str, &Path) -> Result<Self, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = interpolate(&text, &|name| std::env::var(name).ok()).map_err(|errors| {
            ConfigError::Interpolation {
                path: path.to_path_buf(),
                errors,
            }
        })?;
        let mut config = parse(&text, path)?;
        paths::resolve(&mut config, &paths::base_of(path));
        let issues = env_file::load_all(&mut config);
        if !issues.is_empty() {
            return Err(ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                issues: config.located(issues),
            });
        }
        Ok(config)
    }

    /// [`Self::parse`] with serde's parse on a thread of its own (see [`Self::load_beside`]).
    fn parse_beside(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let shared: std::sync::Arc<str> = text.into();
        let (tx, rx) = std::sync::mpsc::channel();
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("hsu-config".into())
            .stack_size(8 << 20)
            .spawn(move || {
                let _ = tx.send(serde_yaml::from_str::<Self>(&theirs));
            });
        if spawned.is_err() {
            return Self::parse(text, origin);
        }
        // A refusal returns at once; the other thread ends with the process.
        let source = SourceMap::of_shared(shared).map_err(|e| source_error(e, origin))?;
        let parsed = rx.recv().map_err(|_| ConfigError::Parse {
            path: origin.to_path_buf(),
            line: None,
            column: None,
            message: "the parse ended without an answer".into(),
        })?;
        let mut config = parsed.map_err(|e| serde_error(&e, origin))?;
        config.source = source;
        // It has sent its answer, so it is ending: joined, the process has one thread again
        // (see `sys::reserve_fds`).
        if let Ok(handle) = spawned {
            let _ = handle.join();
        }
        Ok(config)
    }

    /// Parses YAML text; `origin` names it in errors. No interpolation, no path resolution
    /// (the text is taken as it is: what the control API receives).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the origin, line and column.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let source = SourceMap::of(text).map_err(|e| source_error(e, origin))?;
        let mut config: Self = serde_yaml::from_str(text).map_err(|e| serde_error(&e, origin))?;
        config.source = source;
        Ok(config)
    }

    /// `issues` with the line and column of their field (or of their worker) filled in.
    pub fn located(&self, mut issues: Vec<ValidationIssue>) -> Vec<ValidationIssue> {
        for issue in &mut issues {
            if issue.line.is_some() {
                continue;
            }
            let path = match &issue.worker {
                None => issue.field.clone(),
                Some(worker) => {
                    let index = issue.index.or_else(|| {
                        worker
                            .strip_prefix("workers[")
                            .and_then(|r| r.strip_suffix(']'))
                            .and_then(|i| i.parse::<usize>().ok())
                            .or_else(|| {
                                let mut at = self
                                    .workers
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, w)| w.id == *worker);
                                // A repeated id is reported at its later occurrence.
                                if issue.field == "id" {
                                    at.next_back().map(|(i, _)| i)
                                } else {
                                    at.next().map(|(i, _)| i)
                                }
                            })
                    });
                    match index {
                        Some(i) => format!("workers[{i}].{}", issue.field),
                        None => continue,
                    }
                }
            };
            if let Some((line, column)) = self.source.find(&path) {
                issue.line = Some(line);
                issue.column = Some(column);
            }
        }
        issues
    }

    /// Parses and validates in one go: what `hsu check` and `hsu run` do (see [`Self::validate`]).
    /// `factory_known` answers whether a native module factory name is registered.
    ///
    /// # Errors
    /// The parse error, or every validation problem at once.
    pub fn load_validated(
        path: &Path,
        factory_known: &dyn Fn(&str) -> bool,
    ) -> Result<(Self, Vec<WorkerSpec>), ConfigError> {
        let config = Self::load(path)?;
        let specs = config.validate(factory_known, Some(path))?;
        Ok((config, specs))
    }

    /// Validates the whole file once: reads the installed packages if a worker names one
    /// (the only disk access), then checks every worker purely.
    ///
    /// # Errors
    /// Every validation problem at once; `origin` names the file in the error.
    pub fn validate(
        &self,
        factory_known: &dyn Fn(&str) -> bool,
        origin: Option<&Path>,
    ) -> Result<Vec<WorkerSpec>, ConfigError> {
        let invalid = |issues| ConfigError::Invalid {
            path: origin.map(PathBuf::from),
            issues,
        };
        let packages = crate::packages::PackageIndex::for_config(self).map_err(|e| {
            invalid(vec![ValidationIssue {
                worker: None,
                field: "master.packages_directory".into(),
                message: crate::error_chain(&e),
                line: None,
                column: None,
                index: None,
            }])
        })?;
        validate_config(self, factory_known, &packages)
            .map_err(|issues| invalid(self.located(issues)))
    }
}

fn source_error(e: SourceError, origin: &Path) -> ConfigError {
    ConfigError::Parse {
        path: origin.to_path_buf(),
        line: Some(e.line),
        column: Some(e.column),
        message: e.message,
    }
}

fn serde_error(e: &serde_yaml::Error, origin: &Path) -> ConfigError {
    ConfigError::Parse {
        path: origin.to_path_buf(),
        line: e.location().map(|l| l.line()),
        column: e.location().map(|l| l.column()),
        message: without_position(&e.to_string()),
    }
}

/// serde_yaml's message without its trailing "at line L column C" (the error says it once).
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_string(),
        _ => message.to_string(),
    }
}
