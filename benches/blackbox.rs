//! Black-box start/restart/stop benchmark: `cargo bench --bench blackbox` (outside CI).
//!
//! Measured the way a user starts hsu: the built `hsu run CONFIG` is launched as a process with
//! N `sleep` workers (`restart: {policy: always}`, everything else default, run and log
//! directories on the ordinary disk), and beside it, in the same run, a bare supervisor (this
//! binary again, `--floor N`: fork+exec of N `sleep`s with nothing else, restart on SIGKILL) for
//! the floor. Children's execs are seen through the kernel's process connector (netlink, as
//! root: exact kernel timestamps, no polling); without it the bench says so and stops.
//!
//! Printed for N = 200 and 1,000 (`HSU_BLACKBOX_N=200,1000`), min / median over
//! `HSU_BLACKBOX_REPS` (default 3): launch → first child exec'd, launch → N-th, SIGKILL of a
//! child → its replacement exec'd (`HSU_BLACKBOX_KILLS`, default 20, one at a time; split by the kernel's exit and
//! fork events into kill → exit, exit → the supervisor's fork, fork → exec), stop of everything (SIGTERM →
//! every child gone and the supervisor exited), the supervisor's RSS with N children, its CPU
//! while idle (`HSU_BLACKBOX_IDLE`, seconds, default 10; scaled to 30 s), and leftovers.
//! `HSU_BLACKBOX_CGROUPS=false` runs hsu with `master.cgroups: false`; `HSU_BLACKBOX_HSU=PATH`
//! measures another build of `hsu` (an A/B of two commits) instead of this one's.
//!
//! The `hsu` measured is the one `cargo build --release` makes, built first into
//! `target/blackbox` (not the `bench` profile's: its names differ, so `src/hsu.order` would
//! not lay out its code, see `build.rs`, and its memory would not be a user's).
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

