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
//! This file decides (which state, which stop, what an exit means); `process/` acts (spawn,
//! signals and waits, readiness).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::watch;

use crate::config::{ExecutionConfig, LogsConfig, ProbeType, ProcessSpec, ProcessType};
use crate::error::{error_chain, Operation, WorkerError};
use crate::process::attach::{self, Attached};
use crate::process::integrated::{self, ControlClient};
use crate::process::logs::LogSink;
use crate::process::spawn::{self, RunFile, SpawnExtras, Spawner};
use crate::process::stop::{self as stopping, wait_attached, wait_child};
use crate::process::{sys, ExitInfo};
use crate::runtime::WorkerRuntime;
use crate::state::{Lifecycle, WorkerState};
use crate::worker::{
    CheckHealth, Fail, GetFacts, Initialize, LifecycleActor, Start, Stop, Terminate, WorkerCore,
    WorkerFacts, WorkerStateChanged,
};
use crate::WorkerId;

/// Launches of an integrated worker whose control port keeps being taken before it binds it.
const PORT_ATTEMPTS: u32 = 3;

/// Why a new run did not become ready.
enum NotReady {
    /// It exited with `EXIT_PORT_IN_USE` before its first Ping: worth another port.
    PortInUse(WorkerError),
    /// Any other reason.
    Other(WorkerError),
}

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
    pub spec: ProcessSpec,
    /// Where output pumps, exit waits and control calls run.
    pub runtime: WorkerRuntime,
    /// The long-lived threads that fork children (shared by all process workers).
    pub spawner: Arc<Spawner>,
    /// Where state changes go.
    pub events: Recipient<WorkerStateChanged>,
    /// Output files.
    pub logs: LogsConfig,
    /// Where `<id>.pid` (and `<id>.port`) are written.
    pub run_directory: std::path::PathBuf,
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
}

/// One run of the process.
struct Run {
    generation: u64,
    pid: u32,
    target: Target,
    /// `Some` once the process has exited (and, if ours, been reaped and its output read).
    exited: watch::Receiver<Option<ExitInfo>>,
    /// Integrated workers: the control protocol client.
    control: Option<ControlClient>,
    _pid_file: Option<RunFile>,
    _port_file: Option<RunFile>,
}

enum Target {
    /// Our child, leader of its own process group (its PID is the group id).
    Group,
    /// A process we attached to; signalled only through its pinned identity.
    Attached(Arc<Attached>),
}

impl ProcessWorkerActor {
    /// A worker in state `idle`: send [`Initialize`] next.
    pub fn new(setup: ProcessWorkerSetup) -> Self {
        let core = WorkerCore::new(setup.id.clone(), setup.events.clone());
        Self {
            setup,
            core,
            generation: 0,
            run: None,
            sink: None,
            started_at: None,
            last_exit: None,
        }
    }
}

impl Actor for ProcessWorkerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // However the actor ends, it leaves no child behind.
        if let Some(run) = self.run.take() {
            if let Target::Group = run.target {
                let _ = sys::signal_group(run.pid as i32, libc::SIGKILL);
            }
        }
    }
}

impl Handler<Initialize> for ProcessWorkerActor {
    type Result = Result<(), WorkerError>;

