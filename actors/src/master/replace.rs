//! Replacing a running worker with a new instance started first (`restart: {strategy:
//! start_first}`): by `RestartWorker` (the same spec) and by `Apply` of a changed worker (the
//! new spec, possibly another deployment — a live move between module and process).
//!
//! The successor is a second worker actor under the same id, on the same master-held sockets
//! (and, as a process, in a cgroup of its own). It is initialized and started beside the old
//! instance, which goes on serving; once it runs and passes its health check (when one is
//! configured), it takes the old one's place in the table and the old one is stopped
//! gracefully, so it drains. If it fails, or is not healthy within its `start_timeout`, it is
//! stopped and the old one keeps running; the error says why. Events of the successor are kept
//! aside until it takes over, then it is reported `running` like any start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use super::table::WorkerAddr;
use super::MasterActor;
use crate::config::WorkerSpec;
use crate::error::{error_chain, MasterError, WorkerError};
use crate::health::{probe_once, Probe};
use crate::sockets::WorkerSockets;
use crate::state::WorkerState;
use crate::worker::{Deployment, WorkerStateChanged};
use crate::WorkerId;

/// A successor being started, as the master sees it until it takes over.
pub(super) struct SuccessorView {
    pub instance: u64,
    pub addr: WorkerAddr,
    pub kind: Deployment,
    pub sockets: Arc<WorkerSockets>,
    pub cgroup: String,
    /// From its events.
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub reason: Option<String>,
    pub at: SystemTime,
}

/// Replaces `id`'s instance with one of `spec`, starting the new one first. With
/// `configured`, `spec` becomes the worker's configured spec (an apply).
#[derive(Message)]
#[rtype(result = "Result<(), MasterError>")]
pub(super) struct Replace {
    pub id: WorkerId,
    pub spec: WorkerSpec,
    pub configured: bool,
}

impl Handler<Replace> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: Replace, ctx: &mut Context<Self>) -> Self::Result {
        let Replace {
            id,
            spec,
            configured,
        } = msg;
        match self.workers.get(&id) {
            None => return Box::pin(async move { Err(MasterError::NotFound { id }) }),
            Some(e) if e.successor.is_some() => {
                return Box::pin(async move { Err(MasterError::Conflict { id }) })
            }
            Some(_) => {}
        }
        if self.shutting_down {
            return Box::pin(async move { Err(MasterError::ShuttingDown { id: id.to_string() }) });
        }
        let lookup = self.lookup_code(&spec);
        let runtime = self.runtime.clone();
        let me = ctx.address();
        Box::pin(async move {
            let mailbox = |source| MasterError::Unanswered {
                actor: "master",
                source,
            };
            let factory = lookup.await?;
            let (addr, instance) = me
                .send(CreateSuccessor {
                    id: id.clone(),
                    spec: spec.clone(),
                    factory,
                })
                .await
                .map_err(mailbox)??;
            tracing::info!(worker = %id, "start_first: starting the new instance beside the running one");
            let started = Instant::now();
            let ready = async {
                let step = |r: Result<Result<(), WorkerError>, MailboxError>| match r {
                    Ok(r) => r.map_err(|e| error_chain(&e)),
                    Err(e) => Err(e.to_string()),
                };
                step(addr.initialize().await)?;
                step(addr.start().await)?;
                wait_healthy(&addr, &spec, &runtime).await
            };
            if let Err(reason) = ready.await {
                let _ = addr.terminate().await;
                let _ = me
                    .send(DropSuccessor {
                        id: id.clone(),
                        instance,
                    })
                    .await;
                tracing::error!(worker = %id, error = %reason, "start_first: the new instance did not become ready; the old one keeps running");
                return Err(MasterError::Worker(WorkerError::NotReady {
                    id,
                    reason: format!(
                        "the new instance did not become ready ({reason}); the old one keeps running"
                    ),
                }));
            }
            let old = me
                .send(Promote {
                    id: id.clone(),
                    instance,
                    spec,
                    configured,
                })
                .await
                .map_err(mailbox)?;
            let old = match old {
                Ok(old) => old,
                Err(e) => {
                    let _ = addr.terminate().await;
                    return Err(e);
                }
            };
            tracing::info!(worker = %id, ready_after = ?started.elapsed(), "start_first: the new instance took over; stopping the old one");
            if let Err(e) = old
                .terminate()
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| error_chain(&e)))
            {
                tracing::warn!(worker = %id, error = %e, "start_first: the old instance's stop failed (it was killed)");
            }
            Ok(())
        })
    }
}

