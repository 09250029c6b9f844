//! Starting a managed child: its own process group, output pipes pumped into its log on the
//! worker runtime, death with the master, and a PID file.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::logs::{pump, LogSink, Stream};
use super::sys;
use crate::config::ExecutionConfig;
use crate::runtime::WorkerRuntime;

/// A started child and the tasks draining its output.
#[derive(Debug)]
pub struct Spawned {
    /// The child; its `wait` is the only place it is reaped.
    pub child: Child,
    /// Its PID, which is also its process group id.
    pub pid: u32,
    /// Pumps of stdout and stderr; they end at EOF.
    pub pumps: Vec<JoinHandle<u64>>,
}

/// Extra settings of one spawn, beside the config's `execution:`.
#[derive(Debug, Default)]
pub struct SpawnExtras {
    /// Appended to the configured args.
    pub args: Vec<String>,
    /// Added to the configured environment.
    pub env: Vec<(String, String)>,
}

/// Spawns `exec` in a new process group, with stdin closed and stdout/stderr piped into
/// `sink`. Must run on a thread that outlives the child (see [`sys::kill_with_parent`]).
///
/// # Errors
/// The OS error of the spawn (not found, permission denied, EMFILE, EAGAIN…), or of resolving
/// `user`.
pub fn spawn(
    exec: &ExecutionConfig,
    extras: SpawnExtras,
    sink: Arc<LogSink>,
    runtime: &WorkerRuntime,
) -> io::Result<Spawned> {
    let mut command = Command::new(&exec.executable_path);
    command
        .args(&exec.args)
        .args(&extras.args)
        .envs(&exec.env)
        .envs(extras.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &exec.working_directory {
        command.current_dir(dir);
    }
    if let Some(user) = &exec.user {
        let (uid, gid) = sys::lookup_user(user)?;
        command.uid(uid).gid(gid);
    }
    sys::kill_with_parent(&mut command);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its PID was read"))?;
    let mut pumps = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        pumps.push(start_pump(
            out.into_owned_fd()?,
            sink.clone(),
            Stream::Stdout,
            runtime,
        ));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(start_pump(
            err.into_owned_fd()?,
            sink,
            Stream::Stderr,
            runtime,
        ));
    }
    Ok(Spawned { child, pid, pumps })
}

/// Moves a pipe to the worker runtime, so a child flooding its output loads those threads and
/// never the master's.
fn start_pump(
    fd: std::os::fd::OwnedFd,
    sink: Arc<LogSink>,
    stream: Stream,
    runtime: &WorkerRuntime,
) -> JoinHandle<u64> {
    runtime.handle().spawn(async move {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => pump(pipe, &sink, stream).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot read worker output");
                0
            }
        }
    })
}

/// `<run_directory>/<id>.<ext>`, written with `content` and removed on drop.
#[derive(Debug)]
pub struct RunFile(PathBuf);

impl RunFile {
    /// Writes the file (creating the directory).
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn write(dir: &Path, id: &str, ext: &str, content: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{id}.{ext}"));
        std::fs::write(&path, format!("{content}\n"))?;
        Ok(Self(path))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
