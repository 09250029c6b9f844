//! The YAML configuration: serde types (the reference for every key), loading with errors that
//! name the file, line and field, and validation that reports every problem at once.

mod depends;
pub mod duration;
mod master;
mod paths;
mod process;
mod spec;
mod validate;
mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use depends::{Condition, Dependency, DependsOn, LinePattern};
pub use master::{ApiConfig, LogLevel, MasterConfig};
pub use process::{
    AttachConfig, ByteSize, IntegratedConfig, LimitsConfig, LogsConfig, OnViolation, Signal,
    StopConfig, ValueError,
};
pub use spec::{DependencySpec, DeploymentSpec, ProcessSpec, QuarantineSpec, WorkerSpec};
pub use validate::{validate_config, validate_worker, ValidationIssue};
pub use worker::{
    BackoffConfig, ExecutionConfig, HealthCheckConfig, ModuleType, ProbeType, ProcessType,
    QuarantineConfig, RestartConfig, RestartPolicy, WorkerConfig, WorkerType,
};

use crate::error::ConfigError;

/// A whole config file: `master:` settings and the `workers:` list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsuConfig {
    /// Settings of the master itself.
    pub master: MasterConfig,
    /// The workers. They start concurrently, each once its `depends_on:` conditions are met;
    /// shutdown stops a worker after the workers that depend on it.
    pub workers: Vec<WorkerConfig>,
}

impl HsuConfig {
    /// Reads and parses `path` (shape only; call [`validate_config`] next).
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`] naming the file, line and field.
    /// Relative paths in the file are resolved against the file's directory (see
    /// `config/paths.rs`: only paths the file writes, not defaults).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if let Ok(tree) = serde_yaml::from_str::<serde_yaml::Value>(&text) {
            paths::resolve(&mut config, &paths::base_of(path), &tree);
        }
        Ok(config)
    }

    /// Parses YAML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming the origin, line and field.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e.to_string(),
        })
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
            }])
        })?;
        validate_config(self, factory_known, &packages).map_err(invalid)
    }
}
