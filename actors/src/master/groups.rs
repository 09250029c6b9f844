//! Supervision groups (`groups:`): OTP's strategies over workers of any deployment, with
//! intensity and escalation. See `config/group.rs` for the semantics as configured.
//!
//! A group acts by plans: a list of steps (stop a member, wait, start a member) run one after
//! the other through self-messages, so the master answers everything else meanwhile. A
//! member's start waits until it runs (and, through `start_gated`, for its `depends_on`), so
//! members start in order as OTP children do. While a plan runs, member ends are queued and
//! handled once it is done; an end of a member started since is then stale and dropped. A
//! stop or start of the group by hand supersedes a running plan (its epoch).
//!
//! What a member's end means is decided purely ([`decide`]); the master carries it out.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::MasterActor;
use crate::config::{GroupSpec, OnExhausted, RestartPolicy, Strategy};
use crate::error::{error_chain, MasterError};
use crate::restart::{backoff_delay, jitter_sample, Trigger};
use crate::window::SlidingWindow;
use crate::WorkerId;

/// Where a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Not started.
    Idle,
    /// Its members are being started, in order.
    Starting,
    /// Started.
    Running,
    /// Restarting members after one ended.
    Restarting,
    /// Its members are being stopped, in reverse order.
    Stopping,
    /// Stopped on purpose.
    Stopped,
    /// Its intensity was exceeded: every member stopped, the group failed as a unit.
    Failed,
}

/// One group as [`GetGroups`] shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    /// The group.
    pub id: WorkerId,
    /// Its strategy.
    pub strategy: Strategy,
    /// Where it is.
    pub state: GroupState,
    /// Members in start order (workers or groups).
    pub members: Vec<WorkerId>,
    /// The group it belongs to.
    pub parent: Option<WorkerId>,
    /// Restarts it made within its window, as of now.
    pub restarts_in_window: u32,
    /// Its intensity: restarts allowed …
    pub max_restarts: u32,
    /// … within this window.
    pub window: Duration,
    /// Restarts it made since it was started.
    pub restarts_total: u32,
    /// Why it failed.
    pub reason: Option<String>,
}

/// Installs the supervision tree (replacing the one there was): groups of workers (and of
/// groups) already added or added later. Groups whose spec did not change keep their state;
/// the reply names the others (new or changed: `idle` until started), in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerId>")]
pub struct SetGroups(pub Vec<GroupSpec>);

/// Every group, in the order they were set.
#[derive(Debug, Message)]
#[rtype(result = "Vec<GroupSummary>")]
pub struct GetGroups;

/// Resolves when a top-level group with `on_exhausted: shutdown` fails, with the reason:
/// what `hsu run` waits for to stop the master.
#[derive(Debug, Message)]
#[rtype(result = "oneshot::Receiver<String>")]
pub struct WaitExhausted;

/// The master's record of one group.
pub(super) struct GroupEntry {
    spec: GroupSpec,
    state: GroupState,
    restarts: SlidingWindow,
    restarts_total: u32,
    reason: Option<String>,
    /// Bumped by a start or stop by hand: a plan of an older epoch stops.
    epoch: u64,
    /// A plan runs.
    busy: bool,
    /// Member ends seen while a plan ran, with the member's start count then.
    queue: VecDeque<(WorkerId, Trigger, u64)>,
    /// Starts of each member made by this group (to tell a stale end from a new one).
    starts: HashMap<WorkerId, u64>,
}

impl GroupEntry {
    /// Every member stopped, in reverse member order.
    fn stop_steps(&self) -> VecDeque<Step> {
        self.spec
            .members
            .iter()
            .rev()
            .cloned()
            .map(Step::Stop)
            .collect()
    }

    fn new(spec: GroupSpec) -> Self {
        Self {
            spec,
            state: GroupState::Idle,
            restarts: SlidingWindow::default(),
            restarts_total: 0,
            reason: None,
            epoch: 0,
            busy: false,
            queue: VecDeque::new(),
            starts: HashMap::new(),
        }
    }
}

