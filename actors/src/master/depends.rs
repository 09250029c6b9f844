//! `depends_on:`: a start waits until every worker it depends on has reached its condition.
//!
//! Every start the master makes or forwards (`StartWorker`, the start of `RestartWorker`, an
//! automatic restart) goes through [`MasterActor::start_gated`]. If a condition is not met,
//! the worker becomes `waiting` with the reason ("waiting for db (healthy)") and the request's
//! reply waits with it. Whenever something a condition looks at changes (a state change, a
//! passing health check, a matched log line, a worker added or removed), the waiting workers
//! that depend on it are checked again: all met, the start goes ahead; a dependency that
//! failed for good (failed with no restart coming, or exited and not restarted) blocks the
//! dependent, which becomes `failed_start` naming it (no restart: it would only wait again); a
//! dependency's `timeout` passing fails the start the same way, but then the dependent's own
//! restart policy applies. A stop or removal cancels the wait.
//!
//! Shutdown uses the same graph backwards ([`stop_order`]): a worker is stopped once the
//! workers depending on it have stopped, unrelated branches concurrently.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::table::Entry;
use super::{forward, MasterActor};
use crate::config::{Condition, DependencySpec, WorkerSpec};
use crate::error::{error_chain, MasterError};
use crate::line_watch::LineSeen;
use crate::state::WorkerState;
use crate::WorkerId;

/// What a worker's current (or last) run reached: what conditions of others look at.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// A health check passed while running.
    pub healthy: bool,
    /// It exited with status 0 on its own.
    pub completed: bool,
    /// `log_line:` patterns its output matched.
    pub lines: HashSet<String>,
}

/// A start waiting for the worker's dependencies.
pub(crate) struct Waiting {
    /// Since when.
    pub since: Instant,
    /// "waiting for db (healthy), cache (started)".
    pub reason: String,
    /// Tells this wait's timers from an earlier wait's.
    serial: u64,
    /// The requests waiting for the start's outcome.
    replies: Vec<oneshot::Sender<Result<(), MasterError>>>,
    timers: Vec<SpawnHandle>,
}

/// The outcome of checking one worker's dependencies.
#[derive(Debug, PartialEq)]
enum Gate {
    Ready,
    Wait(String),
    Blocked(String),
}

/// One dependency's state.
enum Check {
    Met,
    /// With a note when the reason is not simply that it is on its way ("`db` is stopped").
    Pending(Option<String>),
    Failed(String),
}

type Reply = Pin<Box<dyn Future<Output = Result<(), MasterError>> + Send>>;

fn reply(result: Result<(), MasterError>) -> Reply {
    Box::pin(async move { result })
}

/// Whether `dep` is met by `target`'s current state and progress.
fn check(dep: &DependencySpec, target: Option<&Entry>) -> Check {
    let Some(t) = target else {
        return Check::Pending(Some(format!("`{}` is not added", dep.id)));
    };
    let met = match &dep.condition {
        Condition::Started => t.state == WorkerState::Running,
        Condition::Healthy => t.state == WorkerState::Running && t.progress.healthy,
        Condition::CompletedSuccessfully => t.progress.completed,
        Condition::LogLine(_) => dep
            .pattern
            .as_ref()
            .is_some_and(|p| t.progress.lines.contains(p.as_str())),
    };
    if met {
        return Check::Met;
    }
    let restart_coming = t.supervision.next_restart.is_some() || t.waiting.is_some();
    if t.state.is_failed() && !restart_coming {
        let error = t.last_error.as_deref().unwrap_or("no error recorded");
        return Check::Failed(format!("`{}` is {} ({error})", dep.id, t.state));
    }
    let ended_on_its_own = t.state == WorkerState::Stopped
        && !t.supervision.stop_requested
        && !restart_coming
        && t.last_exit.is_some();
    if ended_on_its_own && dep.condition != Condition::CompletedSuccessfully {
        return Check::Failed(format!(
            "`{}` exited and is not restarted (its restart.policy)",
            dep.id
        ));
    }
    Check::Pending(match t.state {
        WorkerState::Stopped | WorkerState::Idle if t.supervision.stop_requested => {
            Some(format!("`{}` is stopped; start it", dep.id))
        }
        _ => None,
    })
}