    /// Opens the output file, so that a bad log directory is an `AddWorker` error.
    fn handle(&mut self, _: Initialize, _: &mut Context<Self>) -> Self::Result {
        let sink =
            LogSink::open(&self.setup.id, &self.setup.logs).map_err(|source| WorkerError::Io {
                id: self.setup.id.clone(),
                what: format!("open its log in `{}`", self.setup.logs.directory.display()),
                source,
            })?;
        self.sink = Some(Arc::new(sink));
        Ok(())
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

impl ProcessWorkerActor {
    /// After a successful spawn or attach: wait for readiness, then `running`; or clean up
    /// and `failed_start`. An integrated worker that exits because its control port was taken
    /// (the port is picked here and passed on, so this can happen) is launched again with
    /// another port, up to `PORT_ATTEMPTS` launches in all.
    fn when_ready(&mut self, attempt: u32) -> ResponseActFuture<Self, Result<(), WorkerError>> {
        let ready = self.readiness();
        Box::pin(ready.into_actor(self).then(move |ready, act, _| match ready {
            Ok(()) => {
                act.started_at = Some((SystemTime::now(), Instant::now()));
                Box::pin(fut::ready(act.advance(Lifecycle::Started, None)))
                    as ResponseActFuture<Self, _>
            }
            Err(NotReady::PortInUse(e)) if attempt < PORT_ATTEMPTS => {
                tracing::warn!(parent: &act.core.span, attempt, error = %error_chain(&e), "control port taken; starting again with another port");
                let stopping = act.stop_run();
                Box::pin(stopping.into_actor(act).then(move |_, act, _| {
                    act.generation += 1;
                    Box::pin(act.launch().then(move |launched, act, _| match launched {
                        Ok(()) => act.when_ready(attempt + 1),
                        Err(e) => {
                            let _ = act.advance(Lifecycle::StartFailed, Some(error_chain(&e)));
                            Box::pin(fut::ready(Err(e)))
                        }
                    })) as ResponseActFuture<Self, _>
                }))
            }
            Err(NotReady::PortInUse(e) | NotReady::Other(e)) => {
                // Not ready: nothing of it may stay behind.
                let stopping = act.stop_run();
                Box::pin(stopping.into_actor(act).map(move |_, act, _| {
                    let _ = act.advance(Lifecycle::StartFailed, Some(error_chain(&e)));
                    Err(e)
                }))
            }
        }))
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
            let run = act.run.take();
            let stopping = stop_target(act.setup.id.clone(), run, act.setup.spec.clone(), act.core.span.clone());
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
            if sys::group_alive(pid) {
                let spec = self.setup.spec.clone();
                let span = self.core.span.clone();
                ctx.spawn(
                    async move {
                        let _ = stopping::group(pid, None, &spec, &span).await;
                    }
                    .into_actor(self),
                );
            }
        }
        let reason = (!info.success()).then(|| format!("process {info}"));
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

    /// Spawns the child of a managed or integrated worker and starts watching its exit.
    ///
    /// The fork happens on a thread of the shared `Spawner`: those threads live as long as the
    /// master, so `PR_SET_PDEATHSIG` (which follows the spawning *thread*) kills the
    /// child when the master goes, and spawns of many workers run on all cores instead of
    /// queueing on this actor's thread. The child is reaped on that runtime too.
    fn launch(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>> {
        let id = self.setup.id.clone();
        let prepared = self.prepare_spawn();
        let (exec, extras, port, sink) = match prepared {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let runtime = self.setup.runtime.clone();
        let spawner = self.setup.spawner.clone();
        let path = exec.executable_path.clone();
        let id_for_files = id.clone();
        let run_directory = self.setup.run_directory.clone();
        let span = self.core.span.clone();
        let spawning = self.setup.runtime.handle().spawn(async move {
            let spawned = spawn::spawn(exec, extras, sink, &spawner, &runtime).await?;
            let (tx, rx) = watch::channel(None);
            let pid = spawned.pid;
            tokio::spawn(wait_child(spawned.child, spawned.pumps, tx));
            // Creating files is slow on some file systems: here it costs no actor time.
            let run_file = |ext: &str, content: String| {
                RunFile::write(&run_directory, id_for_files.as_str(), ext, &content)
                    .map_err(|e| tracing::warn!(parent: &span, error = %e, "cannot write the {ext} file"))
                    .ok()
            };
            let files = (run_file("pid", pid.to_string()), port.and_then(|p| run_file("port", p.to_string())));
            Ok::<_, std::io::Error>((pid, rx, files))
        });
        Box::pin(spawning.into_actor(self).map(move |spawned, act, ctx| {
            let (pid, exited, files) = match spawned {
                Ok(Ok(spawned)) => spawned,
                Ok(Err(source)) => return Err(WorkerError::Spawn { id, path, source }),
                Err(_) => {
                    return Err(WorkerError::Cancelled {
                        id,
                        op: Operation::Start,
                    })
                }
            };
            act.install(pid, exited, port, files, ctx)
        }))
    }

    /// What a spawn needs, gathered on the actor: program, extra args and environment, the
    /// control port of an integrated worker, and the output sink.
    #[allow(clippy::type_complexity)]
    fn prepare_spawn(
        &self,
    ) -> Result<(ExecutionConfig, SpawnExtras, Option<u16>, Arc<LogSink>), WorkerError> {
        let id = self.setup.id.clone();
        let exec = self
            .setup
            .spec
            .execution
            .clone()
            .ok_or_else(|| WorkerError::NoExecution { id: id.clone() })?;
        let sink = self.sink.clone().ok_or_else(|| WorkerError::Cancelled {
            id: id.clone(),
            op: Operation::Start,
        })?;
        let mut extras = SpawnExtras::default();
        extras.env.push(("HSU_WORKER_ID".into(), id.to_string()));
        let integrated = &self.setup.spec.integrated;
        let port = match self.setup.spec.process_type {
            ProcessType::Integrated => {
                let port = integrated::free_port().map_err(|source| WorkerError::Io {
                    id: id.clone(),
                    what: "find a free port on 127.0.0.1".into(),
                    source,
                })?;
                if !integrated.port_arg.is_empty() {
                    extras
                        .args
                        .extend([integrated.port_arg.clone(), port.to_string()]);
                }
                if !integrated.port_env.is_empty() {
                    extras
                        .env
                        .push((integrated.port_env.clone(), port.to_string()));
                }
                if !self.setup.spec.config.value().is_null() {
                    let yaml =
                        serde_yaml::to_string(self.setup.spec.config.value()).unwrap_or_default();
                    extras.env.push(("HSU_CONFIG".into(), yaml));
                }
                Some(port)
            }
            _ => None,
        };
        Ok((exec, extras, port, sink))
    }

    /// Records a spawned child as the current run (with its PID and port files and control
    /// client) and turns its exit into a `ProcessExited` event.
    fn install(
        &mut self,
        pid: u32,
        exited: watch::Receiver<Option<ExitInfo>>,
        port: Option<u16>,
        (pid_file, port_file): (Option<RunFile>, Option<RunFile>),
        ctx: &mut Context<Self>,
    ) -> Result<(), WorkerError> {
        let id = self.setup.id.clone();
        let generation = self.generation;
        let mut watching = exited.clone();
        ctx.spawn(
            async move {
                match watching.wait_for(|e| e.is_some()).await {
                    Ok(info) => info.clone().unwrap_or_else(ExitInfo::unknown),
                    Err(_) => ExitInfo::unknown(),
                }
            }
            .into_actor(self)
            .map(move |info, _, ctx| ctx.notify(ProcessExited { generation, info })),
        );
        let control = port
            .map(|port| {
                ControlClient::new(
                    port,
                    self.setup.spec.integrated.call_timeout,
                    &self.setup.runtime,
                )
            })
            .transpose()
            .map_err(|e| WorkerError::NotReady {
                id,
                reason: e.to_string(),
            })?;
        self.run = Some(Run {
            generation,
            pid,
            target: Target::Group,
            exited,
            control,
            _pid_file: pid_file,
            _port_file: port_file,
        });
        Ok(())
    }

    /// Resolves when the new run is ready: at once, or for integrated workers at the first
    /// successful Ping (`process::integrated::wait_ready`).
    fn readiness(&self) -> impl std::future::Future<Output = Result<(), NotReady>> + 'static {
        let id = self.setup.id.clone();
        let control = self.run.as_ref().and_then(|r| r.control.clone());
        let exited = self.run.as_ref().map(|r| r.exited.clone());
        let integrated = self.setup.spec.integrated.clone();
        async move {
            let (Some(control), Some(exited)) = (control, exited) else {
                return Ok(());
            };
            integrated::wait_ready(&control, exited, &integrated)
                .await
                .map_err(|not_ready| {
                    let port_in_use = not_ready.port_in_use;
                    let e = WorkerError::NotReady {
                        id,
                        reason: not_ready.reason,
                    };
                    if port_in_use {
                        NotReady::PortInUse(e)
                    } else {
                        NotReady::Other(e)
                    }
                })
        }
    }

    /// Attaches an unmanaged worker to its process and watches its exit through the pidfd.
    fn attach(&mut self, ctx: &mut Context<Self>) -> Result<(), WorkerError> {
        let id = self.setup.id.clone();
        let config = self.setup.spec.attach.clone().unwrap_or_default();
        let attached =
            Arc::new(attach::attach(&config).map_err(|reason| WorkerError::Attach { id, reason })?);
        let pid = attached.identity.pid as u32;
        let (tx, rx) = watch::channel(None);
        let generation = self.generation;
        let watching = attached.clone();
        ctx.spawn(
            async move {
                wait_attached(&watching).await;
                let info = ExitInfo::unknown();
                let _ = tx.send(Some(info.clone()));
                info
            }
            .into_actor(self)
            .map(move |info, _, ctx| ctx.notify(ProcessExited { generation, info })),
        );
        tracing::info!(parent: &self.core.span, pid, "attached");
        self.run = Some(Run {
            generation,
            pid,
            target: Target::Attached(attached),
            exited: rx,
            control: None,
            _pid_file: None,
            _port_file: None,
        });
        Ok(())
    }

    /// The stop of the current run, as a future that needs nothing from the actor.
    /// Its output is the stop's result and how the process ended, when known (the exit event
    /// itself may still be on its way to the mailbox).
    fn stop_run(
        &mut self,
    ) -> impl std::future::Future<Output = (Result<(), WorkerError>, Option<ExitInfo>)> + 'static
    {
        let run = self.run.take();
        let exited = run.as_ref().map(|r| r.exited.clone());
        let stopping = stop_target(
            self.setup.id.clone(),
            run,
            self.setup.spec.clone(),
            self.core.span.clone(),
        );
        async move {
            let result = stopping.await;
            (result, exited.and_then(|rx| rx.borrow().clone()))
        }
    }

    fn finish_stop(
        &mut self,
        (result, exit): (Result<(), WorkerError>, Option<ExitInfo>),
    ) -> Result<(), WorkerError> {
        self.started_at = None;
        if exit.is_some() {
            self.last_exit = exit;
        }
        match result {
            Ok(()) => self.advance(Lifecycle::StopCompleted, None),
            Err(e) => {
                self.advance(Lifecycle::StopFailed, Some(error_chain(&e)))?;
                Err(e)
            }
        }
    }
}

/// Stops whatever `run` holds.
async fn stop_target(
    id: WorkerId,
    run: Option<Run>,
    spec: ProcessSpec,
    span: tracing::Span,
) -> Result<(), WorkerError> {
    let Some(run) = run else { return Ok(()) };
    let outcome = match &run.target {
        Target::Group => {
            stopping::group(run.pid as i32, Some(run.exited.clone()), &spec, &span).await
        }
        Target::Attached(attached) => {
            let allowed = spec.attach.as_ref().is_some_and(|a| a.allow_signals);
            if !allowed {
                tracing::info!(parent: &span, pid = run.pid, "detached (allow_signals is false, so the process was not signalled)");
                return Ok(());
            }
            stopping::attached(attached, run.exited.clone(), &spec, &span).await
        }
    };
    outcome.map_err(|after| WorkerError::Timeout {
        id,
        op: Operation::Stop,
        after,
    })
}
