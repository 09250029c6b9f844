//! `MasterActor`: owns the worker table, routes lifecycle requests to worker actors, forwards
//! state changes to subscribers, and applies each worker's restart policy.
//!
//! Why an actor: the worker table and the restart timers are shared state that embedding code,
//! the CLI, the health actor and every worker touch; one mailbox orders all of it without locks.
//! Handlers that wait for a worker (`AddWorker`, `StartWorker`, …) return a `ResponseActFuture`,
//! so other messages are answered while they wait; one slow worker never stalls the master.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::config::{
    validate_worker, ByteSize, LimitsConfig, MasterConfig, ModuleType, OnViolation, WorkerConfig,
    WorkerKind, WorkerSpec,
};
use crate::error::{error_chain, MasterError};
use crate::health::{HealthActor, HealthReport, Probe, UnwatchHealth, WatchHealth};
use crate::module_worker::{ModuleWorkerActor, ModuleWorkerSetup};
use crate::plugin::PluginInfo;
use crate::process::ResourceUsage;
use crate::process_worker::{ProcessWorkerActor, ProcessWorkerSetup};
use crate::registry::{
    GetFactory, ListFactories, ListLoadedModules, LoadPlugin, RegisterNativeModuleFactory,
    RegistryActor,
};
use crate::resources::{ResourceMonitor, ResourceSamples};
use crate::restart::{jitter_sample, Decision, RestartTracker, Trigger};
use crate::runtime::WorkerRuntime;
use crate::state::WorkerState;
use crate::worker::{
    HealthStatus, WorkerAddr, WorkerDiagnostics, WorkerKindName, WorkerStateChanged,
};
use crate::WorkerId;

/// Adds a worker from its config: validates it, creates its actor and (for modules) the
/// instance, and calls `initialize`. The worker is then `idle`; send [`StartWorker`] to run it.
///
/// # Errors
/// `Validation` naming the field, `Conflict` for a taken id, `UnknownFactory`, or the
/// `initialize` failure (the worker is not added then).
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerId, MasterError>")]
pub struct AddWorker(pub WorkerConfig);

/// Stops (if running) and removes a worker.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct RemoveWorker(pub String);

/// Starts a worker; replies when it runs. A manual start also closes an open restart circuit.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct StartWorker(pub String);

/// Stops a worker on purpose; replies when it is stopped. Never triggers a restart, and cancels
/// a pending one.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct StopWorker(pub String);

/// Stops a worker if it runs, then starts it. With `force`, a stop that fails or times out
/// does not prevent the start (the old run's tasks are aborted); without it, the error is
/// returned and no start is made.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), MasterError>")]
pub struct RestartWorker {
    /// The worker.
    pub id: String,
    /// Start even if the stop fails.
    pub force: bool,
}

/// State and diagnostics of one worker.
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkerDiagnostics, MasterError>")]
pub struct GetWorkerState(pub String);

/// A summary line for every worker, in the order they were added.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerSummary>")]
pub struct GetAllWorkerStates;

/// Stops every worker, then removes them. The stops run concurrently (each within its own
/// timeout, so a slow worker delays no other) and are requested in reverse order of addition.
/// Later requests to add workers are refused. Replies when all are stopped.
#[derive(Debug, Message)]
#[rtype(result = "ShutdownReport")]
pub struct Shutdown;

/// Subscribes to every [`WorkerStateChanged`] from now on. The stream is unbounded (no event is
/// dropped) and ends when the master stops; drop the receiver to unsubscribe.
#[derive(Debug, Message)]
#[rtype(result = "mpsc::UnboundedReceiver<WorkerStateChanged>")]
pub struct Subscribe;

/// Names of the registered native module factories.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, MasterError>")]
pub struct ListModuleFactories;

/// One line of [`GetAllWorkerStates`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerSummary {
    /// The worker.
    pub id: WorkerId,
    /// Deployment kind.
    pub kind: WorkerKindName,
    /// Current state.
    pub state: WorkerState,
    /// Restarts made.
    pub restart_count: u32,
    /// Restart budget used up.
    pub circuit_open: bool,
    /// Latest health result.
    pub health: HealthStatus,
    /// Latest error.
    pub last_error: Option<String>,
}

/// What [`Shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShutdownReport {
    /// Workers stopped and removed.
    pub stopped: Vec<WorkerId>,
    /// Workers whose stop failed (they were removed anyway), with the error.
    pub errors: Vec<(WorkerId, String)>,
}

