//! Starting a managed child: what it runs with (program found on `PATH`, environment,
//! user, cgroup), output pipes pumped into its log on the worker runtime, and a PID file. The
//! fork and exec themselves are in `child.rs`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;

use std::process::ExitStatus;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::cgroup::WorkerCgroup;
use super::child::{self, CgroupTarget, Plan, Started};
use super::logs::LogSink;
use super::sys::{self, PidFd};
use super::ExitInfo;
use crate::config::ExecutionConfig;

/// A child of the master's own: its PID and a pidfd on it. [`reap`] is the only place it is
/// waited for.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    pidfd: Option<PidFd>,
}

/// A started child and its output pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The child.
    pub child: Child,
    /// Its PID, which is also its process group id.
    pub pid: u32,
    /// Its stdout and stderr, to pump into its log ([`Output::pump`]).
    pub output: Output,
    /// Whether it was created inside its cgroup (rather than moved in after the fork).
    pub created_in_cgroup: bool,
}

/// Extra settings of one spawn, beside the config's `execution:`.
#[derive(Debug, Default)]
pub struct SpawnExtras {
    /// Appended to the configured args.
    pub args: Vec<String>,
    /// Added to the configured environment.
    pub env: Vec<(String, String)>,
    /// The worker's cgroup: the child is created in it.
    pub cgroup: Option<WorkerCgroup>,
    /// Its master-held listening sockets, handed over as systemd does (`LISTEN_FDS`).
    pub sockets: Vec<Arc<crate::sockets::HeldSocket>>,
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

/// Spawns `exec` in a new process group (and in its cgroup), with stdin on /dev/null and
/// stdout/stderr piped (for [`Output::pump`] into `sink`), on a thread of `spawner`.
///
/// # Errors
/// The OS error of the spawn (not found, permission denied, EMFILE, EAGAIN…) naming the step
/// that failed, or of resolving `user`.
pub async fn spawn(
    exec: ExecutionConfig,
    extras: SpawnExtras,
    sink: Arc<LogSink>,
    spawner: &Spawner,
) -> io::Result<Spawned> {
    let (started, out, err) = spawner.run(move || start(&exec, extras)).await??;
    let pid = started.pid;
    Ok(Spawned {
        child: Child {
            pid,
            pidfd: started.pidfd,
        },
        pid,
        output: Output { out, err, sink },
        created_in_cgroup: started.created_in_cgroup,
    })
}

/// Prepares the child's plan and forks it, on a spawner thread.
fn start(exec: &ExecutionConfig, extras: SpawnExtras) -> io::Result<(Started, OwnedFd, OwnedFd)> {
    let user = exec.user.as_deref().map(sys::lookup_user).transpose()?;
    let mut env = Environment::inherited();
    // What systemd handed to the master is the master's: a worker gets only its own sockets,
    // and never the master's notify socket or watchdog.
    for key in INHERITED_PROTOCOL {
        env.remove(key);
    }
    if let Some(user) = &user {
        // As a login would; the worker's own `env:` still wins.
        env.set("HOME", &user.home);
        env.set("USER", &user.name);
        env.set("LOGNAME", &user.name);
        env.set("SHELL", &user.shell);
    }
    for (k, v) in exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
        env.set(k, v);
    }
    for (k, v) in &extras.env {
        env.set(k, v);
    }
    let listen = if extras.sockets.is_empty() {
        Vec::new()
    } else {
        let names: Vec<&str> = extras
            .sockets
            .iter()
            .map(|s| s.spec.name.as_str())
            .collect();
        env.set("LISTEN_FDS", &names.len().to_string());
        env.set("LISTEN_FDNAMES", &names.join(":"));
        // LISTEN_PID is added by the child, which alone knows its PID before it execs.
        env.remove("LISTEN_PID");
        let fds: Vec<_> = extras.sockets.iter().map(|s| s.fd()).collect();
        child::listen_copies(&fds)?
    };
    let cwd = match &exec.working_directory {
        Some(dir) => {
            // Checked here: a clear error naming the directory.
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
            Some(c_string(dir.as_os_str().as_bytes(), "working_directory")?)
        }
        None => None,
    };
    let programs = candidates(&exec.executable_path, env.get("PATH"))?;
    let mut argv = Vec::with_capacity(1 + exec.args.len() + extras.args.len());
    argv.push(c_string(
        exec.executable_path.as_bytes(),
        "executable_path",
    )?);
    for arg in exec.args.iter().chain(&extras.args) {
        argv.push(c_string(arg.as_bytes(), "args")?);
    }
    let cgroup = extras.cgroup.as_ref().map(|c| CgroupTarget {
        dir: c.dir_fd(),
        procs: c.procs_file().clone(),
    });
    let credentials = match &user {
        Some(user) => sys::credentials_for(user)?,
        None => None,
    };
    let stdin = std::fs::File::open("/dev/null").map(OwnedFd::from)?;
    let (out_read, out_write) = child::pipe()?;
    let (err_read, err_write) = child::pipe()?;
    let plan = Plan {
        programs,
        program: exec.executable_path.clone(),
        argv,
        envp: env.into_envp()?,
        cwd,
        stdio: [child::above_stdio(stdin)?, out_write, err_write],
        cgroup,
        user: credentials,
        nofile: sys::original_nofile(),
        listen,
    };
    let started = child::spawn(&plan)?;
    drop(plan);
    Ok((started, sys::kept_high(out_read), sys::kept_high(err_read)))
}