impl MasterActor {
    /// All of `id`'s dependencies checked against the table.
    fn gate(&self, spec: &WorkerSpec) -> Gate {
        let mut waiting = Vec::new();
        for dep in &spec.depends_on {
            match check(dep, self.workers.get(&dep.id).map(|e| &**e)) {
                Check::Met => {}
                Check::Pending(None) => waiting.push(dep.describe()),
                Check::Pending(Some(note)) => waiting.push(format!("{}: {note}", dep.describe())),
                Check::Failed(why) => {
                    return Gate::Blocked(format!(
                        "not started: dependency {} failed: {why}",
                        dep.describe()
                    ))
                }
            }
        }
        if waiting.is_empty() {
            Gate::Ready
        } else {
            Gate::Wait(format!("waiting for {}", waiting.join(", ")))
        }
    }

    /// Starts `id` now if its dependencies are met, else once they are; the reply comes when
    /// it runs or the start is given up.
    pub(super) fn start_gated(&mut self, id: &WorkerId, ctx: &mut Context<Self>) -> Reply {
        let Some(entry) = self.workers.get(id) else {
            return reply(Err(MasterError::NotFound { id: id.clone() }));
        };
        let addr = entry.addr.clone();
        let direct = {
            let id = id.clone();
            let addr = addr.clone();
            Box::pin(async move { forward(id, addr.start().await) })
        };
        let busy = matches!(
            entry.state,
            WorkerState::Running | WorkerState::Starting | WorkerState::Stopping
        );
        if entry.spec.depends_on.is_empty() || (busy && entry.waiting.is_none()) {
            return direct;
        }
        let gate = entry.waiting.is_none().then(|| self.gate(&entry.spec));
        let timeouts: Vec<(usize, std::time::Duration)> = entry
            .spec
            .depends_on
            .iter()
            .enumerate()
            .filter_map(|(i, dep)| Some((i, dep.timeout?)))
            .collect();
        let (tx, rx) = oneshot::channel();
        let answer = {
            let id = id.clone();
            Box::pin(async move {
                rx.await.unwrap_or_else(|_| {
                    Err(MasterError::Dependency {
                        id,
                        reason: "the master stopped before the start".into(),
                    })
                })
            })
        };
        let Some(gate) = gate else {
            if let Some(waiting) = self.workers.get_mut(id).and_then(|e| e.waiting.as_mut()) {
                waiting.replies.push(tx);
            }
            return answer;
        };
        match gate {
            Gate::Ready => direct,
            Gate::Blocked(reason) => {
                tracing::warn!(worker = %id, "{reason}");
                // Seen as `waiting` then `failed_start` with the reason; not restarted.
                addr.wait(reason.clone());
                addr.abandon_wait(reason.clone());
                if let Some(entry) = self.workers.get_mut(id) {
                    entry.supervision.hold_next_failure = true;
                }
                reply(Err(MasterError::Dependency {
                    id: id.clone(),
                    reason,
                }))
            }
            Gate::Wait(reason) => {
                tracing::info!(worker = %id, "{reason}");
                self.next_wait += 1;
                let serial = self.next_wait;
                let timers = timeouts
                    .into_iter()
                    .map(|(index, after)| {
                        let id = id.clone();
                        ctx.run_later(after, move |act, ctx| {
                            act.wait_timed_out(&id, serial, index, ctx)
                        })
                    })
                    .collect();
                addr.wait(reason.clone());
                if let Some(entry) = self.workers.get_mut(id) {
                    entry.waiting = Some(Box::new(Waiting {
                        since: Instant::now(),
                        reason,
                        serial,
                        replies: vec![tx],
                        timers,
                    }));
                }
                self.waiting.insert(id.clone());
                answer
            }
        }
    }

    /// Something `about` reached or lost: the waiting workers depending on it are checked.
    pub(super) fn dependencies_changed(&mut self, about: &WorkerId, ctx: &mut Context<Self>) {
        if self.waiting.is_empty() {
            return;
        }
        let concerned: Vec<WorkerId> = self
            .waiting
            .iter()
            .filter(|w| {
                self.workers
                    .get(*w)
                    .is_some_and(|e| e.spec.depends_on.iter().any(|d| &d.id == about))
            })
            .cloned()
            .collect();
        for id in concerned {
            let Some(entry) = self.workers.get(&id) else {
                continue;
            };
            match self.gate(&entry.spec) {
                Gate::Ready => self.release(&id, ctx),
                Gate::Blocked(reason) => {
                    tracing::warn!(worker = %id, "{reason}");
                    self.end_wait(&id, reason, true, ctx);
                }
                Gate::Wait(reason) => {
                    if let Some(w) = self.workers.get_mut(&id).and_then(|e| e.waiting.as_mut()) {
                        w.reason = reason;
                    }
                }
            }
        }
    }