/// One row of the worker table.
struct Entry {
    addr: WorkerAddr,
    spec: WorkerSpec,
    kind: WorkerKindName,
    /// Last state reported by the worker.
    state: WorkerState,
    last_error: Option<String>,
    restarts: RestartTracker,
    /// Restarts asked for by hand (`RestartWorker`).
    manual_restarts: u32,
    /// The timer of a scheduled automatic restart.
    pending_restart: Option<SpawnHandle>,
    /// Bumped by every manual request, so a timer scheduled before it does nothing.
    epoch: u64,
    /// The last request was a stop: failures and exits are not restarted.
    stop_requested: bool,
    health: HealthStatus,
    consecutive_health_failures: u32,
    last_health_check: Option<SystemTime>,
    /// Latest CPU/memory sample (processes).
    resources: Option<ResourceUsage>,
    /// Samples in a row over a limit.
    violations: u32,
    /// When module code of this worker panicked, within the `quarantine.within` window.
    panics: std::collections::VecDeque<Instant>,
    /// Set once moved to the process form.
    quarantine: Option<crate::worker::QuarantineStatus>,
}

/// The master. Create it with [`MasterActor::launch`] inside a running actix system.
pub struct MasterActor {
    config: MasterConfig,
    registry: Addr<RegistryActor>,
    health: Addr<HealthActor>,
    runtime: WorkerRuntime,
    workers: HashMap<WorkerId, Entry>,
    /// Ids in order of addition (shutdown goes backwards).
    order: Vec<WorkerId>,
    /// Ids between validation and insertion, so two concurrent adds of one id conflict.
    adding: HashSet<WorkerId>,
    subscribers: Vec<mpsc::UnboundedSender<WorkerStateChanged>>,
    shutting_down: bool,
    /// Samples CPU and memory of running processes.
    resources: Option<ResourceMonitor>,
}

impl MasterActor {
    /// Starts a master, its registry and health actors, and the worker runtime, on the
    /// current arbiter.
    ///
    /// # Errors
    /// When the worker runtime's threads cannot be created.
    ///
    /// # Panics
    /// Outside a running actix system.
    pub fn launch(config: MasterConfig) -> std::io::Result<Addr<MasterActor>> {
        let threads = config
            .module_threads
            .unwrap_or_else(WorkerRuntime::default_threads);
        let runtime = WorkerRuntime::new(threads)?;
        if let Err(e) = crate::process::sys::raise_fd_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit; many process workers may hit EMFILE");
        }
        let registry = RegistryActor::default().start();
        Ok(MasterActor::create(move |ctx| {
            let health = HealthActor::new(ctx.address().recipient(), runtime.clone()).start();
            MasterActor {
                config,
                registry,
                health,
                runtime,
                workers: HashMap::new(),
                order: Vec::new(),
                adding: HashSet::new(),
                subscribers: Vec::new(),
                shutting_down: false,
                resources: None,
            }
        }))
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry, MasterError> {
        self.workers
            .get_mut(id)
            .ok_or_else(|| MasterError::NotFound { id: id.to_string() })
    }

    /// Starts the actor for a validated worker (`factory` for native modules).
    fn create_worker(
        &self,
        spec: &WorkerSpec,
        factory: Option<hsu_module::ModuleFactory>,
        ctx: &mut Context<Self>,
    ) -> (WorkerAddr, WorkerKindName) {
        let events = ctx.address().recipient();
        match (&spec.kind, factory) {
            (
                WorkerKind::Module {
                    module_type,
                    module_name,
                    config,
                },
                Some(factory),
            ) => {
                let setup = ModuleWorkerSetup {
                    id: spec.id.clone(),
                    module_type: *module_type,
                    module_name: module_name.clone(),
                    factory,
                    config: config.clone(),
                    runtime: self.runtime.clone(),
                    events,
                    start_timeout: spec.start_timeout,
                    stop_timeout: spec.stop_timeout,
                    logs: self.config.logs.clone(),
                };
                (
                    WorkerAddr::Module(ModuleWorkerActor::new(setup).start()),
                    WorkerKindName::from(*module_type),
                )
            }
            (WorkerKind::Process(process), _) => {
                let setup = ProcessWorkerSetup {
                    id: spec.id.clone(),
                    spec: (**process).clone(),
                    runtime: self.runtime.clone(),
                    events,
                    logs: self.config.logs.clone(),
                    run_directory: self.config.run_directory.clone(),
                    start_timeout: spec.start_timeout,
                };
                (
                    WorkerAddr::Process(ProcessWorkerActor::new(setup).start()),
                    WorkerKindName::from(process.process_type),
                )
            }
            (WorkerKind::Module { .. }, None) => unreachable!("native modules are looked up first"),
        }
    }

