//! Supervision: state changes reported by workers and health reports from the health actor
//! become restart triggers; `restart::decide` says what to do; timers and `RestartNow` do it.

use std::time::Instant;

use actix::prelude::*;

use super::table::{NextRestart, RunView, WorkerAddr};
use super::MasterActor;
use crate::error::MasterError;
use crate::health::{HealthReport, Probe, UnwatchHealth, WatchHealth};
use crate::restart::{jitter_sample, Decision, Trigger};
use crate::state::WorkerState;
use crate::worker::{HealthStatus, WorkerStateChanged};
use crate::WorkerId;

impl MasterActor {
    /// Forgets any scheduled restart of `id` and marks what the user asked for last.
    pub(super) fn manual_request(
        &mut self,
        id: &WorkerId,
        stop: bool,
        ctx: &mut Context<Self>,
    ) -> Result<WorkerAddr, MasterError> {
        let entry = self.entry(id)?;
        entry.supervision.epoch += 1;
        entry.supervision.stop_requested = stop;
        let pending = entry.supervision.pending_restart.take();
        entry.supervision.next_restart = None;
        let addr = entry.addr.clone();
        if !stop {
            entry.supervision.restarts.reset();
        }
        if let Some(handle) = pending {
            ctx.cancel_future(handle);
        }
        if stop {
            self.cancel_wait(id, "stopped", ctx);
        }
        Ok(addr)
    }

    /// Applies the restart policy after a trigger.
    pub(super) fn supervise(&mut self, id: &WorkerId, trigger: Trigger, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        let restart = &entry.spec.restart;
        match entry
            .supervision
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
                entry.supervision.epoch += 1;
                let epoch = entry.supervision.epoch;
                entry.supervision.next_restart = Some(NextRestart {
                    at: Instant::now() + delay,
                    attempt,
                });
                let id = id.clone();
                if delay.is_zero() {
                    // A zero timer would still wait for the timer wheel's next millisecond.
                    ctx.notify(RestartNow { id, epoch });
                } else {
                    entry.supervision.pending_restart =
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

    pub(super) fn restart_now(&mut self, id: WorkerId, epoch: u64, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&id) else {
            return;
        };
        if entry.supervision.epoch != epoch
            || entry.supervision.stop_requested
            || self.shutting_down
        {
            return;
        }
        entry.supervision.pending_restart = None;
        let starting = self.start_gated(&id, ctx);
        ctx.spawn(
            starting
                .into_actor(self)
                .map(move |result, _, _| match result {
                    // A failed start is reported as a state change and supervised again.
                    Ok(()) | Err(MasterError::Worker(_) | MasterError::Dependency { .. }) => {}
                    Err(e) => tracing::warn!(worker = %id, error = %e, "the restart was not made"),
                }),
        );
    }
}

impl Handler<WorkerStateChanged> for MasterActor {
    type Result = ();

