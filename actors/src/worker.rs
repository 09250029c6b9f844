//! What every worker actor (module or process) understands, what it reports, and how the master
//! addresses one without caring which kind it is.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use hsu_module::ModuleInfo;
use serde::Serialize;

use crate::config::{ModuleType, ProbeType, ProcessType};
use crate::error::WorkerError;
use crate::module_worker::ModuleWorkerActor;
use crate::process::{ExitInfo, ResourceUsage};
use crate::process_worker::ProcessWorkerActor;
use crate::state::{Lifecycle, WorkerState};
use crate::WorkerId;

/// Event: a worker changed state. Sent by worker actors to the master, which forwards it to
/// subscribers ([`crate::master::Subscribe`]).
#[derive(Debug, Clone, PartialEq, Message, Serialize)]
#[rtype(result = "()")]
pub struct WorkerStateChanged {
    /// The worker.
    pub id: WorkerId,
    /// Its state before.
    pub from: WorkerState,
    /// Its state now.
    pub to: WorkerState,
    /// Why, for failures: the error text (also the worker's `last_error`).
    pub reason: Option<String>,
    /// The OS process now running, for process workers that just became running.
    pub pid: Option<u32>,
    /// The failure was a panic in module code (counted by `quarantine:`).
    pub panicked: bool,
    /// When.
    pub at: SystemTime,
}

/// Makes an added worker ready to start (for modules: create the instance and `initialize`).
/// Sent once by the master during `AddWorker`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Initialize;

/// Starts the worker. Replies when it is running, or with why it is not.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Start;

/// Stops the worker. Replies when it is stopped.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Stop;

/// Marks a running worker failed (failed health checks, a limit) and cleans it up.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Fail {
    /// Why; becomes `last_error`.
    pub reason: String,
}

/// One health probe of the worker's own kind (module: `is_healthy`). `Ok(false)` is unhealthy;
/// an error (panic, timeout) is a failed probe.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, WorkerError>")]
pub struct CheckHealth {
    /// Which probe: `module`, `process`, `ping` or `grpc_health`.
    pub probe: ProbeType,
    /// For `grpc_health`: the service name asked about.
    pub service: String,
    /// Limit for the probe.
    pub timeout: Duration,
}

/// The worker's own diagnostics (the master adds restart and health data).
#[derive(Debug, Message)]
#[rtype(result = "WorkerDiagnostics")]
pub struct GetDiagnostics;

/// Ends the worker actor, stopping it first if it runs. Sent on removal and shutdown; the
/// reply carries the stop's error, if any (the actor ends either way).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct Terminate;

/// Which kind of worker, as one name: the deployment chosen in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKindName {
    /// Native module.
    Native,
    /// Plugin module.
    Plugin,
    /// Managed process.
    Managed,
    /// Integrated process.
    Integrated,
    /// Unmanaged process.
    Unmanaged,
}

impl From<ModuleType> for WorkerKindName {
    fn from(t: ModuleType) -> Self {
        match t {
            ModuleType::Native => Self::Native,
            ModuleType::Plugin => Self::Plugin,
        }
    }
}

impl From<ProcessType> for WorkerKindName {
    fn from(t: ProcessType) -> Self {
        match t {
            ProcessType::Managed => Self::Managed,
            ProcessType::Integrated => Self::Integrated,
            ProcessType::Unmanaged => Self::Unmanaged,
        }
    }
}

/// Result of the last health probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Not probed since it started (or health checks are off).
    #[default]
    Unknown,
    /// The last probe passed.
    Healthy,
    /// The last probe failed.
    Unhealthy,
}

/// Everything known about one worker: `GetWorkerState`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerDiagnostics {
    /// The worker.
    pub id: WorkerId,
    /// Deployment kind.
    pub kind: WorkerKindName,
    /// Current state.
    pub state: WorkerState,
    /// The last error (start failure, panic, failed health checks…), kept until the next one.
    pub last_error: Option<String>,
    /// When the current run started.
    pub started_at: Option<SystemTime>,
    /// How long the current run has lasted (none unless running).
    pub uptime: Option<Duration>,
    /// Restarts made (automatic and manual).
    pub restart_count: u32,
    /// True when `max_restarts` within `window` was used up: no automatic restart until a
    /// manual start.
    pub circuit_open: bool,
    /// Latest health result.
    pub health: HealthStatus,
    /// Failed probes in a row.
    pub consecutive_health_failures: u32,
    /// When health was last probed.
    pub last_health_check: Option<SystemTime>,
    /// OS process id; none for modules.
    pub pid: Option<u32>,
    /// The program, or `in-proc-module:NAME` for modules.
    pub executable_path: String,
    /// Module details; none for processes.
    pub module: Option<ModuleDiagnostics>,
    /// How the process last ended (processes only).
    pub last_exit: Option<ExitInfo>,
    /// Latest CPU and memory sample (processes only).
    pub resources: Option<ResourceUsage>,
    /// The worker's output file.
    pub log_file: Option<std::path::PathBuf>,
    /// Set once the module was moved to its process form by `quarantine:` (filled in by the
    /// master).
    pub quarantine: Option<QuarantineStatus>,
}

/// Why and since when a module worker runs as its integrated process form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineStatus {
    /// When the move happened.
    pub since: SystemTime,
    /// Panics counted within the window.
    pub panics: u32,
    /// The window.
    pub within: std::time::Duration,
    /// The last panic.
    pub last_panic: String,
    /// The process form's executable.
    pub executable_path: String,
    /// What the worker was before (`native` or `plugin`).
    pub was: WorkerKindName,
}