    /// Forgets any scheduled restart of `id` and marks what the user asked for last.
    fn manual_request(
        &mut self,
        id: &str,
        stop: bool,
        ctx: &mut Context<Self>,
    ) -> Result<WorkerAddr, MasterError> {
        let entry = self.entry(id)?;
        entry.epoch += 1;
        entry.stop_requested = stop;
        let pending = entry.pending_restart.take();
        let addr = entry.addr.clone();
        if !stop {
            entry.restarts.reset();
        }
        if let Some(handle) = pending {
            ctx.cancel_future(handle);
        }
        Ok(addr)
    }

    /// Applies the restart policy after a trigger.
    fn supervise(&mut self, id: &WorkerId, trigger: Trigger, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        let restart = &entry.spec.restart;
        match entry
            .restarts
            .decide(restart, trigger, Instant::now(), jitter_sample())
        {
            Decision::Leave => {
                tracing::info!(worker = %id, policy = ?restart.policy, "not restarting: policy");
            }
            Decision::Restart { delay, attempt } => {
                tracing::info!(
                    worker = %id,
                    delay = ?delay,
                    attempt,
                    max_restarts = restart.max_restarts,
                    "restarting"
                );
                entry.epoch += 1;
                let epoch = entry.epoch;
                let id = id.clone();
                if delay.is_zero() {
                    // A zero timer would still wait for the timer wheel's next millisecond.
                    ctx.notify(RestartNow { id, epoch });
                } else {
                    entry.pending_restart =
                        Some(ctx.run_later(delay, move |act, ctx| act.restart_now(id, epoch, ctx)));
                }
            }
            Decision::GiveUp { restarts } => {
                let text = format!(
                    "restart limit reached ({restarts} restarts within {}): circuit open, not restarting until started by hand",
                    crate::config::duration::format(restart.window)
                );
                tracing::error!(worker = %id, "{text}");
                entry.last_error = Some(match entry.last_error.take() {
                    Some(e) => format!("{e}; {text}"),
                    None => text,
                });
            }
        }
    }

    /// Moves a module worker that panicked too often to its integrated process form: the old
    /// actor is dropped (it is in a failed state, its run cleaned up), a process worker takes
    /// its place under the same id, restart counters start afresh, and it is started (if
    /// `start`). Returns the text that is logged and added to the failure's reason.
    fn quarantine(&mut self, id: &WorkerId, start: bool, ctx: &mut Context<Self>) -> String {
        let Some(entry) = self.workers.get(id) else {
            return String::new();
        };
        let Some(q) = entry.spec.quarantine.clone() else {
            return String::new();
        };
        let executable = q
            .process
            .execution
            .as_ref()
            .map(|e| e.executable_path.clone())
            .unwrap_or_default();
        let text = format!(
            "quarantined: {} panics within {}; now runs as an integrated process (`{executable}`)",
            entry.panics.len(),
            crate::config::duration::format(q.within)
        );
        tracing::error!(worker = %id, "{text}");
        let mut spec = entry.spec.clone();
        spec.kind = WorkerKind::Process(q.process.clone());
        spec.quarantine = None;
        if spec.health_check.probe == Some(crate::config::ProbeType::Module) {
            spec.health_check.probe = None;
        }
        let (addr, kind) = self.create_worker(&spec, None, ctx);
        let Some(entry) = self.workers.get_mut(id) else {
            return text;
        };
        entry.quarantine = Some(crate::worker::QuarantineStatus {
            since: SystemTime::now(),
            panics: entry.panics.len() as u32,
            within: q.within,
            last_panic: entry.last_error.clone().unwrap_or_default(),
            executable_path: executable,
            was: entry.kind,
        });
        entry.spec = spec;
        entry.kind = kind;
        entry.addr = addr.clone();
        entry.state = WorkerState::Idle;
        entry.restarts.reset();
        entry.epoch += 1;
        entry.panics.clear();
        let id = id.clone();
        ctx.spawn(
            async move {
                let started = match addr.initialize().await {
                    Ok(Ok(())) if start => addr.start().await,
                    other => other,
                };
                match started {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(error_chain(&e)),
                    Err(e) => Some(e.to_string()),
                }
            }
            .into_actor(self)
            .map(move |failure, _, _| {
                if let Some(e) = failure {
                    // A failed start was also reported as a state change, and supervised.
                    tracing::error!(worker = %id, error = %e, "the quarantined worker's process form did not start");
                }
            }),
        );
        text
    }

