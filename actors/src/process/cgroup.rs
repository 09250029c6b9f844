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

use std::ffi::{CStr, CString};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sys;

/// How long a kill may take to empty a cgroup.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// The master's cgroups.
#[derive(Debug)]
pub struct Cgroups {
    instance: PathBuf,
    /// The instance cgroup's directory, open: worker cgroups are created, read and removed
    /// relative to it (and to their own open directories), never by walking their paths, since
    /// every open of a path on the cgroup file system takes the lock that each `rmdir` holds,
    /// which at a thousand workers stopping at once was a sixth of the stop.
    dir: Arc<OwnedFd>,
    /// An exclusive `flock` on the instance cgroup's directory, held for the master's life: the
    /// sign that its owner is alive, valid across PID namespaces (a pid and start time are not:
    /// a master that is PID 1 of a container names itself `1.…`, and a pid from another
    /// namespace is not in this one's /proc). Released by the kernel however the master ends.
    _alive: Option<std::fs::File>,
    /// The keeper's stdin: when it closes (the master is gone), the keeper cleans up.
    keeper: std::sync::Mutex<Option<(Child, std::process::ChildStdin)>>,
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
        let start = sys::read_stat(me as i32)
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
        let dir = match open_dir(&instance) {
            Ok(dir) => Arc::new(dir),
            Err(e) => {
                report.push(format!(
                    "cannot open `{}` ({e}); containment by process groups",
                    instance.display()
                ));
                let _ = std::fs::remove_dir(&instance);
                return (None, report);
            }
        };
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
                    dir,
                    _alive: alive,
                    keeper: std::sync::Mutex::new(keeper),
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

    /// The cgroup `name` of a worker (its id, or a successor's own; created if need be), and
    /// whether it was created now: then it has no members, and its first spawn need not read
    /// `cgroup.events` to learn so (one found there is emptied by the spawn).
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn worker(&self, name: &str) -> io::Result<(WorkerCgroup, bool)> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(io::Error::other(format!("`{name}` is not a cgroup name")));
        }
        let c_name =
            CString::new(name).map_err(|_| io::Error::other("a cgroup name with a NUL byte"))?;
        let created = sys::make_dir_at(self.dir.as_fd(), &c_name)?;
        let fd = sys::open_at(
            self.dir.as_fd(),
            &c_name,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        let dir = self.instance.join(name);
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a cgroup path with a NUL byte"))?;
        // Read at every stop (and restart): kept open, each read is one `pread` instead of an
        // open, a read and a close, which at a thousand workers stopping at once was an eighth
        // of the stop. Where one cannot be opened, each read opens it.
        let kept = |file: &CStr| {
            sys::open_at(fd.as_fd(), file, libc::O_RDONLY)
                .map(|f| Arc::new(std::fs::File::from(sys::kept_high(f))))
                .ok()
        };
        let files = KeptFiles {
            procs: kept(c"cgroup.procs"),
            events: kept(c"cgroup.events"),
        };
        let cgroup = WorkerCgroup {
            procs,
            fd: Arc::new(sys::kept_high(fd)),
            files,
            parent: self.dir.clone(),
            name: c_name,
        };
        Ok((cgroup, created))
    }
}

