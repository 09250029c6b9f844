//! The few syscalls process control needs, each wrapped once with its `// SAFETY:` reasoning.
//! Everything else in `process/` is safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Sends `signal` to every process of group `pgid`. A group that no longer exists is not an
/// error (`Ok(false)`).
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: killpg takes plain integers and has no memory effects; pgid > 1 so it never
    // targets our own group (0) or init.
    let rc = unsafe { libc::killpg(pgid, signal) };
    check_signal_result(rc)
}

/// Sends `signal` to process `pid`. A process that no longer exists is `Ok(false)`.
pub fn signal_process(pid: i32, signal: i32) -> io::Result<bool> {
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal PID {pid}"),
        ));
    }
    // SAFETY: kill takes plain integers and has no memory effects; pid > 1 rules out process
    // groups (negative), ourselves-as-group (0) and init (1).
    let rc = unsafe { libc::kill(pid, signal) };
    check_signal_result(rc)
}

fn check_signal_result(rc: i32) -> io::Result<bool> {
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The process group of `pid` (`None`: it is gone).
pub fn process_group_of(pid: i32) -> Option<i32> {
    // SAFETY: getpgid takes a plain integer and has no memory effects.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// Whether any live (non-zombie) process remains in group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    match signal_group(pgid, 0) {
        Ok(false) => false,
        // EPERM means a member exists that we may not signal: alive, as far as we can tell.
        Err(_) | Ok(true) => members_not_zombie(pgid),
    }
}

/// Scans /proc for processes of group `pgid` that are not zombies (zombies of reparented
/// grandchildren linger until their new parent reaps them, and hold no resources).
fn members_not_zombie(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(stat) = read_stat(pid) {
            if stat.pgrp == pgid && stat.state != 'Z' && stat.state != 'X' {
                return true;
            }
        }
    }
    false
}

/// The fields of `/proc/PID/stat` that process control needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// One-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Start time in clock ticks after boot: with the PID, the process's identity.
    pub start_time: u64,
    /// User + system CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Reads `/proc/PID/stat`.
///
/// # Errors
/// When the process does not exist (any more) or the file is malformed.
pub fn read_stat(pid: i32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed /proc/{pid}/stat"),
        )
    })
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        start_time: f.get(19)?.parse().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

/// Whether this process may create files in `dir` (`access(W_OK | X_OK)`: permissions, ACLs
/// and a read-only mount), without creating one.
///
/// # Errors
/// The reason it may not (`EACCES`, `EROFS`, `ENOENT`…).
pub fn check_writable_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: access reads the NUL-terminated path we pass and nothing else.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// A pidfd: a handle on one process that cannot be confused with a later process reusing the
/// PID. Readable once the process has exited.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid` (Linux 5.3+).
    ///
    /// # Errors
    /// `ESRCH` when no such process exists; `ENOSYS` on older kernels.
    pub fn open(pid: i32) -> io::Result<Self> {
        if pid <= 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing PID {pid}"),
            ));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
        // passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Self(kept_high(unsafe { OwnedFd::from_raw_fd(fd as i32) })))
    }

    /// Takes over a pidfd the kernel returned (`clone3` with `CLONE_PIDFD`).
    pub fn from_owned(fd: OwnedFd) -> Self {
        Self(fd)
    }

    /// Signals exactly this process (never a newcomer with the same PID). `Ok(false)` if it
    /// has exited.
    pub fn send_signal(&self, signal: i32) -> io::Result<bool> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags; the fd is ours and open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        check_signal_result(rc as i32)
    }

    /// Whether the process has exited (the pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// The descriptor, for waiting on it with an async reactor.
    pub fn into_fd(self) -> OwnedFd {
        self.0
    }
}

impl PidFd {
    /// Resolves once the process has exited (the pidfd becomes readable).
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated or registered with the runtime's reactor.
    pub async fn exited(&self) -> io::Result<()> {
        // SAFETY: `Borrowed` lends our open descriptor; it stays open for as long as the
        // AsyncFd exists, because the AsyncFd lives only inside this call, which borrows self.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Borrowed(self),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| e.into_parts().1)?;
        // Polled for readiness (not through `readable()`, whose future is ~100 bytes more
        // in every child's task).
        std::future::poll_fn(|cx| watched.poll_read_ready(cx).map_ok(drop)).await
    }
}

/// A pidfd lent to the reactor without duplicating it (one descriptor less per child).
struct Borrowed<'a>(&'a PidFd);

impl AsRawFd for Borrowed<'_> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0 .0.as_raw_fd()
    }
}

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Raises the soft limit of open files to the hard limit: each managed child costs the master
/// about three descriptors (two pipes and a pidfd), and the usual soft limit of 1024 would cap
/// it near 300 children. Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the local we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Children get the limit the master started with back (see `child::child_steps`).
    let _ = ORIGINAL_NOFILE.set(limit.rlim_cur);
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one valid rlimit from the local we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Descriptors the master may hold at once for one process worker, above [`LONG_LIVED_FDS`]: its
/// pidfd, its two output pipes, its log files, and its cgroup's directory with the two files of
/// it that stay open (`cgroup.procs`, `cgroup.events`).
pub const FDS_PER_PROCESS_WORKER: usize = 8;

