//! What `hsu check` adds to validation: the facts of this machine a config relies on, checked
//! without running anything. Programs exist and are executable, working directories exist,
//! users exist, plugin files are shared libraries with a compatible header (read from the file,
//! not loaded: loading runs code), and a native module's `config:` passes its factory's check.
//! Validation ([`crate::config::validate_config`]) stays pure; this reads the disk.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hsu_module::ModuleFactory;

use crate::config::{
    DeploymentSpec, ExecutionConfig, ModuleType, ProbeType, ValidationIssue, WorkerSpec,
};

/// Every problem of `specs` that the machine shows, each naming the worker and field.
/// `factory_of` gives the native module factory of a name (for its `config:` check).
pub fn preflight(
    specs: &[WorkerSpec],
    factory_of: &dyn Fn(&str) -> Option<ModuleFactory>,
) -> Vec<ValidationIssue> {
    let mut out = Vec::new();
    // A thousand workers of one program ask the disk once.
    let mut facts = Facts::default();
    for spec in specs {
        let mut issue = |field: &str, message: String| {
            out.push(ValidationIssue {
                worker: Some(spec.id.to_string()),
                field: field.to_string(),
                message,
                line: None,
                column: None,
                index: None,
            })
        };
        match &spec.deployment {
            DeploymentSpec::Module {
                module_type: ModuleType::Native,
                module_name,
                config,
            } => {
                if let Some(Err(e)) = factory_of(module_name).map(|f| f.validate(config)) {
                    issue("config", format!("module `{module_name}` refuses it: {e}"));
                }
            }
            DeploymentSpec::Module {
                module_type: ModuleType::Plugin,
                module_name,
                ..
            } => {
                if let Err(e) = crate::plugin::inspect(Path::new(module_name)) {
                    issue("module_name", e.to_string());
                }
            }
            DeploymentSpec::Process(process) => {
                if let Some(exec) = &process.execution {
                    check_execution(exec, &mut facts, &mut issue);
                }
            }
        }
        if let Some(q) = &spec.quarantine {
            if let Some(exec) = &q.process.execution {
                check_execution(exec, &mut facts, &mut issue);
            }
        }
        let probe = spec
            .health_check
            .probe
            .unwrap_or_else(|| spec.deployment.default_probe());
        if spec.health_check.enabled && probe == ProbeType::Exec {
            if let Some(program) = spec.health_check.command.first() {
                if let Err(e) = facts.program(program, None) {
                    issue("health_check.command", e);
                }
            }
        }
    }
    out
}

/// What one preflight found on the disk, by what it asked.
#[derive(Default)]
struct Facts {
    programs: HashMap<(String, Option<String>), Result<(), String>>,
    directories: HashMap<PathBuf, Result<(), String>>,
    users: HashMap<String, Result<(), String>>,
}

impl Facts {
    fn program(&mut self, program: &str, path: Option<&str>) -> Result<(), String> {
        let key = (program.to_string(), path.map(str::to_string));
        self.programs
            .entry(key)
            .or_insert_with(|| find_program(program, path))
            .clone()
    }

    fn directory(&mut self, dir: &Path) -> Result<(), String> {
        self.directories
            .entry(dir.to_path_buf())
            .or_insert_with(|| match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
                Err(e) => Err(format!("`{}`: {}", dir.display(), describe(&e))),
            })
            .clone()
    }

    fn user(&mut self, user: &str) -> Result<(), String> {
        self.users
            .entry(user.to_string())
            .or_insert_with(|| match crate::process::sys::lookup_user(user) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("no user `{user}` on this machine"))
                }
                Err(e) => Err(format!("cannot look up `{user}`: {e}")),
            })
            .clone()
    }
}

fn check_execution(
    exec: &ExecutionConfig,
    facts: &mut Facts,
    issue: &mut impl FnMut(&str, String),
) {
    if let Some(dir) = &exec.working_directory {
        if let Err(e) = facts.directory(dir) {
            issue("execution.working_directory", e);
        }
    }
    if let Err(e) = facts.program(
        &exec.executable_path,
        exec.env.get("PATH").map(String::as_str),
    ) {
        issue("execution.executable_path", e);
    }
    if let Some(user) = &exec.user {
        if let Err(e) = facts.user(user) {
            issue("execution.user", e);
        }
    }
}

/// A program as `exec` would find it: a path (with a `/`) must be an executable file; a bare
/// name must be one in `PATH` (the worker's own, else the master's).
fn find_program(program: &str, path: Option<&str>) -> Result<(), String> {
    if program.contains('/') {
        return executable(Path::new(program)).map_err(|e| format!("`{program}`: {e}"));
    }
    let search = path
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    if search
        .split(':')
        .filter(|d| !d.is_empty())
        .any(|dir| executable(&Path::new(dir).join(program)).is_ok())
    {
        Ok(())
    } else {
        Err(format!(
            "no executable `{program}` in PATH ({search}); give its full path"
        ))
    }
}

fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| describe(&e))?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(format!("not executable (mode {:o})", mode & 0o7777));
    }
    Ok(())
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