    fn restart_now(&mut self, id: WorkerId, epoch: u64, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&id) else {
            return;
        };
        if entry.epoch != epoch || entry.stop_requested || self.shutting_down {
            return;
        }
        entry.pending_restart = None;
        let addr = entry.addr.clone();
        ctx.spawn(
            async move { addr.start().await }
                .into_actor(self)
                .map(move |result, _, _| match result {
                    // A failed start is reported as a state change and supervised again.
                    Ok(Ok(())) | Ok(Err(_)) => {}
                    Err(e) => tracing::warn!(worker = %id, error = %e, "worker did not answer the restart"),
                }),
        );
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

impl Handler<RegisterNativeModuleFactory> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RegisterNativeModuleFactory, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        let name = msg.name.clone();
        Box::pin(async move {
            registry
                .send(msg)
                .await
                .map_err(|_| MasterError::ShuttingDown { id: name })?
        })
    }
}

impl Handler<ListModuleFactories> for MasterActor {
    type Result = ResponseFuture<Result<Vec<String>, MasterError>>;

    fn handle(&mut self, _: ListModuleFactories, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        Box::pin(async move {
            registry
                .send(ListFactories)
                .await
                .map_err(|_| MasterError::ShuttingDown { id: String::new() })
        })
    }
}

/// Installs a package (a directory or a `.tar`/`.tar.gz` with a `package.yaml`) under the
/// master's `packages_directory`, verifying every file's sha256; atomic. Replies with what was
/// installed. The file work runs off the master's thread.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::packages::InstalledPackage, MasterError>")]
pub struct InstallPackage(pub std::path::PathBuf);

impl Handler<InstallPackage> for MasterActor {
    type Result = ResponseFuture<Result<crate::packages::InstalledPackage, MasterError>>;

    fn handle(&mut self, msg: InstallPackage, _: &mut Context<Self>) -> Self::Result {
        let root = self.config.packages_directory.clone();
        let installing = self.runtime.handle().spawn_blocking(move || {
            crate::packages::install(&msg.0, &root).map_err(|source| MasterError::Package {
                source_path: msg.0.clone(),
                source,
            })
        });
        Box::pin(async move {
            installing
                .await
                .unwrap_or_else(|_| Err(MasterError::ShuttingDown { id: String::new() }))
        })
    }
}

impl Handler<ListLoadedModules> for MasterActor {
    type Result = ResponseFuture<Vec<PluginInfo>>;

    /// Forwarded to the registry; empty if it is gone.
    fn handle(&mut self, msg: ListLoadedModules, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        Box::pin(async move { registry.send(msg).await.unwrap_or_default() })
    }
}

impl Handler<AddWorker> for MasterActor {
    type Result = ResponseFuture<Result<WorkerId, MasterError>>;