/// OTP's restart types, from a member's `restart.policy` (a group member is permanent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartType {
    /// Any end is restarted (`always`).
    Permanent,
    /// Only a failure (`on_failure`).
    Transient,
    /// Never (`never`).
    Temporary,
}

impl From<RestartPolicy> for RestartType {
    fn from(p: RestartPolicy) -> Self {
        match p {
            RestartPolicy::Always => Self::Permanent,
            RestartPolicy::OnFailure => Self::Transient,
            RestartPolicy::Never => Self::Temporary,
        }
    }
}

/// What a group does about a member's end.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The end does not count (its restart type says so).
    Leave,
    /// Restart these members (indexes into the members, in order): stop them in reverse,
    /// start them in order.
    Restart(Vec<usize>),
    /// Intensity exceeded: the group fails with this reason.
    Fail(String),
}

/// The pure decision: member `index` of `spec` (of restart type `kind`) ended by `trigger`
/// at `now`; `restarts` is the group's window (recorded into when restarting).
pub fn decide(
    spec: &GroupSpec,
    restarts: &mut SlidingWindow,
    index: usize,
    kind: RestartType,
    trigger: Trigger,
    now: Instant,
) -> Decision {
    let (strategy, max_restarts, window) = (spec.strategy, spec.max_restarts, spec.window);
    let count = spec.members.len();
    let counts = match (kind, trigger) {
        (RestartType::Permanent, _) => true,
        (RestartType::Transient, Trigger::Failure) => true,
        (RestartType::Transient, Trigger::CleanExit) => false,
        (RestartType::Temporary, _) => false,
    };
    if !counts {
        return Decision::Leave;
    }
    let made = restarts.count(now, window);
    if made >= max_restarts {
        return Decision::Fail(format!(
            "max intensity: {} restarts in {}",
            made + 1,
            crate::config::duration::format(window)
        ));
    }
    restarts.record(now, window);
    Decision::Restart(match strategy {
        Strategy::OneForOne => vec![index],
        Strategy::OneForAll => (0..count).collect(),
        Strategy::RestForOne => (index..count).collect(),
    })
}

/// One step of a plan.
#[derive(Debug, Clone)]
enum Step {
    Stop(WorkerId),
    Start(WorkerId),
    Wait(Duration),
}

/// How a plan ends.
#[derive(Debug, Clone)]
enum Then {
    Running,
    Stopped,
    Failed(String),
}

/// Self-message: run the next step of a group's plan.
#[derive(Message)]
#[rtype(result = "()")]
struct RunPlan {
    group: WorkerId,
    epoch: u64,
    steps: VecDeque<Step>,
    then: Then,
    reply: Vec<oneshot::Sender<Result<(), MasterError>>>,
}

type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), MasterError>> + Send>>;

impl MasterActor {
    /// Whether `id` names a group.
    pub(super) fn is_group(&self, id: &WorkerId) -> bool {
        self.groups.contains_key(id)
    }

    /// The group `member` belongs to.
    pub(super) fn group_of(&self, member: &WorkerId) -> Option<WorkerId> {
        self.group_of.get(member).cloned()
    }

    /// Starts a group by hand (or as a member of its parent): its members in order.
    pub(super) fn start_group(&mut self, id: &WorkerId, ctx: &mut Context<Self>) -> Reply {
        let Some(g) = self.groups.get_mut(id) else {
            return Box::pin(std::future::ready(Err(MasterError::NotFound {
                id: id.clone(),
            })));
        };
        g.epoch += 1;
        g.queue.clear();
        g.restarts.clear();
        g.reason = None;
        g.state = GroupState::Starting;
        let steps = g.spec.members.iter().cloned().map(Step::Start).collect();
        tracing::info!(group = %id, "starting the group");
        self.begin_plan(id, steps, Then::Running, ctx)
    }

    /// Stops a group by hand (or for its parent): its members in reverse order.
    pub(super) fn stop_group(&mut self, id: &WorkerId, ctx: &mut Context<Self>) -> Reply {
        let Some(g) = self.groups.get_mut(id) else {
            return Box::pin(std::future::ready(Err(MasterError::NotFound {
                id: id.clone(),
            })));
        };
        g.epoch += 1;
        g.queue.clear();
        g.state = GroupState::Stopping;
        let steps = g.stop_steps();
        tracing::info!(group = %id, "stopping the group");
        self.begin_plan(id, steps, Then::Stopped, ctx)
    }

