//! The runtime that runs module code and process I/O. Actix arbiters are single threads; module
//! code that blocks, or a child flooding its stdout, would stall every actor on its arbiter, the
//! master included. So every module call and task, every log pump and every network probe runs
//! on this separate multi-threaded tokio runtime, and actors only await its handles.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};

use crate::error::{Operation, WorkerError};
use crate::WorkerId;

/// A cheap handle to the worker runtime. The runtime shuts down (without blocking) when the last
/// handle is dropped.
#[derive(Clone)]
pub struct WorkerRuntime {
    handle: Handle,
    /// Calls that ran over their limit and did not end when cancelled, per worker.
    stuck: Arc<Mutex<HashMap<WorkerId, StuckCall>>>,
    /// Keeps the runtime alive while any handle exists (read only by its `Drop`).
    _owner: Arc<Owner>,
}

/// A module call that ran over its limit and did not end when it was cancelled: it is blocking
/// one of the runtime's threads (it does not yield), or every thread is taken.
#[derive(Debug, Clone)]
pub struct StuckCall {
    /// The call.
    pub op: Operation,
    /// When it began.
    pub since: Instant,
    /// Turns true when it has returned.
    released: tokio::sync::watch::Receiver<bool>,
}

/// How long a timed-out call is given to end once cancelled before it is taken for stuck. A
/// call that awaits something ends at once; one that blocks its thread cannot.
const CANCEL_GRACE: Duration = Duration::from_millis(100);

struct Owner(Option<Runtime>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            // Dropping a runtime inside another runtime's thread panics; this does not block.
            rt.shutdown_background();
        }
    }
}

impl WorkerRuntime {
    /// Starts a runtime with `threads` worker threads named `hsu-worker`.
    ///
    /// # Errors
    /// When the OS refuses the threads.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("hsu-worker")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: rt.handle().clone(),
            stuck: Arc::default(),
            _owner: Arc::new(Owner(Some(rt))),
        })
    }

    /// The default size: one thread per core, at most 4.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(4)
    }

    /// The runtime's handle, for spawning.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The worker's call that is blocking a thread, if one is.
    pub fn stuck_call(&self, id: &WorkerId) -> Option<StuckCall> {
        self.stuck.lock().ok()?.get(id).cloned()
    }

    /// Runs `fut` on the worker runtime, inside `span`, with a time limit. A panic becomes
    /// [`WorkerError::Panicked`], an overrun [`WorkerError::Timeout`] (the task is aborted), and
    /// a module error [`WorkerError::ModuleFailed`]; all name the worker and the call.
    ///
    /// Containment of code that blocks its thread: an overrun call that does not end within
    /// [`CANCEL_GRACE`] of its cancellation is recorded as stuck and reported as
    /// [`WorkerError::Blocked`]; until it returns, a further call for the same worker waits for
    /// it (within its own limit, then [`WorkerError::Blocked`] too) instead of taking another
    /// thread. So a module that blocks holds one thread at most, however often it is restarted
    /// or probed, a restart begins once the blocked call has returned, and its neighbours keep
    /// the other threads.
    pub fn call<T, F>(
        &self,
        id: &WorkerId,
        op: Operation,
        limit: Duration,
        span: &tracing::Span,
        fut: F,
    ) -> impl Future<Output = Result<T, WorkerError>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = Result<T, hsu_module::ModuleError>> + Send + 'static,
    {
        let stuck = self.stuck.clone();
        let id = id.clone();
        let handle = self.handle.clone();
        let span = span.clone();
        let earlier = self.stuck_call(&id);
        async move {
            if let Some(call) = earlier {
                let mut released = call.released.clone();
                let wait = released.wait_for(|done| *done);
                if !matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_))) {
                    return Err(WorkerError::Blocked {
                        id,
                        op,
                        blocked: call.op,
                        after: call.since.elapsed(),
                    });
                }
            }
            let mut task = handle.spawn(tracing::Instrument::instrument(fut, span));
            let began = Instant::now();
            match tokio::time::timeout(limit, &mut task).await {
                Err(_) => {
                    task.abort();
                    if tokio::time::timeout(CANCEL_GRACE, &mut task).await.is_ok() {
                        return Err(WorkerError::Timeout {
                            id,
                            op,
                            after: limit,
                        });
                    }
                    record_stuck(&stuck, &id, op, began, task);
                    Err(WorkerError::Blocked {
                        id,
                        op,
                        blocked: op,
                        after: began.elapsed(),
                    })
                }
                Ok(Err(join)) if join.is_panic() => Err(WorkerError::Panicked {
                    id,
                    op,
                    message: panic_message(join.into_panic()),
                }),
                Ok(Err(_)) => Err(WorkerError::Cancelled { id, op }),
                Ok(Ok(Err(source))) => Err(WorkerError::ModuleFailed { id, op, source }),
                Ok(Ok(Ok(value))) => Ok(value),
            }
        }
    }
}

/// Records `task` as the worker's stuck call and forgets it once it ends (watched from the
/// caller's runtime, which the stuck thread does not belong to).
fn record_stuck<T: Send + 'static>(
    stuck: &Arc<Mutex<HashMap<WorkerId, StuckCall>>>,
    id: &WorkerId,
    op: Operation,
    since: Instant,
    task: tokio::task::JoinHandle<T>,
) {
    let (release, released) = tokio::sync::watch::channel(false);
    if let Ok(mut map) = stuck.lock() {
        map.insert(
            id.clone(),
            StuckCall {
                op,
                since,
                released,
            },
        );
    }
    tracing::warn!(worker = %id, call = %op, "the call did not end when cancelled: it blocks a worker thread; later calls for this worker wait for it");
    let stuck = stuck.clone();
    let id = id.clone();
    tokio::spawn(async move {
        let _ = task.await;
        if let Ok(mut map) = stuck.lock() {
            map.remove(&id);
        }
        let _ = release.send(true);
        tracing::info!(worker = %id, call = %op, after = ?since.elapsed(), "the blocked call returned; the worker can be started again");
    });
}

impl std::fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerRuntime")
    }
}

pub use hsu_module::panic_message;
