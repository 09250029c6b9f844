//! The fork and exec of a worker's child, written out rather than left to `std::process`:
//! std cannot create a child *inside* a cgroup, and joining one after the fork (writing
//! `cgroup.procs` between fork and exec) migrates the child under the kernel's cgroup
//! threadgroup lock, whose write side waits for an RCU grace period when it was idle: that
//! wait was most of a restart (16 ms of it at 200 workers, measured by `benches/blackbox.rs`).
//! `clone3(CLONE_INTO_CGROUP)` (Linux 5.7) creates the child in the worker's cgroup, so it is a
//! member from its first instruction on, and returns a pidfd in the same call
//! (`CLONE_PIDFD`). Where clone3 is refused (an old kernel, a seccomp profile that answers
//! ENOSYS) the same child code runs after a plain `fork` and joins by writing `cgroup.procs`.
//!
//! Everything the child needs is prepared by the parent in a [`Plan`] before the fork: the
//! child allocates nothing, takes no lock and calls only async-signal-safe functions. Where
//! glibc would do more than the system call (the set*id family broadcasts to every thread of
//! the process it believes in, which after a raw `clone3` are threads of the *parent*), the
//! child makes the raw system call. A failure between fork and exec is reported to the parent
//! through a close-on-exec pipe as the step that failed and its errno, so the error says
//! "cannot switch to uid 1000" or "cannot enter the working directory", not only "EACCES".
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::sys::PidFd;

/// `CLONE_INTO_CGROUP` (linux/sched.h); the libc crate does not export it on every target.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to its `cgroup` field (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once clone3 has been refused as a whole (ENOSYS, or E2BIG from a kernel that predates
/// the `cgroup` field): later spawns go straight to `fork`.
static NO_CLONE3: AtomicBool = AtomicBool::new(false);

/// Set once a child could not unshare the descriptor table it was cloned with
/// (`close_range(CLOSE_RANGE_UNSHARE)` needs Linux 5.9): later clones copy the table instead.
static NO_SHARED_FILES: AtomicBool = AtomicBool::new(false);

/// The cgroup a child is created in.
#[derive(Debug)]
pub struct CgroupTarget {
    /// The cgroup's directory, open (for `CLONE_INTO_CGROUP`).
    pub dir: std::sync::Arc<OwnedFd>,
    /// Its `cgroup.procs` (for joining after a plain fork).
    pub procs: CString,
}

/// The user a child runs as.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Supplementary groups.
    pub groups: Vec<libc::gid_t>,
    /// Primary group.
    pub gid: libc::gid_t,
    /// User.
    pub uid: libc::uid_t,
}

/// Everything a child needs between fork and exec, prepared before the fork.
#[derive(Debug)]
pub struct Plan {
    /// Paths to try to exec, in order (one, or the `PATH` candidates of a bare name).
    pub programs: Vec<CString>,
    /// The name the program was asked for by, for errors.
    pub program: String,
    /// `argv`, the program name first.
    pub argv: Vec<CString>,
    /// `envp` as `KEY=VALUE`.
    pub envp: Vec<CString>,
    /// The working directory, if not the master's.
    pub cwd: Option<CString>,
    /// Becomes the child's stdin, stdout and stderr.
    pub stdio: [OwnedFd; 3],
    /// Its cgroup.
    pub cgroup: Option<CgroupTarget>,
    /// Its user, when it differs from the master's.
    pub user: Option<Credentials>,
    /// The open-file limit the master started with (the child gets it back).
    pub nofile: Option<libc::rlim_t>,
    /// Listening sockets handed over by systemd's protocol: they become descriptors 3, 4, …
    /// in this order, and `envp` gets `LISTEN_PID` (the child's own, written by the child).
    /// Copies made for this spawn ([`listen_copies`]), all numbered above `3 + len`.
    pub listen: Vec<OwnedFd>,
}

