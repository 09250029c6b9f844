//! The installed packages as one snapshot, read from disk once, and resolving a worker's
//! `package:` against it. Resolution is pure, so validation can use it without touching the
//! disk (the master reads the index off its thread; the CLI before validating).

use std::path::{Path, PathBuf};

use super::manifest::version_key;
use super::{list, InstalledPackage, PackageError};
use crate::config::{ExecutionConfig, ModuleType, ProcessType, WorkerConfig, WorkerType};

/// Every package installed under one root, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackageIndex {
    root: PathBuf,
    installed: Vec<InstalledPackage>,
}

impl PackageIndex {
    /// Reads what is installed under `root` (a missing root is an empty index).
    ///
    /// # Errors
    /// When the root cannot be listed.
    pub fn load(root: &Path) -> Result<Self, PackageError> {
        Ok(Self {
            root: root.to_path_buf(),
            installed: list(root)?,
        })
    }

    /// What validating `config` needs: the index of `master.packages_directory` if a worker
    /// names a `package:`, else an empty one (no disk access).
    ///
    /// # Errors
    /// When the packages directory cannot be listed.
    pub fn for_config(config: &crate::config::HsuConfig) -> Result<Self, PackageError> {
        let root = &config.master.packages_directory;
        if config.workers.iter().any(|w| w.package.is_some()) {
            Self::load(root)
        } else {
            Ok(Self::empty(root))
        }
    }

    /// An index with nothing installed, for configs that name no package.
    pub fn empty(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            installed: Vec::new(),
        }
    }

    /// Every package, by name then version.
    pub fn installed(&self) -> &[InstalledPackage] {
        &self.installed
    }

    /// The package `wanted` (`name:version`, or `name` for the newest version).
    ///
    /// # Errors
    /// [`PackageError::NotInstalled`] listing what is installed.
    pub fn find(&self, wanted: &str) -> Result<&InstalledPackage, PackageError> {
        let (name, version) = match wanted.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (wanted.trim(), None),
        };
        self.installed
            .iter()
            .filter(|p| p.manifest.name == name && version.is_none_or(|v| p.manifest.version == v))
            .max_by_key(|p| version_key(&p.manifest.version))
            .ok_or_else(|| PackageError::NotInstalled {
                wanted: wanted.to_string(),
                root: self.root.clone(),
                installed: self.installed.iter().map(|p| p.manifest.id()).collect(),
            })
    }

    /// Fills in what a worker's `package:` provides: for a process worker `execution` (the
    /// package's executable and args), for a module worker `module_type: plugin` and `module_name`
    /// (the library), and for a module worker with `quarantine:` also its process form. Workers
    /// without `package:` are returned unchanged.
    ///
    /// # Errors
    /// The package is not installed, does not support the worker's type, or the worker also gives
    /// the field the package provides.
    pub fn resolve(&self, config: &WorkerConfig) -> Result<WorkerConfig, PackageError> {
        let Some(wanted) = &config.package else {
            return Ok(config.clone());
        };
        let package = self.find(wanted)?;
        let m = &package.manifest;
        let unsupported = || PackageError::UnsupportedType {
            package: m.id(),
            wanted: match config.worker_type {
                WorkerType::Process => "process".into(),
                WorkerType::Module => "module".into(),
            },
            supported: m
                .supported_types
                .iter()
                .map(|t| match t {
                    WorkerType::Process => "process",
                    WorkerType::Module => "module",
                })
                .collect::<Vec<_>>()
                .join(" and "),
        };
        let supports = |t: WorkerType| m.supported_types.contains(&t);
        let process_form = || {
            m.process.as_ref().map(|p| ExecutionConfig {
                executable_path: package.path.join(&p.executable_path).display().to_string(),
                args: p.args.clone(),
                ..ExecutionConfig::default()
            })
        };
        let mut out = config.clone();
        match config.worker_type {
            WorkerType::Process => {
                if !supports(WorkerType::Process) {
                    return Err(unsupported());
                }
                if config.execution.is_some() {
                    return Err(PackageError::Ambiguous {
                        field: "`execution`",
                    });
                }
                if config.process_type == Some(ProcessType::Unmanaged) {
                    return Err(unsupported());
                }
                out.execution = process_form();
            }
            WorkerType::Module => {
                if !supports(WorkerType::Module) {
                    return Err(unsupported());
                }
                if config.module_name.is_some() || config.module_type == Some(ModuleType::Native) {
                    return Err(PackageError::Ambiguous {
                        field: "the plugin library (`module_type: plugin`, `module_name`)",
                    });
                }
                let module = m.module.as_ref().ok_or_else(unsupported)?;
                out.module_type = Some(ModuleType::Plugin);
                out.module_name =
                    Some(package.path.join(&module.module_path).display().to_string());
                if config.quarantine.is_some()
                    && config.execution.is_none()
                    && supports(WorkerType::Process)
                {
                    out.execution = process_form();
                }
            }
        }
        if out.health_check.is_none() {
            out.health_check = m.health_check.clone();
        }
        out.package = None;
        Ok(out)
    }
}