/// Waits for a started successor's health check to pass, when it has one, within its
/// `start_timeout` (probing at most every 50 ms).
async fn wait_healthy(
    addr: &WorkerAddr,
    spec: &WorkerSpec,
    runtime: &crate::runtime::WorkerRuntime,
) -> Result<(), String> {
    let health = &spec.health_check;
    if !health.enabled {
        return Ok(());
    }
    let probe = Probe::from_config(
        health,
        spec.deployment.default_probe(),
        addr.health_recipient(),
    );
    let deadline = Instant::now() + spec.start_timeout;
    let pause = health.interval.min(Duration::from_millis(50));
    loop {
        let last = match probe_once(&probe, health.timeout, runtime).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + pause >= deadline {
            return Err(format!(
                "not healthy within its start_timeout ({}): {last}",
                crate::config::duration::format(spec.start_timeout)
            ));
        }
        tokio::time::sleep(pause).await;
    }
}

/// Self-message of `Replace`: create the successor's actor on the worker's sockets.
#[derive(Message)]
#[rtype(result = "Result<(WorkerAddr, u64), MasterError>")]
struct CreateSuccessor {
    id: WorkerId,
    spec: WorkerSpec,
    factory: Option<hsu_module::ModuleFactory>,
}

impl Handler<CreateSuccessor> for MasterActor {
    type Result = Result<(WorkerAddr, u64), MasterError>;

    fn handle(&mut self, msg: CreateSuccessor, ctx: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.workers.get(&msg.id) else {
            return Err(MasterError::NotFound { id: msg.id });
        };
        if entry.successor.is_some() {
            return Err(MasterError::Conflict { id: msg.id });
        }
        let sockets = WorkerSockets::new(&msg.id, &msg.spec.sockets, Some(&entry.sockets));
        let created = self.create_worker(&msg.spec, msg.factory, sockets.clone(), true, ctx);
        let Some(entry) = self.workers.get_mut(&msg.id) else {
            return Err(MasterError::NotFound { id: msg.id });
        };
        entry.successor = Some(Box::new(SuccessorView {
            instance: created.instance,
            addr: created.addr.clone(),
            kind: created.kind,
            sockets,
            cgroup: created.cgroup,
            state: WorkerState::Idle,
            pid: None,
            reason: None,
            at: SystemTime::now(),
        }));
        Ok((created.addr, created.instance))
    }
}

/// Self-message of `Replace`: the successor failed; forget it.
#[derive(Message)]
#[rtype(result = "()")]
struct DropSuccessor {
    id: WorkerId,
    instance: u64,
}

impl Handler<DropSuccessor> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: DropSuccessor, _: &mut Context<Self>) {
        if let Some(entry) = self.workers.get_mut(&msg.id) {
            if entry
                .successor
                .as_ref()
                .is_some_and(|s| s.instance == msg.instance)
            {
                entry.successor = None;
            }
        }
    }
}

/// Self-message of `Replace`: the successor is ready; it takes the old instance's place.
/// Replies with the old instance, to be stopped.
#[derive(Message)]
#[rtype(result = "Result<WorkerAddr, MasterError>")]
struct Promote {
    id: WorkerId,
    instance: u64,
    spec: WorkerSpec,
    configured: bool,
}

impl Handler<Promote> for MasterActor {
    type Result = Result<WorkerAddr, MasterError>;