/// Copies of `fds` for [`Plan::listen`]: close-on-exec, numbered from `3 + fds.len()` up, so
/// the child's `dup2` onto 3, 4, … never overwrites a source.
///
/// # Errors
/// Out of descriptors.
pub fn listen_copies(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Vec<OwnedFd>> {
    let floor = 3 + fds.len() as libc::c_int;
    fds.iter()
        .map(|fd| super::sys::dup_at_least(*fd, floor))
        .collect()
}

/// The `LISTEN_PID=` entry's room: the child writes its PID's digits into it.
const LISTEN_PID: &[u8] = b"LISTEN_PID=";
const PID_DIGITS: usize = 20;

/// A started child: its PID (also its process group) and, where the kernel has them, a pidfd.
#[derive(Debug)]
pub struct Started {
    /// PID, and process group id.
    pub pid: u32,
    /// A pidfd for it.
    pub pidfd: Option<PidFd>,
    /// Whether it was created inside its cgroup (`CLONE_INTO_CGROUP`) rather than moved in.
    pub created_in_cgroup: bool,
}

/// The step between fork and exec that failed, as reported through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Stdio = 1,
    ProcessGroup,
    WorkingDirectory,
    JoinCgroup,
    Groups,
    Gid,
    Uid,
    ParentDeath,
    Exec,
    Sockets,
    Unshare,
}

impl Step {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Stdio,
            2 => Self::ProcessGroup,
            3 => Self::WorkingDirectory,
            4 => Self::JoinCgroup,
            5 => Self::Groups,
            6 => Self::Gid,
            7 => Self::Uid,
            8 => Self::ParentDeath,
            9 => Self::Exec,
            10 => Self::Sockets,
            11 => Self::Unshare,
            _ => return None,
        })
    }
}

/// Pointers into a [`Plan`]'s strings, NULL-terminated, built before the fork.
struct Pointers {
    programs: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// The `LISTEN_PID=` entry of `envp` (in `_listen_pid`), which the child completes.
    listen_pid: Option<*mut u8>,
    _listen_pid: Vec<u8>,
    /// When above 0, the child was cloned sharing the master's descriptor table
    /// (`CLONE_FILES`) and first takes a copy of only the descriptors below this number.
    unshare_below: libc::c_int,
}

impl Pointers {
    fn of(plan: &Plan) -> Self {
        let list = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let mut envp = list(&plan.envp);
        let mut room = Vec::new();
        let mut listen_pid = None;
        if !plan.listen.is_empty() {
            room = LISTEN_PID.to_vec();
            room.resize(LISTEN_PID.len() + PID_DIGITS + 1, 0);
            envp.insert(envp.len() - 1, room.as_ptr().cast());
            // SAFETY: within `room`, whose heap buffer does not move when `room` does.
            listen_pid = Some(unsafe { room.as_mut_ptr().add(LISTEN_PID.len()) });
        }
        Self {
            programs: plan.programs.iter().map(|s| s.as_ptr()).collect(),
            argv: list(&plan.argv),
            envp,
            listen_pid,
            _listen_pid: room,
            unshare_below: 0,
        }
    }
}

