//! cgroup v2 containment of process workers, where the kernel offers a writable cgroup v2
//! hierarchy (detected at run time from `/proc/self/mountinfo`: `/sys/fs/cgroup` on a systemd
//! host with v2 only, `/sys/fs/cgroup/unified` on a hybrid one; see NOTES).
//!
//! Layout: `<the master's own cgroup>/hsu/<pid>.<start time>.<n>/<worker id>` (`n` counts the
//! masters of one process). A child joins its
//! worker's cgroup between fork and exec, so everything it ever starts is a member, `setsid` or
//! double fork included; a stop signals every member and ends with `cgroup.kill`, and a worker
//! is stopped only once its cgroup is empty. No controller is needed for any of that.
//!
//! What a dead master left: its instance cgroup names its pid and start time, so the next
//! master (any master, whatever its run directory) sees that the owner is gone, kills what is
//! still in it and removes it, before starting anything. And a keeper — `/bin/sh` reading a
//! pipe whose other end only the master holds — kills the instance cgroup the moment the
//! master dies, however it dies (SIGKILL included), and removes the cgroups.

use std::ffi::CString;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a kill may take to empty a cgroup.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// The master's cgroups.
#[derive(Debug)]
pub struct Cgroups {
    instance: PathBuf,
    /// An exclusive `flock` on the instance cgroup's directory, held for the master's life: the
    /// sign that its owner is alive, valid across PID namespaces (a pid and start time are not:
    /// a master that is PID 1 of a container names itself `1.…`, and a pid from another
    /// namespace is not in this one's /proc). Released by the kernel however the master ends.
    _alive: Option<std::fs::File>,
    /// The keeper's stdin: when it closes (the master is gone), the keeper cleans up.
    keeper: Option<(Child, std::process::ChildStdin)>,
    /// Worker cgroups to remove, on a thread of their own: removing one may wait (up to
    /// `EMPTY_WAIT`) for what is left in it to die, and a thousand `rmdir`s at shutdown are
    /// tens of milliseconds; neither may hold an actor's thread.
    removals: std::sync::Mutex<Option<std::sync::mpsc::Sender<WorkerCgroup>>>,
    remover: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Cgroups {
    /// Finds a writable cgroup v2 hierarchy, cleans up what dead masters left there, and
    /// creates this master's instance cgroup with its keeper. `None` (with why) where there is
    /// none: process groups are used then. The lines report what was cleaned up.
    pub fn set_up() -> (Option<Self>, Vec<String>) {
        let mut report = Vec::new();
        let Some(base) = own_cgroup_dir() else {
            return (
                None,
                vec!["no cgroup v2 hierarchy mounted; containment by process groups".into()],
            );
        };
        let root = base.join("hsu");
        if let Err(e) = std::fs::create_dir_all(&root) {
            return (
                None,
                vec![format!(
                    "cannot create `{}` ({e}); containment by process groups",
                    root.display()
                )],
            );
        }
        sweep(&root, &mut report);
        let me = std::process::id();
        let start = crate::process::sys::read_stat(me as i32)
            .map(|s| s.start_time)
            .unwrap_or_default();
        static MASTERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MASTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = root.join(format!("{me}.{start}.{n}"));
        if let Err(e) = std::fs::create_dir_all(&instance) {
            report.push(format!(
                "cannot create `{}` ({e}); containment by process groups",
                instance.display()
            ));
            return (None, report);
        }
        let keeper = start_keeper(&instance)
            .map_err(|e| {
                report.push(format!(
                    "no cgroup keeper ({e}): if the master is killed, the next one cleans up"
                ))
            })
            .ok();
        let alive = std::fs::File::open(&instance)
            .and_then(|dir| dir.try_lock().map(|()| dir).map_err(io::Error::other))
            .map_err(|e| {
                report.push(format!(
                    "cannot lock `{}` ({e}): another master may take this one's cgroups for a dead one's",
                    instance.display()
                ))
            })
            .ok();
        (
            Some({
                let (removals, queue) = std::sync::mpsc::channel::<WorkerCgroup>();
                let remover = std::thread::Builder::new()
                    .name("hsu-cgroup-rm".into())
                    .spawn(move || queue.iter().for_each(|c| c.remove()))
                    .ok();
                Self {
                    instance,
                    _alive: alive,
                    keeper,
                    removals: std::sync::Mutex::new(Some(removals)),
                    remover: std::sync::Mutex::new(remover),
                }
            }),
            report,
        )
    }

    /// The instance cgroup.
    pub fn path(&self) -> &Path {
        &self.instance
    }

    /// Removes `cgroup` (killing what is left in it) on the remover thread, or here when there
    /// is none.
    pub fn remove_later(&self, cgroup: WorkerCgroup) {
        let unsent = match self
            .removals
            .lock()
            .ok()
            .as_deref()
            .and_then(Option::as_ref)
        {
            Some(tx) => tx.send(cgroup).err().map(|e| e.0),
            None => Some(cgroup),
        };
        if let Some(cgroup) = unsent {
            cgroup.remove();
        }
    }

    /// The cgroup `name` of a worker (its id, or a successor's own; created if need be, emptied if a run left something).
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn worker(&self, name: &str) -> io::Result<WorkerCgroup> {
        let dir = self.instance.join(name);
        std::fs::create_dir_all(&dir)?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a cgroup path with a NUL byte"))?;
        Ok(WorkerCgroup { dir, procs })
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Pending removals first, then the keeper is told.
        if let Ok(mut tx) = self.removals.lock() {
            tx.take();
        }
        if let Some(remover) = self.remover.lock().ok().and_then(|mut r| r.take()) {
            let _ = remover.join();
        }
        // The keeper cleans up (what is left is killed) and exits; it is reaped off-thread.
        if let Some((mut child, stdin)) = self.keeper.take() {
            drop(stdin);
            std::thread::spawn(move || {
                let _ = child.wait();
                super::reaper::release(child.id());
            });
        }
    }
}

/// One worker's cgroup.
#[derive(Debug, Clone)]
pub struct WorkerCgroup {
    dir: PathBuf,
    procs: CString,
}

impl WorkerCgroup {
    /// `cgroup.procs`, for the child to join between fork and exec.
    pub fn procs_file(&self) -> &CString {
        &self.procs
    }

