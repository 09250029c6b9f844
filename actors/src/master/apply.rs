//! `Apply`: bring the running workers to a new validated config, touching only what changed.
//!
//! The plan compares each worker's spec as configured (`Entry::configured`, so a quarantine
//! does not count as a change) with the new one: unchanged workers keep their actor, process,
//! uptime and counters; changed ones are removed and added again in their new form (a changed
//! deployment included) and started; added ones are added and started; removed ones are
//! stopped and removed. The table then follows the new config's order.

use std::collections::HashMap;

use actix::prelude::*;
use serde::Serialize;

use super::messages::{AddConfigured, RemoveWorker, StartWorker};
use super::MasterActor;
use crate::config::WorkerSpec;
use crate::error::{error_chain, MasterError};
use crate::WorkerId;

/// Applies a validated config's workers (from [`crate::HsuConfig::validate`] against this
/// master's settings). With `dry_run`, only the plan is computed. Replies with the plan and
/// what failed (a worker whose new form does not start is reported, the others go on).
#[derive(Debug, Message)]
#[rtype(result = "Result<ApplyReport, MasterError>")]
pub struct Apply {
    /// The new config's workers, in its order.
    pub specs: Vec<WorkerSpec>,
    /// Compute the plan, change nothing.
    pub dry_run: bool,
}

/// What an [`Apply`] did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    /// New workers, added and started.
    pub added: Vec<WorkerId>,
    /// Workers no longer in the config, stopped and removed.
    pub removed: Vec<WorkerId>,
    /// Workers whose config changed, replaced by their new form and started.
    pub changed: Vec<WorkerId>,
    /// Workers left exactly as they were.
    pub unchanged: Vec<WorkerId>,
    /// Steps that failed, with the error (the worker named).
    pub errors: Vec<(WorkerId, String)>,
    /// Nothing was changed (a dry run).
    pub dry_run: bool,
}

/// The plan: which ids are added, removed, changed, unchanged. Pure.
pub(super) fn plan(current: &[(WorkerId, &WorkerSpec)], desired: &[WorkerSpec]) -> ApplyReport {
    let now: HashMap<&WorkerId, &WorkerSpec> = current.iter().map(|(id, s)| (id, *s)).collect();
    let mut report = ApplyReport::default();
    for spec in desired {
        match now.get(&spec.id) {
            None => report.added.push(spec.id.clone()),
            Some(old) if **old == *spec => report.unchanged.push(spec.id.clone()),
            Some(_) => report.changed.push(spec.id.clone()),
        }
    }
    for (id, _) in current {
        if !desired.iter().any(|s| &s.id == id) {
            report.removed.push(id.clone());
        }
    }
    report
}

/// Self-message of `Apply`: put the table in the new config's order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Reorder(Vec<WorkerId>);

impl Handler<Reorder> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: Reorder, _: &mut Context<Self>) {
        // The apply is done: sockets parked for a worker that was not added again close.
        self.parked_sockets.clear();
        let mut order: Vec<WorkerId> = msg
            .0
            .into_iter()
            .filter(|id| self.workers.contains_key(id))
            .collect();
        // Workers added meanwhile by other requests keep their place at the end.
        for id in &self.order {
            if !order.contains(id) && self.workers.contains_key(id) {
                order.push(id.clone());
            }
        }
        self.order = order;
    }
}

impl Handler<Apply> for MasterActor {
    type Result = ResponseFuture<Result<ApplyReport, MasterError>>;