/// Forks and execs `plan`. Returns once the child has exec'd (or failed to, which is the
/// error: the step, the errno, the program).
///
/// Call only from a thread that lives as long as the master: the child's parent-death signal
/// follows the thread that forked it.
///
/// # Errors
/// A pipe, clone or fork refused (EMFILE, EAGAIN…), or the child's report of the step that
/// failed.
pub fn spawn(plan: &Plan) -> io::Result<Started> {
    if plan.programs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{}` not found in PATH", plan.program),
        ));
    }
    let (report_read, report_write) = pipe()?;
    // Above the descriptors the listening sockets become, so their dup2s leave it alone.
    let report_write = above(report_write, 3 + plan.listen.len() as libc::c_int)?;
    let mut pointers = Pointers::of(plan);
    let parent = std::process::id() as libc::pid_t;
    let report = report_write.as_raw_fd();
    if !NO_SHARED_FILES.load(Ordering::Relaxed) {
        // Everything the child uses is below this; the master's long-lived descriptors are
        // mostly above it (`sys::kept_high`), so the child's copy of the table is small.
        let needed = plan
            .stdio
            .iter()
            .chain(&plan.listen)
            .map(AsRawFd::as_raw_fd);
        pointers.unshare_below = needed.chain([report, 2]).max().unwrap_or(2) + 1;
    }
    let (pid, mut pidfd, created_in_cgroup) = match clone3(plan, &pointers, report, parent) {
        Ok(Some(started)) => started,
        Ok(None) => {
            pointers.unshare_below = 0;
            (fork(plan, &pointers, report, parent)?, None, false)
        }
        Err(e) => return Err(e),
    };
    // Waited for by `reap` alone: the orphan reaper leaves it alone. Claimed before anything
    // can fail below.
    super::reaper::claim(pid as u32);
    drop(report_write);
    match read_report(&report_read) {
        Ok(None) => {}
        Ok(Some((step, errno))) => {
            wait_blocking(pid);
            super::reaper::release(pid as u32);
            if step == Step::Unshare as u32 {
                // This kernel cannot unshare only part of the table: copy it whole from now on.
                NO_SHARED_FILES.store(true, Ordering::Relaxed);
                tracing::debug!(
                    errno,
                    "close_range(CLOSE_RANGE_UNSHARE) refused; children copy the descriptor table"
                );
                drop(report_read);
                return spawn(plan);
            }
            return Err(describe(step, errno, plan));
        }
        Err(e) => {
            // No report: the child may be anywhere. Kill and reap it rather than leave it.
            // SAFETY: kill of our own just-created child's PID, which is not reaped yet and so
            // cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_blocking(pid);
            super::reaper::release(pid as u32);
            return Err(e);
        }
    }
    if pidfd.is_none() {
        pidfd = PidFd::open(pid).ok();
    }
    Ok(Started {
        pid: pid as u32,
        pidfd,
        created_in_cgroup,
    })
}

/// What the child entry point needs (shared with the parent under `CLONE_VM`).
struct Entry<'a> {
    plan: &'a Plan,
    pointers: &'a Pointers,
    report: RawFd,
    parent: libc::pid_t,
}

/// The child's first function on its own stack (`CLONE_VM` path).
extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the `Entry` the parent passed to `clone3_vm`; the parent is suspended
    // (CLONE_VFORK) until this child execs or exits, so it stays valid and unchanged.
    unsafe {
        let entry = &*(arg as *const Entry<'_>);
        child_steps(
            entry.plan,
            entry.pointers,
            entry.report,
            entry.parent,
            false,
        )
    }
}

/// The child's stack under `CLONE_VM`: it runs on the parent's memory, so not on the parent's
/// stack. Mapped per spawn with a guard page below it.
const CHILD_STACK: usize = 128 * 1024;

/// `clone3` into the plan's cgroup with a pidfd. On x86_64 also with `CLONE_VM |
/// CLONE_VFORK` (what `posix_spawn` does): the child borrows the parent's memory until it
/// execs, so neither the page tables of a master with a thousand workers are copied nor torn
/// down again at exec (that was half of a spawn's CPU time at 1,000 workers). `Ok(None)`: clone3
/// is refused here (an old kernel, a seccomp profile), use `fork`.
fn clone3(
    plan: &Plan,
    pointers: &Pointers,
    report: RawFd,
    parent: libc::pid_t,
) -> io::Result<Option<(libc::pid_t, Option<PidFd>, bool)>> {
    if NO_CLONE3.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut raw_pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::addr_of_mut!(raw_pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = &plan.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.dir.as_raw_fd() as u64;
    }
    if pointers.unshare_below > 0 {
        // Not copying a table of thousands of descriptors (three or four per running worker)
        // at the clone, nor closing them all again at the exec: the child starts on the
        // master's table and takes a copy of its few low descriptors as its first step.
        args.flags |= libc::CLONE_FILES as u64;
    }
    let rc = raw_clone3(&mut args, plan, pointers, report, parent)?;
    if rc > 0 {
        // SAFETY: with CLONE_PIDFD the kernel stored a fresh close-on-exec descriptor that
        // nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw_pidfd) };
        let pidfd = PidFd::from_owned(super::sys::kept_high(pidfd));
        return Ok(Some((
            rc as libc::pid_t,
            Some(pidfd),
            plan.cgroup.is_some(),
        )));
    }
    let e = io::Error::from_raw_os_error(-rc as i32);
    match -rc as i32 {
        // No clone3 at all, or none that knows the cgroup field: fork from now on.
        libc::ENOSYS | libc::E2BIG => {
            NO_CLONE3.store(true, Ordering::Relaxed);
            tracing::debug!(error = %e, "clone3 refused; children are forked and join their cgroup after the fork");
            Ok(None)
        }
        // This cgroup cannot be entered this way (or seccomp says EPERM): the fork path
        // reports what the kernel says about joining it.
        libc::EINVAL | libc::EOPNOTSUPP | libc::EBUSY | libc::EPERM | libc::EACCES => Ok(None),
        _ => Err(e),
    }
}

/// The clone3 system call: the child's PID, or minus the errno. Never returns in the child.
#[cfg(target_arch = "x86_64")]
fn raw_clone3(
    args: &mut CloneArgs,
    plan: &Plan,
    pointers: &Pointers,
    report: RawFd,
    parent: libc::pid_t,
) -> io::Result<isize> {
    let stack = Stack::map()?;
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack.base as u64;
    args.stack_size = CHILD_STACK as u64;
    let entry = Entry {
        plan,
        pointers,
        report,
        parent,
    };
    // No signal handler of the master may run in the child, which shares its memory: all are
    // blocked around the clone; the child resets every handler before it unblocks them.
    let _blocked = BlockedSignals::all()?;
    let rc: isize;
    // SAFETY: clone3 with a valid clone_args of the size passed. With CLONE_VM the child runs
    // on `stack` (mapped above, 16-byte aligned top, unused by anyone else) and starts by
    // calling `child_entry(&entry)`, which never returns; CLONE_VFORK suspends this thread
    // until the child execs or exits, so `entry`, `plan`, `pointers` and `stack` outlive
    // the child's use of them. `syscall` clobbers rcx and r11; r12/r13 carry the function and
    // its argument into the child, where the kernel has set rsp to the new stack's top. The
    // parent path pushes nothing. Memory is clobbered (the kernel writes the pidfd).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => rc,
            in("rdi") std::ptr::addr_of!(*args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child_entry as extern "C" fn(*mut libc::c_void) -> !,
            in("r13") std::ptr::addr_of!(entry),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    Ok(rc)
}

/// The clone3 system call without `CLONE_VM` (the child runs on a copy of this thread's
/// memory and stack, as after fork): the child's PID, or minus the errno.
#[cfg(not(target_arch = "x86_64"))]
fn raw_clone3(
    args: &mut CloneArgs,
    plan: &Plan,
    pointers: &Pointers,
    report: RawFd,
    parent: libc::pid_t,
) -> io::Result<isize> {
    // SAFETY: clone3 with a valid clone_args of the size passed, no CLONE_VM and no stack: like
    // fork, the child continues on a copy of this thread's memory and stack. In the child (rc
    // 0) only `child_steps` runs, which never returns and calls only async-signal-safe
    // functions on memory prepared before this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(*args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == 0 {
        // SAFETY: we are the new child (see above).
        unsafe { child_steps(plan, pointers, report, parent, false) }
    }
    if rc < 0 {
        return Ok(-(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL) as isize));
    }
    Ok(rc as isize)
}

