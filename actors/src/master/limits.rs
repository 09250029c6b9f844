//! Resource samples and `limits:`: `grace` samples in a row over a limit trigger
//! `on_violation` (log, restart through the failure path, or stop).

use actix::prelude::*;

use super::MasterActor;
use crate::config::{ByteSize, DeploymentSpec, LimitsConfig, OnViolation};
use crate::process::resources::ResourceSamples;
use crate::process::ResourceUsage;
use crate::state::WorkerState;

/// Samples every running process worker now (those without `limits:` are sampled only when
/// asked), so the next `GetAllWorkerStates`/`GetWorkerState`/summary shows fresh figures.
/// What the control API sends before `hsu ls`, `hsu status` and `/metrics`; an embedded master
/// sends it before reading `resources` the same way. A second request within a second reuses
/// the first one's samples.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshResources;

/// How long an on-demand round's samples are fresh enough for the next request.
const REFRESH_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl Handler<RefreshResources> for MasterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: RefreshResources, _: &mut Context<Self>) -> Self::Result {
        let fresh = self
            .last_refresh
            .is_some_and(|at| at.elapsed() < REFRESH_REUSE);
        let Some(monitor) = self.resources.as_ref().filter(|_| !fresh) else {
            return Box::pin(fut::ready(()));
        };
        let round = monitor.sample_now();
        Box::pin(
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(2), round)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default()
            }
            .into_actor(self)
            .map(|samples, act, _| {
                act.last_refresh = Some(std::time::Instant::now());
                for (id, usage) in samples {
                    if let Some(entry) = act.workers.get_mut(&id) {
                        if entry.state == WorkerState::Running {
                            entry.usage.latest = Some(usage);
                        }
                    }
                }
            }),
        )
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
            entry.usage.latest = Some(usage);
            let DeploymentSpec::Process(process) = &entry.spec.deployment else {
                continue;
            };
            let Some(limits) = &process.limits else {
                continue;
            };
            let Some(violation) = limit_violation(limits, &usage) else {
                entry.usage.violations = 0;
                continue;
            };
            entry.usage.violations += 1;
            if entry.usage.violations < limits.grace {
                continue;
            }
            let reason = format!("{violation} ({} samples in a row)", entry.usage.violations);
            entry.usage.violations = 0;
            match limits.on_violation {
                OnViolation::Log => tracing::warn!(worker = %id, "limit exceeded: {reason}"),
                OnViolation::Restart => {
                    tracing::warn!(worker = %id, "limit exceeded, restarting the worker: {reason}");
                    self.fail_or_replace(&id, format!("limit exceeded: {reason}"), ctx);
                }
                OnViolation::Stop => {
                    tracing::warn!(worker = %id, "limit exceeded, stopping the worker: {reason}");
                    entry.last_error = Some(format!("stopped: limit exceeded: {reason}"));
                    if let Ok(addr) = self.manual_request(&id, true, ctx) {
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