    fn handle(&mut self, msg: Promote, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let Some(entry) = self.workers.get_mut(&id) else {
            return Err(MasterError::NotFound { id });
        };
        let view = match entry.successor.take() {
            Some(v) if v.instance == msg.instance => v,
            other => {
                entry.successor = other;
                return Err(MasterError::Conflict { id });
            }
        };
        if view.state != WorkerState::Running {
            let reason = view
                .reason
                .unwrap_or_else(|| format!("it is {}", view.state));
            return Err(MasterError::Worker(WorkerError::NotReady {
                id,
                reason: format!(
                    "the new instance ended before it took over ({reason}); the old one keeps running"
                ),
            }));
        }
        let old = std::mem::replace(&mut entry.addr, view.addr);
        let from = entry.state;
        entry.instance = view.instance;
        entry.deployment = view.kind;
        entry.sockets = view.sockets;
        entry.cgroup = view.cgroup;
        let before = std::mem::replace(&mut entry.spec, msg.spec);
        if msg.configured {
            // The new spec is the configured one.
            entry.configured = None;
            entry.quarantine = Default::default();
        } else if entry.configured.is_none() && before != entry.spec {
            entry.configured = Some(Box::new(before));
        }
        // A restart of the old instance scheduled meanwhile (it crashed during the replace)
        // is void: the worker runs.
        entry.supervision.next_restart = None;
        entry.supervision.epoch += 1;
        if let Some(pending) = entry.supervision.pending_restart.take() {
            ctx.cancel_future(pending);
        }
        // Reported as a start of the worker, through the same path as any event.
        let event = WorkerStateChanged {
            id: id.clone(),
            from: if from == WorkerState::Running {
                WorkerState::Starting
            } else {
                from
            },
            to: WorkerState::Running,
            reason: None,
            pid: view.pid,
            panicked: false,
            at: view.at,
            instance: view.instance,
            exit: None,
        };
        <Self as Handler<WorkerStateChanged>>::handle(self, event, ctx);
        Ok(old)
    }
}

impl MasterActor {
    /// A running worker that must be restarted while it still runs (its health checks failed,
    /// a limit was exceeded): with `strategy: start_first`, a successor is started first and
    /// the old instance stops once it is ready; if the successor does not get ready, the old
    /// one is failed as without `start_first` (and the policy goes on from there). Otherwise
    /// the worker is failed at once.
    pub(super) fn fail_or_replace(
        &mut self,
        id: &WorkerId,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        let grouped = self.group_of.contains_key(id);
        let shutting_down = self.shutting_down;
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        let start_first = entry.spec.restart.strategy == crate::config::RestartStrategy::StartFirst
            && entry.spec.restart.policy != crate::config::RestartPolicy::Never
            && entry.state == WorkerState::Running
            && entry.successor.is_none()
            && !grouped
            && !shutting_down;
        if !start_first {
            entry.addr.fail(reason);
            return;
        }
        tracing::warn!(worker = %id, %reason, "start_first: replacing the worker while it still serves");
        let (old, spec) = (entry.instance, entry.spec.clone());
        let replacing = ctx.address().send(Replace {
            id: id.clone(),
            spec,
            configured: false,
        });
        let id = id.clone();
        ctx.spawn(replacing.into_actor(self).map(move |result, act, _| {
            let Some(entry) = act.workers.get_mut(&id) else {
                return;
            };
            match result
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| error_chain(&e)))
            {
                Ok(()) => {
                    entry.supervision.restarts.total += 1;
                    entry.last_error = Some(reason);
                }
                // The old instance, if it is still the current one, fails as it would have.
                Err(e) if entry.instance == old => {
                    entry.addr.fail(format!("{reason}; {e}"));
                }
                Err(_) => {}
            }
        }));
    }

    /// Keeps a successor's own event aside (its state until it takes over). True if `event`
    /// was a successor's.
    pub(super) fn successor_event(&mut self, event: &WorkerStateChanged) -> bool {
        let Some(view) = self
            .workers
            .get_mut(&event.id)
            .and_then(|e| e.successor.as_mut())
            .filter(|s| s.instance == event.instance)
        else {
            return false;
        };
        view.state = event.to;
        if event.pid.is_some() {
            view.pid = event.pid;
        }
        if event.reason.is_some() {
            view.reason = event.reason.clone();
        }
        view.at = event.at;
        tracing::debug!(worker = %event.id, from = %event.from, to = %event.to, "start_first: the new instance");
        true
    }
}