/// A child's stack: [`CHILD_STACK`] bytes above a guard page, unmapped on drop.
#[cfg(target_arch = "x86_64")]
struct Stack {
    mapping: *mut libc::c_void,
    base: *mut libc::c_void,
}

#[cfg(target_arch = "x86_64")]
impl Stack {
    fn map() -> io::Result<Self> {
        let guard = super::sys::page_size() as usize;
        // SAFETY: an anonymous private mapping of a fresh range; no existing memory is touched.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK + guard,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of the mapping just made becomes inaccessible: a child that
        // overflows its stack faults instead of writing below it.
        if unsafe { libc::mprotect(mapping, guard, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping the mapping made above, which nothing uses.
            unsafe { libc::munmap(mapping, CHILD_STACK + guard) };
            return Err(e);
        }
        Ok(Self {
            mapping,
            // SAFETY: `guard` bytes into the mapping, which is longer than that.
            base: unsafe { mapping.cast::<u8>().add(guard).cast() },
        })
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Stack {
    fn drop(&mut self) {
        let guard = super::sys::page_size() as usize;
        // SAFETY: the mapping made in `map`; the child that used it has exec'd or exited.
        unsafe { libc::munmap(self.mapping, CHILD_STACK + guard) };
    }
}

/// Every signal blocked for this thread while the value lives; the previous mask restored on
/// drop.
#[cfg(target_arch = "x86_64")]
struct BlockedSignals(libc::sigset_t);

#[cfg(target_arch = "x86_64")]
impl BlockedSignals {
    fn all() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask write the locals.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self(old))
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `all`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// The plain-fork path: the same child steps, joining the cgroup by writing `cgroup.procs`.
fn fork(
    plan: &Plan,
    pointers: &Pointers,
    report: RawFd,
    parent: libc::pid_t,
) -> io::Result<libc::pid_t> {
    // SAFETY: fork in a multi-threaded process: the child runs only `child_steps`, which never
    // returns and calls only async-signal-safe functions on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the new child (see above).
        unsafe { child_steps(plan, pointers, report, parent, true) }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

/// A pipe, both ends close-on-exec, both above the standard descriptors (the child `dup2`s
/// its ends onto 0-2, which clears close-on-exec on the copy).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// Moves `fd` to a number above 2 if it is one of 0-2 (which happens when hsu itself was
/// started with its standard descriptors closed), so the child's `dup2`s onto 0-2 cannot
/// overwrite one another's sources.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    above(fd, 3)
}

/// `fd`, or a copy of it numbered `floor` or above if it is below.
fn above(fd: OwnedFd, floor: libc::c_int) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= floor {
        return Ok(fd);
    }
    super::sys::dup_at_least(std::os::fd::AsFd::as_fd(&fd), floor)
}

/// Reads the child's report: `None` at EOF (it exec'd), or the failed step and errno.
fn read_report(fd: &OwnedFd) -> io::Result<Option<(u32, i32)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled tail of our local buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    match got {
        0 => Ok(None),
        8 => {
            let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
            Ok(Some((step, errno)))
        }
        n => Err(io::Error::other(format!(
            "the child's start report was cut short ({n} of 8 bytes)"
        ))),
    }
}

/// Waits for child `pid` (one that is known to be exiting).
fn wait_blocking(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own unreaped child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The error for the child's report of `step` failing with `errno`.
fn describe(step: u32, errno: i32, plan: &Plan) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let kind = os.kind();
    let what = match Step::from_u32(step) {
        Some(Step::Exec) => return exec_error(errno, plan),
        Some(Step::Stdio) => "cannot set up stdin/stdout/stderr".to_string(),
        Some(Step::ProcessGroup) => "cannot start a process group".to_string(),
        Some(Step::WorkingDirectory) => "cannot enter the working directory".to_string(),
        Some(Step::JoinCgroup) => "cannot join the worker's cgroup".to_string(),
        Some(Step::Groups) => "cannot set the user's supplementary groups".to_string(),
        Some(Step::Gid) => match &plan.user {
            Some(u) => format!("cannot switch to gid {}", u.gid),
            None => "cannot switch group".to_string(),
        },
        Some(Step::Uid) => match &plan.user {
            Some(u) => format!("cannot switch to uid {}", u.uid),
            None => "cannot switch user".to_string(),
        },
        Some(Step::ParentDeath) => "cannot set the parent-death signal".to_string(),
        Some(Step::Sockets) => "cannot hand over the listening sockets".to_string(),
        Some(Step::Unshare) => "cannot take its own descriptor table".to_string(),
        None => format!("step {step} failed"),
    };
    io::Error::new(kind, format!("{what}: {os}"))
}

/// The error for exec failing with `errno` (the first error that was not "not found", as
/// `execvp` reports). The caller's error names the program already.
fn exec_error(errno: i32, plan: &Plan) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let exists = || {
        plan.programs
            .iter()
            .any(|p| std::path::Path::new(std::ffi::OsStr::from_bytes(p.as_bytes())).exists())
    };
    let text = match errno {
        libc::ENOENT if exists() => {
            format!("{os}: the file exists, so its interpreter (the #! line) was not found")
        }
        libc::EACCES => format!(
            "{os}: the file is not executable, or a directory on its path cannot be searched"
        ),
        libc::ENOEXEC => {
            format!("{os}: not a program this system can run (a script without a #! line?)")
        }
        _ => os.to_string(),
    };
    io::Error::new(os.kind(), text)
}