/// Builds `hsu` as `cargo build --release` does (in a target directory of its own: this
/// bench's cargo may still hold the default one) and returns its path.
fn release_build() -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let target = format!("{root}/target/blackbox");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "hsu",
            "--target-dir",
            &target,
        ])
        .current_dir(root)
        .status();
    match built {
        Ok(status) if status.success() => Some(format!("{target}/release/hsu")),
        other => {
            eprintln!("blackbox bench: `cargo build --release --bin hsu` failed ({other:?})");
            None
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args
        .windows(2)
        .find(|w| w[0] == "--floor")
        .and_then(|w| w[1].parse::<usize>().ok())
    {
        return floor_supervisor(n);
    }
    let sizes: Vec<usize> = std::env::var("HSU_BLACKBOX_N")
        .unwrap_or_else(|_| "200,1000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let reps: usize = env_or("HSU_BLACKBOX_REPS", 3);
    let idle: u64 = env_or("HSU_BLACKBOX_IDLE", 10);
    let events = match Connector::open() {
        Ok(c) => c.spawn(),
        Err(e) => {
            eprintln!("blackbox bench: the process connector is not available ({e}); run it as root on Linux");
            return;
        }
    };
    let Some(binary) = std::env::var("HSU_BLACKBOX_HSU")
        .ok()
        .or_else(release_build)
    else {
        return;
    };
    println!("blackbox bench: launch → exec, kill → exec, stop; {reps} reps; {binary}; times from kernel exec events");
    for &n in &sizes {
        let mut floor = Figures::default();
        let mut hsu = Figures::default();
        for rep in 0..reps {
            let measure_idle = if rep == 0 { idle } else { 0 };
            floor.add(run_one(&events, &binary, n, Kind::Floor, measure_idle));
            hsu.add(run_one(&events, &binary, n, Kind::Hsu, measure_idle));
        }
        print_table(n, &floor, &hsu);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Floor,
    Hsu,
}

#[derive(Default)]
struct Run {
    first: f64,
    all: f64,
    restarts: Vec<f64>,
    /// Each restart as kill → exit, exit → fork, fork → exec (kernel timestamps).
    split: Vec<[f64; 3]>,
    stop: f64,
    /// The stop as SIGTERM → first child's exit, → last child's exit, → the supervisor's exit.
    stop_split: Option<[f64; 3]>,
    rss_kib: u64,
    idle_cpu_ms_per_30s: Option<f64>,
    leftovers: usize,
}

#[derive(Default)]
struct Figures {
    first: Vec<f64>,
    all: Vec<f64>,
    restart: Vec<f64>,
    split: [Vec<f64>; 3],
    stop: Vec<f64>,
    stop_split: [Vec<f64>; 3],
    rss: Vec<f64>,
    idle: Vec<f64>,
    leftovers: usize,
}

impl Figures {
    fn add(&mut self, r: Run) {
        self.first.push(r.first);
        self.all.push(r.all);
        self.restart.extend(r.restarts);
        for parts in r.split {
            for (all, part) in self.split.iter_mut().zip(parts) {
                all.push(part);
            }
        }
        self.stop.push(r.stop);
        for (all, part) in self
            .stop_split
            .iter_mut()
            .zip(r.stop_split.into_iter().flatten())
        {
            all.push(part);
        }
        self.rss.push(r.rss_kib as f64 / 1024.0);
        self.idle.extend(r.idle_cpu_ms_per_30s);
        self.leftovers += r.leftovers;
    }
}

fn min_median(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (v[0], v[v.len() / 2])
}

fn print_table(n: usize, floor: &Figures, hsu: &Figures) {
    println!();
    println!("N = {n}                       | floor (min / median) | hsu (min / median)   | ratio of medians");
    let row = |what: &str, f: &[f64], h: &[f64], unit: &str| {
        let (fm, fmed) = min_median(f);
        let (hm, hmed) = min_median(h);
        println!(
            "{what:<29} | {fm:>8.2} / {fmed:>8.2} {unit} | {hm:>8.2} / {hmed:>8.2} {unit} | {:>5.2}x",
            hmed / fmed
        );
    };
    row("launch → first child exec", &floor.first, &hsu.first, "ms");
    row(
        &format!("launch → all {n} exec'd"),
        &floor.all,
        &hsu.all,
        "ms",
    );
    row(
        "SIGKILL → replacement exec",
        &floor.restart,
        &hsu.restart,
        "ms",
    );
    // A figure's parts, one row each.
    let parts = |names: [&str; 3], f: &[Vec<f64>; 3], h: &[Vec<f64>; 3]| {
        for (i, what) in names.into_iter().enumerate() {
            row(what, &f[i], &h[i], "ms");
        }
    };
    parts(
        [
            "  kill → exit (kernel)",
            "  exit → fork (reaction)",
            "  fork → exec (child set-up)",
        ],
        &floor.split,
        &hsu.split,
    );
    row("stop all (SIGTERM → gone)", &floor.stop, &hsu.stop, "ms");
    parts(
        [
            "  → first child exit",
            "  → last child exit",
            "  → supervisor exit",
        ],
        &floor.stop_split,
        &hsu.stop_split,
    );
    row("supervisor RSS with N", &floor.rss, &hsu.rss, "MiB");
    if !hsu.idle.is_empty() {
        row("idle CPU per 30 s", &floor.idle, &hsu.idle, "ms");
    }
    println!(
        "leftover processes after stop: floor {}, hsu {}",
        floor.leftovers, hsu.leftovers
    );
}

/// One supervisor with `n` children: start, 20 kills, idle, stop.
fn run_one(events: &Events, hsu: &str, n: usize, kind: Kind, idle_secs: u64) -> Run {
    let dir = std::env::temp_dir().join(format!("hsu-blackbox-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    events.drain();
    let launch = monotonic_ns();
    let mut child = match kind {
        Kind::Floor => Command::new(std::env::current_exe().unwrap())
            .args(["--floor", &n.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("floor supervisor starts"),
        Kind::Hsu => {
            let config = dir.join("hsu.yaml");
            // HSU_BLACKBOX_CGROUPS=false: process groups only, to see what cgroup placement costs.
            let cgroups = std::env::var("HSU_BLACKBOX_CGROUPS").unwrap_or_else(|_| "true".into());
            let mut text = format!("master: {{log_level: warn, cgroups: {cgroups}}}\nworkers:\n");
            for i in 0..n {
                text.push_str(&format!(
                    "  - {{id: s{i}, type: process, execution: {{executable_path: /bin/sleep, args: ['600']}}, restart: {{policy: always}}}}\n"
                ));
            }
            std::fs::write(&config, text).unwrap();
            let config_path = config.to_str().unwrap().to_string();
            Command::new(hsu)
                .args(["run", &config_path])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("hsu starts")
        }
    };
    let parent = child.id() as i32;
    let mut kids = HashSet::new();
    let mut first = None;
    let mut last = 0;
    while kids.len() < n {
        let Some((pid, at)) = events.next_exec_of(parent) else {
            panic!("{} children of {n} exec'd", kids.len());
        };
        if kids.insert(pid) {
            first.get_or_insert(at);
            last = at;
        }
    }
    let mut run = Run {
        first: ms(first.unwrap_or(launch) - launch),
        all: ms(last - launch),
        ..Run::default()
    };
    std::thread::sleep(Duration::from_millis(300));
    run.rss_kib = rss_kib(parent);
    // Restarts: SIGKILL one child, time until a new child of the supervisor exec'd.
    let mut pids: Vec<i32> = kids.iter().copied().collect();
    pids.sort_unstable();
    for k in 0..env_or("HSU_BLACKBOX_KILLS", 20) {
        let victim = pids[k * 7 % pids.len()];
        events.drain();
        let t = monotonic_ns();
        // SAFETY: kill with a positive PID of a child of our child; no memory is involved.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let mut exited = None;
        let mut forks = std::collections::HashMap::new();
        let (new, at) = loop {
            let Some((pid, at)) = events.next_exec_seeing(parent, |ev| match ev.what {
                What::Exit if ev.pid == victim => exited = Some(ev.ts),
                What::Fork if ev.parent == parent => {
                    forks.insert(ev.pid, ev.ts);
                }
                _ => {}
            }) else {
                panic!("no replacement for {victim}");
            };
            if pid != victim {
                break (pid, at);
            }
        };
        run.restarts.push(ms(at - t));
        if let (Some(exit), Some(&fork)) = (exited, forks.get(&new)) {
            if t <= exit && exit <= fork && fork <= at {
                run.split
                    .push([ms(exit - t), ms(fork - exit), ms(at - fork)]);
            }
        }
        if let Some(slot) = pids.iter_mut().find(|p| **p == victim) {
            *slot = new;
        }
        // Spread the kills: a crash after a stable run, not a crash loop.
        std::thread::sleep(Duration::from_millis(1100));
    }
    if idle_secs > 0 {
        let before = cpu_ticks(parent);
        std::thread::sleep(Duration::from_secs(idle_secs));
        let used = cpu_ticks(parent) - before;
        let tick_ms = 1000.0 / hsu::internals::sys::clock_ticks() as f64;
        run.idle_cpu_ms_per_30s = Some(used as f64 * tick_ms * 30.0 / idle_secs as f64);
    }
    events.drain();
    let t = monotonic_ns();
    // SAFETY: kill with our own child's positive PID.
    unsafe { libc::kill(parent, libc::SIGTERM) };
    wait_exit(&mut child);
    run.stop_split = events.stop_split(t, parent, &pids);
    let mut left: Vec<i32> = pids.clone();
    let start = std::time::Instant::now();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(10) {
        left.retain(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        std::thread::sleep(Duration::from_micros(200));
    }
    run.stop = ms(monotonic_ns() - t);
    run.leftovers = left.len();
    for p in left {
        // SAFETY: kill with a positive PID that outlived its supervisor.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn wait_exit(child: &mut Child) {
    let start = std::time::Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        assert!(start.elapsed() < DEADLINE, "supervisor did not exit");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn stat_of(pid: i32) -> Option<hsu::internals::sys::Stat> {
    hsu::internals::sys::read_stat(pid).ok()
}

fn rss_kib(pid: i32) -> u64 {
    stat_of(pid).map_or(0, |s| s.rss_pages * hsu::internals::sys::page_size() / 1024)
}

fn cpu_ticks(pid: i32) -> u64 {
    stat_of(pid).map_or(0, |s| s.cpu_ticks)
}

/// The bare floor: fork+exec `n` sleeps, restart each when it dies, SIGTERM them all and wait
/// on SIGTERM. Nothing else: no pipes, no files, no process groups.
fn floor_supervisor(n: usize) {
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("/bin/sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook_flag(&term);
    let mut out = std::io::stdout();
    let _ = out.flush();
    loop {
        let mut status = 0;
        // SAFETY: waitpid for any child; `status` is a valid writable int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if term.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if pid > 0 {
            if let Some(slot) = children.iter_mut().find(|c| c.id() as i32 == pid) {
                *slot = Command::new("/bin/sleep")
                    .arg("600")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn");
            }
        }
    }
    for c in &children {
        // SAFETY: kill with our own children's PIDs.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for mut c in children {
        let _ = c.wait();
    }
}

static TERM: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

extern "C" fn on_term(_: libc::c_int) {
    if let Some(flag) = TERM.get() {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn signal_hook_flag(flag: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = TERM.set(flag.clone());
    // SAFETY: installs a handler that only stores to an atomic (async-signal-safe); without
    // SA_RESTART, so the blocking waitpid returns EINTR and the loop sees the flag.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_term as *const () as usize;
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// The kernel's process connector: a netlink socket that receives every exec with its time.
struct Connector(i32);

/// A process event from the kernel: what, the process, the parent (forks only), kernel
/// monotonic ns.
#[derive(Clone, Copy)]
struct Ev {
    what: What,
    pid: i32,
    parent: i32,
    ts: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum What {
    Fork,
    Exec,
    Exit,
}

/// Process events, read on a thread of their own.
struct Events(mpsc::Receiver<Ev>);

impl Connector {
    fn open() -> std::io::Result<Self> {
        // SAFETY: plain socket/bind/send calls with stack buffers of the right sizes.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_CONNECTOR);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_pid = 0;
            addr.nl_groups = 1; // CN_IDX_PROC
            if libc::bind(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // nlmsghdr (16) + cn_msg (20) + PROC_CN_MCAST_LISTEN (4).
            let mut msg = [0u8; 40];
            msg[0..4].copy_from_slice(&40u32.to_ne_bytes());
            msg[4..6].copy_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
            msg[16..20].copy_from_slice(&1u32.to_ne_bytes()); // CN_IDX_PROC
            msg[20..24].copy_from_slice(&1u32.to_ne_bytes()); // CN_VAL_PROC
            msg[32..34].copy_from_slice(&4u16.to_ne_bytes());
            msg[36..40].copy_from_slice(&1u32.to_ne_bytes()); // PROC_CN_MCAST_LISTEN
            if libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A large receive buffer: a thousand execs arrive at once.
            let size: libc::c_int = 32 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            Ok(Self(fd))
        }
    }

    fn spawn(self) -> Events {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                // SAFETY: recv into a buffer of the given length.
                let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                let n = n as usize;
                let mut at = 0;
                while at + 16 <= n {
                    let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                    let event = at + 16 + 20;
                    if event + 32 <= n {
                        let word = |at: usize| {
                            i32::from_ne_bytes(buf[event + at..event + at + 4].try_into().unwrap())
                        };
                        let what = word(0) as u32;
                        let ts = u64::from_ne_bytes(buf[event + 8..event + 16].try_into().unwrap());
                        // PROC_EVENT_FORK: parent pid, parent tgid, child pid, child tgid;
                        // EXEC and EXIT: pid, tgid. Threads (pid != tgid) are not processes.
                        let ev = match what {
                            1 if word(24) == word(28) => Some(Ev {
                                what: What::Fork,
                                pid: word(24),
                                parent: word(20),
                                ts,
                            }),
                            2 => Some(Ev {
                                what: What::Exec,
                                pid: word(16),
                                parent: 0,
                                ts,
                            }),
                            0x8000_0000 if word(16) == word(20) => Some(Ev {
                                what: What::Exit,
                                pid: word(16),
                                parent: 0,
                                ts,
                            }),
                            _ => None,
                        };
                        if let Some(ev) = ev {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                    }
                    if len < 16 {
                        break;
                    }
                    at += (len + 3) & !3;
                }
            }
        });
        Events(rx)
    }
}

impl Events {
    fn drain(&self) {
        while self.0.try_recv().is_ok() {}
    }

    /// From the exit events after a stop at `t`: → first of `children` exited, → last, →
    /// `parent` exited (`None` if an exit was not seen within a second).
    fn stop_split(&self, t: u64, parent: i32, children: &[i32]) -> Option<[f64; 3]> {
        let mut left: HashSet<i32> = children.iter().copied().collect();
        let (mut first, mut last, mut gone) = (None, None, None);
        while !left.is_empty() || gone.is_none() {
            let ev = self.0.recv_timeout(Duration::from_secs(1)).ok()?;
            if ev.what != What::Exit {
                continue;
            }
            if ev.pid == parent {
                gone = Some(ev.ts);
            } else if left.remove(&ev.pid) {
                first.get_or_insert(ev.ts);
                last = Some(ev.ts);
            }
        }
        let since = |at: u64| ms(at.saturating_sub(t));
        Some([since(first?), since(last?), since(gone?)])
    }

    /// The next exec of a `sleep` whose parent is `parent`.
    fn next_exec_of(&self, parent: i32) -> Option<(i32, u64)> {
        self.next_exec_seeing(parent, |_| {})
    }

    /// [`Events::next_exec_of`], showing every event before it to `saw`.
    fn next_exec_seeing(&self, parent: i32, mut saw: impl FnMut(&Ev)) -> Option<(i32, u64)> {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ev = self.0.recv_timeout(left).ok()?;
            saw(&ev);
            if ev.what != What::Exec {
                continue;
            }
            let Some(stat) = stat_of(ev.pid) else {
                continue;
            };
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", ev.pid)).unwrap_or_default();
            if stat.ppid == parent && comm.trim() == "sleep" {
                return Some((ev.pid, ev.ts));
            }
        }
    }
}