/// Raises the open-file limit ([`raise_fd_limit`]) and grows the descriptor table now to hold
/// `workers` process workers' long-lived descriptors. Called while the process has one thread
/// (`hsu run`, before its runtime): the kernel then grows the table at once, while each growth
/// of a table that threads share waits for an RCU grace period (`expand_fdtable`: 10–25 ms
/// each on this machine kind), which at a thousand workers came four times on the spawning
/// path and once before the first child. A table never shrinks; an entry costs 8 bytes of
/// kernel memory. Returns the highest descriptor number the table now holds.
///
/// # Errors
/// When the limit cannot be read or no descriptor can be had.
pub fn reserve_fds(workers: usize) -> io::Result<libc::c_int> {
    let limit = raise_fd_limit()?;
    let wanted =
        (LONG_LIVED_FDS as usize).saturating_add(workers.saturating_mul(FDS_PER_PROCESS_WORKER));
    let top = wanted.min(limit.saturating_sub(1) as usize);
    let top = libc::c_int::try_from(top).unwrap_or(libc::c_int::MAX);
    let probe = std::fs::File::open("/dev/null")?;
    // Numbered `top` or just above if it is taken (the table holds it then as well); closed
    // at once, the table stays as large.
    dup_at_least(probe.as_fd(), top).map(|fd| fd.as_raw_fd())
}

/// Where the master keeps the descriptors it holds for long (one pidfd and two pipe ends per
/// running child, log files): from here up. Below it stay the few a spawn hands to its child,
/// so a child cloned on the master's table copies only those (see `child::spawn`), however
/// many workers run.
pub const LONG_LIVED_FDS: libc::c_int = 512;

/// `fd` renumbered to [`LONG_LIVED_FDS`] or above (close-on-exec); `fd` itself where that
/// cannot be done (a low open-file limit, out of descriptors), which is only slower.
pub fn kept_high(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() >= LONG_LIVED_FDS {
        return fd;
    }
    // `fd` is closed when the copy replaces it.
    dup_at_least(fd.as_fd(), LONG_LIVED_FDS).unwrap_or(fd)
}

/// A close-on-exec copy of `fd` numbered `floor` or above (the lowest free such number).
///
/// # Errors
/// Out of descriptors, or `floor` above the open-file limit.
pub fn dup_at_least(fd: BorrowedFd<'_>, floor: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor to the lowest free number ≥ floor
    // and returns it (or -1); no memory is passed.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Opens `name` in the open directory `dir` (close-on-exec): no walk of the directory's
/// path, which on the cgroup file system takes a lock that every `rmdir` there holds.
///
/// # Errors
/// As `openat(2)`.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call; openat returns a new
    // descriptor or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the directory `name` in the open directory `dir` (an existing one is fine): whether
/// it was created now.
///
/// # Errors
/// As `mkdirat(2)`, except `EEXIST`.
pub fn make_dir_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<bool> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        e => Err(e),
    }
}

/// Removes the empty directory `name` from the open directory `dir`.
///
/// # Errors
/// As `unlinkat(2)` with `AT_REMOVEDIR` (`EBUSY` for a cgroup that has members).
pub fn remove_dir_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

static ORIGINAL_NOFILE: std::sync::OnceLock<libc::rlim_t> = std::sync::OnceLock::new();

/// What switching to a user needs: its ids, supplementary groups, and what its environment
/// says about it (as `login`, supervisord and systemd set them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Every group it belongs to, the primary one included (`initgroups`).
    pub groups: Vec<u32>,
    /// Its home directory (`HOME`).
    pub home: String,
    /// Its login shell (`SHELL`).
    pub shell: String,
}

/// Resolves a user name (or numeric uid) from the password and group databases, growing the
/// lookup buffers as long as the system says they are too small.
///
/// # Errors
/// `NotFound` when there is no such user; the lookup's OS error otherwise.
pub fn lookup_user(user: &str) -> io::Result<UserInfo> {
    let name = std::ffi::CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let by_uid = user.parse::<u32>().ok();
    let mut size = 4 * 1024;
    loop {
        let mut pwd: libc::passwd = unsafe_zeroed_passwd();
        let mut buf = vec![0 as libc::c_char; size];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: pwd and result are locals, buf is a live
        // buffer of the length passed; the strings pwd points to live in buf, read below
        // while buf is alive.
        let rc = unsafe {
            match by_uid {
                Some(uid) => {
                    libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
                }
                None => libc::getpwnam_r(
                    name.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut result,
                ),
            }
        };
        if rc == libc::ERANGE && size < 16 * 1024 * 1024 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no user {user:?}"),
            ));
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: getpw*_r filled p with a NUL-terminated string inside buf, alive here.
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let login = text(pwd.pw_name);
        let groups = group_list(&login, pwd.pw_gid)?;
        return Ok(UserInfo {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: text(pwd.pw_dir),
            shell: text(pwd.pw_shell),
            name: login,
            groups,
        });
    }
}

