//! The runtime that runs module code and process I/O. Actix arbiters are single threads; module
//! code that blocks, or a child flooding its stdout, would stall every actor on its arbiter, the
//! master included. So every module call and task, every log pump and every network probe runs
//! on this separate multi-threaded tokio runtime, and actors only await its handles.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Operation, WorkerError};
use crate::WorkerId;

/// A cheap handle to the worker runtime. The runtime shuts down (without blocking) when the last
/// handle is dropped.
#[derive(Clone)]
pub struct WorkerRuntime {
    handle: Handle,
    /// Keeps the runtime alive while any handle exists (read only by its `Drop`).
    _owner: Arc<Owner>,
}

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

    /// Runs `fut` on the worker runtime, inside `span`, with a time limit. A panic becomes
    /// [`WorkerError::Panicked`], an overrun [`WorkerError::Timeout`] (the task is aborted), and
    /// a module error [`WorkerError::ModuleFailed`]; all name the worker and the call.
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
        let mut task = self
            .handle
            .spawn(tracing::Instrument::instrument(fut, span.clone()));
        let id = id.clone();
        async move {
            match tokio::time::timeout(limit, &mut task).await {
                Err(_) => {
                    task.abort();
                    Err(WorkerError::Timeout {
                        id,
                        op,
                        after: limit,
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

impl std::fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerRuntime")
    }
}

pub use hsu_module::panic_message;
