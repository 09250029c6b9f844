//! Scheduled workers (`schedule:`): a timer per worker for its next occurrence. At each
//! occurrence the worker is started (through its `depends_on:`), unless a run is still going:
//! then that occurrence is skipped and counted. Occurrences that passed while the master was
//! paused or busy are not made up for: the late timer starts one run and reports how many it
//! missed. Timers wake at least once a minute, so a wall-clock change (or a suspend, during
//! which monotonic timers stand still) is noticed.

use std::time::{Duration, SystemTime};

use actix::prelude::*;
use serde::Serialize;

use super::MasterActor;
use crate::state::WorkerState;
use crate::WorkerId;

/// The longest a schedule timer sleeps before looking at the clock again.
const RECHECK: Duration = Duration::from_secs(60);

/// A scheduled worker's record.
#[derive(Debug, Default)]
pub(crate) struct ScheduleState {
    pub next: Option<SystemTime>,
    pub runs: u64,
    pub skipped: u64,
    pub missed: u64,
    /// Tells this arming's timer from an older one.
    serial: u64,
}

/// A scheduled worker's state as the summary shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    /// The expression, and its zone (`UTC` or `local`).
    pub cron: String,
    /// The zone it is read in.
    pub zone: &'static str,
    /// The next occurrence.
    pub next_run: Option<SystemTime>,
    /// Runs it started.
    pub runs: u64,
    /// Occurrences skipped because the previous run was still going.
    pub skipped: u64,
    /// Occurrences that passed while the master was paused or busy (not run).
    pub missed: u64,
}

/// Self-message: a schedule timer woke.
#[derive(Message)]
#[rtype(result = "()")]
struct Tick {
    id: WorkerId,
    serial: u64,
}

impl MasterActor {
    /// Sets the timer for `id`'s next occurrence after now.
    pub(super) fn arm_schedule(&mut self, id: &WorkerId, ctx: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(id) else {
            return;
        };
        let Some(schedule) = entry.spec.schedule.clone() else {
            return;
        };
        let now = SystemTime::now();
        let state = entry.schedule.get_or_insert_with(Default::default);
        state.serial += 1;
        if state.next.is_none_or(|n| n <= now) {
            state.next = schedule.next_after(now);
        }
        let Some(next) = state.next else {
            tracing::warn!(worker = %id, schedule = schedule.text(), "the schedule has no next time");
            return;
        };
        let wait = crate::schedule::until(next, now).min(RECHECK);
        let tick = Tick {
            id: id.clone(),
            serial: state.serial,
        };
        ctx.run_later(wait, move |act, ctx| act.tick(tick, ctx));
    }

    fn tick(&mut self, tick: Tick, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let Some(entry) = self.workers.get_mut(&tick.id) else {
            return;
        };
        let (Some(schedule), Some(state)) = (entry.spec.schedule.clone(), entry.schedule.as_mut())
        else {
            return;
        };
        if state.serial != tick.serial {
            return;
        }
        let now = SystemTime::now();
        let Some(due) = state.next else { return };
        if now < due {
            // Woken to look at the clock: not yet.
            return self.arm_schedule(&tick.id, ctx);
        }
        let fired = schedule.fired(due, now);
        if fired.missed > 0 {
            state.missed += u64::from(fired.missed);
            tracing::warn!(
                worker = %tick.id,
                due = %schedule.format(due),
                missed = fired.missed,
                late = ?now.duration_since(due).unwrap_or_default(),
                "missed {} scheduled run(s) while the master was paused or busy; running once now",
                fired.missed
            );
        }
        state.next = fired.next;
        let busy = matches!(
            entry.state,
            WorkerState::Running
                | WorkerState::Starting
                | WorkerState::Waiting
                | WorkerState::Stopping
        );
        if busy {
            state.skipped += 1;
            tracing::info!(worker = %tick.id, due = %schedule.format(due), "scheduled run skipped: the previous one is still going");
        } else {
            state.runs += 1;
            tracing::info!(worker = %tick.id, due = %schedule.format(due), "scheduled run");
            if let Ok(_addr) = self.manual_request(&tick.id, false, ctx) {
                let starting = self.start_gated(&tick.id, ctx);
                let id = tick.id.clone();
                ctx.spawn(starting.into_actor(self).map(move |result, _, _| {
                    if let Err(e) = result {
                        tracing::warn!(worker = %id, error = %crate::error::error_chain(&e), "scheduled run did not start");
                    }
                }));
            }
        }
        self.arm_schedule(&tick.id, ctx);
    }
}

impl super::table::Entry {
    /// The schedule's state for the summary.
    pub(super) fn schedule_status(&self) -> Option<ScheduleStatus> {
        let schedule = self.spec.schedule.as_ref()?;
        let state = self.schedule.as_ref();
        Some(ScheduleStatus {
            cron: schedule.text().to_string(),
            zone: schedule.zone(),
            next_run: state.and_then(|s| s.next),
            runs: state.map_or(0, |s| s.runs),
            skipped: state.map_or(0, |s| s.skipped),
            missed: state.map_or(0, |s| s.missed),
        })
    }
}
