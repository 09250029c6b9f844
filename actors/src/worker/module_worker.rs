//! `ModuleWorkerActor`: one per module worker. It owns the module instance and its run (the
//! cancellation token and the tasks the module spawned) and drives them through the shared
//! state machine.
//!
//! Why an actor: a worker's lifecycle is a sequence of slow, fallible steps (create,
//! initialize, start, stop) that must not overlap, while state queries must be answered at
//! once. Start, stop, failure clean-up and terminate each take an operation lock, so they run
//! one after another; diagnostics and health probes do not take it and are answered meanwhile.
//! All module code runs on the [`WorkerRuntime`], never on this actor's thread.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use hsu_module::{
    CancellationToken, ModuleConfig, ModuleContext, ModuleFactory, ModuleInfo, WorkerModule,
};
use tokio::sync::Mutex as AsyncMutex;

use super::module_tasks::{HostSpawner, TaskEnded, TaskSet};
use crate::error::{error_chain, Operation, WorkerError};
use crate::runtime::WorkerRuntime;
use crate::state::{Lifecycle, WorkerState};
use crate::worker::{
    CheckHealth, Fail, GetFacts, Initialize, LifecycleActor, ModuleDiagnostics, Start, Stop,
    Terminate, WorkerCore, WorkerFacts, WorkerStateChanged,
};
use crate::WorkerId;

type SharedModule = Arc<AsyncMutex<Box<dyn WorkerModule>>>;

/// What a module worker needs to exist. Built by the master from a validated spec.
pub struct ModuleWorkerSetup {
    /// The worker.
    pub id: WorkerId,
    /// Factory name or plugin path (for diagnostics).
    pub module_name: String,
    /// Creates instances.
    pub factory: ModuleFactory,
    /// The `config:` section.
    pub config: ModuleConfig,
    /// Where module code runs.
    pub runtime: WorkerRuntime,
    /// Tags its events ([`WorkerStateChanged::instance`]).
    pub instance: u64,
    /// Where state changes go (the master, or a test).
    pub events: Recipient<WorkerStateChanged>,
    /// Limit of create + initialize + start.
    pub start_timeout: Duration,
    /// Limit of stop (tasks included).
    pub stop_timeout: Duration,
    /// Where the module's tracing events go (with [`super::logs::layer`] installed).
    pub logs: crate::config::LogsConfig,
    /// Its master-held listening sockets ([`ModuleContext::socket`] hands them out).
    pub sockets: Arc<crate::sockets::WorkerSockets>,
}

/// The actor running one module worker.
pub struct ModuleWorkerActor {
    setup: ModuleWorkerSetup,
    /// State, last error, span, operation lock: as in every worker actor.
    core: WorkerCore,
    /// The current instance; replaced after a failure so a restart begins from a clean value.
    module: Option<SharedModule>,
    /// Set after a failure, panic or timeout: the instance may be broken, make a new one.
    needs_fresh_instance: bool,
    /// The current (or last) run: cancellation and spawned tasks.
    run: Option<Run>,
    /// Tasks spawned from `initialize`; they live until the worker is removed.
    init_run: Option<Run>,
    /// Counts runs, so that a late report from an old run is recognised and ignored.
    generation: u64,
    started_at: Option<(SystemTime, Instant)>,
    info: ModuleInfo,
    load_time: Duration,
    loaded_at: Option<SystemTime>,
    /// This actor's registration with the tracing layer.
    log_token: u64,
}

struct Run {
    generation: u64,
    ctx: ModuleContext,
    cancel: CancellationToken,
    tasks: Arc<TaskSet>,
}

impl ModuleWorkerActor {
    /// A worker in state `idle`, with no instance yet: send [`Initialize`] next.
    pub fn new(setup: ModuleWorkerSetup) -> Self {
        let core = WorkerCore::new(setup.id.clone(), setup.instance, setup.events.clone());
        Self {
            setup,
            core,
            module: None,
            needs_fresh_instance: false,
            run: None,
            init_run: None,
            generation: 0,
            started_at: None,
            info: ModuleInfo::default(),
            load_time: Duration::ZERO,
            loaded_at: None,
            log_token: 0,
        }
    }
}