/// The groups `user` belongs to (`getgrouplist`), growing the list until it fits.
fn group_list(user: &str, primary: u32) -> io::Result<Vec<u32>> {
    let name = std::ffi::CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let mut count: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; count as usize];
        let mut n = count;
        // SAFETY: name is NUL-terminated, groups has room for n entries, n is a local.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), primary, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return Ok(groups);
        }
        if n <= count {
            count *= 2;
        } else {
            count = n;
        }
        if count > 65536 {
            return Err(io::Error::other(format!(
                "user {user:?} has too many groups"
            )));
        }
    }
}

/// The credentials a child of `user` switches to between fork and exec (see
/// `child::Plan::user`); none when `user` is the master's own user.
///
/// # Errors
/// `PermissionDenied` when the master is not root and `user` is not the master's own user.
pub fn credentials_for(user: &UserInfo) -> io::Result<Option<super::child::Credentials>> {
    // SAFETY: geteuid only reads the process's credentials.
    let me = unsafe { libc::geteuid() };
    if me == user.uid {
        return Ok(None);
    }
    if me != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot run as `{}` (uid {}): hsu runs as uid {me}, and only root can switch users",
                user.name, user.uid
            ),
        ));
    }
    Ok(Some(super::child::Credentials {
        groups: user.groups.clone(),
        gid: user.gid,
        uid: user.uid,
    }))
}

/// The soft open-file limit the master started with, before `raise_fd_limit` (children get
/// it back).
pub fn original_nofile() -> Option<libc::rlim_t> {
    ORIGINAL_NOFILE.get().copied()
}

/// Reaps child `pid` if it has exited: its raw wait status, or `None` while it runs.
///
/// # Errors
/// `ECHILD` when it is not (or no longer) a child of this process.
pub fn try_wait(pid: u32) -> io::Result<Option<i32>> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    let mut status = 0;
    loop {
        // SAFETY: waitpid for one positive PID with WNOHANG; `status` is a valid writable int.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Ok(Some(status));
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value
    // (null pointers) that getpw*_r overwrites.
    unsafe { std::mem::zeroed() }
}

/// Makes this process a child subreaper: orphaned descendants are re-parented to it instead of
/// to init, so it sees (and must reap) them.
///
/// # Errors
/// When the kernel refuses (it does not on Linux ≥ 3.4).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes integer arguments only and changes a flag
    // of this process; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The PID of one child that has exited and is not reaped yet, without reaping it (`waitid`
/// with `WNOWAIT`); none when no child is a zombie (or there are no children).
pub fn peek_exited_child() -> Option<i32> {
    // SAFETY: siginfo_t is plain data; zeroed is a valid value and waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: waitid succeeded, so si_pid is set (0 when no child had exited).
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// Reaps child `pid` if it has exited; true when it was reaped.
pub fn reap_child(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: waitpid for one positive PID with WNOHANG; `status` is a valid writable int.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == pid
}

/// Takes ownership of descriptor `fd`, handed to this process by a protocol such as systemd's
/// socket activation, if it is open and above stdio; marks it close-on-exec.
pub fn adopt_fd(fd: i32) -> Option<std::os::fd::OwnedFd> {
    if fd < 3 {
        return None;
    }
    // SAFETY: fcntl(F_GETFD) only asks whether `fd` is open; no memory is touched.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the protocol hands `fd` to this process, which owns it from here on; the caller
    // takes each one once, and it is open (checked above).
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: fcntl on a descriptor this process owns; no memory is touched.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

/// SIGPIPE back to its default (the process ends quietly) for a command whose output goes to
/// a pipe that may close early (`hsu schema | head`): Rust starts with it ignored, so a print
/// to a closed pipe would panic instead. Not for `hsu run`, which must outlive a closed stderr.
pub fn default_sigpipe() {
    // SAFETY: sets one signal's disposition to the default; no handler, no memory touched.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000000 250 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (
                s.state,
                s.ppid,
                s.pgrp,
                s.cpu_ticks,
                s.start_time,
                s.rss_pages
            ),
            ('S', 1, 1234, 10, 98765, 250)
        );
    }

    #[test]
    fn our_own_stat_reads() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert!(me.start_time > 0);
        assert!(read_stat(i32::MAX).is_err());
    }

    #[test]
    fn refuses_init_and_groups() {
        assert!(signal_process(1, 0).is_err());
        assert!(signal_group(0, 0).is_err());
        assert!(PidFd::open(1).is_err());
    }

    #[test]
    fn root_resolves() {
        assert_eq!(lookup_user("root").unwrap().uid, 0);
        assert_eq!(lookup_user("0").unwrap().name, "root");
        assert!(lookup_user("no-such-user-hsu").is_err());
    }
}