    /// The wait is over: start, and tell every waiting request how it went.
    fn release(&mut self, id: &WorkerId, ctx: &mut Context<Self>) {
        let Some(waiting) = self.take_wait(id, ctx) else {
            return;
        };
        let Some(entry) = self.workers.get(id) else {
            return;
        };
        tracing::info!(worker = %id, "dependencies met; starting");
        let addr = entry.addr.clone();
        let id = id.clone();
        actix::spawn(async move {
            let result = forward(id.clone(), addr.start().await);
            let text = result.as_ref().err().map(|e| error_chain(e));
            let mut first = Some(result);
            for tx in waiting.replies {
                let answer = first.take().unwrap_or_else(|| match &text {
                    None => Ok(()),
                    Some(reason) => Err(MasterError::Dependency {
                        id: id.clone(),
                        reason: reason.clone(),
                    }),
                });
                let _ = tx.send(answer);
            }
        });
    }

    /// The wait is given up with `reason`: the worker becomes `failed_start`. `hold`: not
    /// restarted (a dependency failed for good); otherwise its restart policy applies.
    fn end_wait(&mut self, id: &WorkerId, reason: String, hold: bool, ctx: &mut Context<Self>) {
        let Some(waiting) = self.take_wait(id, ctx) else {
            return;
        };
        if let Some(entry) = self.workers.get_mut(id) {
            entry.supervision.hold_next_failure = hold;
            entry.addr.abandon_wait(reason.clone());
        }
        for tx in waiting.replies {
            let _ = tx.send(Err(MasterError::Dependency {
                id: id.clone(),
                reason: reason.clone(),
            }));
        }
    }

    /// A stop, removal or shutdown while waiting: the requests waiting for the start are
    /// answered (the worker's own stop takes it from `waiting` to `stopped`).
    pub(super) fn cancel_wait(&mut self, id: &WorkerId, why: &str, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.take_wait(id, ctx) {
            for tx in waiting.replies {
                let _ = tx.send(Err(MasterError::Dependency {
                    id: id.clone(),
                    reason: format!("{why} while {}", waiting.reason),
                }));
            }
        }
    }

    fn take_wait(&mut self, id: &WorkerId, ctx: &mut Context<Self>) -> Option<Waiting> {
        self.waiting.remove(id);
        let waiting = *self.workers.get_mut(id)?.waiting.take()?;
        for timer in &waiting.timers {
            ctx.cancel_future(*timer);
        }
        Some(waiting)
    }

    fn wait_timed_out(
        &mut self,
        id: &WorkerId,
        serial: u64,
        index: usize,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.workers.get(id) else {
            return;
        };
        if entry.waiting.as_ref().map(|w| w.serial) != Some(serial) {
            return;
        }
        let Some(dep) = entry.spec.depends_on.get(index) else {
            return;
        };
        if matches!(
            check(dep, self.workers.get(&dep.id).map(|e| &**e)),
            Check::Met
        ) {
            return;
        }
        let reason = format!(
            "not started: timed out after {} waiting for {}",
            crate::config::duration::format(dep.timeout.unwrap_or_default()),
            dep.describe()
        );
        tracing::warn!(worker = %id, "{reason}");
        self.end_wait(id, reason, false, ctx);
    }

    /// Points the `log_line:` watch of `target` at the patterns its dependents wait for.
    pub(super) fn refresh_line_watch(&self, target: &WorkerId, ctx: &mut Context<Self>) {
        let mut patterns: Vec<crate::config::LinePattern> = Vec::new();
        for entry in self.workers.values() {
            for dep in &entry.spec.depends_on {
                if &dep.id == target {
                    if let Some(p) = &dep.pattern {
                        if !patterns.iter().any(|q| q == p) {
                            patterns.push(p.clone());
                        }
                    }
                }
            }
        }
        crate::line_watch::set(target, patterns, ctx.address().recipient());
    }

    /// After `spec` was added or removed: the watches its `log_line:` dependencies need.
    pub(super) fn refresh_line_watches_of(&self, spec: &WorkerSpec, ctx: &mut Context<Self>) {
        for dep in spec.depends_on.iter().filter(|d| d.pattern.is_some()) {
            self.refresh_line_watch(&dep.id, ctx);
        }
    }

