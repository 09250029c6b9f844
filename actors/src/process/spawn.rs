//! Starting a managed child: its own process group, output pipes pumped into its log on the
//! worker runtime, death with the master, and a PID file.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::logs::{pump, LogSink, Stream};
use super::sys::{self, PidFd};
use super::ExitInfo;
use crate::config::ExecutionConfig;
use crate::runtime::WorkerRuntime;

/// A started child and the tasks draining its output.
#[derive(Debug)]
pub struct Spawned {
    /// The child; [`reap`] is the only place it is waited for.
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
    /// The worker's `cgroup.procs`: the child joins it between fork and exec.
    pub cgroup: Option<std::ffi::CString>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A few long-lived threads that fork children.
///
/// Why threads of our own: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
/// exits, so the forking thread must live exactly as long as the master (these do: the master
/// and its process workers share one `Arc<Spawner>`, and the threads end when the last of them
/// is gone; the children then die with them). And a spawn
/// blocks its thread until the child has exec'd, so several threads let a thousand spawns
/// overlap instead of queueing behind one another.
pub struct Spawner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Spawner {
    /// Starts `threads` spawner threads.
    ///
    /// # Errors
    /// When the OS refuses a thread.
    pub fn new(threads: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("hsu-spawn-{n}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
        })
    }

    /// Runs `f` on a spawner thread and returns its result.
    ///
    /// # Errors
    /// When the spawner has shut down.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.jobs.lock().ok().and_then(|jobs| {
            jobs.as_ref()
                .map(|j| j.send(Box::new(move || drop(tx.send(f())))))
        });
        let gone = || io::Error::other("the master is shutting down");
        match sent {
            Some(Ok(())) => rx.await.map_err(|_| gone()),
            _ => Err(gone()),
        }
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

/// Spawns `exec` in a new process group, with stdin closed and stdout/stderr piped into
/// `sink`, on a thread of `spawner`; the output pumps run on `runtime`.
///
/// # Errors
/// The OS error of the spawn (not found, permission denied, EMFILE, EAGAIN…), or of resolving
/// `user`.
pub async fn spawn(
    exec: ExecutionConfig,
    extras: SpawnExtras,
    sink: Arc<LogSink>,
    spawner: &Spawner,
    runtime: &WorkerRuntime,
) -> io::Result<Spawned> {
    let (mut child, out, err) = spawner.run(move || start(&exec, extras)).await??;
    let pid = child.id();
    let mut pumps = Vec::with_capacity(2);
    for (fd, stream) in [(out, Stream::Stdout), (err, Stream::Stderr)] {
        if let Some(fd) = fd {
            pumps.push(start_pump(fd, sink.clone(), stream, runtime));
        }
    }
    // std's Child keeps no pipe of ours now; wait() happens only in reap().
    child.stdin = None;
    Ok(Spawned { child, pid, pumps })
}

/// The fork and exec, on a spawner thread.
fn start(
    exec: &ExecutionConfig,
    mut extras: SpawnExtras,
) -> io::Result<(Child, Option<OwnedFd>, Option<OwnedFd>)> {
    let extras_cgroup = extras.cgroup.take();
    let mut command = Command::new(&exec.executable_path);
    let user = exec.user.as_deref().map(sys::lookup_user).transpose()?;
    if let Some(user) = &user {
        // As a login would; the worker's own `env:` still wins.
        command
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell);
    }
    command
        .args(&exec.args)
        .args(&extras.args)
        .envs(&exec.env)
        .envs(extras.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &exec.working_directory {
        // Checked here: a missing directory would otherwise be reported by the spawn as the
        // executable missing.
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("working_directory `{}` is not a directory", dir.display()),
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("working_directory `{}`: {e}", dir.display()),
                ))
            }
        }
        command.current_dir(dir);
    }
    if let Some(procs) = extras_cgroup {
        // First, while still root: cgroup.procs belongs to the master's user.
        sys::join_cgroup(&mut command, procs);
    }
    if let Some(user) = &user {
        // Before the parent-death signal is set: a credential change clears it.
        sys::switch_user(&mut command, user)?;
    }
    sys::kill_with_parent(&mut command);
    let mut child = command.spawn()?;
    // Waited for by `reap` alone: the orphan reaper leaves it alone.
    super::reaper::claim(child.id());
    let out = child.stdout.take().map(OwnedFd::from);
    let err = child.stderr.take().map(OwnedFd::from);
    Ok((child, out, err))
}

/// Waits for `child` to exit and reaps it: the one `wait` on it. Uses a pidfd (an event, no
/// polling) where the kernel has them.
pub async fn reap(mut child: Child) -> ExitInfo {
    let pidfd = PidFd::open(child.id() as i32).ok();
    let info = loop {
        if let Some(fd) = &pidfd {
            if fd.exited().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match child.try_wait() {
            Ok(Some(status)) => break ExitInfo::from_status(status),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "waiting for a child failed");
                break ExitInfo::unknown();
            }
        }
    };
    super::reaper::release(child.id());
    info
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
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
