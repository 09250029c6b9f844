//! Crash quarantine: a module worker whose code panicked `after_panics` times `within` a
//! window moves to its integrated process form under the same id.

use std::time::{Instant, SystemTime};

use actix::prelude::*;

use super::table::Entry;
use super::MasterActor;
use crate::config::DeploymentSpec;
use crate::error::error_chain;
use crate::state::WorkerState;
use crate::WorkerId;

impl MasterActor {
    /// Moves a module worker that panicked too often to its integrated process form: the old
    /// actor is dropped (it is in a failed state, its run cleaned up), a process worker takes
    /// its place under the same id, restart counters start afresh, and it is started (if
    /// `start`). Returns the text that is logged and added to the failure's reason.
    pub(super) fn quarantine(
        &mut self,
        id: &WorkerId,
        start: bool,
        ctx: &mut Context<Self>,
    ) -> String {
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
            entry.quarantine.counted,
            crate::config::duration::format(q.within)
        );
        tracing::error!(worker = %id, "{text}");
        let mut spec = entry.spec.clone();
        spec.deployment = DeploymentSpec::Process(q.process.clone());
        spec.quarantine = None;
        if spec.health_check.probe == Some(crate::config::ProbeType::Module) {
            spec.health_check.probe = None;
        }
        let sockets = entry.sockets.clone();
        let created = self.create_worker(&spec, None, sockets, false, ctx);
        let (addr, kind, instance) = (created.addr, created.kind, created.instance);
        let Some(entry) = self.workers.get_mut(id) else {
            return text;
        };
        entry.cgroup = created.cgroup;
        entry.quarantine.moved = Some(crate::worker::QuarantineStatus {
            since: SystemTime::now(),
            panics: entry.quarantine.counted,
            within: q.within,
            last_panic: entry.last_error.clone().unwrap_or_default(),
            executable_path: executable,
            was: entry.deployment,
        });
        // The configured spec is kept beside the quarantined one (`apply` compares it).
        let configured = std::mem::replace(&mut entry.spec, spec);
        entry.configured.get_or_insert_with(|| Box::new(configured));
        entry.deployment = kind;
        entry.addr = addr.clone();
        entry.instance = instance;
        entry.state = WorkerState::Idle;
        entry.supervision.restarts.reset();
        entry.supervision.epoch += 1;
        entry.quarantine.panics.clear();
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
}

/// Records a panic of `entry`'s module code at `now`; true when `quarantine:` says it is time
/// to move (the count is kept in `entry.quarantine.counted` for the status).
pub(super) fn count_panic(entry: &mut Entry, now: Instant) -> bool {
    let Some(q) = &entry.spec.quarantine else {
        return false;
    };
    if entry.quarantine.moved.is_some() {
        return false;
    }
    let counted = entry.quarantine.panics.record(now, q.within);
    entry.quarantine.counted = counted;
    counted >= q.after_panics
}
