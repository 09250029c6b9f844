//! Stopping processes and waiting for them: the stop signal to a whole process group, the grace
//! period, SIGKILL, and the wait until no member is left; the same for an attached process
//! through its pinned identity; reaping a child and draining its output.
//!
//! The worker actor decides when to stop and what the outcome means; this file only acts.

use std::time::Duration;

use tokio::sync::watch;

use super::attach::Attached;
use super::cgroup::WorkerCgroup;
use super::{spawn, sys, ExitInfo};
use crate::config::ProcessSpec;

/// After SIGKILL, how long the group may take to disappear before the stop is a failure.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After the leader exits, how long its output pipes may stay open (held by a grandchild)
/// before the exit is reported anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Signal, grace, SIGKILL, for the whole group `pgid` (and, where the worker has one, every
/// member of its cgroup, which catches what left the group with `setsid`); Ok once no member
/// is left. `exited` (when the leader is ours) also waits for the leader to be reaped and its
/// output read.
pub(crate) async fn group(
    pgid: i32,
    exited: Option<watch::Receiver<Option<ExitInfo>>>,
    spec: &ProcessSpec,
    span: &tracing::Span,
    cgroup: Option<WorkerCgroup>,
) -> Result<(), Duration> {
    let signal = spec.stop.signal;
    if let Err(e) = sys::signal_group(pgid, signal.number()) {
        tracing::warn!(parent: span, error = %e, "cannot send SIG{signal} to the process group");
    }
    if let Some(c) = &cgroup {
        // What left the group (setsid) gets the signal at the same time.
        c.signal_others(signal.number(), pgid);
    }
    let cg = cgroup.as_ref();
    if gone(pgid, exited.clone(), spec.stop.timeout, cg).await {
        return Ok(());
    }
    if !sys::group_alive(pgid) && !cg.is_some_and(WorkerCgroup::populated) {
        // Every member is gone; only the exit record waits for the output pipes, which a
        // process outside the group (one that called setsid) still holds: nothing to kill.
        tracing::info!(parent: span, "process group stopped; its output pipe is still held open by a process outside the group (read for up to {DRAIN_WAIT:?} more)");
        if gone(pgid, exited.clone(), DRAIN_WAIT + KILL_WAIT, cg).await {
            return Ok(());
        }
    }
    match cg {
        Some(c) => {
            tracing::warn!(parent: span, grace = ?spec.stop.timeout, left = c.pids().len(), "still running after SIG{signal}; killing the worker's cgroup");
            c.kill();
        }
        None => {
            tracing::warn!(parent: span, grace = ?spec.stop.timeout, "process group still alive after SIG{signal}; sending SIGKILL")
        }
    }
    let _ = sys::signal_group(pgid, libc::SIGKILL);
    if gone(pgid, exited, KILL_WAIT, cg).await {
        Ok(())
    } else {
        Err(spec.stop.timeout + KILL_WAIT)
    }
}

/// Waits until the leader has been reaped (if `exited` is given) and no live process is left
/// in group `pgid` (nor in `cgroup`), up to `limit`.
async fn gone(
    pgid: i32,
    exited: Option<watch::Receiver<Option<ExitInfo>>>,
    limit: Duration,
    cgroup: Option<&WorkerCgroup>,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    if let Some(mut rx) = exited {
        let reaped = rx.wait_for(|e| e.is_some());
        if tokio::time::timeout_at(deadline, reaped).await.is_err() {
            return false;
        }
    }
    // Grandchildren have no exit event for us: poll, briefly and backing off.
    let mut pause = Duration::from_millis(1);
    while sys::group_alive(pgid) || cgroup.is_some_and(WorkerCgroup::populated) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

/// Signal, grace, SIGKILL, for an attached process (through its pinned identity); Ok once it
/// has exited.
pub(crate) async fn attached(
    attached: &Attached,
    mut exited: watch::Receiver<Option<ExitInfo>>,
    spec: &ProcessSpec,
    span: &tracing::Span,
) -> Result<(), Duration> {
    let signal = spec.stop.signal;
    match attached.signal(signal.number()) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => tracing::warn!(parent: span, error = %e, "cannot send SIG{signal}"),
    }
    if tokio::time::timeout(spec.stop.timeout, exited.wait_for(|e| e.is_some()))
        .await
        .is_ok()
    {
        return Ok(());
    }
    tracing::warn!(parent: span, "attached process still alive after SIG{signal}; sending SIGKILL");
    let _ = attached.signal(libc::SIGKILL);
    match tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| e.is_some())).await {
        Ok(_) => Ok(()),
        Err(_) => Err(spec.stop.timeout + KILL_WAIT),
    }
}

/// Reaps the child (the only `wait` on it) while pumping its output, then lets the output
/// drain, then publishes the exit; the task it is ends when the output pipes close.
pub(crate) async fn wait_child(
    child: spawn::Child,
    output: spawn::Output,
    tx: watch::Sender<Option<ExitInfo>>,
) {
    use futures::future::Either;
    let mut pumping = std::pin::pin!(output.pump());
    // In a block of its own, so the task keeps the reap's state and the drain's timer in the
    // same bytes.
    let (info, drained) = {
        let reaping = std::pin::pin!(spawn::reap(child));
        match futures::future::select(reaping, pumping.as_mut()).await {
            Either::Left((info, _)) => (info, false),
            // The pipes closed first (the child closed them, or they went to a grandchild
            // that did): only the exit is left.
            Either::Right((_, reaping)) => (reaping.await, true),
        }
    };
    // Output written just before the exit is still in the pipe; a grandchild that inherited
    // the pipe may keep it open, so the wait is bounded (and the pumping goes on after it).
    let drained = drained
        || tokio::time::timeout(DRAIN_WAIT, pumping.as_mut())
            .await
            .is_ok();
    let _ = tx.send(Some(info));
    if !drained {
        pumping.await;
    }
}

/// Resolves when the attached process has exited: at once through the pidfd, or by polling
/// its identity where the kernel has no pidfds.
pub(crate) async fn wait_attached(attached: &Attached) {
    if let Some(fd) = &attached.pidfd {
        if fd.exited().await.is_ok() {
            return;
        }
    }
    while attached.is_alive() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