    /// Validates and reserves the id at once (a concurrent add of it conflicts), then waits for
    /// the registry and the worker's `initialize` in a future of its own: thousands of adds in
    /// flight cost the master nothing while they wait (a `ResponseActFuture` would be polled
    /// with every other one on each wake-up). Short self-messages create and insert the worker.
    fn handle(&mut self, msg: AddWorker, ctx: &mut Context<Self>) -> Self::Result {
        let config = msg.0;
        if self.shutting_down {
            return Box::pin(async move { Err(MasterError::ShuttingDown { id: config.id }) });
        }
        let spec = match validate_worker(&config, &self.config) {
            Ok(spec) => spec,
            Err(issues) => {
                return Box::pin(async move {
                    Err(MasterError::Validation {
                        id: config.id,
                        issues,
                    })
                })
            }
        };
        let id = spec.id.clone();
        if self.workers.contains_key(&id) || self.adding.contains(&id) {
            return Box::pin(async move { Err(MasterError::Conflict { id }) });
        }
        self.adding.insert(id.clone());
        // Modules need their factory from the registry (a plugin is loaded there, once per
        // path); processes need nothing.
        let lookup = match &spec.kind {
            WorkerKind::Module {
                module_type: ModuleType::Plugin,
                module_name,
                ..
            } => {
                let registry = self.registry.clone();
                let path = std::path::PathBuf::from(module_name);
                let id = id.clone();
                futures::future::Either::Left(futures::future::Either::Left(async move {
                    match registry.send(LoadPlugin(path)).await {
                        Ok(Ok(factory)) => Ok(Some(factory)),
                        Ok(Err(source)) => Err(MasterError::Plugin { id, source }),
                        Err(_) => Err(MasterError::ShuttingDown { id: id.to_string() }),
                    }
                }))
            }
            WorkerKind::Module { module_name, .. } => {
                let registry = self.registry.clone();
                let name = module_name.clone();
                let id = id.clone();
                futures::future::Either::Left(futures::future::Either::Right(async move {
                    match registry.send(GetFactory(name.clone())).await {
                        Ok(Ok(factory)) => Ok(Some(factory)),
                        Ok(Err(registered)) => Err(MasterError::UnknownFactory {
                            id,
                            name,
                            registered,
                        }),
                        Err(_) => Err(MasterError::ShuttingDown { id: id.to_string() }),
                    }
                }))
            }
            WorkerKind::Process(_) => futures::future::Either::Right(async { Ok(None) }),
        };
        let me = ctx.address();
        Box::pin(async move {
            let factory = match lookup.await {
                Ok(f) => f,
                Err(e) => {
                    me.do_send(AbortAdd(id));
                    return Err(e);
                }
            };
            let mailbox = |source| MasterError::ShuttingDown {
                id: format!("{id}: {source}"),
            };
            let addr = me
                .send(CreateWorker {
                    spec: spec.clone(),
                    factory,
                })
                .await
                .map_err(mailbox)?;
            let initialized = addr.initialize().await;
            me.send(FinishAdd {
                spec,
                addr,
                initialized,
            })
            .await
            .map_err(mailbox)?
        })
    }
}

/// Self-message of `AddWorker`: start the worker's actor.
#[derive(Message)]
#[rtype(result = "WorkerAddr")]
struct CreateWorker {
    spec: WorkerSpec,
    factory: Option<hsu_module::ModuleFactory>,
}

impl Handler<CreateWorker> for MasterActor {
    type Result = MessageResult<CreateWorker>;

    fn handle(&mut self, msg: CreateWorker, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.create_worker(&msg.spec, msg.factory, ctx).0)
    }
}

/// Self-message of `AddWorker`: the lookup failed; free the id.
#[derive(Message)]
#[rtype(result = "()")]
struct AbortAdd(WorkerId);

impl Handler<AbortAdd> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: AbortAdd, _: &mut Context<Self>) {
        self.adding.remove(&msg.0);
    }
}

/// Self-message of `AddWorker`: `initialize` answered; insert the worker, or end it.
#[derive(Message)]
#[rtype(result = "Result<WorkerId, MasterError>")]
struct FinishAdd {
    spec: WorkerSpec,
    addr: WorkerAddr,
    initialized: Result<Result<(), crate::error::WorkerError>, actix::MailboxError>,
}

impl Handler<FinishAdd> for MasterActor {
    type Result = Result<WorkerId, MasterError>;

    fn handle(&mut self, msg: FinishAdd, _: &mut Context<Self>) -> Self::Result {
        let FinishAdd {
            spec,
            addr,
            initialized,
        } = msg;
        let id = spec.id.clone();
        self.adding.remove(&id);
        let failure = match initialized {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(MasterError::Worker(e)),
            Err(source) => Some(MasterError::Mailbox {
                id: id.clone(),
                source,
            }),
        };
        if let Some(e) = failure {
            tracing::warn!(worker = %id, error = %error_chain(&e), "worker not added");
            actix::spawn(async move {
                let _ = addr.terminate().await;
            });
            return Err(e);
        }
        if self.shutting_down {
            actix::spawn(async move {
                let _ = addr.terminate().await;
            });
            return Err(MasterError::ShuttingDown { id: id.to_string() });
        }
        let kind = match &spec.kind {
            WorkerKind::Module { module_type, .. } => WorkerKindName::from(*module_type),
            WorkerKind::Process(p) => WorkerKindName::from(p.process_type),
        };
        tracing::info!(worker = %id, ?kind, "worker added");
        self.order.push(id.clone());
        self.workers.insert(
            id.clone(),
            Entry {
                addr,
                kind,
                spec,
                state: WorkerState::Idle,
                last_error: None,
                restarts: RestartTracker::default(),
                manual_restarts: 0,
                pending_restart: None,
                epoch: 0,
                stop_requested: false,
                health: HealthStatus::Unknown,
                consecutive_health_failures: 0,
                last_health_check: None,
                resources: None,
                violations: 0,
                panics: Default::default(),
                quarantine: None,
            },
        );
        Ok(id)
    }
}

