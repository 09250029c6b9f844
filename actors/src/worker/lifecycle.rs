//! What every worker actor keeps the same way: its place in the state machine, its last error,
//! its span, and the operation lock that keeps its lifecycle steps from overlapping; and the
//! stop and terminate paths both actors share.

use actix::prelude::*;

use super::WorkerStateChanged;
use crate::error::WorkerError;
use crate::state::{Lifecycle, WorkerState};
use crate::WorkerId;

/// What every worker actor keeps the same way: its place in the state machine, its last error,
/// its span, the lock that keeps its lifecycle operations from overlapping, and where its state
/// changes go.
pub(crate) struct WorkerCore {
    pub id: WorkerId,
    /// `worker{id=…}`: module code and the actor's own logs run inside it.
    pub span: tracing::Span,
    pub state: WorkerState,
    pub last_error: Option<String>,
    /// Serialises start/stop/fail/terminate without blocking the mailbox.
    pub op_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Set just before advancing to a failed state because module code panicked; the next
    /// failure event carries it.
    pub panicked: bool,
    /// See [`WorkerStateChanged::instance`].
    instance: u64,
    /// Set just before advancing because the process ended; the next event carries it.
    pub exit: Option<crate::process::ExitInfo>,
    events: Recipient<WorkerStateChanged>,
}

impl WorkerCore {
    pub fn new(id: WorkerId, instance: u64, events: Recipient<WorkerStateChanged>) -> Self {
        let span = tracing::info_span!("worker", id = %id);
        Self {
            id,
            span,
            state: WorkerState::Idle,
            last_error: None,
            op_lock: Default::default(),
            panicked: false,
            instance,
            exit: None,
            events,
        }
    }

    /// Applies `event` through the state machine, records `reason` as the last error, logs the
    /// change and reports it (with `pid` for a process that just became running).
    pub fn advance(
        &mut self,
        event: Lifecycle,
        reason: Option<String>,
        pid: Option<u32>,
    ) -> Result<(), WorkerError> {
        let from = self.state;
        let to = from.next(event).map_err(|t| WorkerError::InvalidState {
            id: self.id.clone(),
            from: t.from,
            event: t.event,
        })?;
        self.state = to;
        // What a waiting worker waits for is no error.
        if let Some(r) = reason.as_ref().filter(|_| to != WorkerState::Waiting) {
            self.last_error = Some(r.clone());
        }
        let pid = pid.filter(|_| to == WorkerState::Running);
        if to.is_failed() {
            tracing::warn!(parent: &self.span, %from, %to, reason = reason.as_deref().unwrap_or(""), "worker state changed");
        } else {
            tracing::info!(parent: &self.span, %from, %to, pid, "worker state changed");
        }
        let panicked = std::mem::take(&mut self.panicked) && to.is_failed();
        let exit = self.exit.take();
        if to == WorkerState::Starting {
            // Before the new run can print a line that a `log_line:` dependency waits for.
            crate::line_watch::rearm(&self.id);
        }
        self.events.do_send(WorkerStateChanged {
            id: self.id.clone(),
            from,
            to,
            reason,
            pid,
            panicked,
            at: std::time::SystemTime::now(),
            instance: self.instance,
            exit,
        });
        Ok(())
    }
}

/// Runs `body` on `act` once no other lifecycle operation of the worker holds `lock`; other
/// messages (state queries, probes) are answered meanwhile.
pub(crate) fn with_op_lock<A, R>(
    act: &mut A,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> ResponseActFuture<A, R> + 'static,
) -> ResponseActFuture<A, R>
where
    A: Actor<Context = Context<A>>,
    R: 'static,
{
    Box::pin(async move { lock.lock_owned().await }.into_actor(act).then(
        move |guard: tokio::sync::OwnedMutexGuard<()>, act, ctx| {
            body(act, ctx).map(move |result, _, _| {
                drop(guard);
                result
            })
        },
    ))
}

/// What the shared lifecycle helpers need from a worker actor.
pub(crate) trait LifecycleActor: Actor<Context = Context<Self>> {
    /// The actor's shared part.
    fn core(&mut self) -> &mut WorkerCore;

    /// Stops the worker (the `Stop` message's work, minus the lock): from `StopRequested` to
    /// `stopped`, or `failed` when the stop fails.
    fn stop_now(&mut self) -> ResponseActFuture<Self, Result<(), WorkerError>>;
}

/// `Stop`: [`LifecycleActor::stop_now`] under the operation lock. A waiting worker has
/// nothing running: it goes through `stopping` to `stopped` at once.
pub(crate) fn stop<A: LifecycleActor>(
    act: &mut A,
) -> ResponseActFuture<A, Result<(), WorkerError>> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, |act, _| {
        if act.core().state == WorkerState::Waiting {
            let core = act.core();
            let result = core
                .advance(Lifecycle::StopRequested, None, None)
                .and_then(|()| core.advance(Lifecycle::StopCompleted, None, None));
            return Box::pin(actix::fut::ready(result));
        }
        act.stop_now()
    })
}

/// `Wait`: `waiting`, under the operation lock (so it follows a stop still in progress).
pub(crate) fn wait<A: LifecycleActor>(
    act: &mut A,
    reason: String,
) -> ResponseActFuture<A, Result<(), WorkerError>> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, move |act, _| {
        Box::pin(actix::fut::ready(act.core().advance(
            Lifecycle::WaitRequested,
            Some(reason),
            None,
        )))
    })
}

/// `AbandonWait`: `failed_start` if still waiting.
pub(crate) fn abandon_wait<A: LifecycleActor>(
    act: &mut A,
    reason: String,
) -> ResponseActFuture<A, ()> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, move |act, _| {
        if act.core().state == WorkerState::Waiting {
            let _ = act
                .core()
                .advance(Lifecycle::WaitFailed, Some(reason), None);
        }
        Box::pin(actix::fut::ready(()))
    })
}

/// `Terminate`: stops the worker if it runs, exactly as `Stop` would, then `terminating` and
/// the actor ends. Replies with the stop's error, if any.
pub(crate) fn terminate<A: LifecycleActor>(
    act: &mut A,
) -> ResponseActFuture<A, Result<(), WorkerError>> {
    let lock = act.core().op_lock.clone();
    with_op_lock(act, lock, |act, _| {
        let stopping = if act.core().state == WorkerState::Running {
            act.stop_now()
        } else {
            Box::pin(actix::fut::ready(Ok(())))
        };
        Box::pin(stopping.map(|result, act, ctx| {
            let _ = act
                .core()
                .advance(Lifecycle::TerminateRequested, None, None);
            ctx.stop();
            result
        }))
    })
}

/// The `Wait` and `AbandonWait` handlers, the same for both worker actors.
macro_rules! waiting_handlers {
    ($actor:ty) => {
        impl actix::Handler<$crate::worker::Wait> for $actor {
            type Result = actix::ResponseActFuture<Self, Result<(), $crate::error::WorkerError>>;

            fn handle(
                &mut self,
                msg: $crate::worker::Wait,
                _: &mut actix::Context<Self>,
            ) -> Self::Result {
                $crate::worker::wait(self, msg.reason)
            }
        }

        impl actix::Handler<$crate::worker::AbandonWait> for $actor {
            type Result = actix::ResponseActFuture<Self, ()>;

            fn handle(
                &mut self,
                msg: $crate::worker::AbandonWait,
                _: &mut actix::Context<Self>,
            ) -> Self::Result {
                $crate::worker::abandon_wait(self, msg.reason)
            }
        }
    };
}
pub(crate) use waiting_handlers;
