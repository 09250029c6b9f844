//! CPU and memory sampling of the processes the master runs, on a dedicated thread (never an
//! arbiter), refreshing only the watched PIDs, so its cost grows with the number of workers,
//! not of processes on the host.
//!
//! Workers with `limits:` are sampled every `resource_interval` (their limits are enforced on
//! those samples); the others only when someone asks ([`ResourceMonitor::sample_now`]: `hsu ls`,
//! `hsu status`, `/metrics`), so a thousand idle workers cost no CPU between requests (sampling
//! all of them every 5 s was most of the master's idle CPU: ~40 µs a worker, in `cgroup.procs`
//! and `/proc/PID/stat`).
//!
//! On Linux it reads `/proc/PID/stat` directly (about 3 µs a process, measured; sysinfo's
//! refresh of the same PIDs costs over ten times that, which with a thousand children was
//! most of the master's idle CPU). Elsewhere it uses `sysinfo`.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;

use crate::process::ResourceUsage;
use crate::WorkerId;

/// Event: the latest samples, sent to the master after each round.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResourceSamples(pub Vec<(WorkerId, ResourceUsage)>);

enum Command {
    Watch(WorkerId, Scope, bool),
    Unwatch(WorkerId),
    SampleNow(tokio::sync::oneshot::Sender<Vec<(WorkerId, ResourceUsage)>>),
}

/// What one worker's figures sum: its whole tree where the master can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One process (an attached, unmanaged one).
    Process(u32),
    /// Every member of a process group (a child without a cgroup leads its own group).
    Group(u32),
    /// Every member of a cgroup (setsid'd and double-forked descendants included).
    Cgroup(std::path::PathBuf),
}

impl Scope {
    /// The process the scope is named after (for platforms that only see one).
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    fn leader(&self) -> Option<u32> {
        match self {
            Self::Process(p) | Self::Group(p) => Some(*p),
            Self::Cgroup(_) => None,
        }
    }
}

/// Handle on the sampling thread; the thread ends when the handle is dropped.
pub struct ResourceMonitor {
    commands: mpsc::Sender<Command>,
}

impl ResourceMonitor {
    /// Starts the thread, sampling every `interval` and reporting to `reports`.
    ///
    /// # Errors
    /// When the thread cannot be created.
    pub fn start(interval: Duration, reports: Recipient<ResourceSamples>) -> std::io::Result<Self> {
        let (commands, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("hsu-resources".into())
            .spawn(move || run(rx, interval, reports))?;
        Ok(Self { commands })
    }

    /// Starts watching worker `id`'s processes (replacing what was watched for it): every
    /// interval when `periodic` (it has limits), else only in [`Self::sample_now`].
    pub fn watch(&self, id: WorkerId, scope: Scope, periodic: bool) {
        let _ = self.commands.send(Command::Watch(id, scope, periodic));
    }

    /// Samples every watched worker now; the answer comes when the round is done.
    pub fn sample_now(&self) -> tokio::sync::oneshot::Receiver<Vec<(WorkerId, ResourceUsage)>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.commands.send(Command::SampleNow(tx));
        rx
    }

    /// Stops sampling worker `id`.
    pub fn unwatch(&self, id: WorkerId) {
        let _ = self.commands.send(Command::Unwatch(id));
    }
}

fn run(rx: mpsc::Receiver<Command>, interval: Duration, reports: Recipient<ResourceSamples>) {
    let mut sampler = Sampler::new();
    let mut watched: HashMap<WorkerId, Scope> = HashMap::new();
    let mut periodic: HashMap<WorkerId, Scope> = HashMap::new();
    let mut next = std::time::Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Watch(id, scope, every_round)) => {
                if every_round {
                    periodic.insert(id.clone(), scope.clone());
                } else {
                    periodic.remove(&id);
                }
                watched.insert(id, scope);
                continue;
            }
            Ok(Command::Unwatch(id)) => {
                watched.remove(&id);
                periodic.remove(&id);
                sampler.forget(&id);
                continue;
            }
            Ok(Command::SampleNow(reply)) => {
                let _ = reply.send(sampler.sample(&watched));
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        next = std::time::Instant::now() + interval;
        if periodic.is_empty() {
            continue;
        }
        let samples = sampler.sample(&periodic);
        if !samples.is_empty()
            && reports.try_send(ResourceSamples(samples)).is_err()
            && !reports.connected()
        {
            return;
        }
    }
}