    fn begin_plan(
        &mut self,
        id: &WorkerId,
        steps: VecDeque<Step>,
        then: Then,
        ctx: &mut Context<Self>,
    ) -> Reply {
        let Some(g) = self.groups.get_mut(id) else {
            return Box::pin(std::future::ready(Ok(())));
        };
        g.busy = true;
        let (tx, rx) = oneshot::channel();
        ctx.notify(RunPlan {
            group: id.clone(),
            epoch: g.epoch,
            steps,
            then,
            reply: vec![tx],
        });
        let id = id.clone();
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(MasterError::Dependency {
                    id,
                    reason: "the group's plan was superseded by a later start or stop".into(),
                })
            })
        })
    }

    /// A member of `group` ended on its own (`trigger`), or a member group failed.
    pub(super) fn member_ended(
        &mut self,
        group: &WorkerId,
        member: &WorkerId,
        trigger: Trigger,
        ctx: &mut Context<Self>,
    ) {
        let kind = match self.workers.get(member) {
            Some(e) => RestartType::from(e.spec.restart.policy),
            None => RestartType::Permanent,
        };
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if !matches!(
            g.state,
            GroupState::Running | GroupState::Restarting | GroupState::Starting
        ) {
            return;
        }
        if g.busy {
            let starts = g.starts.get(member).copied().unwrap_or(0);
            g.queue.push_back((member.clone(), trigger, starts));
            return;
        }
        let Some(index) = g.spec.members.iter().position(|m| m == member) else {
            return;
        };
        let decision = decide(
            &g.spec,
            &mut g.restarts,
            index,
            kind,
            trigger,
            Instant::now(),
        );
        match decision {
            Decision::Leave => {
                tracing::info!(group = %group, member = %member, ?trigger, "member ended; not restarted (its restart type)");
            }
            Decision::Restart(which) => {
                g.restarts_total += 1;
                g.state = GroupState::Restarting;
                let members: Vec<WorkerId> =
                    which.iter().map(|i| g.spec.members[*i].clone()).collect();
                tracing::warn!(group = %group, member = %member, strategy = ?g.spec.strategy, restarting = ?members, "member ended; restarting");
                // The member's own backoff spaces restarts out; the group's intensity bounds them.
                let delay = self
                    .workers
                    .get(member)
                    .map(|e| {
                        let n = g
                            .restarts
                            .count(Instant::now(), g.spec.window)
                            .saturating_sub(1);
                        backoff_delay(&e.spec.restart.backoff, n, jitter_sample())
                    })
                    .unwrap_or_default();
                let mut steps: VecDeque<Step> =
                    members.iter().rev().cloned().map(Step::Stop).collect();
                if !delay.is_zero() {
                    steps.push_back(Step::Wait(delay));
                }
                // As in OTP, a temporary sibling stopped along is not started again.
                let temporary = |m: &WorkerId| {
                    self.workers.get(m).is_some_and(|e| {
                        RestartType::from(e.spec.restart.policy) == RestartType::Temporary
                    })
                };
                let starting: Vec<WorkerId> =
                    members.into_iter().filter(|m| !temporary(m)).collect();
                for m in &starting {
                    if let Some(e) = self.workers.get_mut(m) {
                        e.supervision.group_restarts += 1;
                    }
                }
                steps.extend(starting.into_iter().map(Step::Start));
                // Nobody waits for an automatic plan.
                drop(self.begin_plan(group, steps, Then::Running, ctx));
            }
            Decision::Fail(reason) => {
                tracing::error!(group = %group, member = %member, "{reason}: stopping every member; the group fails");
                g.state = GroupState::Stopping;
                let steps = g.stop_steps();
                drop(self.begin_plan(group, steps, Then::Failed(reason), ctx));
            }
        }
    }

    /// A step's future, or none for a member that is not there.
    fn step(&mut self, group: &WorkerId, step: &Step, ctx: &mut Context<Self>) -> Reply {
        match step {
            Step::Wait(d) => {
                let d = *d;
                Box::pin(async move {
                    tokio::time::sleep(d).await;
                    Ok(())
                })
            }
            Step::Stop(m) if self.is_group(m) => self.stop_group(m, ctx),
            Step::Start(m) if self.is_group(m) => self.start_group(m, ctx),
            Step::Stop(m) => match self.manual_request(m, true, ctx) {
                Ok(addr) => {
                    let m = m.clone();
                    Box::pin(async move { super::forward(m, addr.stop().await) })
                }
                Err(e) => Box::pin(std::future::ready(Err(e))),
            },
            Step::Start(m) => {
                // Already running (started by an apply, or by hand): nothing to do.
                if self
                    .workers
                    .get(m)
                    .is_some_and(|e| e.state == crate::state::WorkerState::Running)
                {
                    return Box::pin(std::future::ready(Ok(())));
                }
                if let Some(g) = self.groups.get_mut(group) {
                    *g.starts.entry(m.clone()).or_default() += 1;
                }
                if let Err(e) = self.manual_request(m, false, ctx) {
                    return Box::pin(std::future::ready(Err(e)));
                }
                self.start_gated(m, ctx)
            }
        }
    }

    /// The plan is done: the group's new state, the replies, escalation, the queue.
    fn finish_plan(
        &mut self,
        id: &WorkerId,
        then: Then,
        reply: Vec<oneshot::Sender<Result<(), MasterError>>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        g.busy = false;
        let failed = match then {
            Then::Running => {
                g.state = GroupState::Running;
                None
            }
            Then::Stopped => {
                g.state = GroupState::Stopped;
                None
            }
            Then::Failed(reason) => {
                g.state = GroupState::Failed;
                g.reason = Some(reason.clone());
                Some(reason)
            }
        };
        for tx in reply {
            let _ = tx.send(match &failed {
                None => Ok(()),
                Some(reason) => Err(MasterError::Dependency {
                    id: id.clone(),
                    reason: reason.clone(),
                }),
            });
        }
        if let Some(reason) = failed {
            let parent = g.spec.parent.clone();
            let on_exhausted = g.spec.on_exhausted;
            match parent {
                Some(parent) => {
                    tracing::warn!(group = %id, parent = %parent, "{reason}: escalating to the parent group");
                    self.member_ended(&parent, id, Trigger::Failure, ctx);
                }
                None if on_exhausted == OnExhausted::Shutdown => {
                    tracing::error!(group = %id, "{reason}: on_exhausted is shutdown; stopping the master");
                    for tx in self.exhausted.drain(..) {
                        let _ = tx.send(format!("group `{id}`: {reason}"));
                    }
                }
                None => {
                    tracing::error!(group = %id, "{reason}: the group stays failed (start it by hand)")
                }
            }
            return;
        }
        // Ends seen meanwhile, unless the member was started again since.
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        let queued: Vec<_> = g.queue.drain(..).collect();
        let fresh: Vec<(WorkerId, Trigger)> = queued
            .into_iter()
            .filter(|(m, _, starts)| g.starts.get(m).copied().unwrap_or(0) == *starts)
            .map(|(m, t, _)| (m, t))
            .collect();
        for (member, trigger) in fresh {
            self.member_ended(id, &member, trigger, ctx);
        }
    }
}