impl Handler<RemoveWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RemoveWorker, ctx: &mut Context<Self>) -> Self::Result {
        let addr = match self.manual_request(&msg.0, true, ctx) {
            Ok(addr) => addr,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let id = self.workers.remove(msg.0.as_str()).map(|e| e.spec.id);
        self.order.retain(|w| w.as_str() != msg.0);
        if let Some(id) = &id {
            self.health.do_send(UnwatchHealth(id.clone()));
            tracing::info!(worker = %id, "worker removed");
        }
        Box::pin(async move {
            match addr.terminate().await {
                Ok(result) => result.map_err(MasterError::from),
                // Already gone: removed all the same.
                Err(_) => Ok(()),
            }
        })
    }
}

impl Handler<StartWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: StartWorker, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.manual_request(&msg.0, false, ctx);
        let id = msg.0;
        Box::pin(async move {
            let addr = addr?;
            forward(&id, addr.start().await)
        })
    }
}

impl Handler<StopWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: StopWorker, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.manual_request(&msg.0, true, ctx);
        let id = msg.0;
        Box::pin(async move {
            let addr = addr?;
            forward(&id, addr.stop().await)
        })
    }
}

impl Handler<RestartWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RestartWorker, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.manual_request(&msg.id, false, ctx);
        let running = self
            .workers
            .get(msg.id.as_str())
            .map(|e| matches!(e.state, WorkerState::Running | WorkerState::Starting));
        if let Some(entry) = self.workers.get_mut(msg.id.as_str()) {
            entry.manual_restarts += 1;
        }
        let RestartWorker { id, force } = msg;
        Box::pin(async move {
            let addr = addr?;
            if running == Some(true) {
                if let Err(e) = forward(&id, addr.stop().await) {
                    if !force {
                        return Err(e);
                    }
                    tracing::warn!(worker = %id, error = %error_chain(&e), "stop failed; starting anyway (force)");
                }
            }
            forward(&id, addr.start().await)
        })
    }
}

impl Handler<GetWorkerState> for MasterActor {
    type Result = ResponseFuture<Result<WorkerDiagnostics, MasterError>>;

    fn handle(&mut self, msg: GetWorkerState, _: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.workers.get(msg.0.as_str()) else {
            return Box::pin(async move { Err(MasterError::NotFound { id: msg.0 }) });
        };
        let addr = entry.addr.clone();
        let id = entry.spec.id.clone();
        let restart_count = entry.restarts.total + entry.manual_restarts;
        let circuit_open = entry.restarts.circuit_open;
        let health = entry.health;
        let failures = entry.consecutive_health_failures;
        let checked = entry.last_health_check;
        let last_error = entry.last_error.clone();
        let resources = entry.resources;
        let quarantine = entry.quarantine.clone();
        Box::pin(async move {
            let mut d = addr
                .diagnostics()
                .await
                .map_err(|source| MasterError::Mailbox { id, source })?;
            d.restart_count = restart_count;
            d.circuit_open = circuit_open;
            d.health = health;
            d.consecutive_health_failures = failures;
            d.last_health_check = checked.or(d.last_health_check);
            if last_error.is_some() {
                d.last_error = last_error;
            }
            if d.state == WorkerState::Running {
                d.resources = resources;
            }
            d.quarantine = quarantine;
            Ok(d)
        })
    }
}

impl Handler<GetAllWorkerStates> for MasterActor {
    type Result = MessageResult<GetAllWorkerStates>;

    fn handle(&mut self, _: GetAllWorkerStates, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.order
                .iter()
                .filter_map(|id| self.workers.get(id))
                .map(|e| WorkerSummary {
                    id: e.spec.id.clone(),
                    kind: e.kind,
                    state: e.state,
                    restart_count: e.restarts.total + e.manual_restarts,
                    circuit_open: e.restarts.circuit_open,
                    health: e.health,
                    last_error: e.last_error.clone(),
                })
                .collect(),
        )
    }
}

