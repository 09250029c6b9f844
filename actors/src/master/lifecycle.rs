//! Lifecycle requests (start, stop, restart, remove), state queries, shutdown and
//! subscriptions; and the requests the master forwards to its registry or runs off its thread.

use std::collections::HashMap;

use actix::prelude::*;
use futures::FutureExt;
use tokio::sync::mpsc;

use super::messages::*;
use super::{depends, forward, MasterActor};
use crate::error::{error_chain, MasterError};
use crate::health::UnwatchHealth;
use crate::plugin::PluginInfo;
use crate::registry::{ListFactories, ListLoadedModules, RegisterNativeModuleFactory};
use crate::state::WorkerState;
use crate::worker::WorkerDiagnostics;
use crate::WorkerId;

impl Handler<RemoveWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RemoveWorker, ctx: &mut Context<Self>) -> Self::Result {
        let addr = match self.manual_request(&msg.0, true, ctx) {
            Ok(addr) => addr,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let removed = self.workers.remove(msg.0.as_str()).map(|e| e.spec);
        self.order.retain(|w| *w != msg.0);
        if let Some(spec) = &removed {
            self.health.do_send(UnwatchHealth(spec.id.clone()));
            tracing::info!(worker = %spec.id, "worker removed");
            self.refresh_line_watches_of(spec, ctx);
            crate::line_watch::set(&spec.id, Vec::new(), ctx.address().recipient());
            // Its dependents now wait for it to be added again.
            self.dependencies_changed(&spec.id, ctx);
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

    /// Through the worker's `depends_on:`: replies once it runs (after waiting, if need be).
    fn handle(&mut self, msg: StartWorker, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_group(&msg.0) {
            return self.start_group(&msg.0, ctx);
        }
        if let Err(e) = self.manual_request(&msg.0, false, ctx) {
            return Box::pin(async move { Err(e) });
        }
        self.start_gated(&msg.0, ctx)
    }
}

impl Handler<StopWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: StopWorker, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_group(&msg.0) {
            return self.stop_group(&msg.0, ctx);
        }
        let addr = self.manual_request(&msg.0, true, ctx);
        let id = msg.0;
        Box::pin(async move {
            let addr = addr?;
            forward(id.clone(), addr.stop().await)
        })
    }
}

impl Handler<RestartWorker> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RestartWorker, ctx: &mut Context<Self>) -> Self::Result {
        if self.is_group(&msg.id) {
            // Every member stopped in reverse order, then started in order.
            let stopping = self.stop_group(&msg.id, ctx);
            let (me, id, force) = (ctx.address(), msg.id, msg.force);
            return Box::pin(async move {
                if let Err(e) = stopping.await {
                    if !force {
                        return Err(e);
                    }
                }
                me.send(StartWorker(id))
                    .await
                    .map_err(|source| MasterError::Unanswered {
                        actor: "master",
                        source,
                    })?
            });
        }
        let addr = self.manual_request(&msg.id, false, ctx);
        let running = self
            .workers
            .get(msg.id.as_str())
            .map(|e| matches!(e.state, WorkerState::Running | WorkerState::Starting));
        let start_first = self.workers.get(msg.id.as_str()).filter(|e| {
            e.state == WorkerState::Running
                && e.spec.restart.strategy == crate::config::RestartStrategy::StartFirst
        });
        if let (Ok(_), Some(entry)) = (&addr, start_first) {
            // The new instance first, on the same sockets; the old one stops once it is ready.
            let replacing = ctx.address().send(super::replace::Replace {
                id: msg.id.clone(),
                spec: entry.spec.clone(),
                configured: false,
            });
            if let Some(entry) = self.workers.get_mut(msg.id.as_str()) {
                entry.supervision.manual_restarts += 1;
            }
            return Box::pin(async move {
                replacing.await.map_err(|source| MasterError::Unanswered {
                    actor: "master",
                    source,
                })?
            });
        }
        if let Some(entry) = self.workers.get_mut(msg.id.as_str()) {
            entry.supervision.manual_restarts += 1;
        }
        let RestartWorker { id, force } = msg;
        let me = ctx.address();
        Box::pin(async move {
            let addr = addr?;
            if running == Some(true) {
                if let Err(e) = forward(id.clone(), addr.stop().await) {
                    if !force {
                        return Err(e);
                    }
                    tracing::warn!(worker = %id, error = %error_chain(&e), "stop failed; starting anyway (force)");
                }
            }
            // Through `depends_on:`, with the table as it is once the stop is done.
            me.send(GatedStart(id))
                .await
                .map_err(|source| MasterError::Unanswered {
                    actor: "master",
                    source,
                })?
                .await
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
        let mut records = entry.records();
        records.group = self.group_of.get(&msg.0).cloned();
        Box::pin(async move {
            let facts = addr.facts().await.map_err(|source| MasterError::Mailbox {
                id: records.id.clone(),
                source,
            })?;
            Ok(records.compose(facts))
        })
    }
}

impl Handler<GetAllWorkerStates> for MasterActor {
    type Result = MessageResult<GetAllWorkerStates>;

