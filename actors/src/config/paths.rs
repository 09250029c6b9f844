//! Relative paths written in a config file mean the file's directory, as in docker compose and
//! process-compose, whatever directory `hsu` is started from: `executable_path` (when it
//! has a `/`; a bare name is looked up in `PATH`), `working_directory`, a plugin's
//! `module_name`, `attach.pid_file`, an exec probe's program (with a `/`), `env_file`, and
//! `master.logs.directory`, `master.run_directory`, `master.packages_directory`,
//! `master.api.token_file`. Only what the file says is resolved: a default (`logs`,
//! `hsu-run`) stays relative to the current directory.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::{HsuConfig, ModuleType, WorkerType};

fn join(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        // `./x` is `x`; `..` is kept (a symlinked directory makes it not lexical).
        let rest: PathBuf = path
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        base.join(rest)
    }
}

fn join_program(base: &Path, program: &mut String) {
    if program.contains('/') && !Path::new(program.as_str()).is_absolute() {
        *program = join(base, Path::new(program.as_str()))
            .display()
            .to_string();
    }
}

fn written(tree: &Value, keys: &[&str]) -> bool {
    let mut at = tree;
    for key in keys {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    !at.is_null()
}

/// Resolves `config`'s relative paths against `base` (the file's directory, absolute).
/// `tree` is the same text parsed as plain YAML, to tell written keys from defaults.
pub(super) fn resolve(config: &mut HsuConfig, base: &Path, tree: &Value) {
    let master = &mut config.master;
    if written(tree, &["master", "logs", "directory"]) {
        master.logs.directory = join(base, &master.logs.directory);
    }
    if written(tree, &["master", "run_directory"]) {
        master.run_directory = join(base, &master.run_directory);
    }
    if written(tree, &["master", "packages_directory"]) {
        master.packages_directory = join(base, &master.packages_directory);
    }
    if let Some(token) = &mut master.api.token_file {
        *token = join(base, token);
    }
    for worker in &mut config.workers {
        if let Some(exec) = &mut worker.execution {
            join_program(base, &mut exec.executable_path);
            if let Some(dir) = &mut exec.working_directory {
                *dir = join(base, dir);
            }
        }
        if worker.worker_type == WorkerType::Module
            && worker.module_type == Some(ModuleType::Plugin)
        {
            if let Some(name) = &mut worker.module_name {
                *name = join(base, Path::new(name.as_str())).display().to_string();
            }
        }
        for file in &mut worker.env_file {
            *file = join(base, file);
        }
        if let Some(pid_file) = worker.attach.as_mut().and_then(|a| a.pid_file.as_mut()) {
            *pid_file = join(base, pid_file);
        }
        if let Some(program) = worker
            .health_check
            .as_mut()
            .and_then(|h| h.command.first_mut())
        {
            join_program(base, program);
        }
    }
}

/// The absolute directory of a config file.
pub(super) fn base_of(path: &Path) -> PathBuf {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}
