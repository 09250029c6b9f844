//! `MasterActor`: owns the worker table, routes lifecycle requests to worker actors, forwards
//! state changes to subscribers, and applies each worker's restart policy.
//!
//! Why an actor: the worker table and the restart timers are shared state that embedding code,
//! the CLI, the health actor and every worker touch; one mailbox orders all of it without locks.
//! Handlers that wait for a worker (`AddWorker`, `StartWorker`, …) return a future that does
//! not hold the actor, so other messages are answered while they wait; one slow worker never
//! stalls the master.
//!
//! The files of this folder follow the actor's seams:
//! - `messages.rs`: the public messages and their answers;
//! - `lifecycle.rs`: start, stop, restart, remove, state queries, shutdown, subscriptions, and
//!   the requests forwarded to the registry or run off the master's thread (packages);
//! - `add.rs`: the `AddWorker` protocol and its self-messages;
//! - `apply.rs`: bringing the workers to a new config, touching only what changed;
//! - `supervision.rs`: state changes from workers, health reports, the restart decision and
//!   its timers;
//! - `depends.rs`: `depends_on:`: starts that wait for their dependencies, and the stop order;
//! - `groups.rs`: supervision groups: OTP strategies, intensity, escalation;
//! - `schedule.rs`: workers started at the times of a cron expression;
//! - `quarantine.rs`: moving a module that keeps panicking to its process form;
//! - `limits.rs`: resource samples and `limits:`;
//! - `table.rs`: the table row and the handle on a worker actor of either kind.

mod add;
mod apply;
mod depends;
mod groups;
mod lifecycle;
mod limits;
mod messages;
mod quarantine;
mod replace;
mod schedule;
mod supervision;
mod table;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::config::MasterConfig;
use crate::error::MasterError;
use crate::health::HealthActor;
use crate::process::resources::ResourceMonitor;
use crate::process::spawn::Spawner;
use crate::registry::RegistryActor;
use crate::runtime::WorkerRuntime;
use crate::worker::WorkerStateChanged;
use crate::WorkerId;

pub use apply::{Apply, ApplyReport};
pub use groups::{GetGroups, GroupState, GroupSummary, SetGroups, WaitExhausted};
pub use limits::RefreshResources;
pub use messages::{
    AddConfigured, AddWorker, AddWorkerSpec, Added, GetAllWorkerStates, GetWorkerMetrics,
    GetWorkerState, GetWorkerSummary, InstallPackage, ListModuleFactories, RemoveWorker,
    RestartWorker, Shutdown, ShutdownReport, StartWorker, StopWorker, Subscribe, WorkerMetrics,
    WorkerSummary,
};
pub use schedule::ScheduleStatus;
use table::Entry;

/// The master. Create it with [`MasterActor::launch`] inside a running actix system.
pub struct MasterActor {
    config: MasterConfig,
    registry: Addr<RegistryActor>,
    health: Addr<HealthActor>,
    runtime: WorkerRuntime,
    /// The threads that fork process workers' children, handed to each process worker.
    spawner: Arc<Spawner>,
    /// `<run_directory>/hsu.pids`, shared with the process workers.
    pub(crate) run_table: Arc<crate::process::run_table::RunTable>,
    /// When `RefreshResources` last sampled.
    last_refresh: Option<std::time::Instant>,
    /// Boxed: an entry is ~1.6 KB (two specs among it), and a table grown by doubling keeps
    /// up to half its slots empty; boxed, an empty slot costs a pointer.
    workers: HashMap<WorkerId, Box<Entry>>,
    /// Ids in order of addition (shutdown goes backwards).
    order: Vec<WorkerId>,
    /// Ids between validation and insertion, so two concurrent adds of one id conflict.
    adding: HashSet<WorkerId>,
    subscribers: Vec<mpsc::UnboundedSender<WorkerStateChanged>>,
    shutting_down: bool,
    /// The last worker actor instance number given out.
    next_instance: u64,
    /// Sockets of workers an apply is replacing (removed, then added in their new form):
    /// held here in between, so they never close.
    parked_sockets: HashMap<WorkerId, Arc<crate::sockets::WorkerSockets>>,
    /// Samples CPU and memory of running processes.
    resources: Option<ResourceMonitor>,
    /// Workers whose start waits for their dependencies.
    waiting: HashSet<WorkerId>,
    /// The last wait's serial number.
    next_wait: u64,
    /// Supervision groups by id.
    groups: HashMap<WorkerId, groups::GroupEntry>,
    /// The group each member (worker or group) belongs to.
    group_of: HashMap<WorkerId, WorkerId>,
    /// Group ids in the order they were set.
    group_order: Vec<WorkerId>,
    /// Waiting for a top-level group with `on_exhausted: shutdown` to fail.
    exhausted: Vec<tokio::sync::oneshot::Sender<String>>,
    /// cgroup v2 containment, where the kernel offers it.
    cgroups: Option<Arc<crate::process::cgroup::Cgroups>>,
}

