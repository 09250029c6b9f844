//! The worker table's row: what the master knows of one worker, in named parts (supervision,
//! health view, resource usage, quarantine), and its handle on the worker actor.

use std::time::SystemTime;

use actix::prelude::*;

use super::messages::WorkerSummary;
use crate::config::WorkerSpec;
use crate::error::WorkerError;
use crate::process::ResourceUsage;
use crate::restart::RestartTracker;
use crate::state::WorkerState;
use crate::window::SlidingWindow;
use crate::worker::module_worker::ModuleWorkerActor;
use crate::worker::process_worker::ProcessWorkerActor;
use crate::worker::{
    AbandonWait, CheckHealth, Deployment, Fail, GetFacts, HealthStatus, Initialize,
    QuarantineStatus, Start, Stop, Terminate, Wait, WorkerDiagnostics, WorkerFacts,
};
use crate::WorkerId;

/// One row of the worker table.
pub(super) struct Entry {
    pub addr: WorkerAddr,
    pub spec: WorkerSpec,
    pub deployment: Deployment,
    /// Last state reported by the worker.
    pub state: WorkerState,
    pub last_error: Option<String>,
    pub supervision: Supervision,
    pub health: HealthView,
    pub usage: Usage,
    pub quarantine: Quarantine,
    /// The current run, from the worker's events: its pid (processes) and since when it runs.
    pub run: Option<RunView>,
    /// The worker actor's instance number: events of an older actor under this id are
    /// ignored.
    pub instance: u64,
    /// The spec as configured, where it differs from `spec` (a quarantine changed `spec`):
    /// what `apply` compares. `None`: `spec` is it (one copy per worker instead of two).
    pub configured: Option<Box<WorkerSpec>>,
    /// How its process last ended (from the events).
    pub last_exit: Option<crate::process::ExitInfo>,
    /// What its current (or last) run reached, for the `depends_on:` of others.
    pub progress: super::depends::Progress,
    /// A start waiting for this worker's own `depends_on:`.
    pub waiting: Option<Box<super::depends::Waiting>>,
    /// Its `schedule:` timer and counts.
    pub schedule: Option<Box<super::schedule::ScheduleState>>,
    /// Its listening sockets, held for all its instances.
    pub sockets: std::sync::Arc<crate::sockets::WorkerSockets>,
    /// Its current instance's cgroup name (processes; a `start_first` successor has its own).
    pub cgroup: String,
    /// A `start_first` replacement in progress.
    pub successor: Option<Box<super::replace::SuccessorView>>,
}

/// What the master saw of a worker's current run.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunView {
    pub pid: Option<u32>,
    pub since: std::time::Instant,
    pub started_at: SystemTime,
}

impl Entry {
    /// A new row for a worker just added (`idle`).
    pub fn new(addr: WorkerAddr, spec: WorkerSpec, deployment: Deployment, instance: u64) -> Self {
        let sockets = crate::sockets::WorkerSockets::new(&spec.id, &[], None);
        let cgroup = spec.id.to_string();
        Self {
            addr,
            configured: None,
            spec,
            deployment,
            state: WorkerState::Idle,
            last_error: None,
            supervision: Supervision::default(),
            health: HealthView::default(),
            usage: Usage::default(),
            quarantine: Quarantine::default(),
            run: None,
            instance,
            last_exit: None,
            progress: Default::default(),
            waiting: None,
            schedule: None,
            sockets,
            cgroup,
            successor: None,
        }
    }

    /// The spec as configured (see `configured`).
    pub fn configured(&self) -> &WorkerSpec {
        self.configured.as_deref().unwrap_or(&self.spec)
    }

    /// The row `hsu ls` shows, from the master's records alone (no worker is asked, so a
    /// thousand rows cost no round trips).
    pub fn summary(&self, now: std::time::Instant) -> WorkerSummary {
        let running = self.state == WorkerState::Running;
        WorkerSummary {
            id: self.spec.id.clone(),
            deployment: self.deployment,
            state: self.state,
            restart_count: self.restart_count(),
            circuit_open: self.supervision.restarts.circuit_open,
            health: self.health.status,
            last_error: self.last_error.clone(),
            pid: self.run.and_then(|r| r.pid),
            uptime: self.run.map(|r| now.saturating_duration_since(r.since)),
            resources: self.usage.latest.filter(|_| running),
            why: self.why(now),
            started_at: self.run.map(|r| r.started_at),
            health_failures_total: self.health.failures_total,
            quarantined: self.quarantine.moved.is_some(),
            last_exit: self.last_exit.clone(),
            group: None,
            schedule: self.schedule_status(),
        }
    }

