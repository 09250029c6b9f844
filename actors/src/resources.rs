//! CPU and memory sampling of the processes the master runs. A dedicated thread owns one
//! `sysinfo::System` and refreshes only the watched PIDs, so sampling never runs on an
//! arbiter and its cost grows with the number of workers, not of processes on the host.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

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
    let mut system = System::new();
    let mut watched: HashMap<WorkerId, u32> = HashMap::new();
    let mut next = std::time::Instant::now() + interval;
    let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
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
        let pids: Vec<Pid> = watched.values().map(|&p| Pid::from_u32(p)).collect();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        let at = SystemTime::now();
        let samples: Vec<(WorkerId, ResourceUsage)> = watched
            .iter()
            .filter_map(|(id, &pid)| {
                let p = system.process(Pid::from_u32(pid))?;
                Some((
                    id.clone(),
                    ResourceUsage {
                        cpu_percent: f64::from(p.cpu_usage()),
                        rss_bytes: p.memory(),
                        at,
                    },
                ))
            })
            .collect();
        if !samples.is_empty()
            && reports.try_send(ResourceSamples(samples)).is_err()
            && !reports.connected()
        {
            return;
        }
    }
}
