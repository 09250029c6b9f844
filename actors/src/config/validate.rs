//! Checks that need more than serde: type-specific required fields, value ranges, duplicate
//! ids and unknown factories. Every problem is reported, each naming its worker and field.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use hsu_module::ModuleConfig;
use serde::Serialize;

use super::{
    ExecutionConfig, HealthCheckConfig, HsuConfig, MasterConfig, ModuleType, ProcessType,
    RestartConfig, WorkerConfig, WorkerType,
};
use crate::WorkerId;

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationIssue {
    /// The worker it concerns (`workers[3]` when the id itself is unusable), or none for `master:`.
    pub worker: Option<String>,
    /// The YAML path of the field, e.g. `restart.backoff.multiplier`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.worker {
            Some(w) => write!(f, "worker `{w}`: `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

/// A worker config that passed validation, with the master's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Its id.
    pub id: WorkerId,
    /// What runs and how.
    pub kind: WorkerKind,
    /// Supervision (the worker's own `restart:` or the master's).
    pub restart: RestartConfig,
    /// Health polling.
    pub health_check: HealthCheckConfig,
    /// Time limit of a start.
    pub start_timeout: Duration,
    /// Time limit of a stop.
    pub stop_timeout: Duration,
}

/// The type-specific part of a [`WorkerSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerKind {
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
    Process {
        /// Managed, integrated or unmanaged.
        process_type: ProcessType,
        /// What to run (absent only for unmanaged).
        execution: Option<ExecutionConfig>,
        /// The `config:` section.
        config: ModuleConfig,
    },
}

struct Issues<'a> {
    worker: Option<String>,
    out: &'a mut Vec<ValidationIssue>,
}

impl Issues<'_> {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(ValidationIssue {
            worker: self.worker.clone(),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Validates one worker and fills in `master`'s defaults.
///
/// # Errors
/// Every problem found, each naming the worker and field.
pub fn validate_worker(
    config: &WorkerConfig,
    master: &MasterConfig,
) -> Result<WorkerSpec, Vec<ValidationIssue>> {
    let mut out = Vec::new();
    let spec = check_worker(config, master, None, &mut out);
    match spec {
        Some(spec) if out.is_empty() => Ok(spec),
        _ => Err(out),
    }
}

/// Validates a whole file: each worker, the master section, duplicate ids and (for native
/// modules) whether `factory_known` knows the factory name.
///
/// # Errors
/// Every problem found, in file order.
pub fn validate_config(
    config: &HsuConfig,
    factory_known: &dyn Fn(&str) -> bool,
) -> Result<Vec<WorkerSpec>, Vec<ValidationIssue>> {
    let mut out = Vec::new();
    check_restart(
        &config.master.restart,
        "master.restart",
        &mut Issues {
            worker: None,
            out: &mut out,
        },
    );
    for (field, d) in [
        ("master.start_timeout", config.master.start_timeout),
        ("master.stop_timeout", config.master.stop_timeout),
    ] {
        if d.is_zero() {
            out.push(ValidationIssue {
                worker: None,
                field: field.into(),
                message: "must be greater than 0s".into(),
            });
        }
    }
    if config.master.module_threads == Some(0) {
        out.push(ValidationIssue {
            worker: None,
            field: "master.module_threads".into(),
            message: "must be at least 1".into(),
        });
    }
    let mut seen = HashSet::new();
    let mut specs = Vec::new();
    for (index, worker) in config.workers.iter().enumerate() {
        if let Some(spec) = check_worker(worker, &config.master, Some(index), &mut out) {
            if !seen.insert(spec.id.clone()) {
                out.push(ValidationIssue {
                    worker: Some(spec.id.to_string()),
                    field: "id".into(),
                    message: format!(
                        "duplicate id (workers[{index}] repeats an id used earlier in the file)"
                    ),
                });
            }
            if let WorkerKind::Module {
                module_type: ModuleType::Native,
                module_name,
                ..
            } = &spec.kind
            {
                if !factory_known(module_name) {
                    out.push(ValidationIssue {
                        worker: Some(spec.id.to_string()),
                        field: "module_name".into(),
                        message: format!(
                            "no native module factory named `{module_name}` is registered"
                        ),
                    });
                }
            }
            specs.push(spec);
        }
    }
    if out.is_empty() {
        Ok(specs)
    } else {
        Err(out)
    }
}

