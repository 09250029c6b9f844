//! Reaping orphans: the master as a child subreaper (and as PID 1, a container's init).
//!
//! A descendant whose parent exits (a daemon's double fork, a `sh -c "x &"`) is re-parented to
//! the nearest subreaper, or to PID 1. `hsu run` makes itself a subreaper, so those orphans stay
//! inside the tree it supervises, and reaps them after they exit (it looks every second): no
//! `<defunct>` entries pile up, even when hsu is PID 1 and every orphan of the namespace comes
//! to it.
//!
//! One owner of each `wait`: the master's own children (process workers, the cgroup keeper,
//! exec probes) are each waited for by the code that spawned them, which needs their exit
//! status. They are registered here ([`claim`]/[`release`]) and never touched. Any other exited
//! child is first seen without being reaped (`waitid(WNOWAIT)`), and reaped once it has been a
//! zombie for [`GRACE`]: long enough for a module that spawned a child of its own and waits
//! for it to collect its status first, short enough that nothing piles up.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sys;

/// How long an exited child that is not the master's own is left to whoever may wait for it.
pub const GRACE: Duration = Duration::from_secs(1);

/// How often to look for exited orphans: one is reaped at most `PERIOD + GRACE` after its exit.
const PERIOD: Duration = Duration::from_secs(1);

/// How often the full sweep runs when no orphan is seen (see `run`).
const FULL_PERIOD: Duration = Duration::from_secs(30);

/// How soon to look again while a child of the master's own has exited but is not reaped yet
/// (its waiter is about to): it hides the others from `waitid`.
const RETRY: Duration = Duration::from_millis(100);

/// The shortest time between two sweeps that had to scan /proc.
const MIN_PERIOD: Duration = Duration::from_millis(50);

static OWN: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(Mutex::default);
static REAPED: AtomicU64 = AtomicU64::new(0);
static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers `pid` as a child the master waits for itself: the reaper leaves it alone.
pub fn claim(pid: u32) {
    if let (Ok(pid), Ok(mut own)) = (i32::try_from(pid), OWN.lock()) {
        own.insert(pid);
    }
}

/// `pid` has been waited for by its owner.
pub fn release(pid: u32) {
    if let (Ok(pid), Ok(mut own)) = (i32::try_from(pid), OWN.lock()) {
        own.remove(&pid);
    }
}

/// [`claim`] for as long as this value lives.
#[derive(Debug)]
pub struct Claimed(u32);

impl Claimed {
    /// Claims `pid`.
    pub fn new(pid: u32) -> Self {
        claim(pid);
        Self(pid)
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        release(self.0);
    }
}

fn is_own(pid: i32) -> bool {
    OWN.lock().map(|own| own.contains(&pid)).unwrap_or(true)
}

/// Orphans reaped so far by this process.
pub fn reaped() -> u64 {
    REAPED.load(Ordering::Relaxed)
}

/// True once [`start`] has made this process a reaper.
pub fn active() -> bool {
    matches!(STARTED.get(), Some(Ok(())))
}