    /// Removals first (concurrently), then each changed worker (its old form stopped and
    /// removed before the new one is added, on the same sockets; with `start_first`, its new
    /// form started beside the running one, which stops once the new one is ready) and each
    /// new one is added; then the added and changed workers are started together (each once its
    /// `depends_on:` is met). Other requests are answered meanwhile.
    fn handle(&mut self, msg: Apply, ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(async {
                Err(MasterError::ShuttingDown {
                    id: "(apply)".into(),
                })
            });
        }
        let current: Vec<(WorkerId, &WorkerSpec)> = self
            .order
            .iter()
            .filter_map(|id| self.workers.get(id).map(|e| (id.clone(), e.configured())))
            .collect();
        let mut report = plan(&current, &msg.specs);
        report.dry_run = msg.dry_run;
        tracing::info!(
            added = report.added.len(),
            removed = report.removed.len(),
            changed = report.changed.len(),
            unchanged = report.unchanged.len(),
            dry_run = msg.dry_run,
            "applying a config"
        );
        if msg.dry_run {
            return Box::pin(async move { Ok(report) });
        }
        // Changed workers running with `start_first`: replaced by a successor started first.
        // The others are removed and added again; their sockets are held meanwhile.
        let mut start_first = Vec::new();
        for spec in &msg.specs {
            if !report.changed.contains(&spec.id) {
                continue;
            }
            let Some(entry) = self.workers.get(&spec.id) else {
                continue;
            };
            if spec.restart.strategy == crate::config::RestartStrategy::StartFirst
                && entry.state == crate::state::WorkerState::Running
                && entry.successor.is_none()
                && !self.group_of.contains_key(&spec.id)
            {
                start_first.push(spec.id.clone());
            } else {
                self.parked_sockets
                    .insert(spec.id.clone(), entry.sockets.clone());
            }
        }
        let me = ctx.address();
        let specs = msg.specs;
        Box::pin(async move {
            let unanswered = |source| MasterError::Unanswered {
                actor: "master",
                source,
            };
            let removing = report.removed.iter().map(|id| {
                let me = me.clone();
                let id = id.clone();
                async move { (id.clone(), me.send(RemoveWorker(id)).await) }
            });
            for (id, result) in futures::future::join_all(removing).await {
                if let Err(e) = result.map_err(unanswered).and_then(|r| r) {
                    report.errors.push((id, error_chain(&e)));
                }
            }
            // Added (or replaced) one after the other, then all started at once: a start
            // may wait for a worker of the same config (`depends_on:`) added after it.
            let mut to_start = Vec::new();
            for spec in &specs {
                let changed = report.changed.contains(&spec.id);
                if !changed && !report.added.contains(&spec.id) {
                    continue;
                }
                let id = spec.id.clone();
                if start_first.contains(&id) {
                    let replaced = me
                        .send(super::replace::Replace {
                            id: id.clone(),
                            spec: spec.clone(),
                            configured: true,
                        })
                        .await
                        .map_err(unanswered)
                        .and_then(|r| r);
                    if let Err(e) = replaced {
                        tracing::error!(worker = %id, error = %error_chain(&e), "apply: worker not brought to its new config");
                        report.errors.push((id, error_chain(&e)));
                    }
                    continue;
                }
                let step = async {
                    if changed {
                        me.send(RemoveWorker(id.clone()))
                            .await
                            .map_err(unanswered)??;
                    }
                    me.send(AddConfigured(spec.clone()))
                        .await
                        .map_err(unanswered)?
                };
                match step.await {
                    Ok(added) if !spec.enabled => {
                        // `enabled: false`: in the table, started by hand only.
                        if let Some(e) = added.error {
                            report.errors.push((id.clone(), e));
                        }
                    }
                    Ok(added) => {
                        // Kept as failed: its start fails the same way (and is supervised).
                        if let Some(e) = added.error {
                            report.errors.push((id.clone(), e));
                        }
                        to_start.push((id, report.errors.len()));
                    }
                    Err(e) => {
                        tracing::error!(worker = %id, error = %error_chain(&e), "apply: worker not brought to its new config");
                        report.errors.push((id, error_chain(&e)));
                    }
                }
            }
            let kept_failed: Vec<WorkerId> =
                report.errors.iter().map(|(id, _)| id.clone()).collect();
            let starting = to_start.into_iter().map(|(id, _)| {
                let me = me.clone();
                async move { (id.clone(), me.send(StartWorker(id)).await) }
            });
            for (id, result) in futures::future::join_all(starting).await {
                if kept_failed.contains(&id) {
                    continue;
                }
                if let Err(e) = result.map_err(unanswered).and_then(|r| r) {
                    tracing::error!(worker = %id, error = %error_chain(&e), "apply: worker not started");
                    report.errors.push((id, error_chain(&e)));
                }
            }
            let order = specs.iter().map(|s| s.id.clone()).collect();
            me.send(Reorder(order)).await.map_err(unanswered)?;
            Ok(report)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HsuConfig;

    fn specs(yaml: &str) -> Vec<WorkerSpec> {
        let config = HsuConfig::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        crate::config::validate_config(&config, &|_| true, &Default::default()).unwrap()
    }

    fn ids(v: &[WorkerId]) -> Vec<&str> {
        v.iter().map(|i| i.as_str()).collect()
    }

    #[test]
    fn the_plan_touches_only_what_changed() {
        let old = specs(
            "workers:\n  - {id: a, type: module, module_name: m}\n  - {id: b, type: module, module_name: m}\n  - {id: c, type: module, module_name: m}\n",
        );
        let new = specs(
            "workers:\n  - {id: a, type: module, module_name: m}\n  - {id: b, type: module, module_name: m, config: {x: 1}}\n  - {id: d, type: module, module_name: m}\n",
        );
        let current: Vec<(WorkerId, &WorkerSpec)> = old.iter().map(|s| (s.id.clone(), s)).collect();
        let p = plan(&current, &new);
        assert_eq!(ids(&p.unchanged), ["a"]);
        assert_eq!(ids(&p.changed), ["b"]);
        assert_eq!(ids(&p.added), ["d"]);
        assert_eq!(ids(&p.removed), ["c"]);
    }

    #[test]
    fn a_changed_deployment_is_a_change() {
        let old = specs("workers:\n  - {id: e, type: module, module_name: echo}\n");
        let new = specs(
            "workers:\n  - {id: e, type: process, process_type: integrated, execution: {executable_path: /bin/e}}\n",
        );
        let current: Vec<(WorkerId, &WorkerSpec)> = old.iter().map(|s| (s.id.clone(), s)).collect();
        let p = plan(&current, &new);
        assert_eq!(ids(&p.changed), ["e"]);
    }
}