    /// Records the new state, starts or stops health polling, applies the restart policy,
    /// then forwards the event (so a subscriber that sees it can already read the decision).
    fn handle(&mut self, event: WorkerStateChanged, ctx: &mut Context<Self>) {
        if self.successor_event(&event) {
            return;
        }
        let mut trigger = None;
        if let Some(entry) = self
            .workers
            .get_mut(&event.id)
            .filter(|e| e.instance == event.instance)
        {
            entry.state = event.to;
            if let Some(exit) = &event.exit {
                entry.last_exit = Some(exit.clone());
            }
            if event.reason.is_some() && event.to != WorkerState::Waiting {
                entry.last_error = event.reason.clone();
            }
            match event.to {
                // A new run: what the last one reached no longer counts.
                WorkerState::Starting => {
                    entry.progress = Default::default();
                    entry.supervision.next_restart = None;
                }
                WorkerState::Waiting => entry.supervision.next_restart = None,
                // Ended on its own with status 0 (a stop goes through `stopping`).
                WorkerState::Stopped if event.from == WorkerState::Running => {
                    entry.progress.completed = true;
                }
                _ => {}
            }
            if event.from == WorkerState::Running {
                entry.run = None;
                self.health.do_send(UnwatchHealth(event.id.clone()));
                entry.usage.violations = 0;
                entry.usage.latest = None;
                if let Some(monitor) = &self.resources {
                    monitor.unwatch(event.id.clone());
                }
            }
            if let (WorkerState::Running, Some(pid), Some(monitor)) =
                (event.to, event.pid, &self.resources)
            {
                // The whole tree where it is known: the worker's cgroup, else its group.
                use crate::process::resources::Scope;
                let unmanaged = matches!(&entry.spec.deployment,
                    crate::config::DeploymentSpec::Process(p) if p.process_type == crate::config::ProcessType::Unmanaged);
                let cgroup = self
                    .cgroups
                    .as_ref()
                    .map(|c| c.path().join(&entry.cgroup))
                    .filter(|d| d.is_dir());
                let scope = match (unmanaged, cgroup) {
                    (true, _) => Scope::Process(pid),
                    (false, Some(dir)) => Scope::Cgroup(dir),
                    (false, None) => Scope::Group(pid),
                };
                let limited = matches!(&entry.spec.deployment,
                    crate::config::DeploymentSpec::Process(p) if p.limits.is_some());
                monitor.watch(event.id.clone(), scope, limited);
            }
            if event.to == WorkerState::Running {
                entry.run = Some(RunView {
                    pid: event.pid,
                    since: Instant::now(),
                    started_at: event.at,
                });
                entry.health.status = HealthStatus::Unknown;
                entry.health.consecutive_failures = 0;
                if entry.spec.health_check.enabled {
                    self.health.do_send(WatchHealth {
                        id: event.id.clone(),
                        probe: Probe::from_config(
                            &entry.spec.health_check,
                            entry.spec.deployment.default_probe(),
                            entry.addr.health_recipient(),
                        ),
                        config: entry.spec.health_check.clone(),
                    });
                }
            }
            let on_purpose = entry.supervision.stop_requested
                || self.shutting_down
                || event.from == WorkerState::Stopping;
            if event.panicked
                && !self.shutting_down
                && super::quarantine::count_panic(entry, Instant::now())
            {
                let mut event = event;
                // A stop that panicked is still a stop: move, but do not start.
                let text = self.quarantine(&event.id, !on_purpose, ctx);
                event.reason = Some(match event.reason.take() {
                    Some(r) => format!("{r}; {text}"),
                    None => text,
                });
                return self.publish(event);
            }
            let held = event.from == WorkerState::Waiting
                && std::mem::take(&mut entry.supervision.hold_next_failure);
            if !on_purpose && !held {
                if event.to.is_failed() {
                    trigger = Some(Trigger::Failure);
                } else if event.to == WorkerState::Stopped {
                    trigger = Some(Trigger::CleanExit);
                }
            }
        }
        if let Some(trigger) = trigger {
            // A group member is its group's to restart (its strategy and intensity).
            match self.group_of(&event.id) {
                Some(group) => self.member_ended(&group, &event.id, trigger, ctx),
                None => self.supervise(&event.id, trigger, ctx),
            }
        }
        // After the restart decision: a failed dependency with a restart coming still counts.
        self.dependencies_changed(&event.id, ctx);
        if trigger.is_some() {
            if let Some(entry) = self.workers.get(&event.id) {
                if entry.supervision.restarts.circuit_open && event.to.is_failed() {
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

    /// Records the result; when the health actor says the threshold is reached, fails the
    /// worker (which then goes through the restart policy like any failure).
    fn handle(&mut self, report: HealthReport, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&report.id) else {
            return;
        };
        if report.healthy && entry.state == WorkerState::Running && !entry.progress.healthy {
            entry.progress.healthy = true;
            self.dependencies_changed(&report.id, ctx);
        }
        let Some(entry) = self.workers.get_mut(&report.id) else {
            return;
        };
        entry.health.status = if report.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        entry.health.consecutive_failures = report.consecutive_failures;
        if !report.healthy {
            entry.health.failures_total += 1;
        }
        entry.health.last_check = Some(report.at);
        if !report.healthy {
            tracing::warn!(
                worker = %report.id,
                failures = report.consecutive_failures,
                threshold = report.failure_threshold,
                error = report.error.as_deref().unwrap_or(""),
                "health check failed"
            );
        }
        if report.threshold_reached && entry.state == WorkerState::Running {
            let reason = format!(
                "health check failed {} times in a row: {}",
                report.consecutive_failures,
                report.error.unwrap_or_default()
            );
            self.fail_or_replace(&report.id, reason, ctx);
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