/// Makes this process a child subreaper (PID 1 is one already) and starts the reaper thread.
/// Once per process; later calls return the first one's result.
///
/// # Errors
/// When the kernel refuses `PR_SET_CHILD_SUBREAPER` or the thread cannot be started.
pub fn start() -> io::Result<()> {
    STARTED
        .get_or_init(|| start_once().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn start_once() -> io::Result<()> {
    if std::process::id() != 1 {
        sys::become_subreaper()?;
    }
    std::thread::Builder::new()
        .name("hsu-reaper".into())
        .spawn(run)?;
    Ok(())
}

/// Looks by the clock: every [`PERIOD`] while no exited child is left, sooner while one waits
/// for its grace. Not on SIGCHLD: with no handler for it, the kernel drops a child's SIGCHLD
/// where it is made (its default is to be ignored), whereas a handler ran in whichever of the
/// master's threads the kernel picked and woke every tokio runtime of the process (each has the
/// signal pipe in its reactor); at a stop of 1,000 workers that was about a tenth of the
/// master's CPU, for nothing, since the reaper waits a [`GRACE`] before it reaps anyway.
fn run() {
    let mut state = Sweep::default();
    let mut pending = true;
    let mut last_full = Instant::now();
    loop {
        // A sweep's `waitid` walks every child of every thread (270 µs with 1,000 workers;
        // twice a second that was 5.4 ms of every 10 s idle): only when something may be there.
        // Orphans are re-parented to the main thread, whose children are few (the workers are
        // the spawner threads'); a child another thread made and left is found by the full
        // sweep every `FULL_PERIOD`.
        let next = if pending || last_full.elapsed() >= FULL_PERIOD || orphans_may_be_there() {
            last_full = Instant::now();
            sweep(&mut state)
        } else {
            None
        };
        pending = next.is_some();
        std::thread::sleep(next.unwrap_or(PERIOD).min(PERIOD));
    }
}

/// Whether the main thread has a child that is not the master's own (an orphan given to this
/// subreaper, alive or not); true when its list cannot be read.
fn orphans_may_be_there() -> bool {
    let me = std::process::id();
    match std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        Ok(list) => list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .any(|pid| !is_own(pid)),
        Err(_) => true,
    }
}

/// What a sweep remembers for the next one.
#[derive(Default)]
struct Sweep {
    /// When each exited, not-own child was first seen.
    seen: HashMap<i32, Instant>,
    /// Since when exited children of the master's own have hidden the rest, without a break.
    hidden_since: Option<Instant>,
}

/// Reaps every exited child that is not the master's own and has been exited for [`GRACE`].
/// Returns when to look again (none: no exited child is left).
fn sweep(state: &mut Sweep) -> Option<Duration> {
    let now = Instant::now();
    // The common case: no exited child at all, or only orphans (reaped one by one).
    let hidden_by = loop {
        let Some(pid) = sys::peek_exited_child() else {
            state.hidden_since = None;
            return None;
        };
        if !reapable(pid, &mut state.seen, now) || !reap(pid, &mut state.seen) {
            break pid;
        }
    };
    // A child of the master's own that its waiter is about to collect hides the others for a
    // moment: look again then, without scanning /proc. A scan reads every process's stat
    // file, milliseconds with 1,000 children, and a stop or a crash storm would pay it for
    // every period; only own children that keep hiding the rest for a grace period do.
    if is_own(hidden_by) {
        let since = *state.hidden_since.get_or_insert(now);
        if now.duration_since(since) < GRACE {
            return Some(RETRY);
        }
    }
    // An exited child is left that must not be reaped yet; it hides any other from waitid,
    // so find the others in /proc.
    let zombies = zombie_children();
    let seen = &mut state.seen;
    seen.retain(|pid, _| zombies.contains(pid));
    let mut next = RETRY;
    for pid in zombies {
        if reapable(pid, seen, now) {
            reap(pid, seen);
        } else if let Some(first) = seen.get(&pid) {
            next = next.min(GRACE.saturating_sub(now - *first));
        }
    }
    Some(next.max(MIN_PERIOD))
}

fn reapable(pid: i32, seen: &mut HashMap<i32, Instant>, now: Instant) -> bool {
    if is_own(pid) {
        return false;
    }
    now.duration_since(*seen.entry(pid).or_insert(now)) >= GRACE
}

fn reap(pid: i32, seen: &mut HashMap<i32, Instant>) -> bool {
    seen.remove(&pid);
    let reaped = sys::reap_child(pid);
    if reaped {
        REAPED.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(pid, "reaped an orphan");
    }
    reaped
}

/// This process's exited, unreaped children, found in /proc. Empty where /proc is not this
/// PID namespace's (its PIDs would not be ours to wait for).
fn zombie_children() -> Vec<i32> {
    let me = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<i32>().ok());
    if me != i32::try_from(std::process::id()).ok() {
        return Vec::new();
    }
    let Some(me) = me else { return Vec::new() };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| sys::read_stat(pid).is_ok_and(|s| s.ppid == me && s.state == 'Z'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_children_are_never_reapable_and_others_only_after_the_grace() {
        let mut seen = HashMap::new();
        let now = Instant::now();
        claim(4_000_001);
        assert!(!reapable(4_000_001, &mut seen, now + GRACE * 10));
        release(4_000_001);
        assert!(!reapable(4_000_002, &mut seen, now));
        assert!(!reapable(4_000_002, &mut seen, now + GRACE / 2));
        assert!(reapable(4_000_002, &mut seen, now + GRACE));
    }
}
