//! One run of a process worker: launching the child (or attaching to a running process),
//! waiting for it to be ready, and stopping it. The handlers in `mod.rs` decide when; this
//! file drives `process/` to do it.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::watch;

use super::ProcessExited;
use super::ProcessWorkerActor;
use crate::config::{ExecutionConfig, ProcessSpec, ProcessType};
use crate::error::{error_chain, Operation, WorkerError};
use crate::process::attach::{self, Attached};
use crate::process::integrated::{self, ControlClient};
use crate::process::logs::LogSink;
use crate::process::run_table::RunRecord;
use crate::process::spawn::{self, SpawnExtras};
use crate::process::stop::{self as stopping, wait_attached, wait_child};
use crate::process::ExitInfo;
use crate::state::Lifecycle;
use crate::WorkerId;

/// Launches of an integrated worker whose control port keeps being taken before it binds it.
const PORT_ATTEMPTS: u32 = 3;

/// Why a new run did not become ready.
pub(super) enum NotReady {
    /// It exited with `EXIT_PORT_IN_USE` before its first Ping: worth another port.
    PortInUse(WorkerError),
    /// Any other reason.
    Other(WorkerError),
}

/// One run of the process.
pub(super) struct Run {
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) target: Target,
    /// `Some` once the process has exited (and, if ours, been reaped and its output read).
    pub(super) exited: watch::Receiver<Option<ExitInfo>>,
    /// Integrated workers: the control protocol client.
    pub(super) control: Option<ControlClient>,
    /// Its line in `hsu.pids`, removed with the run.
    pub(super) _record: Option<RunRecord>,
}

pub(super) enum Target {
    /// Our child, leader of its own process group (its PID is the group id).
    Group,
    /// A process we attached to; signalled only through its pinned identity.
    Attached(Arc<Attached>),
}

impl ProcessWorkerActor {
    /// After a successful spawn or attach: wait for readiness, then `running`; or clean up
    /// and `failed_start`. An integrated worker that exits because its control port was taken
    /// (the port is picked here and passed on, so this can happen) is launched again with
    /// another port, up to `PORT_ATTEMPTS` launches in all.
    pub(super) fn when_ready(
        &mut self,
        attempt: u32,
    ) -> ResponseActFuture<Self, Result<(), WorkerError>> {
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

impl ProcessWorkerActor {
    /// Spawns the child of a managed or integrated worker and starts watching its exit.
    ///
    /// The fork happens on a thread of the shared `Spawner`: those threads live as long as the
    /// master, so `PR_SET_PDEATHSIG` (which follows the spawning *thread*) kills the
    /// child when the master goes, and spawns of many workers run on all cores instead of
    /// queueing on this actor's thread. The child is reaped on that runtime too.
    pub(super) fn launch(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>> {
        let id = self.setup.id.clone();
        let prepared = self.prepare_spawn();
        let (exec, extras, port, sink) = match prepared {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let spawner = self.setup.spawner.clone();
        let path = exec.executable_path.clone();
        let id_for_files = id.clone();
        let run_table = self.setup.run_table.clone();
        let span = self.core.span.clone();
        let spawning = self.setup.runtime.handle().spawn(async move {
            let spawned = spawn::spawn(exec, extras, sink, &spawner).await?;
            let (tx, rx) = watch::channel(None);
            let pid = spawned.pid;
            tracing::debug!(parent: &span, pid, created_in_cgroup = spawned.created_in_cgroup, "spawned");
            tokio::spawn(wait_child(spawned.child, spawned.output, tx));
            // Written here, off the actor's thread.
            let record = run_table.record(&id_for_files, pid, port);
            Ok::<_, std::io::Error>((pid, rx, record))
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
            act.install(pid, exited, port, Some(files), ctx)
        }))
    }

    /// What a spawn needs, gathered on the actor: program, extra args and environment, the
    /// control port of an integrated worker, and the output sink.
    #[allow(clippy::type_complexity)]
    pub(super) fn prepare_spawn(
        &mut self,
    ) -> Result<(ExecutionConfig, SpawnExtras, Option<u16>, Arc<LogSink>), WorkerError> {
        let id = self.setup.id.clone();
        let exec = self
            .setup
            .spec
            .execution
            .clone()
            .ok_or_else(|| WorkerError::NoExecution { id: id.clone() })?;
        let sink = self.sink()?;
        let mut extras = SpawnExtras::default();
        if let Some(cgroups) = &self.setup.cgroups {
            // Made just now, it is empty: nothing of an earlier run to look for.
            let mut new = false;
            if self.cgroup.is_none() {
                match cgroups.worker(&self.setup.cgroup_name) {
                    Ok((c, created)) => {
                        new = created;
                        self.cgroup = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(parent: &self.core.span, error = %e, "no cgroup for this worker; contained by its process group")
                    }
                }
            }
            if let Some(c) = &self.cgroup {
                if !new && c.populated() {
                    // What an earlier run left: gone before the new one starts.
                    tracing::warn!(parent: &self.core.span, left = c.pids().len(), "killing what an earlier run left in the worker's cgroup");
                    c.kill();
                }
                extras.cgroup = Some(c.clone());
            }
        }
        extras.sockets = self.setup.sockets.ensure().map_err(|e| e.for_worker(&id))?;
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
    pub(super) fn install(
        &mut self,
        pid: u32,
        exited: watch::Receiver<Option<ExitInfo>>,
        port: Option<u16>,
        record: Option<RunRecord>,
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
            _record: record,
        });
        Ok(())
    }

    /// Resolves when the new run is ready: at once, or for integrated workers at the first
    /// successful Ping (`process::integrated::wait_ready`).
    pub(super) fn readiness(
        &self,
    ) -> impl std::future::Future<Output = Result<(), NotReady>> + 'static {
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
    pub(super) fn attach(&mut self, ctx: &mut Context<Self>) -> Result<(), WorkerError> {
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
            _record: None,
        });
        Ok(())
    }