impl Handler<Shutdown> for MasterActor {
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let mut targets = Vec::new();
        for id in self.order.iter().rev() {
            if let Some(entry) = self.workers.get_mut(id) {
                entry.stop_requested = true;
                if let Some(h) = entry.pending_restart.take() {
                    ctx.cancel_future(h);
                }
                targets.push((id.clone(), entry.addr.clone()));
            }
        }
        tracing::info!(workers = targets.len(), "shutting down");
        // All at once, each within its own stop timeout, so a slow worker delays no other;
        // the requests go out in reverse order of addition.
        let stopping = async move {
            let results = futures::future::join_all(
                targets
                    .into_iter()
                    .map(|(id, addr)| async move { (id, addr.terminate().await) }),
            )
            .await;
            let mut report = ShutdownReport::default();
            for (id, result) in results {
                match result {
                    Ok(Ok(())) | Err(_) => report.stopped.push(id),
                    Ok(Err(e)) => report.errors.push((id, error_chain(&e))),
                }
            }
            report
        };
        Box::pin(stopping.into_actor(self).map(|report, act, _| {
            for id in report
                .stopped
                .iter()
                .chain(report.errors.iter().map(|(id, _)| id))
            {
                act.workers.remove(id);
                act.health.do_send(UnwatchHealth(id.clone()));
            }
            act.order.retain(|id| act.workers.contains_key(id));
            tracing::info!(
                stopped = report.stopped.len(),
                failed = report.errors.len(),
                "shutdown complete"
            );
            report
        }))
    }
}

impl Handler<Subscribe> for MasterActor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, _: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        MessageResult(rx)
    }
}

impl Handler<WorkerStateChanged> for MasterActor {
    type Result = ();

    /// Records the new state, starts or stops health polling, applies the restart policy,
    /// then forwards the event (so a subscriber that sees it can already read the decision).
    fn handle(&mut self, event: WorkerStateChanged, ctx: &mut Context<Self>) {
        let mut trigger = None;
        if let Some(entry) = self.workers.get_mut(&event.id) {
            entry.state = event.to;
            if event.reason.is_some() {
                entry.last_error = event.reason.clone();
            }
            if event.from == WorkerState::Running {
                self.health.do_send(UnwatchHealth(event.id.clone()));
                entry.violations = 0;
                entry.resources = None;
                if let Some(monitor) = &self.resources {
                    monitor.unwatch(event.id.clone());
                }
            }
            if let (WorkerState::Running, Some(pid), Some(monitor)) =
                (event.to, event.pid, &self.resources)
            {
                monitor.watch(event.id.clone(), pid);
            }
            if event.to == WorkerState::Running {
                entry.health = HealthStatus::Unknown;
                entry.consecutive_health_failures = 0;
                if entry.spec.health_check.enabled {
                    self.health.do_send(WatchHealth {
                        id: event.id.clone(),
                        probe: Probe::from_config(
                            &entry.spec.health_check,
                            entry.spec.kind.default_probe(),
                            entry.addr.health_recipient(),
                        ),
                        config: entry.spec.health_check.clone(),
                    });
                }
            }
            let on_purpose =
                entry.stop_requested || self.shutting_down || event.from == WorkerState::Stopping;
            if event.panicked && !self.shutting_down && count_panic(entry) {
                let mut event = event;
                // A stop that panicked is still a stop: move, but do not start.
                let text = self.quarantine(&event.id, !on_purpose, ctx);
                event.reason = Some(match event.reason.take() {
                    Some(r) => format!("{r}; {text}"),
                    None => text,
                });
                return self.publish(event);
            }
            if !on_purpose {
                if event.to.is_failed() {
                    trigger = Some(Trigger::Failure);
                } else if event.to == WorkerState::Stopped {
                    trigger = Some(Trigger::CleanExit);
                }
            }
        }
        if let Some(trigger) = trigger {
            self.supervise(&event.id, trigger, ctx);
            if let Some(entry) = self.workers.get(&event.id) {
                if entry.restarts.circuit_open && event.to.is_failed() {
                    let mut event = event;
                    event.reason = entry.last_error.clone();
                    return self.publish(event);
                }
            }
        }
        self.publish(event);
    }
}

impl Handler<HealthReport> for MasterActor {
    type Result = ();