/// Module-specific diagnostics.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleDiagnostics {
    /// What the module says about itself.
    pub info: ModuleInfo,
    /// Factory name or plugin path.
    pub module_name: String,
    /// How long creating and initialising the instance took.
    pub load_time: Duration,
    /// When the current instance was created.
    pub loaded_at: Option<SystemTime>,
    /// When `is_healthy` was last called.
    pub last_health_check: Option<SystemTime>,
}

/// The master's handle on a worker actor of either kind.
#[derive(Clone)]
pub enum WorkerAddr {
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
    pub async fn initialize(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Initialize).await
    }
    /// Sends [`Start`].
    pub async fn start(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Start).await
    }
    /// Sends [`Stop`].
    pub async fn stop(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Stop).await
    }
    /// Sends [`GetDiagnostics`].
    pub async fn diagnostics(&self) -> Result<WorkerDiagnostics, MailboxError> {
        dispatch!(self, GetDiagnostics).await
    }
    /// Sends [`Terminate`].
    pub async fn terminate(&self) -> Result<Result<(), WorkerError>, MailboxError> {
        dispatch!(self, Terminate).await
    }
    /// Queues [`Fail`] without waiting.
    pub fn fail(&self, reason: String) {
        match self {
            WorkerAddr::Module(a) => a.do_send(Fail { reason }),
            WorkerAddr::Process(a) => a.do_send(Fail { reason }),
        }
    }
    /// The recipient of health probes of the worker's own kind.
    pub fn health_recipient(&self) -> Recipient<CheckHealth> {
        match self {
            WorkerAddr::Module(a) => a.clone().recipient(),
            WorkerAddr::Process(a) => a.clone().recipient(),
        }
    }
}

/// What every worker actor keeps the same way: its place in the state machine, its last error,
/// its span, the lock that keeps its lifecycle operations from overlapping, and where its state
/// changes go.
pub(crate) struct WorkerCore {
    pub id: WorkerId,
    /// `worker{id=…}`: module code and the actor's own logs run inside it.
    pub span: tracing::Span,
    pub state: WorkerState,
    pub last_error: Option<String>,
    /// Serialises start/stop/fail/terminate without blocking the mailbox.
    pub op_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Set just before advancing to a failed state because module code panicked; the next
    /// failure event carries it.
    pub panicked: bool,
    events: Recipient<WorkerStateChanged>,
}

impl WorkerCore {
    pub fn new(id: WorkerId, events: Recipient<WorkerStateChanged>) -> Self {
        let span = tracing::info_span!("worker", id = %id);
        Self {
            id,
            span,
            state: WorkerState::Idle,
            last_error: None,
            op_lock: Default::default(),
            panicked: false,
            events,
        }
    }

    /// Applies `event` through the state machine, records `reason` as the last error, logs the
    /// change and reports it (with `pid` for a process that just became running).
    pub fn advance(
        &mut self,
        event: Lifecycle,
        reason: Option<String>,
        pid: Option<u32>,
    ) -> Result<(), WorkerError> {
        let from = self.state;
        let to = from.next(event).map_err(|t| WorkerError::InvalidState {
            id: self.id.clone(),
            from: t.from,
            event: t.event,
        })?;
        self.state = to;
        if let Some(r) = &reason {
            self.last_error = Some(r.clone());
        }
        let pid = pid.filter(|_| to == WorkerState::Running);
        if to.is_failed() {
            tracing::warn!(parent: &self.span, %from, %to, reason = reason.as_deref().unwrap_or(""), "worker state changed");
        } else {
            tracing::info!(parent: &self.span, %from, %to, pid, "worker state changed");
        }
        let panicked = std::mem::take(&mut self.panicked) && to.is_failed();
        self.events.do_send(WorkerStateChanged {
            id: self.id.clone(),
            from,
            to,
            reason,
            pid,
            panicked,
            at: std::time::SystemTime::now(),
        });
        Ok(())
    }
}

/// Runs `body` on `act` once no other lifecycle operation of the worker holds `lock`; other
/// messages (state queries, probes) are answered meanwhile.
pub(crate) fn with_op_lock<A, R>(
    act: &mut A,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> ResponseActFuture<A, R> + 'static,
) -> ResponseActFuture<A, R>
where
    A: Actor<Context = Context<A>>,
    R: 'static,
{
    Box::pin(async move { lock.lock_owned().await }.into_actor(act).then(
        move |guard: tokio::sync::OwnedMutexGuard<()>, act, ctx| {
            body(act, ctx).map(move |result, _, _| {
                drop(guard);
                result
            })
        },
    ))
}

/// What the shared lifecycle helpers need from a worker actor.
pub(crate) trait LifecycleActor: Actor<Context = Context<Self>> {
    /// The actor's shared part.
    fn core(&mut self) -> &mut WorkerCore;

    /// Stops the worker (the `Stop` message's work, minus the lock): from `StopRequested` to
    /// `stopped`, or `failed` when the stop fails.
    fn stop_now(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>>;
}

/// `Stop`: [`LifecycleActor::stop_now`] under the operation lock.
pub(crate) fn stop<A: LifecycleActor>(
    act: &mut A,
) -> ResponseActFuture<A, Result<(), WorkerError>> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, |act, _| act.stop_now())
}

/// `Terminate`: stops the worker if it runs, exactly as `Stop` would, then `terminating` and
/// the actor ends. Replies with the stop's error, if any.
pub(crate) fn terminate<A: LifecycleActor>(
    act: &mut A,
) -> ResponseActFuture<A, Result<(), WorkerError>> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, |act, _| {
        let stopping = if act.core().state == WorkerState::Running {
            act.stop_now()
        } else {
            Box::pin(actix::fut::ready(Ok(())))
        };
        Box::pin(stopping.map(|result, act, ctx| {
            let _ = act
                .core()
                .advance(Lifecycle::TerminateRequested, None, None);
            ctx.stop();
            result
        }))
    })
}