impl Handler<RunPlan> for MasterActor {
    type Result = ();

    fn handle(&mut self, mut plan: RunPlan, ctx: &mut Context<Self>) {
        let current = self.groups.get(&plan.group).map(|g| g.epoch);
        if current != Some(plan.epoch) || self.shutting_down {
            // Superseded: whoever waits is told by the dropped senders.
            return;
        }
        let Some(step) = plan.steps.pop_front() else {
            let RunPlan {
                group, then, reply, ..
            } = plan;
            return self.finish_plan(&group, then, reply, ctx);
        };
        let doing = self.step(&plan.group, &step, ctx);
        ctx.spawn(doing.into_actor(self).map(move |result, act, ctx| {
            if let Err(e) = result {
                // A member that fails to start is supervised through its own events.
                tracing::warn!(group = %plan.group, ?step, error = %error_chain(&e), "group step failed");
            }
            if act.groups.get(&plan.group).map(|g| g.epoch) == Some(plan.epoch) {
                ctx.notify(plan);
            }
        }));
    }
}

impl Handler<SetGroups> for MasterActor {
    type Result = MessageResult<SetGroups>;

    fn handle(&mut self, msg: SetGroups, _: &mut Context<Self>) -> Self::Result {
        let mut groups = HashMap::new();
        let mut group_of = HashMap::new();
        let mut order = Vec::new();
        let mut fresh = Vec::new();
        for spec in msg.0 {
            for m in &spec.members {
                group_of.insert(m.clone(), spec.id.clone());
            }
            order.push(spec.id.clone());
            let entry = match self.groups.remove(&spec.id) {
                Some(old) if old.spec == spec => old,
                _ => {
                    fresh.push(spec.id.clone());
                    GroupEntry::new(spec.clone())
                }
            };
            groups.insert(spec.id, entry);
        }
        self.groups = groups;
        self.group_of = group_of;
        self.group_order = order;
        MessageResult(fresh)
    }
}

