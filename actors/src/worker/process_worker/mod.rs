//! `ProcessWorkerActor`: one per process worker (managed, integrated or unmanaged). It owns the
//! child (or the attached process), its output log and its run files, and drives them through
//! the same state machine and messages as module workers.
//!
//! Why an actor: spawning, readiness, exits and stops are concurrent events about one process
//! that must be ordered. Start, stop, failure clean-up and terminate take an operation lock and
//! run one after another; diagnostics and health probes are answered meanwhile. A process exit
//! is an event (`ProcessExited`), never something found by polling.
//!
//! Children are forked by the master's long-lived `Spawner` threads (handed over in the setup),
//! never on this actor's thread: those threads live as long as the master, so
//! `PR_SET_PDEATHSIG` (which fires when the spawning *thread* exits) kills them when the master
//! dies, even by SIGKILL. Each child is reaped by exactly one wait, through its pidfd, on the
//! worker runtime (`process::stop::wait_child`); there is no `waitpid(-1)`.
//!
//! This file decides (which state, which stop, what an exit means); `run.rs` drives one run
//! (launch or attach, readiness, stop) and `process/` acts (spawn, signals and waits).

mod run;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;

use crate::config::{LogsConfig, ProbeType, ProcessSpec, ProcessType};
use crate::error::{error_chain, Operation, WorkerError};
use crate::process::logs::LogSink;
use crate::process::spawn::Spawner;
use crate::process::stop as stopping;
use crate::process::{sys, ExitInfo};
use crate::runtime::WorkerRuntime;
use crate::state::{Lifecycle, WorkerState};
use crate::worker::{
    CheckHealth, Fail, GetFacts, Initialize, LifecycleActor, Start, Stop, Terminate, WorkerCore,
    WorkerFacts, WorkerStateChanged,
};
use crate::WorkerId;
use run::{Run, Target};

/// Event: the process of run `generation` ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct ProcessExited {
    generation: u64,
    info: ExitInfo,
}

/// What a process worker needs to exist. Built by the master from a validated spec.
pub struct ProcessWorkerSetup {
    /// The worker.
    pub id: WorkerId,
    /// What to run and how.
    pub spec: std::sync::Arc<ProcessSpec>,
    /// Where output pumps, exit waits and control calls run.
    pub runtime: WorkerRuntime,
    /// The long-lived threads that fork children (shared by all process workers).
    pub spawner: Arc<Spawner>,
    /// Tags its events ([`WorkerStateChanged::instance`]).
    pub instance: u64,
    /// Where state changes go.
    pub events: Recipient<WorkerStateChanged>,
    /// Output files.
    pub logs: LogsConfig,
    /// Where its PID (and port) are recorded: `<run_directory>/hsu.pids`.
    pub run_table: Arc<crate::process::run_table::RunTable>,
    /// The master's cgroups, where the kernel offers them (else process groups contain).
    pub cgroups: Option<Arc<crate::process::cgroup::Cgroups>>,
    /// Its cgroup's name under the master's (the id; a `start_first` successor's own).
    pub cgroup_name: String,
    /// Its master-held listening sockets.
    pub sockets: Arc<crate::sockets::WorkerSockets>,
}

/// The actor running one process worker.
pub struct ProcessWorkerActor {
    setup: ProcessWorkerSetup,
    /// State, last error, span, operation lock: as in every worker actor.
    core: WorkerCore,
    /// Counts runs, so an exit report of an old run is recognised.
    generation: u64,
    run: Option<Run>,
    /// Output file, opened at `Initialize`.
    sink: Option<Arc<LogSink>>,
    started_at: Option<(SystemTime, Instant)>,
    last_exit: Option<ExitInfo>,
    /// Its cgroup (made at the first spawn, kept across runs), if it has one.
    cgroup: Option<crate::process::cgroup::WorkerCgroup>,
}

impl ProcessWorkerActor {
    /// A worker in state `idle`: send [`Initialize`] next.
    pub fn new(setup: ProcessWorkerSetup) -> Self {
        let core = WorkerCore::new(setup.id.clone(), setup.instance, setup.events.clone());
        Self {
            setup,
            core,
            generation: 0,
            run: None,
            sink: None,
            started_at: None,
            last_exit: None,
            cgroup: None,
        }
    }
}

impl Actor for ProcessWorkerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // However the actor ends, it leaves no child behind, and no cgroup.
        if let Some(run) = self.run.take() {
            if let Target::Group = run.target {
                let _ = sys::signal_group(run.pid as i32, libc::SIGKILL);
            }
        }
        if let Some(cgroup) = self.cgroup.take() {
            match &self.setup.cgroups {
                Some(cgroups) => cgroups.remove_later(cgroup),
                None => cgroup.remove(),
            }
        }
    }
}

impl Handler<Initialize> for ProcessWorkerActor {
    type Result = Result<(), WorkerError>;