impl Actor for ModuleWorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.log_token = super::logs::register(&self.setup.id, &self.setup.logs);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        super::logs::unregister(&self.setup.id, self.log_token);
        // Whatever way the actor ends, the module's tasks end with it.
        for run in [self.run.take(), self.init_run.take()]
            .into_iter()
            .flatten()
        {
            run.cancel.cancel();
            run.tasks.abort_all();
        }
        if let Some(module) = self.module.take() {
            drop_on_runtime(&self.setup.runtime, module);
        }
    }
}

impl Handler<Initialize> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Creates the instance and calls `initialize`. Start/stop requests queue behind it.
    fn handle(&mut self, _: Initialize, _: &mut Context<Self>) -> Self::Result {
        self.with_op_lock(|act, ctx| {
            let run = act.new_run(ctx);
            let load = act.load(run.ctx.clone());
            act.init_run = Some(run);
            Box::pin(load.into_actor(act).map(|loaded, act, _| match loaded {
                Ok(loaded) => {
                    act.apply_loaded(loaded);
                    Ok(())
                }
                Err(e) => {
                    act.core.last_error = Some(error_chain(&e));
                    Err(e)
                }
            }))
        })
    }
}

impl Handler<Start> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Starts the module; replies once `start` returned (or failed, panicked, timed out).
    /// Other start/stop requests wait; state queries are answered meanwhile (`starting`).
    fn handle(&mut self, _: Start, _: &mut Context<Self>) -> Self::Result {
        self.with_op_lock(|act, ctx| {
            if let Err(e) = act.advance(Lifecycle::StartRequested, None) {
                return Box::pin(fut::ready(Err(e)));
            }
            // Its sockets first: a port still taken fails the start, saying which.
            let sockets = act.setup.sockets.ensure().map(drop);
            let run = act.new_run(ctx);
            let run_ctx = run.ctx.clone();
            act.run = Some(run);
            let runtime = act.setup.runtime.clone();
            let id = act.setup.id.clone();
            let limit = act.setup.start_timeout;
            let span = act.core.span.clone();
            // After a failure the old instance may hold broken state: start from a new one.
            let source = match (&act.module, act.needs_fresh_instance) {
                (Some(module), false) => Ok(module.clone()),
                _ => Err(act.load(run_ctx.clone())),
            };
            let starting = async move {
                sockets.map_err(|e| e.for_worker(&id))?;
                let (module, loaded) = match source {
                    Ok(module) => (module, None),
                    Err(load) => {
                        let loaded = load.await?;
                        (loaded.module.clone(), Some(loaded))
                    }
                };
                let m = module.clone();
                runtime
                    .call(&id, Operation::Start, limit, &span, async move {
                        let mut m = m.lock().await;
                        m.start(&run_ctx).await?;
                        // Endpoints are often known only once started.
                        Ok(m.info())
                    })
                    .await
                    .map(|info| (loaded, info))
            };
            Box::pin(starting.into_actor(act).map(|result, act, _| match result {
                Ok((loaded, info)) => {
                    if let Some(loaded) = loaded {
                        act.apply_loaded(loaded);
                    }
                    act.info = info;
                    act.started_at = Some((SystemTime::now(), Instant::now()));
                    act.advance(Lifecycle::Started, None)
                }
                Err(e) => {
                    act.needs_fresh_instance = true;
                    if let Some(run) = act.run.take() {
                        run.cancel.cancel();
                        run.tasks.abort_all();
                    }
                    act.core.panicked = e.is_broken_module();
                    act.advance(Lifecycle::StartFailed, Some(error_chain(&e)))?;
                    Err(e)
                }
            }))
        })
    }
}

impl Handler<Stop> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Cancels the run, calls `stop`, waits for the module's tasks (aborting them at the stop
    /// timeout). From a failed state it only records the stop: the run is already cleaned up.
    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        super::stop(self)
    }
}

impl LifecycleActor for ModuleWorkerActor {
    fn core(&mut self) -> &mut WorkerCore {
        &mut self.core
    }

    fn stop_now(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>> {
        let was_running = self.core.state == WorkerState::Running;
        if let Err(e) = self.advance(Lifecycle::StopRequested, None) {
            return Box::pin(fut::ready(Err(e)));
        }
        if !was_running {
            return Box::pin(fut::ready(self.advance(Lifecycle::StopCompleted, None)));
        }
        let stopping = self.shut_down_run();
        Box::pin(stopping.into_actor(self).map(|result, act, _| {
            act.started_at = None;
            match result {
                Ok(()) => act.advance(Lifecycle::StopCompleted, None),
                Err(e) => {
                    act.needs_fresh_instance = true;
                    act.core.panicked = e.is_broken_module();
                    act.advance(Lifecycle::StopFailed, Some(error_chain(&e)))?;
                    Err(e)
                }
            }
        }))
    }
}

super::waiting_handlers!(ModuleWorkerActor);

impl Handler<Fail> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Fail, _: &mut Context<Self>) -> Self::Result {
        self.fail_running(msg.reason, None, false)
    }
}