impl Handler<GetGroups> for MasterActor {
    type Result = MessageResult<GetGroups>;

    fn handle(&mut self, _: GetGroups, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let mut out = Vec::new();
        for id in &self.group_order {
            let Some(g) = self.groups.get_mut(id) else {
                continue;
            };
            out.push(GroupSummary {
                id: g.spec.id.clone(),
                strategy: g.spec.strategy,
                state: g.state,
                members: g.spec.members.clone(),
                parent: g.spec.parent.clone(),
                restarts_in_window: g.restarts.count(now, g.spec.window),
                max_restarts: g.spec.max_restarts,
                window: g.spec.window,
                restarts_total: g.restarts_total,
                reason: g.reason.clone(),
            });
        }
        MessageResult(out)
    }
}

impl Handler<WaitExhausted> for MasterActor {
    type Result = MessageResult<WaitExhausted>;

    fn handle(&mut self, _: WaitExhausted, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.exhausted.push(tx);
        MessageResult(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartType::*;
    use Strategy::*;
    use Trigger::*;

    fn spec(strategy: Strategy, members: usize) -> GroupSpec {
        GroupSpec {
            id: WorkerId::new("g").unwrap(),
            strategy,
            max_restarts: 3,
            window: Duration::from_secs(10),
            on_exhausted: OnExhausted::Stay,
            members: (0..members)
                .map(|i| WorkerId::new(&format!("m{i}")).unwrap())
                .collect(),
            parent: None,
        }
    }

    #[test]
    fn restart_types_decide_what_counts() {
        let now = Instant::now();
        let mut s = spec(OneForOne, 3);
        s.max_restarts = 100;
        let mut r = SlidingWindow::default();
        for (kind, trigger, counts) in [
            (Permanent, CleanExit, true),
            (Permanent, Failure, true),
            (Transient, CleanExit, false),
            (Transient, Failure, true),
            (Temporary, CleanExit, false),
            (Temporary, Failure, false),
        ] {
            let d = decide(&s, &mut r, 1, kind, trigger, now);
            assert_eq!(d != Decision::Leave, counts, "{kind:?} {trigger:?}");
        }
    }

    #[test]
    fn strategies_pick_the_members_and_intensity_fails_the_group() {
        let now = Instant::now();
        let mut r = SlidingWindow::default();
        let mut d = |s| decide(&spec(s, 4), &mut r, 1, Permanent, Failure, now);
        assert_eq!(d(OneForOne), Decision::Restart(vec![1]));
        assert_eq!(d(OneForAll), Decision::Restart(vec![0, 1, 2, 3]));
        assert_eq!(d(RestForOne), Decision::Restart(vec![1, 2, 3]));
        assert_eq!(
            d(OneForOne),
            Decision::Fail("max intensity: 4 restarts in 10s".into())
        );
        // Outside the window the budget is back.
        let later = now + Duration::from_secs(11);
        assert_eq!(
            decide(&spec(OneForOne, 4), &mut r, 0, Permanent, Failure, later),
            Decision::Restart(vec![0])
        );
    }
}