    fn handle(&mut self, _: GetAllWorkerStates, _: &mut Context<Self>) -> Self::Result {
        let now = std::time::Instant::now();
        MessageResult(
            self.order
                .iter()
                .filter_map(|id| self.workers.get(id))
                .map(|e| WorkerSummary {
                    group: self.group_of.get(&e.spec.id).cloned(),
                    ..e.summary(now)
                })
                .collect(),
        )
    }
}

impl Handler<Shutdown> for MasterActor {
    type Result = ResponseActFuture<Self, ShutdownReport>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        // Rewritten once, at the end (below).
        self.run_table.hold();
        let ids: Vec<WorkerId> = self.order.iter().rev().cloned().collect();
        for id in &ids {
            self.cancel_wait(id, "shut down", ctx);
            if let Some(entry) = self.workers.get_mut(id) {
                entry.supervision.stop_requested = true;
                entry.supervision.next_restart = None;
                if let Some(h) = entry.supervision.pending_restart.take() {
                    ctx.cancel_future(h);
                }
            }
        }
        tracing::info!(workers = ids.len(), "shutting down");
        // A `start_first` successor still starting goes too (its replace then finds no worker).
        let successors: Vec<_> = ids
            .iter()
            .filter_map(|id| self.workers.get_mut(id)?.successor.take())
            .map(|s| s.addr)
            .collect();
        // A worker is stopped once the workers depending on it have stopped; the others all
        // at once, each within its own stop timeout, so a slow worker delays only what it
        // depends on. Requests go out in reverse order of addition.
        let before = depends::stop_order(&ids, |id| self.workers.get(id).map(|e| &e.spec));
        type Done = futures::future::Shared<
            futures::future::LocalBoxFuture<'static, (WorkerId, Result<(), String>)>,
        >;
        let mut done: HashMap<WorkerId, Done> = HashMap::new();
        for id in depends::dependents_first(&ids, &before) {
            let Some(addr) = self.workers.get(&id).map(|e| e.addr.clone()) else {
                continue;
            };
            let first: Vec<Done> = before[&id]
                .iter()
                .filter_map(|d| done.get(d).cloned())
                .collect();
            let stopping = {
                let id = id.clone();
                async move {
                    if !first.is_empty() {
                        futures::future::join_all(first).await;
                        tracing::debug!(worker = %id, "its dependents stopped; stopping it");
                    }
                    let result = match addr.terminate().await {
                        Ok(Ok(())) | Err(_) => Ok(()),
                        Ok(Err(e)) => Err(error_chain(&e)),
                    };
                    (id, result)
                }
            };
            done.insert(id, stopping.boxed_local().shared());
        }
        let stopping = async move {
            futures::future::join_all(successors.iter().map(|s| s.terminate())).await;
            // Polled (so requested) in reverse order of addition.
            let mut done = done;
            let in_order = ids.iter().filter_map(|id| done.remove(id));
            let results = futures::future::join_all(in_order).await;
            let mut report = ShutdownReport::default();
            for (id, result) in results {
                match result {
                    Ok(()) => report.stopped.push(id),
                    Err(e) => report.errors.push((id, e)),
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
            // Nothing runs any more: the run table (now empty) goes before the reply.
            if let Err(e) = act.run_table.flush() {
                tracing::warn!(error = %e, path = %act.run_table.path().display(), "cannot write the run table");
            }
            // And so does containment: the last cgroups removed, the instance cgroup and its
            // keeper gone, before the reply rather than whenever the master is dropped.
            if let Some(cgroups) = &act.cgroups {
                cgroups.finish();
            }
            tracing::info!(
                stopped = report.stopped.len(),
                failed = report.errors.len(),
                "shutdown complete"
            );
            report
        }))
    }
}

/// Self-message of `RestartWorker`: its start, through `depends_on:`, once the stop is done.
#[derive(Debug, Message)]
#[rtype(
    result = "std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), MasterError>> + Send>>"
)]
struct GatedStart(WorkerId);

impl Handler<GatedStart> for MasterActor {
    type Result = MessageResult<GatedStart>;

    fn handle(&mut self, msg: GatedStart, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.start_gated(&msg.0, ctx))
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

impl Handler<RegisterNativeModuleFactory> for MasterActor {
    type Result = ResponseFuture<Result<(), MasterError>>;

    fn handle(&mut self, msg: RegisterNativeModuleFactory, _: &mut Context<Self>) -> Self::Result {
        let registry = self.registry.clone();
        Box::pin(async move {
            registry
                .send(msg)
                .await
                .map_err(|source| MasterError::Unanswered {
                    actor: "registry",
                    source,
                })?
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
                .map_err(|source| MasterError::Unanswered {
                    actor: "registry",
                    source,
                })
        })
    }
}

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
            installing.await.unwrap_or_else(|source| {
                Err(MasterError::Interrupted {
                    what: "the package install",
                    source,
                })
            })
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

impl Handler<GetWorkerMetrics> for MasterActor {
    type Result = ResponseFuture<Vec<super::messages::WorkerMetrics>>;

    fn handle(&mut self, _: GetWorkerMetrics, _: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .order
            .iter()
            .filter_map(|id| self.workers.get(id))
            .map(|e| (e.spec.id.clone(), e.addr.clone()))
            .collect();
        Box::pin(async move {
            let answers =
                futures::future::join_all(asks.into_iter().map(|(id, addr)| async move {
                    let facts = addr.facts().await.ok()?;
                    Some(super::messages::WorkerMetrics {
                        id,
                        module_tasks: facts.module.as_ref().map(|m| m.tasks),
                        blocked: facts.module.as_ref().is_some_and(|m| m.blocked.is_some()),
                        log_writes: facts.log_writes,
                        containment: facts.containment,
                    })
                }))
                .await;
            answers.into_iter().flatten().collect()
        })
    }
}

impl Handler<GetWorkerSummary> for MasterActor {
    type Result = Result<WorkerSummary, MasterError>;

    fn handle(&mut self, msg: GetWorkerSummary, _: &mut Context<Self>) -> Self::Result {
        self.workers
            .get(&msg.0)
            .map(|e| WorkerSummary {
                group: self.group_of.get(&msg.0).cloned(),
                ..e.summary(std::time::Instant::now())
            })
            .ok_or(MasterError::NotFound { id: msg.0 })
    }
}