impl MasterActor {
    /// Starts a master, its registry and health actors, and the worker runtime, on the
    /// current arbiter.
    ///
    /// # Errors
    /// When the worker runtime's or the spawner's threads cannot be created.
    ///
    /// # Panics
    /// Outside a running actix system.
    pub fn launch(config: MasterConfig) -> std::io::Result<Addr<MasterActor>> {
        let threads = config
            .module_threads
            .unwrap_or_else(WorkerRuntime::default_threads);
        let runtime = WorkerRuntime::new(threads)?;
        if config.subreaper == Some(true) || std::process::id() == 1 {
            if let Err(e) = crate::process::reaper::start() {
                tracing::warn!(error = %e, "cannot become a subreaper; orphaned descendants go to init");
            }
        }
        // Up to four threads fork at once; each waits for its child's exec.
        let spawner = Arc::new(Spawner::new(4)?);
        if let Err(e) = crate::process::sys::raise_fd_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit; many process workers may hit EMFILE");
        }
        let registry = RegistryActor::new(runtime.clone()).start();
        // Before any worker: what dead masters left in their cgroups goes first.
        let (cgroups, report) = if config.cgroups {
            crate::process::cgroup::Cgroups::set_up()
        } else {
            (None, Vec::new())
        };
        for line in report {
            tracing::warn!("{line}");
        }
        match &cgroups {
            Some(c) => {
                tracing::info!(cgroup = %c.path().display(), "process workers are contained by cgroups")
            }
            None if !config.cgroups => tracing::info!(
                "process workers are contained by process groups (master.cgroups: false)"
            ),
            None => tracing::info!("process workers are contained by process groups"),
        }
        let cgroups = cgroups.map(Arc::new);
        let run_table = crate::process::run_table::RunTable::new(&config.run_directory);
        Ok(MasterActor::create(move |ctx| {
            let health = HealthActor::new(ctx.address().recipient(), runtime.clone()).start();
            MasterActor {
                config,
                registry,
                health,
                runtime,
                spawner,
                run_table,
                last_refresh: None,
                workers: HashMap::new(),
                order: Vec::new(),
                adding: HashSet::new(),
                subscribers: Vec::new(),
                shutting_down: false,
                next_instance: 0,
                parked_sockets: HashMap::new(),
                resources: None,
                waiting: HashSet::new(),
                next_wait: 0,
                groups: HashMap::new(),
                group_of: HashMap::new(),
                group_order: Vec::new(),
                exhausted: Vec::new(),
                cgroups,
            }
        }))
    }

    fn entry(&mut self, id: &WorkerId) -> Result<&mut Entry, MasterError> {
        self.workers
            .get_mut(id)
            .map(|e| &mut **e)
            .ok_or_else(|| MasterError::NotFound { id: id.clone() })
    }

    /// Sends `event` to every subscriber; drops those that went away.
    fn publish(&mut self, event: WorkerStateChanged) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

impl Actor for MasterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Many workers report at once; do_send never blocks, and requests should not wait
        // behind a small default mailbox.
        ctx.set_mailbox_capacity(1024);
        match ResourceMonitor::start(self.config.resource_interval, ctx.address().recipient()) {
            Ok(monitor) => self.resources = Some(monitor),
            Err(e) => {
                tracing::error!(error = %e, "cannot start resource sampling; limits are not enforced")
            }
        }
    }
}

/// Maps a worker's reply (or its absence) to the master's error.
fn forward<T>(
    id: WorkerId,
    reply: Result<Result<T, crate::error::WorkerError>, MailboxError>,
) -> Result<T, MasterError> {
    match reply {
        Ok(result) => result.map_err(MasterError::from),
        Err(source) => Err(MasterError::Mailbox { id, source }),
    }
}