    /// Its directory, open, for creating a child inside it (`CLONE_INTO_CGROUP`).
    ///
    /// # Errors
    /// When the directory cannot be opened (the cgroup was removed).
    pub fn open_dir(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)
            .map(Into::into)
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<i32> {
        pids_of(&self.dir)
    }

    /// Whether any process is in it (`cgroup.events`).
    pub fn populated(&self) -> bool {
        populated(&self.dir)
    }

    /// Sends `signal` to every member; how many were signalled.
    pub fn signal_all(&self, signal: i32) -> usize {
        self.pids()
            .into_iter()
            .filter(|&pid| crate::process::sys::signal_process(pid, signal).unwrap_or(false))
            .count()
    }

    /// SIGKILLs every member (`cgroup.kill`; signalling each where the kernel lacks it).
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// Kills what is left and removes the cgroup (and the instance cgroup if that was the last).
    pub fn remove(&self) {
        // Tried first: an empty cgroup (the usual case after a stop) goes in one call, without
        // reading `cgroup.events` first; a populated one refuses with EBUSY.
        if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
            return;
        }
        if self.populated() {
            self.kill();
            wait_empty_blocking(&self.dir, EMPTY_WAIT);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The master's own cgroup directory in the cgroup v2 hierarchy, if one is mounted.
fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mount-point options … - fstype source super-options
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let root = fields.get(3)?;
        let point = fields.get(4)?;
        Some((root.to_string(), PathBuf::from(point)))
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    // The mount may show a subtree (a container's namespace): the path is relative to it.
    let (mount_root, point) = mount;
    let relative = path
        .strip_prefix(mount_root.trim_end_matches('/'))
        .unwrap_or(path)
        .trim_start_matches('/');
    let dir = point.join(relative);
    dir.join("cgroup.procs").exists().then_some(dir)
}

fn pids_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(text) => text.lines().any(|l| l.trim() == "populated 1"),
        // Without cgroup.events (an old kernel): members listed here or below.
        Err(_) => !pids_of(dir).is_empty(),
    }
}

fn kill(dir: &Path) {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if written.is_err() {
        for pid in pids_of(dir) {
            let _ = crate::process::sys::signal_process(pid, libc::SIGKILL);
        }
    }
}

fn wait_empty_blocking(dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while populated(dir) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Kills and removes the instance cgroups of masters that are gone.
fn sweep(root: &Path, report: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('.');
        let owner = (|| {
            Some((
                parts.next()?.parse::<i32>().ok()?,
                parts.next()?.parse::<u64>().ok()?,
            ))
        })();
        // Alive: its master holds the directory's lock (any PID namespace), or the pid and
        // start time in its name are a live process here.
        let locked = std::fs::File::open(&path).is_ok_and(|dir| match dir.try_lock() {
            Ok(()) => {
                let _ = dir.unlock();
                false
            }
            Err(_) => true,
        });
        let alive = locked
            || owner.is_some_and(|(pid, start)| {
                crate::process::sys::read_stat(pid).is_ok_and(|s| s.start_time == start)
            });
        if alive || owner.is_none() {
            continue;
        }
        let left: usize = std::fs::read_dir(&path)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| pids_of(&e.path()).len())
                    .sum()
            })
            .unwrap_or(0);
        kill(&path);
        wait_empty_blocking(&path, EMPTY_WAIT);
        if let Ok(children) = std::fs::read_dir(&path) {
            for child in children.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&path);
        if left > 0 {
            report.push(format!(
                "killed {left} process(es) a master that is gone (pid {}) left in `{}`",
                owner.map(|o| o.0).unwrap_or_default(),
                path.display()
            ));
        }
    }
}

/// The keeper: waits for EOF on its stdin (the master's end closes when the master exits, by
/// any means), then kills the instance cgroup and removes it. Outside the instance cgroup, in
/// a process group of its own, not killed with the master.
fn start_keeper(instance: &Path) -> io::Result<(Child, std::process::ChildStdin)> {
    const SCRIPT: &str = r#"read _ignored
echo 1 > "$1/cgroup.kill" 2>/dev/null
n=0
while grep -q 'populated 1' "$1/cgroup.events" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done
for d in "$1"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
rmdir "$1" 2>/dev/null
rmdir "${1%/*}" 2>/dev/null
exit 0"#;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/bin/sh")
        .args(["-c", SCRIPT, "hsu-cgroup-keeper"])
        .arg(instance)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    super::reaper::claim(child.id());
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no keeper pipe"))?;
    Ok((child, stdin))
}