fn c_string(bytes: &[u8], field: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{field} contains a NUL byte"),
        )
    })
}

/// What to exec for `program`: itself when it names a path (it has a `/`), else every
/// existing `PATH` entry of that name, in order (`execvp`'s search, done before the fork;
/// `PATH` is the child's own when its environment sets one).
fn candidates(program: &str, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "executable_path is empty",
        ));
    }
    if program.contains('/') {
        return Ok(vec![c_string(program.as_bytes(), "executable_path")?]);
    }
    let path = path.unwrap_or_else(|| OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut found = Vec::new();
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(program.as_bytes());
        if std::fs::metadata(OsStr::from_bytes(&full)).is_ok_and(|m| !m.is_dir()) {
            found.push(c_string(&full, "executable_path")?);
        }
    }
    Ok(found)
}

/// Variables of systemd's protocols that describe the master, not its workers.
const INHERITED_PROTOCOL: [&str; 6] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
];

/// A child's environment: the master's, then what the worker sets (later settings win, the
/// master's order kept).
struct Environment {
    vars: Vec<(OsString, OsString)>,
}

impl Environment {
    fn inherited() -> Self {
        Self {
            vars: std::env::vars_os().collect(),
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.into(),
            None => self.vars.push((key.into(), value.into())),
        }
    }

    fn remove(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }

    fn get(&self, key: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    fn into_envp(self) -> io::Result<Vec<CString>> {
        self.vars
            .into_iter()
            .map(|(k, v)| {
                let key = k.to_string_lossy().into_owned();
                if k.is_empty() || k.as_bytes().contains(&b'=') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("environment variable name `{key}` is empty or contains `=`"),
                    ));
                }
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                c_string(&entry, &format!("environment variable `{key}`"))
            })
            .collect()
    }
}

/// Waits for `child` to exit and reaps it: the one `wait` on it. Waits on its pidfd (an event,
/// no polling) where the kernel has them.
pub async fn reap(child: Child) -> ExitInfo {
    let info = loop {
        match &child.pidfd {
            // The timer boxed: only where there is no pidfd (or it failed) does a reap poll,
            // and a timer kept in every child's task was ~100 bytes a worker.
            Some(fd) => {
                if fd.exited().await.is_err() {
                    Box::pin(tokio::time::sleep(Duration::from_millis(20))).await;
                }
            }
            None => Box::pin(tokio::time::sleep(Duration::from_millis(20))).await,
        }
        match sys::try_wait(child.pid) {
            Ok(Some(status)) => break ExitInfo::from_status(ExitStatus::from_raw(status)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "waiting for a child failed");
                break ExitInfo::unknown();
            }
        }
    };
    super::reaper::release(child.pid);
    info
}

/// A child's two output pipes and the log they go to.
#[derive(Debug)]
pub struct Output {
    out: OwnedFd,
    err: OwnedFd,
    sink: Arc<LogSink>,
}

impl Output {
    /// Pumps both pipes into the log until both are at EOF; the lines it read. Polled by the
    /// task that reaps the child, on the worker runtime (so a child flooding its output loads
    /// those threads and never the master's): one task a child, not one per pipe and one to
    /// reap (each task was 0.5-0.9 KB more per worker, and one more to end at every stop).
    pub async fn pump(self) -> u64 {
        let open = |fd: OwnedFd| match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                tracing::error!(error = %e, "cannot read worker output");
                None
            }
        };
        let (stdout, stderr) = (open(self.out), open(self.err));
        super::logs::pump_both(stdout, stderr, &self.sink).await
    }
}