    /// The cycle `spec` would close with the workers in the table, as ids along it.
    pub(super) fn cycle_through(&self, spec: &WorkerSpec) -> Option<Vec<String>> {
        // Depth-first from spec's dependencies through the table, looking for spec itself.
        let mut stack: Vec<(WorkerId, Vec<String>)> = spec
            .depends_on
            .iter()
            .map(|d| (d.id.clone(), vec![spec.id.to_string()]))
            .collect();
        let mut seen = HashSet::new();
        while let Some((id, mut path)) = stack.pop() {
            if id == spec.id {
                return Some(path);
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            path.push(id.to_string());
            if let Some(entry) = self.workers.get(&id) {
                for d in &entry.spec.depends_on {
                    stack.push((d.id.clone(), path.clone()));
                }
            }
        }
        None
    }
}

impl Handler<LineSeen> for MasterActor {
    type Result = ();

    fn handle(&mut self, msg: LineSeen, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&msg.id) else {
            return;
        };
        tracing::debug!(worker = %msg.id, pattern = %msg.pattern, "log line matched");
        if entry.progress.lines.insert(msg.pattern) {
            self.dependencies_changed(&msg.id, ctx);
        }
    }
}

/// The order of a stop of everything: for each worker, the workers that must have stopped
/// before it (its dependents among `ids`). Pure.
pub(super) fn stop_order<'a>(
    ids: &[WorkerId],
    spec_of: impl Fn(&WorkerId) -> Option<&'a WorkerSpec>,
) -> HashMap<WorkerId, Vec<WorkerId>> {
    let present: HashSet<&WorkerId> = ids.iter().collect();
    let mut before: HashMap<WorkerId, Vec<WorkerId>> =
        ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    for id in ids {
        let Some(spec) = spec_of(id) else { continue };
        for dep in &spec.depends_on {
            if present.contains(&dep.id) {
                if let Some(list) = before.get_mut(&dep.id) {
                    list.push(id.clone());
                }
            }
        }
    }
    before
}

/// `ids` ordered so that each comes after everything in its `before` list (dependents
/// first); ids on a cycle (which validation refuses) come last, in their given order.
pub(super) fn dependents_first(
    ids: &[WorkerId],
    before: &HashMap<WorkerId, Vec<WorkerId>>,
) -> Vec<WorkerId> {
    // Kahn's algorithm over "must stop before" edges.
    let mut pending: HashMap<&WorkerId, usize> = ids
        .iter()
        .map(|id| (id, before.get(id).map_or(0, Vec::len)))
        .collect();
    let mut unblocks: HashMap<&WorkerId, Vec<&WorkerId>> = HashMap::new();
    for id in ids {
        for d in before.get(id).into_iter().flatten() {
            unblocks.entry(d).or_default().push(id);
        }
    }
    let mut ready: Vec<&WorkerId> = ids.iter().filter(|id| pending[id] == 0).collect();
    ready.reverse();
    let mut out = Vec::with_capacity(ids.len());
    let mut placed = HashSet::new();
    while let Some(id) = ready.pop() {
        out.push(id.clone());
        placed.insert(id);
        for next in unblocks.get(id).into_iter().flatten() {
            if let Some(n) = pending.get_mut(next) {
                *n -= 1;
                if *n == 0 {
                    ready.push(next);
                }
            }
        }
    }
    out.extend(ids.iter().filter(|id| !placed.contains(id)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(yaml: &str) -> Vec<WorkerSpec> {
        let config = crate::config::HsuConfig::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        crate::config::validate_config(&config, &|_| true, &Default::default()).unwrap()
    }

    #[test]
    fn dependents_stop_first_and_unrelated_ones_are_not_ordered() {
        let specs = specs(
            "workers:\n  - {id: db, type: module, module_name: m}\n  - {id: api, type: module, module_name: m, depends_on: [db]}\n  - {id: web, type: module, module_name: m, depends_on: [api, db]}\n  - {id: other, type: module, module_name: m}\n",
        );
        let ids: Vec<WorkerId> = specs.iter().map(|s| s.id.clone()).collect();
        let before = stop_order(&ids, |id| specs.iter().find(|s| &s.id == id));
        assert_eq!(before[&ids[0]], vec![ids[1].clone(), ids[2].clone()]);
        assert_eq!(before[&ids[1]], vec![ids[2].clone()]);
        assert!(before[&ids[2]].is_empty() && before[&ids[3]].is_empty());
        let order = dependents_first(&ids, &before);
        let at = |name: &str| order.iter().position(|i| i.as_str() == name).unwrap();
        assert!(at("web") < at("api") && at("api") < at("db"));
        assert_eq!(order.len(), 4);
    }
}