impl Handler<TaskEnded> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    /// A task that ends with an error or panic fails the run it belongs to; one that returns
    /// `Ok` is only logged.
    fn handle(&mut self, msg: TaskEnded, _: &mut Context<Self>) -> Self::Result {
        match msg.error {
            None => {
                tracing::debug!(parent: &self.core.span, task = %msg.name, "module task finished");
                Box::pin(fut::ready(()))
            }
            Some(error) => self.fail_running(error, Some(msg.generation), msg.panicked),
        }
    }
}

impl Handler<CheckHealth> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, Result<bool, WorkerError>>;

    /// Calls `is_healthy` under `timeout`. A panic there is a broken module: the worker fails.
    fn handle(&mut self, msg: CheckHealth, _: &mut Context<Self>) -> Self::Result {
        let (Some(module), WorkerState::Running) = (&self.module, self.core.state) else {
            return Box::pin(fut::ready(Err(WorkerError::Cancelled {
                id: self.setup.id.clone(),
                op: Operation::HealthCheck,
            })));
        };
        let m = module.clone();
        let generation = self.generation;
        let probe = self.setup.runtime.call(
            &self.setup.id,
            Operation::HealthCheck,
            msg.timeout,
            &self.core.span,
            async move { Ok(m.lock().await.is_healthy().await) },
        );
        Box::pin(probe.into_actor(self).map(move |result, act, ctx| {
            // A panic is a broken module; a probe that blocks its thread leaves nothing to run.
            if let Some(e) = result.as_ref().err().filter(|e| e.is_broken_module()) {
                let reason = error_chain(e);
                ctx.spawn(act.fail_running(reason, Some(generation), true));
            }
            result
        }))
    }
}

impl Handler<GetFacts> for ModuleWorkerActor {
    type Result = MessageResult<GetFacts>;

    fn handle(&mut self, _: GetFacts, _: &mut Context<Self>) -> Self::Result {
        let running = self.core.state == WorkerState::Running;
        let tasks = [&self.run, &self.init_run]
            .into_iter()
            .flatten()
            .map(|r| r.tasks.live())
            .sum();
        MessageResult(WorkerFacts {
            state: self.core.state,
            last_error: self.core.last_error.clone(),
            started_at: self.started_at.map(|(at, _)| at),
            uptime: self
                .started_at
                .filter(|_| running)
                .map(|(_, since)| since.elapsed()),
            pid: None,
            executable_path: format!("in-proc-module:{}", self.setup.module_name),
            module: Some(ModuleDiagnostics {
                info: self.info.clone(),
                module_name: self.setup.module_name.clone(),
                tasks,
                load_time: self.load_time,
                loaded_at: self.loaded_at,
                blocked: self.setup.runtime.stuck_call(&self.setup.id).map(|c| {
                    super::BlockedCall {
                        call: c.op.to_string(),
                        for_ms: u64::try_from(c.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    }
                }),
            }),
            last_exit: None,
            log_file: None,
            containment: None,
            log_writes: super::logs::writes_of(&self.setup.id),
        })
    }
}

impl Handler<Terminate> for ModuleWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    /// Stops the module if it runs, then ends the actor.
    fn handle(&mut self, _: Terminate, _: &mut Context<Self>) -> Self::Result {
        super::terminate(self)
    }
}