    /// See [`WorkerSummary::why`].
    fn why(&self, now: std::time::Instant) -> Option<String> {
        let restart = &self.spec.restart;
        let window = crate::config::duration::format(restart.window);
        if let Some(w) = &self.waiting {
            return Some(format!(
                "{} ({:.0}s)",
                w.reason,
                now.saturating_duration_since(w.since).as_secs_f64()
            ));
        }
        if let Some(q) = &self.quarantine.moved {
            return Some(format!(
                "quarantined ({} panics in {})",
                q.panics,
                crate::config::duration::format(q.within)
            ));
        }
        if let Some(next) = &self.supervision.next_restart {
            let wait = next.at.saturating_duration_since(now);
            return Some(format!(
                "retry in {:.1}s ({}/{} in {window})",
                wait.as_secs_f64(),
                next.attempt,
                restart.max_restarts
            ));
        }
        if self.supervision.restarts.circuit_open {
            return Some(format!(
                "circuit open ({} restarts in {window}); start it by hand",
                restart.max_restarts
            ));
        }
        if !self.spec.enabled && matches!(self.state, WorkerState::Idle | WorkerState::Stopped) {
            return Some("disabled (enabled: false): `hsu start` starts it".into());
        }
        if let (Some(schedule), Some(next)) = (
            &self.spec.schedule,
            self.schedule.as_ref().and_then(|s| s.next),
        ) {
            if self.state != WorkerState::Running {
                return Some(format!("next run {}", schedule.format(next)));
            }
        }
        None
    }

    /// What the master adds to the worker's facts, as of now.
    pub fn records(&self) -> Records {
        Records {
            id: self.spec.id.clone(),
            deployment: self.deployment,
            restart_count: self.restart_count(),
            circuit_open: self.supervision.restarts.circuit_open,
            health: self.health.clone(),
            last_error: self.last_error.clone(),
            resources: self.usage.latest,
            quarantine: self.quarantine.moved.clone(),
            why: self.why(std::time::Instant::now()),
            schedule: self.schedule_status(),
            group: None,
            sockets: self
                .sockets
                .bound()
                .into_iter()
                .map(|(name, listen)| crate::worker::SocketStatus { name, listen })
                .collect(),
        }
    }

    /// Restarts made, automatic and by hand.
    pub fn restart_count(&self) -> u32 {
        self.supervision.restarts.total
            + self.supervision.manual_restarts
            + self.supervision.group_restarts
    }
}

/// The master's part of a worker's diagnostics, copied out of the row so the worker's facts
/// can be awaited without holding the table.
pub(super) struct Records {
    pub id: WorkerId,
    deployment: Deployment,
    restart_count: u32,
    circuit_open: bool,
    health: HealthView,
    /// Includes the master's own additions (the circuit opening, quarantine).
    last_error: Option<String>,
    resources: Option<ResourceUsage>,
    quarantine: Option<QuarantineStatus>,
    why: Option<String>,
    schedule: Option<super::ScheduleStatus>,
    /// Filled in by the master (it knows the groups).
    pub group: Option<WorkerId>,
    sockets: Vec<crate::worker::SocketStatus>,
}

impl Records {
    /// The diagnostics: the worker's facts, and the master's records beside them. The worker's
    /// last error stands only when the master has none (the master's carries its additions).
    pub fn compose(self, facts: WorkerFacts) -> WorkerDiagnostics {
        let running = facts.state == WorkerState::Running;
        WorkerDiagnostics {
            id: self.id,
            deployment: self.deployment,
            state: facts.state,
            last_error: self.last_error.or(facts.last_error),
            started_at: facts.started_at,
            uptime: facts.uptime,
            restart_count: self.restart_count,
            circuit_open: self.circuit_open,
            health: self.health.status,
            consecutive_health_failures: self.health.consecutive_failures,
            last_health_check: self.health.last_check,
            pid: facts.pid,
            executable_path: facts.executable_path,
            module: facts.module,
            last_exit: facts.last_exit,
            resources: self.resources.filter(|_| running),
            log_file: facts.log_file,
            containment: facts.containment,
            log_writes: facts.log_writes,
            quarantine: self.quarantine,
            why: self.why,
            group: self.group,
            schedule: self.schedule,
            sockets: self.sockets,
        }
    }
}