    /// The stop of the current run, as a future that needs nothing from the actor.
    /// Its output is the stop's result and how the process ended, when known (the exit event
    /// itself may still be on its way to the mailbox).
    pub(super) fn stop_run(
        &mut self,
    ) -> impl std::future::Future<Output = (Result<(), WorkerError>, Option<ExitInfo>)> + 'static
    {
        let exited = self.run.as_ref().map(|r| r.exited.clone());
        let stopping = self.stop_current_run();
        async move {
            let result = stopping.await;
            (result, exited.and_then(|rx| rx.borrow().clone()))
        }
    }

    pub(super) fn finish_stop(
        &mut self,
        (result, exit): (Result<(), WorkerError>, Option<ExitInfo>),
    ) -> Result<(), WorkerError> {
        self.started_at = None;
        if exit.is_some() {
            self.core.exit = exit.clone();
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

impl ProcessWorkerActor {
    /// Takes the current run and stops it (with the worker's cgroup, if it has one).
    pub(super) fn stop_current_run(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), WorkerError>> + 'static {
        let id = self.setup.id.clone();
        // On the worker runtime, not this actor's thread: a stop signals the group, reads the
        // cgroup's member list and polls it until it is empty, which for a thousand workers
        // stopped at once was most of the shutdown, one after the other on this thread.
        let stopping = self.setup.runtime.handle().spawn(stop_target(
            id.clone(),
            self.run.take(),
            self.setup.spec.clone(),
            self.core.span.clone(),
            self.cgroup.clone(),
        ));
        async move {
            stopping.await.unwrap_or(Err(WorkerError::Cancelled {
                id,
                op: Operation::Stop,
            }))
        }
    }
}

/// Stops whatever `run` holds.
async fn stop_target(
    id: WorkerId,
    run: Option<Run>,
    spec: std::sync::Arc<ProcessSpec>,
    span: tracing::Span,
    cgroup: Option<crate::process::cgroup::WorkerCgroup>,
) -> Result<(), WorkerError> {
    let Some(run) = run else { return Ok(()) };
    let outcome = match &run.target {
        Target::Group => {
            stopping::group(
                run.pid as i32,
                Some(run.exited.clone()),
                &spec,
                &span,
                cgroup,
            )
            .await
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