/// The child's side, between fork and exec. Never returns: it execs, or reports the failed
/// step and exits with 127.
///
/// # Safety
/// Call only in a freshly forked or cloned child. Everything here is an async-signal-safe
/// call or a raw system call on memory the parent prepared before the fork; nothing
/// allocates, locks or unwinds.
unsafe fn child_steps(
    plan: &Plan,
    pointers: &Pointers,
    report: RawFd,
    parent: libc::pid_t,
    join_by_write: bool,
) -> ! {
    let fail = |step: Step| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    // Its own descriptor table before anything else: until then it is the master's, which the
    // master's other threads go on using. Only the descriptors below `unshare_below` are
    // copied (the range closed reaches past the last open one, which is what tells the
    // kernel to copy nothing above its start).
    if pointers.unshare_below > 0
        && libc::syscall(
            libc::SYS_close_range,
            pointers.unshare_below as u32,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        ) != 0
    {
        fail(Step::Unshare);
    }
    // The cgroup first, while still root: cgroup.procs belongs to the master's user.
    if join_by_write {
        if let Some(cgroup) = &plan.cgroup {
            let fd = libc::open(cgroup.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            // "0": the writing process itself.
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(Step::JoinCgroup);
            }
            libc::close(fd);
        }
    }
    // stdin, stdout, stderr. The sources are all above 2 (see `above_stdio`), and dup2 clears
    // close-on-exec on the copy.
    for (target, fd) in plan.stdio.iter().enumerate() {
        if libc::dup2(fd.as_raw_fd(), target as libc::c_int) < 0 {
            fail(Step::Stdio);
        }
    }
    // Its own process group: stops signal the whole group.
    if libc::setpgid(0, 0) != 0 {
        fail(Step::ProcessGroup);
    }
    if let Some(dir) = &plan.cwd {
        if libc::chdir(dir.as_ptr()) != 0 {
            fail(Step::WorkingDirectory);
        }
    }
    // Nothing the master inherited reaches the worker. Signals ignored by whoever started hsu
    // (`nohup`, a shell's `&`) would stay ignored across exec: back to their defaults; and no
    // signal blocked (the raw call: glibc's wrapper would keep its internal ones blocked).
    for signal in 1..=libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let empty: u64 = 0;
    libc::syscall(
        libc::SYS_rt_sigprocmask,
        libc::SIG_SETMASK,
        std::ptr::addr_of!(empty),
        std::ptr::null_mut::<u64>(),
        std::mem::size_of::<u64>(),
    );
    // Descriptors open in the master (or in whoever started it) close at exec; 0-2 are the
    // worker's stdio. Marked close-on-exec rather than closed, so the report pipe still works.
    if libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) != 0
    {
        for fd in 3..4096 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    // Listening sockets at 3, 4, … (their copies are all above, see `listen_copies`; dup2
    // clears close-on-exec on the copy), and LISTEN_PID is this process.
    for (i, fd) in plan.listen.iter().enumerate() {
        if libc::dup2(fd.as_raw_fd(), 3 + i as libc::c_int) < 0 {
            fail(Step::Sockets);
        }
    }
    if let Some(room) = pointers.listen_pid {
        let mut pid = libc::syscall(libc::SYS_getpid) as u64;
        let mut digits = [0u8; PID_DIGITS];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..n {
            *room.add(i) = digits[n - 1 - i];
        }
        *room.add(n) = 0;
    }
    // The open-file limit the master started with, not the one it raised for itself.
    if let Some(soft) = plan.nofile {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && soft < limit.rlim_cur {
            limit.rlim_cur = soft;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    // The user: raw system calls, which change this (only) thread; glibc's wrappers would try
    // to reach the parent's other threads, which do not exist here. Before the parent-death
    // signal: a credential change clears it.
    if let Some(user) = &plan.user {
        if libc::syscall(libc::SYS_setgroups, user.groups.len(), user.groups.as_ptr()) != 0 {
            fail(Step::Groups);
        }
        if libc::syscall(libc::SYS_setresgid, user.gid, user.gid, user.gid) != 0 {
            fail(Step::Gid);
        }
        if libc::syscall(libc::SYS_setresuid, user.uid, user.uid, user.uid) != 0 {
            fail(Step::Uid);
        }
    }
    // SIGKILL when the spawning thread exits; the parent may have gone before this took
    // effect, and then we were re-parented already.
    if libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    ) != 0
    {
        fail(Step::ParentDeath);
    }
    if libc::getppid() != parent {
        libc::_exit(1);
    }
    // As execvp does: try each candidate; report the first error that is not "not here".
    let mut first_other = 0;
    for &program in &pointers.programs {
        libc::execve(program, pointers.argv.as_ptr(), pointers.envp.as_ptr());
        let errno = *libc::__errno_location();
        if errno != libc::ENOENT && errno != libc::ENOTDIR && first_other == 0 {
            first_other = errno;
        }
    }
    if first_other != 0 {
        *libc::__errno_location() = first_other;
    }
    fail(Step::Exec)
}