    /// Opens the output file, so that a bad log directory is an `AddWorker` error.
    fn handle(&mut self, _: Initialize, _: &mut Context<Self>) -> Self::Result {
        self.sink().map(drop)
    }
}

impl ProcessWorkerActor {
    /// The output file, opened on first use (at `Initialize`; if that failed, at a start, so a
    /// log directory fixed meanwhile is used).
    fn sink(&mut self) -> Result<Arc<LogSink>, WorkerError> {
        if let Some(sink) = &self.sink {
            return Ok(sink.clone());
        }
        let sink =
            LogSink::open(&self.setup.id, &self.setup.logs).map_err(|source| WorkerError::Io {
                id: self.setup.id.clone(),
                what: format!("open its log in `{}`", self.setup.logs.directory.display()),
                source,
            })?;
        let sink = Arc::new(sink);
        self.sink = Some(sink.clone());
        Ok(sink)
    }
}

impl Handler<Start> for ProcessWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Spawns (or attaches to) the process. Replies once it runs: at once for managed and
    /// unmanaged workers, after the first successful Ping for integrated ones.
    fn handle(&mut self, _: Start, _: &mut Context<Self>) -> Self::Result {
        self.with_op_lock(|act, ctx| {
            if let Err(e) = act.advance(Lifecycle::StartRequested, None) {
                return Box::pin(fut::ready(Err(e)));
            }
            act.generation += 1;
            let started = match act.setup.spec.process_type {
                ProcessType::Unmanaged => Box::pin(fut::ready(act.attach(ctx))),
                ProcessType::Managed | ProcessType::Integrated => act.launch(),
            };
            Box::pin(started.then(|started, act, _| {
                if let Err(e) = started {
                    let _ = act.advance(Lifecycle::StartFailed, Some(error_chain(&e)));
                    return Box::pin(fut::ready(Err(e))) as ResponseActFuture<Self, _>;
                }
                act.when_ready(1)
            }))
        })
    }
}

impl Handler<Stop> for ProcessWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Managed: the stop signal to the whole group, the grace period, then SIGKILL to the
    /// group; replies once no process of the group is left. Unmanaged: the same through the
    /// pinned process if `allow_signals`, else it only detaches.
    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        super::stop(self)
    }
}

impl LifecycleActor for ProcessWorkerActor {
    fn core(&mut self) -> &mut WorkerCore {
        &mut self.core
    }

    fn stop_now(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>> {
        if let Err(e) = self.advance(Lifecycle::StopRequested, None) {
            return Box::pin(fut::ready(Err(e)));
        }
        let stopping = self.stop_run();
        Box::pin(
            stopping
                .into_actor(self)
                .map(|result, act, _| act.finish_stop(result)),
        )
    }
}

super::waiting_handlers!(ProcessWorkerActor);

impl Handler<Fail> for ProcessWorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    /// Fails a running worker (failed health checks, a limit): the process is stopped as by
    /// `Stop`, but the worker ends `failed`, so the restart policy applies.
    fn handle(&mut self, msg: Fail, _: &mut Context<Self>) -> Self::Result {
        self.with_op_lock(move |act, _| {
            if act.core.state != WorkerState::Running {
                return Box::pin(fut::ready(()));
            }
            // Stop first: the worker must be down before it is reported failed, or a restart
            // could overlap the old process.
            let stopping = act.stop_current_run();
            Box::pin(stopping.into_actor(act).map(move |result, act, _| {
                if let Err(e) = result {
                    tracing::warn!(parent: &act.core.span, error = %error_chain(&e), "stopping a failed process did not finish");
                }
                act.started_at = None;
                let _ = act.advance(Lifecycle::Crashed, Some(msg.reason));
            }))
        })
    }
}

impl Handler<ProcessExited> for ProcessWorkerActor {
    type Result = ();

    /// Records the exit. While running it is a state change (and, on failure, a restart
    /// trigger); while starting or stopping, the start or stop in progress handles it.
    fn handle(&mut self, msg: ProcessExited, ctx: &mut Context<Self>) {
        self.last_exit = Some(msg.info.clone());
        let current = self
            .run
            .as_ref()
            .is_some_and(|r| r.generation == msg.generation);
        if !current || self.core.state != WorkerState::Running {
            return;
        }
        let run = self.run.take();
        self.started_at = None;
        let info = msg.info;
        tracing::info!(parent: &self.core.span, "process {info}");
        // Leftovers of the group (grandchildren) go too, as on a stop.
        if let Some(Run {
            pid,
            target: Target::Group,
            ..
        }) = &run
        {
            let pid = *pid as i32;
            let cgroup = self.cgroup.clone();
            let in_cgroup = cgroup.as_ref().map(|c| c.pids().len()).unwrap_or(0);
            if sys::group_alive(pid) || in_cgroup > 0 {
                if in_cgroup > 0 {
                    tracing::warn!(parent: &self.core.span, left = in_cgroup, "the process ended; stopping what it left running in its cgroup");
                }
                let spec = self.setup.spec.clone();
                let span = self.core.span.clone();
                ctx.spawn(
                    async move {
                        let _ = stopping::group(pid, None, &spec, &span, cgroup).await;
                    }
                    .into_actor(self),
                );
            }
        }
        let reason = (!info.success()).then(|| format!("process {info}"));
        self.core.exit = Some(info.clone());
        let _ = self.advance(
            Lifecycle::Exited {
                success: info.success(),
            },
            reason,
        );
    }
}