/// The restart policy's memory of one worker, and what the user asked for last.
#[derive(Default)]
pub(super) struct Supervision {
    pub restarts: RestartTracker,
    /// Restarts asked for by hand (`RestartWorker`).
    pub manual_restarts: u32,
    /// Restarts its supervision group made of it.
    pub group_restarts: u32,
    /// The timer of a scheduled automatic restart.
    pub pending_restart: Option<SpawnHandle>,
    /// Bumped by every manual request, so a timer scheduled before it does nothing.
    pub epoch: u64,
    /// The last request was a stop: failures and exits are not restarted.
    pub stop_requested: bool,
    /// The automatic restart scheduled, if any: when, and which attempt within the window.
    /// Kept until the restart's start begins (so dependents do not take the worker for
    /// failed for good meanwhile).
    pub next_restart: Option<NextRestart>,
    /// The next failure is not supervised: a start given up because a dependency failed for
    /// good (restarting would only wait again).
    pub hold_next_failure: bool,
}

/// A scheduled automatic restart.
#[derive(Debug, Clone, Copy)]
pub(super) struct NextRestart {
    pub at: std::time::Instant,
    pub attempt: u32,
}

/// What the health actor last reported.
#[derive(Debug, Clone, Default)]
pub(super) struct HealthView {
    pub status: HealthStatus,
    /// Failed probes since the worker was added.
    pub failures_total: u64,
    pub consecutive_failures: u32,
    pub last_check: Option<SystemTime>,
}

/// The latest resource sample and the limit bookkeeping (processes).
#[derive(Default)]
pub(super) struct Usage {
    pub latest: Option<ResourceUsage>,
    /// Samples in a row over a limit.
    pub violations: u32,
}

/// Crash quarantine of a module worker.
#[derive(Default)]
pub(super) struct Quarantine {
    /// Panics of the module's code within `quarantine.within`.
    pub panics: SlidingWindow,
    /// Panics counted when the worker was moved (for the status).
    pub counted: u32,
    /// Set once moved to the process form.
    pub moved: Option<QuarantineStatus>,
}

/// The master's handle on a worker actor of either kind.
#[derive(Clone)]
pub(crate) enum WorkerAddr {
    /// A module worker.
    Module(Addr<ModuleWorkerActor>),
    /// A process worker.
    Process(Addr<ProcessWorkerActor>),
}

/// Sends `msg` to whichever actor `$addr` holds; every worker actor handles the same messages.
macro_rules! dispatch {
    ($addr:expr, $msg:expr) => {
        match $addr {
            WorkerAddr::Module(a) => futures::future::Either::Left(a.send($msg)),
            WorkerAddr::Process(a) => futures::future::Either::Right(a.send($msg)),
        }
    };
}

impl WorkerAddr {
    /// Sends [`Initialize`].
    pub(crate) async fn initialize(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Initialize).await
    }
    /// Sends [`Start`].
    pub(crate) async fn start(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Start).await
    }
    /// Queues [`Wait`].
    pub(crate) fn wait(&self, reason: String) {
        match self {
            WorkerAddr::Module(a) => a.do_send(Wait { reason }),
            WorkerAddr::Process(a) => a.do_send(Wait { reason }),
        }
    }
    /// Queues [`AbandonWait`].
    pub(crate) fn abandon_wait(&self, reason: String) {
        match self {
            WorkerAddr::Module(a) => a.do_send(AbandonWait { reason }),
            WorkerAddr::Process(a) => a.do_send(AbandonWait { reason }),
        }
    }
    /// Sends [`Stop`].
    pub(crate) async fn stop(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Stop).await
    }
    /// Sends [`GetFacts`].
    pub(crate) async fn facts(&self) -> Result<WorkerFacts, MailboxError> {
        dispatch!(self, GetFacts).await
    }
    /// Sends [`Terminate`].
    pub(crate) async fn terminate(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Terminate).await
    }
    /// Queues [`Fail`] without waiting.
    pub(crate) fn fail(&self, reason: String) {
        match self {
            WorkerAddr::Module(a) => a.do_send(Fail { reason }),
            WorkerAddr::Process(a) => a.do_send(Fail { reason }),
        }
    }
    /// The recipient of health probes of the worker's own kind.
    pub(crate) fn health_recipient(&self) -> Recipient<CheckHealth> {
        match self {
            WorkerAddr::Module(a) => a.clone().recipient(),
            WorkerAddr::Process(a) => a.clone().recipient(),
        }
    }
}