/// Reads `/proc` and remembers each worker's CPU ticks for the next round's percentage.
#[cfg(target_os = "linux")]
struct Sampler {
    last: HashMap<WorkerId, (u64, std::time::Instant)>,
    ticks_per_second: f64,
    page_size: u64,
}

#[cfg(target_os = "linux")]
impl Sampler {
    fn new() -> Self {
        Self {
            last: HashMap::new(),
            ticks_per_second: crate::process::sys::clock_ticks() as f64,
            page_size: crate::process::sys::page_size(),
        }
    }

    fn sample(&mut self, watched: &HashMap<WorkerId, Scope>) -> Vec<(WorkerId, ResourceUsage)> {
        use crate::process::sys::{read_stat, Stat};
        let at = SystemTime::now();
        let now = std::time::Instant::now();
        // Process groups are found by one scan of /proc per round, only if one is watched.
        let mut groups: HashMap<i32, Vec<Stat>> = HashMap::new();
        if watched.values().any(|s| matches!(s, Scope::Group(_))) {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    let Some(pid) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<i32>().ok())
                    else {
                        continue;
                    };
                    if let Ok(stat) = read_stat(pid) {
                        groups.entry(stat.pgrp).or_default().push(stat);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(watched.len());
        for (id, scope) in watched {
            let members: Vec<Stat> = match scope {
                Scope::Process(pid) => read_stat(*pid as i32).into_iter().collect(),
                Scope::Group(pgid) => groups.remove(&(*pgid as i32)).unwrap_or_default(),
                Scope::Cgroup(dir) => std::fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .filter_map(|pid| read_stat(pid).ok())
                    .collect(),
            };
            let live: Vec<&Stat> = members.iter().filter(|s| s.state != 'Z').collect();
            if live.is_empty() {
                continue;
            }
            let ticks: u64 = live.iter().map(|s| s.cpu_ticks).sum();
            let rss: u64 = live.iter().map(|s| s.rss_pages).sum();
            let cpu_percent = match self.last.get(id) {
                Some(&(before, when)) if ticks >= before => {
                    let seconds = now.duration_since(when).as_secs_f64().max(1e-3);
                    (ticks - before) as f64 / self.ticks_per_second / seconds * 100.0
                }
                _ => 0.0,
            };
            self.last.insert(id.clone(), (ticks, now));
            out.push((
                id.clone(),
                ResourceUsage {
                    cpu_percent,
                    rss_bytes: rss * self.page_size,
                    cpu_seconds: Some(ticks as f64 / self.ticks_per_second),
                    at,
                },
            ));
        }
        out
    }

    fn forget(&mut self, id: &WorkerId) {
        self.last.remove(id);
    }
}

/// Uses sysinfo where there is no `/proc` to read.
#[cfg(not(target_os = "linux"))]
struct Sampler(sysinfo::System);

#[cfg(not(target_os = "linux"))]
impl Sampler {
    fn new() -> Self {
        Self(sysinfo::System::new())
    }

    fn forget(&mut self, _: &WorkerId) {}

    /// Only the leader is seen here (no cgroups, no cheap group scan).
    fn sample(&mut self, watched: &HashMap<WorkerId, Scope>) -> Vec<(WorkerId, ResourceUsage)> {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate};
        let watched: HashMap<WorkerId, u32> = watched
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.leader()?)))
            .collect();
        let pids: Vec<Pid> = watched.values().map(|&p| Pid::from_u32(p)).collect();
        let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
        self.0
            .refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        let at = SystemTime::now();
        watched
            .iter()
            .filter_map(|(id, &pid)| {
                let p = self.0.process(Pid::from_u32(pid))?;
                Some((
                    id.clone(),
                    ResourceUsage {
                        cpu_percent: f64::from(p.cpu_usage()),
                        rss_bytes: p.memory(),
                        cpu_seconds: None,
                        at,
                    },
                ))
            })
            .collect()
    }
}
