//! CPU and memory sampling of the processes the master runs, on a dedicated thread (never an
//! arbiter), refreshing only the watched PIDs, so its cost grows with the number of workers,
//! not of processes on the host.
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
    Watch(WorkerId, u32),
    Unwatch(WorkerId),
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

    /// Starts sampling `pid` for worker `id` (replacing an earlier PID of it).
    pub fn watch(&self, id: WorkerId, pid: u32) {
        let _ = self.commands.send(Command::Watch(id, pid));
    }

    /// Stops sampling worker `id`.
    pub fn unwatch(&self, id: WorkerId) {
        let _ = self.commands.send(Command::Unwatch(id));
    }
}

fn run(rx: mpsc::Receiver<Command>, interval: Duration, reports: Recipient<ResourceSamples>) {
    let mut sampler = Sampler::new();
    let mut watched: HashMap<WorkerId, u32> = HashMap::new();
    let mut next = std::time::Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Watch(id, pid)) => {
                watched.insert(id, pid);
                continue;
            }
            Ok(Command::Unwatch(id)) => {
                watched.remove(&id);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        next = std::time::Instant::now() + interval;
        if watched.is_empty() {
            continue;
        }
        let samples = sampler.sample(&watched);
        if !samples.is_empty()
            && reports.try_send(ResourceSamples(samples)).is_err()
            && !reports.connected()
        {
            return;
        }
    }
}

/// Reads `/proc` and remembers each PID's CPU ticks for the next round's percentage.
#[cfg(target_os = "linux")]
struct Sampler {
    last: HashMap<u32, (u64, std::time::Instant)>,
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

    fn sample(&mut self, watched: &HashMap<WorkerId, u32>) -> Vec<(WorkerId, ResourceUsage)> {
        let at = SystemTime::now();
        let now = std::time::Instant::now();
        let mut seen = HashMap::with_capacity(watched.len());
        let mut out = Vec::with_capacity(watched.len());
        for (id, &pid) in watched {
            let Ok(stat) = crate::process::sys::read_stat(pid as i32) else {
                continue;
            };
            let cpu_percent = match self.last.get(&pid) {
                Some(&(ticks, when)) if stat.cpu_ticks >= ticks => {
                    let seconds = now.duration_since(when).as_secs_f64().max(1e-3);
                    (stat.cpu_ticks - ticks) as f64 / self.ticks_per_second / seconds * 100.0
                }
                _ => 0.0,
            };
            seen.insert(pid, (stat.cpu_ticks, now));
            out.push((
                id.clone(),
                ResourceUsage {
                    cpu_percent,
                    rss_bytes: stat.rss_pages * self.page_size,
                    cpu_seconds: Some(stat.cpu_ticks as f64 / self.ticks_per_second),
                    at,
                },
            ));
        }
        self.last = seen;
        out
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

    fn sample(&mut self, watched: &HashMap<WorkerId, u32>) -> Vec<(WorkerId, ResourceUsage)> {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate};
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