impl Cgroups {
    /// The end of containment, once every worker is stopped: the pending removals are done,
    /// then the instance cgroup is removed and its keeper killed and reaped. What dropping
    /// does, callable earlier (a master's shutdown, so that nothing depends on the master's
    /// memory being freed); a second call does nothing more.
    pub fn finish(&self) {
        // Pending removals first, then the keeper is told.
        if let Ok(mut tx) = self.removals.lock() {
            tx.take();
        }
        if let Some(remover) = self.remover.lock().ok().and_then(|mut r| r.take()) {
            let _ = remover.join();
        }
        // Every worker cgroup is gone now (unless something in one outlived its kill): the
        // instance cgroup goes here, and its keeper is killed and reaped, rather than left to
        // clean up after the master has exited (its zombie then waits for init, and at a
        // thousand workers its `rmdir`s were a process each).
        let removed = std::fs::remove_dir(&self.instance).is_ok();
        if removed {
            if let Some(root) = self.instance.parent() {
                // Another master's instance may be there: then it stays.
                let _ = std::fs::remove_dir(root);
            }
        }
        let keeper = self.keeper.lock().ok().and_then(|mut k| k.take());
        if let Some((mut child, stdin)) = keeper {
            if removed {
                let _ = child.kill();
                let _ = child.wait();
                super::reaper::release(child.id());
                return;
            }
            // What is left is the keeper's to kill; it exits when done, reaped off-thread.
            drop(stdin);
            std::thread::spawn(move || {
                let _ = child.wait();
                super::reaper::release(child.id());
            });
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One worker's cgroup.
#[derive(Debug, Clone)]
pub struct WorkerCgroup {
    /// Its `cgroup.procs` path, for a child joining after a plain fork.
    procs: CString,
    /// Its directory, open for as long as the worker has the cgroup (a directory descriptor
    /// costs the kernel a `struct file`, no buffer): its files are opened relative to it.
    fd: Arc<OwnedFd>,
    /// Its `cgroup.procs` and `cgroup.events`, open.
    files: KeptFiles,
    /// The instance cgroup's directory, and this one's name in it (for the `rmdir`).
    parent: Arc<OwnedFd>,
    name: CString,
}

/// A worker cgroup's files that are read again and again, open (`None`: opened for each read).
#[derive(Debug, Clone)]
struct KeptFiles {
    procs: Option<Arc<std::fs::File>>,
    events: Option<Arc<std::fs::File>>,
}

impl WorkerCgroup {
    /// `cgroup.procs`, for the child to join between fork and exec.
    pub fn procs_file(&self) -> &CString {
        &self.procs
    }

    /// Its directory, open, for creating a child inside it (`CLONE_INTO_CGROUP`).
    pub fn dir_fd(&self) -> Arc<OwnedFd> {
        self.fd.clone()
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<i32> {
        self.read(self.files.procs.as_deref(), c"cgroup.procs")
            .map(|t| pids_of(&t))
            .unwrap_or_default()
    }

    /// Whether any process is in it (`cgroup.events`).
    pub fn populated(&self) -> bool {
        match self.read(self.files.events.as_deref(), c"cgroup.events") {
            Ok(text) => populated_of(&text),
            // Without cgroup.events (an old kernel): members listed here or below.
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// The text of its file `name`: through the descriptor kept open, or opened now.
    fn read(&self, kept: Option<&std::fs::File>, name: &CStr) -> io::Result<String> {
        match kept {
            Some(file) => read_kept(file),
            None => read_in(self.fd.as_fd(), name),
        }
    }

    /// Sends `signal` to every member outside process group `signalled` (which the caller has
    /// just signalled as a whole: a second signal would be delivered again to a member that
    /// handled the first one, and many programs take a second SIGTERM or SIGINT for "exit
    /// now"); how many were signalled.
    pub fn signal_others(&self, signal: i32, signalled: i32) -> usize {
        self.pids()
            .into_iter()
            .filter(|&pid| pid != signalled && sys::process_group_of(pid) != Some(signalled))
            .filter(|&pid| sys::signal_process(pid, signal).unwrap_or(false))
            .count()
    }

    /// SIGKILLs every member (`cgroup.kill`; signalling each where the kernel lacks it).
    pub fn kill(&self) {
        kill_in(self.fd.as_fd());
    }

    /// Kills what is left and removes the cgroup (and the instance cgroup if that was the last).
    pub fn remove(mut self) {
        // Its files are closed before the `rmdir` (read again below only if it is still
        // populated, then by opening them). A file still open when its cgroup goes leaves a
        // dentry behind in the instance cgroup, which the instance's own `rmdir` then has to
        // walk at the master's exit: 5 to 15 ms after a thousand workers, against 0.05 ms with
        // them closed first (the directory itself may stay open: it is dropped at once).
        self.files = KeptFiles {
            procs: None,
            events: None,
        };
        // Tried first: an empty cgroup (the usual case after a stop) goes in one call, without
        // reading `cgroup.events` first; a populated one refuses with EBUSY.
        match sys::remove_dir_at(self.parent.as_fd(), &self.name) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {}
            _ => return,
        }
        if self.populated() {
            self.kill();
            wait_empty_blocking(self.fd.as_fd(), EMPTY_WAIT);
        }
        let _ = sys::remove_dir_at(self.parent.as_fd(), &self.name);
    }
}

/// The master's own cgroup directory in the cgroup v2 hierarchy, if one is mounted.
/// Where the cgroup v2 hierarchy is mounted, and the part of it the mount shows (`/` but in a
/// container's namespace).
fn cgroup2_mount() -> Option<(String, PathBuf)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mount-point options … - fstype source super-options
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let root = fields.get(3)?;
        let point = fields.get(4)?;
        Some((root.to_string(), PathBuf::from(point)))
    })
}

/// The mount point of the cgroup v2 hierarchy, if one is mounted.
pub fn hierarchy_mount_point() -> Option<PathBuf> {
    cgroup2_mount().map(|(_, point)| point)
}

fn own_cgroup_dir() -> Option<PathBuf> {
    let mount = cgroup2_mount()?;
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

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(|f| sys::kept_high(f.into()))
}

/// The text of the cgroup file `name` in the open cgroup directory `dir`.
fn read_in(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<String> {
    read_kept(&std::fs::File::from(sys::open_at(
        dir,
        name,
        libc::O_RDONLY,
    )?))
}

/// The text of an open cgroup file, read from its start (`pread`: the kernel makes the text
/// anew for a read at offset 0, so one descriptor serves every read).
fn read_kept(file: &std::fs::File) -> io::Result<String> {
    use std::os::unix::fs::FileExt as _;
    // One read answers for a worker's cgroup; the loop is for a long member list. A cgroup
    // file is a seq_file: a read returns at most one page of it, cut at a line's end (4,092
    // bytes of `cgroup.procs`, not 4,096), so a read short by less than a line may not be
    // the end (taken for it, a list of more than ~700 members was cut to its first page).
    // Short by more than any line of these files can be: that was the end.
    const LONGEST_LINE: usize = 64;
    let mut text = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, text.len() as u64)?;
        text.extend_from_slice(&chunk[..n]);
        if n == 0 || n + LONGEST_LINE <= chunk.len() {
            break;
        }
    }
    String::from_utf8(text).map_err(io::Error::other)
}

fn pids_of(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn populated_of(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "populated 1")
}

fn pids_in(dir: BorrowedFd<'_>) -> Vec<i32> {
    read_in(dir, c"cgroup.procs")
        .map(|t| pids_of(&t))
        .unwrap_or_default()
}

fn populated_in(dir: BorrowedFd<'_>) -> bool {
    match read_in(dir, c"cgroup.events") {
        Ok(text) => populated_of(&text),
        // Without cgroup.events (an old kernel): members listed here or below.
        Err(_) => !pids_in(dir).is_empty(),
    }
}

fn kill_in(dir: BorrowedFd<'_>) {
    let written = sys::open_at(dir, c"cgroup.kill", libc::O_WRONLY)
        .and_then(|fd| std::fs::File::from(fd).write_all(b"1"));
    if written.is_err() {
        for pid in pids_in(dir) {
            let _ = sys::signal_process(pid, libc::SIGKILL);
        }
    }
}

fn wait_empty_blocking(dir: BorrowedFd<'_>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while populated_in(dir) {
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
                sys::read_stat(pid).is_ok_and(|s| s.start_time == start)
            });
        if alive || owner.is_none() {
            continue;
        }
        let left: usize = std::fs::read_dir(&path)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| open_dir(&e.path()).ok())
                    .map(|dir| pids_in(dir.as_fd()).len())
                    .sum()
            })
            .unwrap_or(0);
        if let Ok(dir) = open_dir(&path) {
            kill_in(dir.as_fd());
            wait_empty_blocking(dir.as_fd(), EMPTY_WAIT);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn the_stop_signal_goes_once_to_each_member_the_group_signal_missed() {
        let (Some(cgroups), _) = Cgroups::set_up() else {
            // No writable cgroup v2 here.
            return;
        };
        let (cgroup, created) = cgroups.worker("signal-once").expect("a worker cgroup");
        assert!(created);
        let procs = String::from_utf8(cgroup.procs_file().as_bytes().to_vec()).unwrap();
        // The leader leads its own group, as a worker's child does; one member stays in its
        // group, one leaves it with setsid. All three are in the cgroup.
        let mut leader = Command::new("/bin/sh")
            .args([
                "-c",
                r#"echo $$ > "$0" || exit 1; sleep 30 & setsid sleep 30 & exec sleep 30"#,
            ])
            .arg(&procs)
            .process_group(0)
            .spawn()
            .expect("the leader");
        let pgid = leader.id() as i32;
        // Until all three are there, and the setsid one has left the group.
        let outside = || {
            cgroup
                .pids()
                .into_iter()
                .filter(|&p| sys::process_group_of(p) != Some(pgid))
                .count()
        };
        let start = Instant::now();
        while cgroup.pids().len() < 3 || outside() != 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "members: {:?}",
                cgroup.pids()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Signal 0 counts whom a signal would reach: only the one outside the group, which
        // the group signal cannot reach; the leader and its group's member got that one.
        assert_eq!(cgroup.signal_others(0, pgid), 1);
        cgroup.kill();
        let _ = leader.wait();
        assert!(wait_empty_blocking(cgroup.fd.as_fd(), EMPTY_WAIT));
        cgroups.remove_later(cgroup);
        drop(cgroups);
    }

    /// A member list longer than one read (`cgroup.procs` of 1,200 processes is 6 KB or more;
    /// a read gets 4 KB): every member is found through the kept descriptor, so the stop
    /// signal reaches them all, not only those on the first page.
    #[test]
    fn a_member_list_longer_than_a_read_is_read_whole() {
        let (Some(cgroups), _) = Cgroups::set_up() else {
            return;
        };
        let (cgroup, _) = cgroups.worker("many-members").expect("a worker cgroup");
        let procs = String::from_utf8(cgroup.procs_file().as_bytes().to_vec()).unwrap();
        const MEMBERS: usize = 1200;
        let mut leader = Command::new("/bin/sh")
            .args([
                "-c",
                &format!(
                    r#"echo $$ > "$0" || exit 1; i=0; while [ $i -lt {MEMBERS} ]; do setsid sleep 300 & i=$((i+1)); done; exec sleep 300"#
                ),
            ])
            .arg(&procs)
            .process_group(0)
            .spawn()
            .expect("the leader");
        let pgid = leader.id() as i32;
        let start = Instant::now();
        // Until the last has started and left the leader's group (the list read by std's read
        // to the end: not the code under test).
        let outside = || {
            std::fs::read_to_string(&procs)
                .map(|t| {
                    pids_of(&t)
                        .into_iter()
                        .filter(|&p| p != pgid && sys::process_group_of(p) != Some(pgid))
                        .count()
                })
                .unwrap_or(0)
        };
        while outside() < MEMBERS {
            if start.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Read through the kept descriptor, as every stop reads it.
        let text = cgroup.files.procs.as_deref().map(read_kept);
        let members = cgroup.pids();
        let others = cgroup.signal_others(0, pgid);
        cgroup.kill();
        let _ = leader.wait();
        assert!(wait_empty_blocking(cgroup.fd.as_fd(), EMPTY_WAIT));
        cgroups.remove_later(cgroup);
        drop(cgroups);
        let text = text
            .expect("the member list is read through a kept descriptor")
            .expect("the member list is readable");
        assert_eq!(members.len(), MEMBERS + 1, "the leader and every member");
        assert!(
            text.len() > 4096,
            "the list fits one read: {} bytes",
            text.len()
        );
        // The setsid'd ones left the leader's group: each is signalled by pid.
        assert_eq!(others, MEMBERS);
    }
}