impl Handler<CheckHealth> for ProcessWorkerActor {
    type Result = ResponseActFuture<Self, Result<bool, WorkerError>>;

    /// `process`: the leader is alive (for attached processes: alive and still the same
    /// process). Other probe kinds of the worker's own are answered by the integrated client.
    fn handle(&mut self, msg: CheckHealth, _: &mut Context<Self>) -> Self::Result {
        let Some(run) = self
            .run
            .as_ref()
            .filter(|_| self.core.state == WorkerState::Running)
        else {
            return Box::pin(fut::ready(Err(WorkerError::Cancelled {
                id: self.setup.id.clone(),
                op: Operation::HealthCheck,
            })));
        };
        let alive = match &run.target {
            Target::Group => {
                run.exited.borrow().is_none()
                    && sys::signal_process(run.pid as i32, 0).unwrap_or(false)
            }
            Target::Attached(a) => a.is_alive(),
        };
        let id = self.setup.id.clone();
        let control = run.control.clone();
        match (msg.probe, control) {
            (ProbeType::Process, _) => Box::pin(fut::ready(Ok(alive))),
            (ProbeType::Ping, Some(control)) => Box::pin(
                async move {
                    control.ping(msg.timeout).await.map(|()| true).map_err(|e| {
                        WorkerError::NotReady {
                            id,
                            reason: e.to_string(),
                        }
                    })
                }
                .into_actor(self),
            ),
            (ProbeType::GrpcHealth, Some(control)) => Box::pin(
                async move {
                    control
                        .health(&msg.service, msg.timeout)
                        .await
                        .map_err(|e| WorkerError::NotReady {
                            id,
                            reason: e.to_string(),
                        })
                }
                .into_actor(self),
            ),
            (other, _) => Box::pin(fut::ready(Err(WorkerError::NotReady {
                id,
                reason: format!("probe {other:?} is not available for this worker"),
            }))),
        }
    }
}

impl Handler<GetFacts> for ProcessWorkerActor {
    type Result = MessageResult<GetFacts>;

    fn handle(&mut self, _: GetFacts, _: &mut Context<Self>) -> Self::Result {
        let running = self.core.state == WorkerState::Running;
        let executable_path = match (&self.setup.spec.execution, &self.run) {
            (Some(exec), _) => exec.executable_path.clone(),
            (None, Some(run)) => std::fs::read_link(format!("/proc/{}/exe", run.pid))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| format!("pid:{}", run.pid)),
            (None, None) => String::new(),
        };
        MessageResult(WorkerFacts {
            state: self.core.state,
            last_error: self.core.last_error.clone(),
            started_at: self.started_at.map(|(at, _)| at),
            uptime: self
                .started_at
                .filter(|_| running)
                .map(|(_, since)| since.elapsed()),
            pid: self.run.as_ref().map(|r| r.pid),
            executable_path,
            module: None,
            last_exit: self.last_exit.clone(),
            log_file: self.sink.as_ref().map(|s| s.path().to_path_buf()),
            log_writes: self.sink.as_ref().map(|s| s.writes()),
            containment: Some(match self.setup.spec.process_type {
                ProcessType::Unmanaged => "attached",
                _ if self.cgroup.is_some() => "cgroup",
                // Not spawned yet: a cgroup is made at the first spawn.
                _ if self.setup.cgroups.is_some() && self.run.is_none() && self.generation == 0 => {
                    "cgroup"
                }
                _ => "process_group",
            }),
        })
    }
}

impl Handler<Terminate> for ProcessWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Stops the process if it runs, then ends the actor.
    fn handle(&mut self, _: Terminate, _: &mut Context<Self>) -> Self::Result {
        super::terminate(self)
    }
}

impl ProcessWorkerActor {
    /// Runs `body` once no other start/stop/fail/terminate of this worker is in progress.
    fn with_op_lock<R: 'static>(
        &mut self,
        body: impl FnOnce(&mut Self, &mut Context<Self>) -> ResponseActFuture<Self, R> + 'static,
    ) -> ResponseActFuture<Self, R> {
        let lock = self.core.op_lock.clone();
        super::with_op_lock(self, lock, body)
    }

    /// Applies `event` through the state machine, records `reason`, logs and reports it.
    fn advance(&mut self, event: Lifecycle, reason: Option<String>) -> Result<(), WorkerError> {
        let pid = self.run.as_ref().map(|r| r.pid);
        self.core.advance(event, reason, pid)
    }
}