fn check_worker(
    config: &WorkerConfig,
    master: &MasterConfig,
    index: Option<usize>,
    out: &mut Vec<ValidationIssue>,
) -> Option<WorkerSpec> {
    let before = out.len();
    let id = WorkerId::new(&config.id);
    let mut issues = Issues {
        worker: Some(match (&id, index) {
            (Ok(id), _) => id.to_string(),
            (Err(_), Some(i)) => format!("workers[{i}]"),
            (Err(_), None) => config.id.clone(),
        }),
        out,
    };
    if let Err(message) = &id {
        issues.add("id", message.clone());
    }
    let module_config = ModuleConfig::new(config.config.clone().unwrap_or(serde_yaml::Value::Null));
    let kind = match config.worker_type {
        WorkerType::Module => {
            if config.execution.is_some() {
                issues.add(
                    "execution",
                    "only process workers have `execution`; a module runs inside the master",
                );
            }
            if config.process_type.is_some() {
                issues.add("process_type", "only process workers have `process_type`");
            }
            if config.package.is_some() {
                issues.add(
                    "package",
                    "packages are not supported by this version of hsu",
                );
            }
            let module_type = config.module_type.unwrap_or_default();
            let module_name = config.module_name.clone().unwrap_or_default();
            if module_name.trim().is_empty() {
                issues.add(
                    "module_name",
                    match module_type {
                        ModuleType::Native => "required for module workers: the name of a registered native module factory",
                        ModuleType::Plugin => "required for module workers: the path of the plugin library",
                    },
                );
            }
            Some(WorkerKind::Module {
                module_type,
                module_name,
                config: module_config,
            })
        }
        WorkerType::Process => {
            if config.module_type.is_some() {
                issues.add("module_type", "only module workers have `module_type`");
            }
            if config.module_name.is_some() {
                issues.add("module_name", "only module workers have `module_name`");
            }
            if config.package.is_some() {
                issues.add(
                    "package",
                    "packages are not supported by this version of hsu",
                );
            }
            let process_type = config.process_type.unwrap_or_default();
            match (&config.execution, process_type) {
                (None, ProcessType::Managed | ProcessType::Integrated) => issues.add(
                    "execution.executable_path",
                    "required for managed and integrated process workers",
                ),
                (Some(e), _) if e.executable_path.trim().is_empty() => {
                    issues.add("execution.executable_path", "must not be empty")
                }
                _ => {}
            }
            Some(WorkerKind::Process {
                process_type,
                execution: config.execution.clone(),
                config: module_config,
            })
        }
    };
    let restart = config
        .restart
        .clone()
        .unwrap_or_else(|| master.restart.clone());
    check_restart(&restart, "restart", &mut issues);
    let health_check = config.health_check.clone().unwrap_or_default();
    if health_check.enabled {
        if health_check.interval.is_zero() {
            issues.add("health_check.interval", "must be greater than 0s");
        }
        if health_check.timeout.is_zero() {
            issues.add("health_check.timeout", "must be greater than 0s");
        }
        if health_check.failure_threshold == 0 {
            issues.add("health_check.failure_threshold", "must be at least 1");
        }
    }
    let start_timeout = config.start_timeout.unwrap_or(master.start_timeout);
    let stop_timeout = config.stop_timeout.unwrap_or(master.stop_timeout);
    for (field, d) in [
        ("start_timeout", start_timeout),
        ("stop_timeout", stop_timeout),
    ] {
        if d.is_zero() {
            issues.add(field, "must be greater than 0s");
        }
    }
    if out_len(&issues) != before {
        return None;
    }
    Some(WorkerSpec {
        id: id.ok()?,
        kind: kind?,
        restart,
        health_check,
        start_timeout,
        stop_timeout,
    })
}

fn out_len(issues: &Issues<'_>) -> usize {
    issues.out.len()
}

fn check_restart(restart: &RestartConfig, prefix: &str, issues: &mut Issues<'_>) {
    let b = &restart.backoff;
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        issues.add(
            format!("{prefix}.backoff.multiplier"),
            format!("must be a number of at least 1.0, not {}", b.multiplier),
        );
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        issues.add(
            format!("{prefix}.backoff.jitter"),
            format!("must be a fraction from 0.0 to 1.0, not {}", b.jitter),
        );
    }
    if b.max < b.initial {
        issues.add(
            format!("{prefix}.backoff.max"),
            "must not be smaller than `backoff.initial`",
        );
    }
    if restart.window.is_zero() {
        issues.add(format!("{prefix}.window"), "must be greater than 0s");
    }
}
