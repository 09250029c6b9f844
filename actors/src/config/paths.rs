//! Relative paths written in a config file mean the file's directory, as in docker compose and
//! process-compose, whatever directory `hsu` is started from: `executable_path` (when it
//! has a `/`; a bare name is looked up in `PATH`), `working_directory`, a plugin's
//! `module_name`, `attach.pid_file`, a Unix `sockets[].listen`, an exec probe's program (with a `/`), `env_file`, and
//! `master.logs.directory`, `master.run_directory`, `master.packages_directory`,
//! `master.api.token_file`. Only what the file says is resolved: a default (`logs`,
//! `hsu-run`) stays relative to the current directory.

use std::path::{Path, PathBuf};

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

/// Resolves `config`'s relative paths against `base` (the file's directory, absolute).
/// The keys the file wrote (its source map) tell written paths from defaults.
pub(super) fn resolve(config: &mut HsuConfig, base: &Path) {
    let written = |keys: &[&str]| config.source.has(&keys.join("."));
    let (logs, run, packages) = (
        written(&["master", "logs", "directory"]),
        written(&["master", "run_directory"]),
        written(&["master", "packages_directory"]),
    );
    let master = &mut config.master;
    if logs {
        master.logs.directory = join(base, &master.logs.directory);
    }
    if run {
        master.run_directory = join(base, &master.run_directory);
    }
    if packages {
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
        for socket in &mut worker.sockets {
            if let Ok(super::ListenAddress::Unix(path)) =
                super::ListenAddress::parse(&socket.listen)
            {
                if path.is_relative() {
                    socket.listen = format!("unix:{}", join(base, &path).display());
                }
            }
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