    /// Records the result; at `failure_threshold` failures in a row, fails the worker (which
    /// then goes through the restart policy like any failure).
    fn handle(&mut self, report: HealthReport, _: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&report.id) else {
            return;
        };
        entry.health = if report.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        entry.consecutive_health_failures = report.consecutive_failures;
        entry.last_health_check = Some(report.at);
        if !report.healthy {
            tracing::warn!(
                worker = %report.id,
                failures = report.consecutive_failures,
                threshold = report.failure_threshold,
                error = report.error.as_deref().unwrap_or(""),
                "health check failed"
            );
        }
        if report.consecutive_failures >= report.failure_threshold
            && entry.state == WorkerState::Running
        {
            self.health.do_send(UnwatchHealth(report.id.clone()));
            entry.addr.fail(format!(
                "health check failed {} times in a row: {}",
                report.consecutive_failures,
                report.error.unwrap_or_default()
            ));
        }
    }
}

/// Self-message: an automatic restart with no backoff. Stale ones (the worker was started or
/// stopped by hand since) are ignored by their epoch.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RestartNow {
    id: WorkerId,
    epoch: u64,
}

impl Handler<RestartNow> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: RestartNow, ctx: &mut Context<Self>) {
        self.restart_now(msg.id, msg.epoch, ctx);
    }
}

impl Handler<ResourceSamples> for MasterActor {
    type Result = ();

    /// Records each sample and enforces `limits:`: `grace` samples in a row over a limit
    /// trigger `on_violation`.
    fn handle(&mut self, msg: ResourceSamples, ctx: &mut Context<Self>) {
        for (id, usage) in msg.0 {
            let Some(entry) = self.workers.get_mut(&id) else {
                continue;
            };
            if entry.state != WorkerState::Running {
                continue;
            }
            entry.resources = Some(usage);
            let WorkerKind::Process(process) = &entry.spec.kind else {
                continue;
            };
            let Some(limits) = &process.limits else {
                continue;
            };
            let Some(violation) = limit_violation(limits, &usage) else {
                entry.violations = 0;
                continue;
            };
            entry.violations += 1;
            if entry.violations < limits.grace {
                continue;
            }
            let reason = format!("{violation} ({} samples in a row)", entry.violations);
            entry.violations = 0;
            match limits.on_violation {
                OnViolation::Log => tracing::warn!(worker = %id, "limit exceeded: {reason}"),
                OnViolation::Restart => {
                    tracing::warn!(worker = %id, "limit exceeded, failing the worker: {reason}");
                    entry.addr.fail(format!("limit exceeded: {reason}"));
                }
                OnViolation::Stop => {
                    tracing::warn!(worker = %id, "limit exceeded, stopping the worker: {reason}");
                    entry.last_error = Some(format!("stopped: limit exceeded: {reason}"));
                    if let Ok(addr) = self.manual_request(id.as_str(), true, ctx) {
                        actix::spawn(async move {
                            let _ = addr.stop().await;
                        });
                    }
                }
            }
        }
    }
}

/// What limit `usage` breaks, if any, in words.
/// Records a panic of `entry`'s module code; true when `quarantine:` says it is time to move.
fn count_panic(entry: &mut Entry) -> bool {
    let Some(q) = &entry.spec.quarantine else {
        return false;
    };
    if entry.quarantine.is_some() {
        return false;
    }
    let now = Instant::now();
    entry.panics.push_back(now);
    while entry
        .panics
        .front()
        .is_some_and(|t| now.duration_since(*t) > q.within)
    {
        entry.panics.pop_front();
    }
    entry.panics.len() as u32 >= q.after_panics
}

fn limit_violation(limits: &LimitsConfig, usage: &ResourceUsage) -> Option<String> {
    if let Some(max) = limits.memory_max {
        if usage.rss_bytes > max.0 {
            return Some(format!(
                "memory: RSS {} > memory_max {max}",
                ByteSize(usage.rss_bytes)
            ));
        }
    }
    if let Some(max) = limits.cpu_percent_max {
        if usage.cpu_percent > max {
            return Some(format!(
                "cpu: {:.1}% > cpu_percent_max {max}%",
                usage.cpu_percent
            ));
        }
    }
    None
}

impl MasterActor {
    fn publish(&mut self, event: WorkerStateChanged) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

/// Maps a worker's reply (or its absence) to the master's error.
fn forward<T>(
    id: &str,
    reply: Result<Result<T, crate::error::WorkerError>, MailboxError>,
) -> Result<T, MasterError> {
    match reply {
        Ok(result) => result.map_err(MasterError::from),
        Err(source) => Err(match WorkerId::new(id) {
            Ok(id) => MasterError::Mailbox { id, source },
            Err(_) => MasterError::NotFound { id: id.to_string() },
        }),
    }
}