impl ModuleWorkerActor {
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
        let pid = None;
        self.core.advance(event, reason, pid)
    }

    /// Copies of the worker's sockets for a run's context. One that cannot be bound now is
    /// left out (`start` checks them first and fails with why).
    fn run_sockets(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let Ok(held) = self.setup.sockets.ensure() else {
            return Vec::new();
        };
        held.iter()
            .filter_map(|s| Some((s.spec.name.clone(), s.duplicate().ok()?)))
            .collect()
    }

    /// A fresh run: new generation, cancellation token and task set.
    fn new_run(&mut self, ctx: &mut Context<Self>) -> Run {
        self.generation += 1;
        let cancel = CancellationToken::new();
        let tasks = Arc::new(TaskSet::default());
        let spawner = Arc::new(HostSpawner {
            runtime: self.setup.runtime.clone(),
            worker: ctx.address().recipient(),
            generation: self.generation,
            tasks: tasks.clone(),
        });
        Run {
            generation: self.generation,
            ctx: ModuleContext::new(
                self.setup.id.as_str(),
                cancel.clone(),
                self.core.span.clone(),
                spawner,
            )
            .with_sockets(self.run_sockets()),
            cancel,
            tasks,
        }
    }

    /// Creates an instance with the factory and initialises it, both on the worker runtime.
    fn load(
        &self,
        ctx: ModuleContext,
    ) -> impl std::future::Future<Output = Result<Loaded, WorkerError>> + 'static {
        let runtime = self.setup.runtime.clone();
        let factory = self.setup.factory.clone();
        let config = self.setup.config.clone();
        let id = self.setup.id.clone();
        let limit = self.setup.start_timeout;
        let span = self.core.span.clone();
        async move {
            let began = Instant::now();
            let module = runtime
                .call(&id, Operation::Create, limit, &span, async move {
                    Ok(factory.create())
                })
                .await?;
            let module: SharedModule = Arc::new(AsyncMutex::new(module));
            let m = module.clone();
            let info = runtime
                .call(&id, Operation::Initialize, limit, &span, async move {
                    let mut m = m.lock().await;
                    m.initialize(&ctx, &config).await?;
                    Ok(m.info())
                })
                .await?;
            Ok(Loaded {
                module,
                info,
                load_time: began.elapsed(),
                loaded_at: SystemTime::now(),
            })
        }
    }

    fn apply_loaded(&mut self, loaded: Loaded) {
        if let Some(old) = self.module.replace(loaded.module) {
            drop_on_runtime(&self.setup.runtime, old);
        }
        self.needs_fresh_instance = false;
        self.info = loaded.info;
        self.load_time = loaded.load_time;
        self.loaded_at = Some(loaded.loaded_at);
    }

    /// Cancels the current run, calls `stop` and waits for the run's tasks, all within the
    /// stop timeout. Tasks still running at the deadline are aborted.
    fn shut_down_run(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), WorkerError>> + 'static {
        let run = self.run.take();
        let module = self.module.clone();
        let runtime = self.setup.runtime.clone();
        let id = self.setup.id.clone();
        let limit = self.setup.stop_timeout;
        let span = self.core.span.clone();
        async move {
            let deadline = Instant::now() + limit;
            let Some(run) = run else { return Ok(()) };
            run.cancel.cancel();
            let result = match module {
                Some(m) => {
                    let ctx = run.ctx.clone();
                    runtime
                        .call(&id, Operation::Stop, limit, &span, async move {
                            m.lock().await.stop(&ctx).await
                        })
                        .await
                }
                None => Ok(()),
            };
            run.tasks
                .join(deadline.saturating_duration_since(Instant::now()))
                .await;
            result
        }
    }

    /// Marks the running worker failed with `reason` and cleans up its run. Ignored when the
    /// worker is not running, or when `generation` names an older run.
    fn fail_running(
        &mut self,
        reason: String,
        generation: Option<u64>,
        panicked: bool,
    ) -> ResponseActFuture<Self, ()> {
        self.with_op_lock(move |act, _| {
            let current = generation.is_none_or(|g| act.run.as_ref().is_some_and(|r| r.generation == g));
            if act.core.state != WorkerState::Running || !current {
                tracing::debug!(parent: &act.core.span, %reason, "failure report for a run that is over; ignored");
                return Box::pin(fut::ready(()));
            }
            act.needs_fresh_instance = true;
            act.started_at = None;
            act.core.panicked = panicked;
            let _ = act.advance(Lifecycle::Crashed, Some(reason));
            let cleanup = act.shut_down_run();
            Box::pin(cleanup.into_actor(act).map(|result, act, _| {
                if let Err(e) = result {
                    tracing::warn!(parent: &act.core.span, error = %error_chain(&e), "clean-up after failure did not finish");
                }
            }))
        })
    }
}

struct Loaded {
    module: SharedModule,
    info: ModuleInfo,
    load_time: Duration,
    loaded_at: SystemTime,
}

/// Drops a module instance on the worker runtime: its `Drop` is module code too.
fn drop_on_runtime(runtime: &WorkerRuntime, module: SharedModule) {
    runtime.handle().spawn(async move { drop(module) });
}
